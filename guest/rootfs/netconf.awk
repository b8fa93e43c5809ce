# Parse the subset of netplan v2 (network-config) that vmkit writes.
# Output, one line per ethernet with a MAC match:
#   mac|dhcp4(true|false)|addr/prefix ...|gateway|dns ...
function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
function unq(s) { s = trim(s); gsub(/^["']|["']$/, "", s); return s }
function flowlist(s,   n, i, a, out) {
	s = trim(s); gsub(/^\[|\]$/, "", s)
	n = split(s, a, ",")
	out = ""
	for (i = 1; i <= n; i++) { a[i] = unq(a[i]); if (a[i] != "") out = out (out == "" ? "" : " ") a[i] }
	return out
}
function flush() {
	if (name != "" && mac != "") {
		gw = gw4
		if (gw == "") {
			r = routes
			# find "via" belonging to a default route
			while (match(r, /to:[ \t]*["']?(default|0\.0\.0\.0\/0)["']?[^}]*via:[ \t]*["']?[0-9.]+/) ||
			       match(r, /via:[ \t]*["']?[0-9.]+["']?[^}]*to:[ \t]*["']?(default|0\.0\.0\.0\/0)/)) {
				seg = substr(r, RSTART, RLENGTH)
				if (match(seg, /via:[ \t]*["']?[0-9.]+/)) {
					v = substr(seg, RSTART, RLENGTH); sub(/via:[ \t]*["']?/, "", v); gw = v
				}
				break
			}
		}
		print tolower(mac) "|" (dhcp == "" ? "true" : dhcp) "|" addrs "|" gw "|" dns
	}
	name = ""; mac = ""; dhcp = ""; addrs = ""; gw4 = ""; routes = ""; dns = ""; sub2 = ""
}
BEGIN { ineth = 0; ethind = -1; nicind = -1 }
{
	sub(/\r$/, "")
	line = $0
	sub(/[ \t]+#.*$/, "", line)
	if (line ~ /^[ \t]*(#.*)?$/) next
	match(line, /^ */); ind = RLENGTH
	body = substr(line, ind + 1)
	if (body ~ /^ethernets:/) { flush(); ineth = 1; ethind = ind; nicind = -1; next }
	if (!ineth) next
	if (ind <= ethind) { flush(); ineth = 0; next }
	if (nicind < 0 || ind == nicind) {
		if (body ~ /:[ \t]*$/) { flush(); nicind = ind; name = body; sub(/:.*/, "", name); next }
	}
	if (ind <= nicind) next
	# inside a NIC block; track second-level key for block-style lists/maps
	key = body; val = ""
	if (body ~ /^- /) { key = ""; val = substr(body, 3) }
	else if (index(body, ":") > 0) { key = trim(substr(body, 1, index(body, ":") - 1)); val = trim(substr(body, index(body, ":") + 1)) }
	if (ind == nicind + 2 && key != "") sub2 = key
	if (key == "macaddress") { mac = unq(val); next }
	if (sub2 == "dhcp4" && key == "dhcp4") { v = tolower(unq(val)); dhcp = (v == "true" || v == "yes" || v == "on") ? "true" : "false"; next }
	if (sub2 == "gateway4" && key == "gateway4") { gw4 = unq(val); next }
	if (sub2 == "addresses") {
		if (key == "addresses" && val != "") addrs = flowlist(val)
		else if (key == "" && val != "") addrs = addrs (addrs == "" ? "" : " ") unq(val)
		next
	}
	if (sub2 == "routes") { routes = routes " " body; next }
	if (sub2 == "nameservers") {
		if (key == "nameservers" && val ~ /addresses/) {
			v = val; sub(/.*addresses:[ \t]*/, "", v); sub(/\].*/, "]", v); dns = flowlist(v)
		} else if (key == "addresses" && val != "") dns = flowlist(val)
		else if (key == "" && val != "" && inns) dns = dns (dns == "" ? "" : " ") unq(val)
		if (key == "addresses") inns = 1; else if (key != "") inns = 0
		next
	}
}
END { flush() }
