#!/bin/bash
# Guest agent block of guest/build.sh (sourced, not run): puts Debian's real qemu-ga
# (package qemu-guest-agent) with the shared libraries ldd lists into the appliance's
# root filesystem, plus its starter and the /sbin/shutdown that guest-shutdown runs.
#   agent_install ROOTFS_DIR GUEST_DIR
# The initramfs only loads virtio_console (GUEST_MODULES); qemu-ga runs from the root
# disk, started by /sbin/init through /usr/lib/vmkit/qemu-ga-start.
AGENT_BUILD_PACKAGES="qemu-guest-agent"
AGENT_MODULES="virtio_console"

agent_version() { dpkg-query -W -f '${Version}' qemu-guest-agent 2>/dev/null || echo none; }

agent_install() {
	local rf=$1 gd=$2 qga=/usr/sbin/qemu-ga lib
	[ -x "$qga" ] || { echo "guest/agent/install.sh: $qga missing (package qemu-guest-agent)" >&2; return 1; }
	mkdir -p "$rf/usr/sbin" "$rf/usr/lib/vmkit"
	cp -L "$qga" "$rf/usr/sbin/qemu-ga"
	# every library ldd resolves, at the same path (dereferenced: the rootfs has no usr-merge links)
	for lib in $(ldd "$qga" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }'); do
		mkdir -p "$rf$(dirname "$lib")"
		cp -L "$lib" "$rf$lib"
	done
	install -m 0755 "$gd/agent/qemu-ga-start" "$rf/usr/lib/vmkit/qemu-ga-start"
	install -m 0755 "$gd/agent/shutdown" "$rf/sbin/shutdown"
	# the real binary must run in the rootfs as it is (a missing library fails the build, not the boot)
	if command -v chroot >/dev/null && [ "$(id -u)" = 0 ]; then
		chroot "$rf" /usr/sbin/qemu-ga --version >/dev/null ||
			{ echo "guest/agent/install.sh: qemu-ga does not run in the rootfs" >&2; return 1; }
	fi
}
