#!/bin/bash
# The built-in appliance's boot paths side by side (doc/images.md, "The portable appliance"):
# direct kernel boot (vmkit's default), SeaBIOS -> syslinux from the disk (virtio and IDE),
# OVMF -> syslinux.efi from the disk. Time to the guest's "vmkit-appliance: ready" line, wall
# and QEMU's own CPU seconds (the figure that survives a loaded host).
#
#   bash bench/appliance-boot-paths.sh [APPLIANCE_DIR] [RUNS]
set -euo pipefail
APP=${1:-.cache/appliance}
RUNS=${2:-3}
OVMF_CODE=${VMKIT_OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
OVMF_VARS=${VMKIT_OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}
WORK=$(mktemp -d /tmp/vmkit-bootpaths.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
CMDLINE=$(sed -n 's/.*"cmdline": "\(.*\)".*/\1/p' "$APP/image.json")

boot() { # label qemu-args...
	local label=$1 log=$WORK/serial.log start end pid st cpu
	shift
	rm -f "$log"
	start=$(date +%s.%N)
	qemu-system-x86_64 -nodefaults -machine pc,accel=tcg -cpu qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16 \
		-m 256 -display none -serial "file:$log" "$@" &
	pid=$!
	for _ in $(seq 1 3000); do
		if grep -q 'vmkit-appliance: ready' "$log" 2>/dev/null; then
			end=$(date +%s.%N)
			read -r -a st < "/proc/$pid/stat"
			cpu=$(echo "(${st[13]} + ${st[14]}) / $(getconf CLK_TCK)" | bc -l)
			printf '%-14s wall %6.2f s   QEMU CPU %6.2f s\n' "$label" "$(echo "$end - $start" | bc)" "$cpu"
			kill "$pid"
			wait "$pid" 2>/dev/null || true
			return 0
		fi
		sleep 0.1
	done
	echo "$label: no ready line within 300 s"
	kill "$pid"
}

for i in $(seq 1 "$RUNS"); do
	echo "run $i"
	qemu-img create -q -f qcow2 -F qcow2 -b "$(realpath "$APP/root.qcow2")" "$WORK/disk.qcow2"
	cp "$OVMF_VARS" "$WORK/vars.fd"
	boot direct -kernel "$APP/vmlinuz" -initrd "$APP/initrd.img" -append "$CMDLINE" -drive "file=$WORK/disk.qcow2,format=qcow2,if=virtio"
	boot bios-disk -drive "file=$WORK/disk.qcow2,format=qcow2,if=virtio"
	boot bios-disk-ide -drive "file=$WORK/disk.qcow2,format=qcow2"
	boot uefi-disk -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE" -drive "if=pflash,format=raw,unit=1,file=$WORK/vars.fd" \
		-drive "file=$WORK/disk.qcow2,format=qcow2,if=virtio"
	rm -f "$WORK/disk.qcow2"
done
uptime
