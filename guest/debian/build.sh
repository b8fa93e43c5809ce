#!/bin/bash
# Build a cloud-ready Debian disk image from Debian packages, without the internet: only the
# Debian mirror the host's apt already uses.
#
#   guest/debian/build.sh OUTDIR [RELEASE]        (RELEASE: bookworm by default)
#
# Produces OUTDIR/{root.qcow2,image.json,.build-hash}: one bootable disk (MBR + extlinux,
# one ext4 partition at the end of the disk so cloud-init's growpart can grow it) holding
# Debian's cloud kernel, systemd, cloud-init (NoCloud only), netplan + systemd-networkd,
# openssh-server and qemu-guest-agent — what Debian's genericcloud image has.
# Idempotent: exits early when OUTDIR/.build-hash matches the inputs. Needs root
# (mmdebstrap's root mode; one loop mount, only to run extlinux --install).
set -euo pipefail

RELEASE=${2:-${DEBIAN_RELEASE:-bookworm}}
DISK_MIB=${DEBIAN_DISK_MIB:-2048}
PACKAGES="linux-image-cloud-amd64,initramfs-tools,systemd,systemd-sysv,udev,dbus,cloud-init,cloud-guest-utils,fdisk,e2fsprogs,netplan.io,openssh-server,qemu-guest-agent,sudo,iproute2,ca-certificates,less"
HOST_PACKAGES="mmdebstrap extlinux syslinux-common e2fsprogs fdisk qemu-utils"

log() { echo "guest/debian/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [RELEASE]" >&2; exit 2; }
OUTDIR=${1%/}
[ -n "$OUTDIR" ] || die "empty OUTDIR"
case "$RELEASE" in *[!a-z0-9-]* | '') die "bad release name: $RELEASE" ;; esac
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
export LC_ALL=C
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap root mode, a loop mount for extlinux)"

missing=()
for p in $HOST_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing missing packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
		{ apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
fi

# The Debian mirror the host's apt uses (deb822 .sources or one-line .list), else deb.debian.org.
host_mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { if ($i ~ /\/debian\/?$/) print $i; break } }' "$f"
	done
}
MIRROR=${DEBIAN_MIRROR:-$(host_mirror | head -n1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

input_hash() {
	{
		echo "release $RELEASE mirror $MIRROR size $DISK_MIB"
		echo "packages $PACKAGES"
		sha256sum < "$HERE/build.sh"
	} | sha256sum | cut -d' ' -f1
}
HASH=$(input_hash)
if [ -f "$OUTDIR/image.json" ] && [ -f "$OUTDIR/root.qcow2" ] && [ "$(cat "$OUTDIR/.build-hash" 2>/dev/null)" = "$HASH" ]; then
	log "up to date: $OUTDIR"
	exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/vmkit-debian.XXXXXX")
MNT="$WORK/mnt"
cleanup() {
	mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
	rm -rf "$WORK"
}
trap cleanup EXIT

UUID=$(cat /proc/sys/kernel/random/uuid)
ROOT="$WORK/root"
log "mmdebstrap $RELEASE from $MIRROR"
mmdebstrap --mode=root --variant=apt --include="$PACKAGES" \
	--aptopt='Acquire::Retries "3"' \
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
	--customize-hook='echo debian > "$1/etc/hostname"' \
	--customize-hook="echo 'UUID=$UUID / ext4 rw,discard,errors=remount-ro 0 1' > \"\$1/etc/fstab\"" \
	--customize-hook='rm -f "$1"/etc/ssh/ssh_host_*; : > "$1/etc/machine-id"; rm -f "$1/var/lib/dbus/machine-id"' \
	--customize-hook='chroot "$1" systemctl enable systemd-networkd >/dev/null 2>&1' \
	--customize-hook='mkdir -p "$1/etc/systemd/system/systemd-networkd-wait-online.service.d" && printf "%s\n" "[Service]" "ExecStart=" "ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30" > "$1/etc/systemd/system/systemd-networkd-wait-online.service.d/vmkit.conf"' \
	--customize-hook='mkdir -p "$1/etc/cloud/cloud.cfg.d" && printf "%s\n" "datasource_list: [ NoCloud, None ]" > "$1/etc/cloud/cloud.cfg.d/90-vmkit-datasource.cfg"' \
	--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log' \
	"$RELEASE" "$ROOT" "$MIRROR" >&2

KVER=$(cd "$ROOT/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n1)
[ -n "$KVER" ] && [ -f "$ROOT/boot/initrd.img-$KVER" ] || die "no kernel/initrd in the built tree"
mkdir -p "$ROOT/boot/extlinux"
cat > "$ROOT/boot/extlinux/extlinux.conf" <<CONF
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /boot/vmlinuz-$KVER
  INITRD /boot/initrd.img-$KVER
  APPEND root=UUID=$UUID ro console=tty0 console=ttyS0,115200n8
CONF

PART_MIB=$((DISK_MIB - 1))
log "ext4 filesystem (${PART_MIB} MiB) from the tree"
# 64bit off: extlinux reads the filesystem itself and is safest without it.
mkfs.ext4 -q -F -L debian-root -U "$UUID" -O ^64bit -E root_owner=0:0 -d "$ROOT" "$WORK/part.img" "${PART_MIB}M"
mkdir -p "$MNT"
mount -o loop "$WORK/part.img" "$MNT"
extlinux --install "$MNT/boot/extlinux" >&2
umount "$MNT"

log "disk: MBR (extlinux mbr.bin) + one partition"
truncate -s "${DISK_MIB}M" "$WORK/disk.raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$WORK/disk.raw" >&2
dd if=/usr/lib/EXTLINUX/mbr.bin of="$WORK/disk.raw" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/part.img" of="$WORK/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
rm -f "$WORK/part.img"
qemu-img convert -f raw -O qcow2 "$WORK/disk.raw" "$WORK/root.qcow2"

mkdir -p "$OUTDIR"
VERSION="$(date -u +%Y%m%d)-${HASH:0:12}"
cat > "$WORK/image.json" <<JSON
{
  "name": "debian-$RELEASE",
  "version": "$VERSION",
  "description": "Debian $RELEASE cloud image built by vmkit (cloud kernel, cloud-init, openssh-server, qemu-guest-agent)",
  "arch": "x86_64",
  "defaults": { "cpus": 1, "memoryMiB": 512 },
  "nicModels": ["virtio-net"],
  "display": "none",
  "disks": [{ "file": "root.qcow2", "format": "qcow2" }],
  "kernelPackage": "$KVER"
}
JSON
mv "$WORK/root.qcow2" "$OUTDIR/root.qcow2.tmp" && mv "$OUTDIR/root.qcow2.tmp" "$OUTDIR/root.qcow2"
mv "$WORK/image.json" "$OUTDIR/image.json"
echo "$HASH" > "$OUTDIR/.build-hash"
log "done: $OUTDIR/root.qcow2 ($(du -h "$OUTDIR/root.qcow2" | cut -f1) on disk, ${DISK_MIB} MiB virtual)"
