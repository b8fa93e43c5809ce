#!/bin/bash
# Smoke test of the vmkit appliance with real QEMU (TCG unless VMKIT_TEST_ACCEL=kvm).
#
#   guest/test-boot.sh OUTDIR
#
# Boot 1: root disk only, one virtio-net NIC on user-mode NAT (DHCP).
#   checks: first console line, ready line, HTTP / /status /counter, JSON,
#           50 sequential requests, serial shell, counter, QMP powerdown.
# Boot 2: same overlay + cidata config drive (hostname + a second NIC with a
#   static address), checks hostname, static IP reachable, bootCount == 2,
#   /data/x written over the serial console in boot 1 survived, powerdown.
# Exits non-zero on the first failure. Uses only 127.0.0.1 ports.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUT=$(cd "$1" && pwd)
ACCEL=${VMKIT_TEST_ACCEL:-tcg}
for c in qemu-system-x86_64 qemu-img curl socat mkfs.vfat mcopy python3; do
	command -v "$c" >/dev/null || { echo "test-boot: missing $c (apt-get install qemu-system-x86 qemu-utils curl socat dosfstools mtools python3)" >&2; exit 2; }
done
CMDLINE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["boot"]["cmdline"])' "$OUT/image.json")

T=$(mktemp -d "${TMPDIR:-/tmp}/vmkit-guest-test.XXXXXX")
QPID=
cleanup() {
	if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
		kill "$QPID" 2>/dev/null || true
		sleep 0.3
		kill -9 "$QPID" 2>/dev/null || true
	fi
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

FAILS=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
die() {
	echo "FAIL: $*"
	echo "--- console log (tail) ---"; tail -n 40 "$T/console.log" 2>/dev/null | tr -d '\r' || true
	exit 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

qemu-img create -q -f qcow2 -F qcow2 -b "$OUT/root.qcow2" "$T/overlay.qcow2"

# start_vm NAME [extra qemu args...]; sets QPID, HPORT, T0
start_vm() {
	local name=$1; shift
	rm -f "$T"/*.sock "$T/console.log"
	HPORT=$(free_port)
	T0=$(now_ms)
	qemu-system-x86_64 -nodefaults -no-user-config -machine pc,accel="$ACCEL" -m 256 -smp 1 \
		-display none -name "$name" \
		-kernel "$OUT/vmlinuz" -initrd "$OUT/initrd.img" -append "$CMDLINE" \
		-blockdev driver=file,filename="$T/overlay.qcow2",node-name=f0 \
		-blockdev driver=qcow2,file=f0,node-name=d0 -device virtio-blk-pci,drive=d0 \
		-netdev user,id=n0,hostfwd=tcp:127.0.0.1:$HPORT-:80 \
		-device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 \
		"$@" \
		-chardev socket,id=s0,path="$T/serial.sock",server=on,wait=off,logfile="$T/console.log" \
		-serial chardev:s0 -qmp unix:"$T/qmp.sock",server=on,wait=off \
		>"$T/qemu.log" 2>&1 &
	QPID=$!
}

wait_console() { # PATTERN TIMEOUT_S -> prints ms since T0
	local deadline=$(($(now_ms) + $2 * 1000))
	while [ "$(now_ms)" -lt $deadline ]; do
		if grep -aq -- "$1" "$T/console.log" 2>/dev/null; then echo $(($(now_ms) - T0)); return 0; fi
		kill -0 "$QPID" 2>/dev/null || return 1
		sleep 0.02
	done
	return 1
}

wait_http() { # URL TIMEOUT_S -> prints ms since T0
	local deadline=$(($(now_ms) + $2 * 1000))
	while [ "$(now_ms)" -lt $deadline ]; do
		if curl -sf -m 1 -o /dev/null "$1"; then echo $(($(now_ms) - T0)); return 0; fi
		sleep 0.02
	done
	return 1
}

serial_cmd() { # COMMAND -> output of the serial session (2 s)
	# keep our write side open while reading: QEMU drops a socket chardev
	# client as soon as it half-closes.
	{ printf '%s\n' "$1"; sleep 2; } | socat - UNIX-CONNECT:"$T/serial.sock" 2>/dev/null | tr -d '\r' || true
}

powerdown() { # -> prints ms until QEMU exited
	local t1 deadline
	t1=$(now_ms)
	printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"system_powerdown"}' |
		socat -t 1 - UNIX-CONNECT:"$T/qmp.sock" >"$T/qmp.out" 2>&1 || true
	deadline=$((t1 + 15000))
	while kill -0 "$QPID" 2>/dev/null && [ "$(now_ms)" -lt $deadline ]; do sleep 0.02; done
	if kill -0 "$QPID" 2>/dev/null; then return 1; fi
	wait "$QPID" 2>/dev/null || true
	QPID=
	echo $(($(now_ms) - t1))
	grep -aq 'power button pressed' "$T/console.log" || return 1
}

jq_py() { # JSON-FILE PYTHON-EXPR (j = parsed json) -> prints result
	python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

check_status() { # FILE EXPECTED_HOSTNAME EXPECTED_BOOTCOUNT EXPECTED_IP...
	local f=$1 h=$2 bc=$3; shift 3
	python3 -m json.tool "$f" >/dev/null || { fail "/status is not valid JSON: $(cat "$f")"; return; }
	pass "/status is valid JSON: $(tr -d '\n' < "$f")"
	[ "$(jq_py "$f" 'j["hostname"]')" = "$h" ] && pass "hostname=$h" || fail "hostname != $h"
	[ "$(jq_py "$f" 'j["bootCount"]')" = "$bc" ] && pass "bootCount=$bc" || fail "bootCount != $bc"
	[ "$(jq_py "$f" 'type(j["uptime"]) in (int,float) and j["uptime"] > 0')" = True ] && pass "uptime is a number" || fail "uptime"
	[ "$(jq_py "$f" 'type(j["counter"]) is int')" = True ] && pass "counter is an int" || fail "counter"
	[ "$(jq_py "$f" 'all(n["driver"]=="virtio_net" and len(n["mac"])==17 for n in j["nics"]) and len(j["nics"])>0')" = True ] &&
		pass "nics have mac + driver virtio_net" || fail "nics: $(jq_py "$f" 'j["nics"]')"
	for ip in "$@"; do
		[ "$(jq_py "$f" "'$ip' in j['ipv4']")" = True ] && pass "ipv4 contains $ip" || fail "ipv4 lacks $ip"
	done
}

echo "== boot 1: no config drive (kernel cmdline: $CMDLINE)"
start_vm vmkit-test-1
ms=$(wait_console 'vmkit-appliance: userspace' 30) || die "no 'vmkit-appliance: userspace' line"
first=$(tr -d '\r' < "$T/console.log" | grep -av '^[[:space:]]*$' | grep -av '^\[ *[0-9.]*\]' | head -n1)
[ "$first" = "vmkit-appliance: userspace" ] && pass "first userspace console line after ${ms} ms" ||
	fail "first userspace line is '$first'"
ms=$(wait_console 'vmkit-appliance: ready' 60) || die "no ready line"
pass "ready line after ${ms} ms: $(grep -a 'vmkit-appliance: ready' "$T/console.log" | tr -d '\r')"
grep -aq 'vmkit-appliance: ready hostname=appliance ipv4=10.0.2.15' "$T/console.log" &&
	pass "ready line has hostname and 10.0.2.15" || fail "ready line content"
ms=$(wait_http "http://127.0.0.1:$HPORT/status" 30) || die "HTTP /status not answering"
pass "HTTP /status answered after ${ms} ms"
curl -sf -m 5 "http://127.0.0.1:$HPORT/status" > "$T/status1.json" || fail "GET /status"
check_status "$T/status1.json" appliance 1 10.0.2.15
curl -sf -m 5 "http://127.0.0.1:$HPORT/" | grep -q '<h1>Hello from appliance</h1>' && pass "GET / has hostname" || fail "GET /"
curl -s -m 5 -D "$T/h.txt" -o /dev/null "http://127.0.0.1:$HPORT/status" || true
grep -qi '^Content-Type: application/json' "$T/h.txt" && grep -qi '^Content-Length: [0-9]' "$T/h.txt" &&
	grep -qi '^Connection: close' "$T/h.txt" && pass "headers ok" || fail "headers: $(cat "$T/h.txt")"
code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HPORT/nope") || true
[ "$code" = 404 ] && pass "unknown path -> 404" || fail "unknown path -> $code"
c1=$(curl -sf -m 5 "http://127.0.0.1:$HPORT/counter") || c1=x
sleep 2.2
c2=$(curl -sf -m 5 "http://127.0.0.1:$HPORT/counter") || c2=x
if [[ "$c1" =~ ^[0-9]+$ && "$c2" =~ ^[0-9]+$ ]] && [ "$c2" -gt "$c1" ]; then pass "counter increments ($c1 -> $c2)"; else fail "counter ($c1 -> $c2)"; fi
# 50 sequential requests from one client process (no per-request process
# start-up cost on the host side, like vmkit's own polling)
res=$(python3 - "$HPORT" <<'PY'
import http.client, json, sys, time
port = int(sys.argv[1]); bad = 0; t = time.time()
for i in range(50):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/status"); r = c.getresponse(); b = r.read(); c.close()
        if r.status != 200 or len(b) != int(r.getheader("Content-Length")): bad += 1
        json.loads(b)
    except Exception:
        bad += 1
el = time.time() - t
print(bad, int(el * 1000), int(50 / el))
PY
) || res="50 0 0"
read -r bad el rate <<<"$res"
[ "$bad" -eq 0 ] && pass "50 sequential /status requests in ${el} ms ($rate req/s)" ||
	fail "$bad of 50 requests failed"
[ "$rate" -ge 50 ] || echo "WARN: only $rate req/s"
out=$(serial_cmd 'hostname')
printf '%s\n' "$out" | grep -aqx 'appliance' && pass "serial shell answers hostname" || fail "serial shell: $out"
printf '%s\n' "$out" | grep -aq 'appliance:/# ' && pass "serial prompt 'appliance:/# '" || fail "serial prompt"
out=$(serial_cmd 'echo hi > /data/x; sync; cat /data/x')
printf '%s\n' "$out" | grep -aqx 'hi' && pass "wrote /data/x over serial" || fail "serial write: $out"
ms=$(powerdown) || die "QEMU did not exit cleanly after system_powerdown (${ms:-?} ms)"
pass "system_powerdown -> QEMU exited in ${ms} ms"

echo "== boot 2: same overlay + cidata config drive (hostname, static 2nd NIC)"
mkdir -p "$T/cidata"
printf 'instance-id: test-0002\nlocal-hostname: testvm\n' > "$T/cidata/meta-data"
cat > "$T/cidata/network-config" <<'EOF'
version: 2
ethernets:
  nic0:
    match:
      macaddress: "52:54:00:12:34:56"
    set-name: eth0
    dhcp4: true
  nic1:
    match:
      macaddress: "52:54:00:ab:cd:ef"
    dhcp4: false
    addresses: ["10.82.0.10/24"]
    routes: [{to: default, via: 10.82.0.1}]
    nameservers: {addresses: [10.82.0.1]}
EOF
printf '#cloud-config\n' > "$T/cidata/user-data"
rm -f "$T/cidata.img"
mkfs.vfat -n cidata -C "$T/cidata.img" 1024 >/dev/null 2>&1
mcopy -i "$T/cidata.img" "$T/cidata/meta-data" "$T/cidata/network-config" "$T/cidata/user-data" ::/
SPORT=$(free_port)
start_vm vmkit-test-2 \
	-drive file="$T/cidata.img",format=raw,if=none,id=ci,readonly=on -device virtio-blk-pci,drive=ci \
	-netdev user,id=n1,net=10.82.0.0/24,host=10.82.0.1,dhcpstart=10.82.0.100,hostfwd=tcp:127.0.0.1:$SPORT-10.82.0.10:80 \
	-device virtio-net-pci,netdev=n1,mac=52:54:00:ab:cd:ef
ms=$(wait_console 'vmkit-appliance: userspace' 30) || die "boot 2: no userspace line"
pass "boot 2: first userspace line after ${ms} ms"
ms=$(wait_console 'vmkit-appliance: ready' 60) || die "boot 2: no ready line"
pass "boot 2: ready after ${ms} ms: $(grep -a 'vmkit-appliance: ready' "$T/console.log" | tr -d '\r')"
ms=$(wait_http "http://127.0.0.1:$HPORT/status" 30) || die "boot 2: HTTP not answering on NIC 0"
pass "boot 2: HTTP via DHCP NIC after ${ms} ms"
ms=$(wait_http "http://127.0.0.1:$SPORT/status" 30) || die "boot 2: HTTP not answering on static NIC"
pass "boot 2: HTTP via static NIC (10.82.0.10)"
curl -sf -m 5 "http://127.0.0.1:$SPORT/status" > "$T/status2.json" || fail "GET /status (2)"
check_status "$T/status2.json" testvm 2 10.0.2.15 10.82.0.10
curl -sf -m 5 "http://127.0.0.1:$HPORT/" | grep -q 'Hello from testvm' && pass "GET / has testvm" || fail "GET / (2)"
out=$(serial_cmd 'hostname; cat /data/x; ip route | grep default; cat /etc/resolv.conf')
printf '%s\n' "$out" | grep -aqx 'testvm' && pass "serial: hostname testvm" || fail "serial (2): $out"
printf '%s\n' "$out" | grep -aqx 'hi' && pass "/data/x survived the reboot" || fail "/data/x lost: $out"
ms=$(powerdown) || die "boot 2: QEMU did not exit cleanly after system_powerdown (${ms:-?} ms)"
pass "boot 2: system_powerdown -> QEMU exited in ${ms} ms"

if [ $FAILS -gt 0 ]; then echo "test-boot: $FAILS check(s) FAILED"; exit 1; fi
echo "test-boot: all checks passed"
