#!/bin/bash
# Build the vmkit built-in appliance: Debian cloud kernel + busybox userland.
#
#   guest/build.sh OUTDIR
#
# Produces OUTDIR/{vmlinuz,initrd.img,root.qcow2,image.json,.build-hash}.
# Idempotent: exits early when OUTDIR/.build-hash matches the inputs.
# Needs root only for apt-get (installing missing build packages); never
# installs the kernel on the host, never loop-mounts anything.
set -euo pipefail

# Debian packages this build needs (installed automatically when missing).
# dosfstools/mtools are not used for the image itself but vmkit makes its
# cloud-init config drives with them (mkfs.vfat -n cidata + mcopy).
GUEST_BUILD_PACKAGES="apt busybox-static e2fsprogs qemu-utils cpio gzip coreutils findutils dosfstools mtools"
# The disk's own boot loader (portable appliance, see "boot loader" below): syslinux for
# BIOS (MBR + FAT boot partition, installed through mtools: no mount), syslinux-efi for UEFI
# (\EFI\BOOT\BOOTX64.EFI), sfdisk (fdisk) for the partition table.
GUEST_BUILD_PACKAGES="$GUEST_BUILD_PACKAGES syslinux syslinux-common syslinux-efi fdisk"

# Kernel flavour: cloud-amd64 (virtio only, small) or amd64 (generic; has
# e1000/rtl8139/... drivers -- add them to GUEST_EXTRA_MODULES then).
KERNEL_FLAVOR=${KERNEL_FLAVOR:-cloud-amd64}
# Modules loaded (with their dependencies, from modules.dep) by the initramfs.
GUEST_MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net virtio_blk button evdev fat vfat nls_cp437 nls_iso8859_1 nls_ascii"
GUEST_EXTRA_MODULES=${GUEST_EXTRA_MODULES:-}
# NIC models the image has drivers for (JSON list items, for image.json).
GUEST_NIC_MODELS=${GUEST_NIC_MODELS:-'"virtio-net"'}
# Kernel command line recorded in image.json (vmkit may append to it).
GUEST_CMDLINE=${GUEST_CMDLINE:-"console=ttyS0 quiet loglevel=3 panic=-1 cryptomgr.notests"}
# Root disk virtual size (MiB).
ROOT_SIZE_MIB=${ROOT_SIZE_MIB:-96}
# FAT boot partition (kernel, initrd, syslinux BIOS + EFI) in front of the root partition (MiB).
BOOT_SIZE_MIB=${BOOT_SIZE_MIB:-48}
# Loaded by the initramfs only when the root disk is not found on virtio (a disk on IDE/SATA,
# as raw QEMU, VirtualBox or VMware attach it): missing ones are skipped. efivarfs is for the
# root filesystem (UEFI variables). Not loaded on vmkit's fast path.
GUEST_LATE_MODULES=${GUEST_LATE_MODULES:-"scsi_mod sd_mod libata ata_piix ata_generic ahci efivarfs"}

log() { echo "guest/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUTDIR=${1%/}
[ -n "$OUTDIR" ] || die "empty OUTDIR"
GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
export LC_ALL=C

# --- guest agent (qemu-ga from Debian; see guest/agent/install.sh) ---------------
# shellcheck source=agent/install.sh
. "$GUEST_DIR/agent/install.sh"
GUEST_BUILD_PACKAGES="$GUEST_BUILD_PACKAGES $AGENT_BUILD_PACKAGES"
GUEST_MODULES="$GUEST_MODULES $AGENT_MODULES"

# --- build dependencies ------------------------------------------------------
missing=()
for p in $GUEST_BUILD_PACKAGES; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing missing packages: ${missing[*]}"
	[ "$(id -u)" = 0 ] || die "need root to install: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
		{ apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
fi

# --- resolve the kernel package --------------------------------------------------
resolve_kernel() {
	apt-cache depends "linux-image-$KERNEL_FLAVOR" 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
KPKG=$(resolve_kernel || true)
if [ -z "$KPKG" ]; then
	log "apt lists missing linux-image-$KERNEL_FLAVOR; running apt-get update"
	apt-get update >&2
	KPKG=$(resolve_kernel || true)
fi
[ -n "$KPKG" ] || die "cannot resolve linux-image-$KERNEL_FLAVOR"
KPKG_VERSION=$(apt-cache policy "$KPKG" | awk '/Candidate:/ { print $2; exit }')
[ -n "$KPKG_VERSION" ] && [ "$KPKG_VERSION" != "(none)" ] || die "no candidate version for $KPKG"
BUSYBOX_VERSION=$(dpkg-query -W -f '${Version}' busybox-static)

# --- idempotence -------------------------------------------------------------------
input_hash() {
	{
		echo "kernel $KPKG $KPKG_VERSION"
		echo "busybox $BUSYBOX_VERSION"
		echo "qemu-ga $(agent_version)"
		echo "flavor $KERNEL_FLAVOR modules $GUEST_MODULES $GUEST_EXTRA_MODULES"
		echo "cmdline $GUEST_CMDLINE size $ROOT_SIZE_MIB nics $GUEST_NIC_MODELS"
		echo "boot $BOOT_SIZE_MIB late $GUEST_LATE_MODULES"
		# every file under guest/ except docs and the smoke test
		(cd "$GUEST_DIR" && find . -type f ! -name '*.swp' ! -name '*.md' ! -name 'test-boot.sh' -print0 |
			sort -z | xargs -0 sha256sum)
	} | sha256sum | cut -d' ' -f1
}
HASH=$(input_hash)
up_to_date() {
	[ -f "$OUTDIR/image.json" ] && [ -f "$OUTDIR/.build-hash" ] &&
		[ "$(cat "$OUTDIR/.build-hash")" = "$HASH" ]
}
if up_to_date; then
	log "up to date ($OUTDIR)"
	exit 0
fi

# --- work area -------------------------------------------------------------------------
OUTPARENT=$(dirname "$OUTDIR")
mkdir -p "$OUTPARENT"
# serialise concurrent builds of the same OUTDIR
if command -v flock >/dev/null; then
	exec 9>"$OUTDIR.lock"
	flock 9
	if up_to_date; then
		log "up to date ($OUTDIR, built concurrently)"
		exit 0
	fi
fi
STAGE="$OUTDIR.tmp-$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vmkit-guest-build.XXXXXX")
cleanup() {
	rm -rf "$WORK"
	rm -rf "$STAGE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$STAGE"
mkdir -p "$STAGE"

# --- kernel --------------------------------------------------------------------------------
log "downloading $KPKG $KPKG_VERSION"
mkdir -p "$WORK/deb" "$WORK/kernel"
chmod 0777 "$WORK/deb" # let apt's _apt sandbox user write here
(cd "$WORK/deb" && apt-get download "$KPKG=$KPKG_VERSION" >&2 2>/dev/null) ||
	(cd "$WORK/deb" && apt-get -o APT::Sandbox::User=root download "$KPKG=$KPKG_VERSION" >&2)
DEB=$(ls "$WORK"/deb/*.deb | head -n1)
dpkg-deb -x "$DEB" "$WORK/kernel"
KVER=${KPKG#linux-image-}
[ -d "$WORK/kernel/lib/modules/$KVER" ] || KVER=$(ls "$WORK/kernel/lib/modules" | head -n1)
KCONFIG="$WORK/kernel/boot/config-$KVER"
[ -f "$KCONFIG" ] || die "no kernel config in $DEB"
cp "$WORK/kernel/boot/vmlinuz-$KVER" "$STAGE/vmlinuz"
MODDIR="$WORK/kernel/lib/modules/$KVER"

# modules.dep is generated on install by depmod; make one with busybox depmod
busybox depmod -b "$WORK/kernel" "$KVER"
[ -s "$MODDIR/modules.dep" ] || die "depmod produced no modules.dep"

want="$GUEST_MODULES $GUEST_EXTRA_MODULES"
# anything ext4 (root fs) needs, if it is built as a module
if grep -q '^CONFIG_EXT4_FS=m' "$KCONFIG"; then want="ext4 $want"; fi
# ext4 asks the crypto API for crc32c at mount time; without modprobe in the initramfs a
# modular crc32c (the generic amd64 kernel) must be loaded up front.
if grep -q '^CONFIG_CRYPTO_CRC32C=m' "$KCONFIG"; then want="crc32c_generic $want"; fi
if grep -q '^CONFIG_VIRTIO_BLK=y' "$KCONFIG"; then want=${want/virtio_blk/}; fi

declare -A MODPATH=() SEEN=()
while IFS= read -r line; do
	path=${line%%:*}
	name=${path##*/}; name=${name%.ko*}; name=${name//-/_}
	MODPATH[$name]=$path
done < "$MODDIR/modules.dep"
ORDER=()
visit() {
	local name=${1//-/_} path deps d
	[ -n "${SEEN[$name]:-}" ] && return 0
	SEEN[$name]=1
	path=${MODPATH[$name]:-}
	if [ -z "$path" ]; then
		if grep -q "/${name//_/[-_]}\.ko" "$MODDIR/modules.builtin" 2>/dev/null; then
			return 0 # built into the kernel
		fi
		die "module $name not found in $KPKG"
	fi
	deps=$(grep -m1 "^$path:" "$MODDIR/modules.dep" | cut -d: -f2)
	for d in $deps; do
		d=${d##*/}; d=${d%.ko*}
		visit "$d"
	done
	ORDER+=("$path")
}
for m in $want; do visit "$m"; done
log "modules: ${ORDER[*]##*/}"
# --- late modules (portable disk: IDE/SATA root, efivarfs) --------------------------------
EARLY=("${ORDER[@]}")
ORDER=()
for m in $GUEST_LATE_MODULES; do
	n=${m//-/_}
	[ -n "${MODPATH[$n]:-}" ] && visit "$m"
done
LATE=("${ORDER[@]}")
ORDER=("${EARLY[@]}")
log "late modules: ${LATE[*]##*/}"

# --- initramfs -------------------------------------------------------------------------
BB=$(command -v busybox)
IR="$WORK/initramfs"
mkdir -p "$IR"/{bin,sbin,dev,proc,sys,newroot,etc,root,lib/modules/$KVER}
cp "$BB" "$IR/bin/busybox"
for a in $("$BB" --list); do
	[ "$a" = busybox ] || ln -sf busybox "$IR/bin/$a"
done
install -m 0755 "$GUEST_DIR/initramfs/init" "$IR/init"
: > "$IR/etc/vmkit-modules"
for p in "${ORDER[@]}"; do
	mkdir -p "$IR/lib/modules/$KVER/$(dirname "$p")"
	cp "$MODDIR/$p" "$IR/lib/modules/$KVER/$p"
	echo "$p" >> "$IR/etc/vmkit-modules"
	grep -m1 "^$p:" "$MODDIR/modules.dep" >> "$IR/lib/modules/$KVER/modules.dep"
done
cp "$IR/etc/vmkit-modules" "$IR/lib/modules/$KVER/vmkit-modules"
: > "$IR/etc/vmkit-modules-late"
for p in "${LATE[@]}"; do
	mkdir -p "$IR/lib/modules/$KVER/$(dirname "$p")"
	cp "$MODDIR/$p" "$IR/lib/modules/$KVER/$p"
	echo "$p" >> "$IR/etc/vmkit-modules-late"
	grep -m1 "^$p:" "$MODDIR/modules.dep" >> "$IR/lib/modules/$KVER/modules.dep"
done
cp "$IR/etc/vmkit-modules-late" "$IR/lib/modules/$KVER/vmkit-modules-late"
(cd "$IR" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9 -n > "$STAGE/initrd.img"

# --- root filesystem -----------------------------------------------------------------------
RF="$WORK/rootfs"
mkdir -p "$RF"/{bin,sbin,usr/bin,usr/sbin,usr/lib/vmkit,dev,proc,sys,run,mnt,root,etc,data,var/lib/vmkit,var/log,lib/modules/$KVER}
install -d -m 1777 "$RF/tmp"
install -d -m 0700 "$RF/root"
cp "$BB" "$RF/bin/busybox"
"$BB" --list-full | while read -r a; do
	case "$a" in sbin/init | linuxrc | bin/busybox) continue ;; esac
	ln -sf /bin/busybox "$RF/$a"
done
install -m 0755 "$GUEST_DIR/rootfs/init" "$RF/sbin/init"
install -m 0755 "$GUEST_DIR/rootfs/http-handler" "$RF/usr/lib/vmkit/http-handler"
install -m 0755 "$GUEST_DIR/rootfs/powerbtn" "$RF/usr/lib/vmkit/powerbtn"
install -m 0644 "$GUEST_DIR/rootfs/netconf.awk" "$RF/usr/lib/vmkit/netconf.awk"
install -m 0755 "$GUEST_DIR/rootfs/udhcpc.script" "$RF/etc/udhcpc.script"
ln -s /run/vmkit/hosts "$RF/etc/hosts"
ln -s /run/vmkit/resolv.conf "$RF/etc/resolv.conf"
ln -s /proc/mounts "$RF/etc/mtab"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$RF/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' > "$RF/etc/group"
printf 'appliance\n' > "$RF/etc/hostname"
printf 'export PS1=%s\n' "'\\h:\\w\\\$ '" > "$RF/etc/profile"
printf '0\n' > "$RF/var/lib/vmkit/bootcount"
cp -a "$IR/lib/modules/$KVER/." "$RF/lib/modules/$KVER/"
cat > "$RF/etc/vmkit-release" <<EOF
name=appliance
kernel=$KPKG $KPKG_VERSION
busybox=$BUSYBOX_VERSION
build=$HASH
EOF

# guest agent: qemu-ga + libraries, its starter, /sbin/shutdown
agent_install "$RF" "$GUEST_DIR" || die "guest agent install failed"

truncate -s "${ROOT_SIZE_MIB}M" "$WORK/root.raw"
mkfs.ext4 -q -F -L vmkit-root -d "$RF" -m 0 -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0 \
	"$WORK/root.raw" >&2

# --- boot loader (portable disk) ----------------------------------------------------------
# The disk boots by itself, so an exported VMDK/VDI/OVA runs in raw QEMU, VirtualBox or
# VMware: MBR (syslinux mbr.bin) -> partition 1, FAT, active: vmlinuz, initrd.img, syslinux
# for BIOS (ldlinux.sys) and for UEFI (\EFI\BOOT\BOOTX64.EFI, the removable-media path
# OVMF boots without a boot entry); partition 2: the ext4 root (LABEL=vmkit-root, found by
# label by the initramfs). Built without any mount: mkfs.vfat + mcopy + syslinux --install
# (mtools) on the partition image, sfdisk on the disk image, dd to place both.
# vmkit itself still boots the kernel directly (image.json "boot"): faster, see doc/images.md.
BOOT_CFG="DEFAULT appliance
PROMPT 0
TIMEOUT 0
LABEL appliance
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND $GUEST_CMDLINE"
truncate -s "${BOOT_SIZE_MIB}M" "$WORK/boot.raw"
mkfs.vfat -n VMKITBOOT -i 766d6b74 "$WORK/boot.raw" >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i "$WORK/boot.raw" "$STAGE/vmlinuz" ::/vmlinuz
mcopy -i "$WORK/boot.raw" "$STAGE/initrd.img" ::/initrd.img
printf '%s\n' "$BOOT_CFG" > "$WORK/syslinux.cfg"
mcopy -i "$WORK/boot.raw" "$WORK/syslinux.cfg" ::/syslinux.cfg
mmd -i "$WORK/boot.raw" ::/EFI ::/EFI/BOOT
mcopy -i "$WORK/boot.raw" /usr/lib/SYSLINUX.EFI/efi64/syslinux.efi ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$WORK/boot.raw" /usr/lib/syslinux/modules/efi64/ldlinux.e64 ::/EFI/BOOT/ldlinux.e64
mcopy -i "$WORK/boot.raw" "$WORK/syslinux.cfg" ::/EFI/BOOT/syslinux.cfg
syslinux --install "$WORK/boot.raw"
BOOT_START=2048
ROOT_START=$((BOOT_START + BOOT_SIZE_MIB * 2048))
truncate -s "$(((ROOT_START / 2048 + ROOT_SIZE_MIB) * 1024 * 1024))" "$WORK/disk.raw"
# type ef: the EFI system partition (OVMF reads any FAT partition; BIOS boots the active one)
printf 'label: dos\nlabel-id: 0x766d6b74\nstart=%s, size=%s, type=ef, bootable\nstart=%s, type=83\n' \
	"$BOOT_START" "$((BOOT_SIZE_MIB * 2048))" "$ROOT_START" | sfdisk -q "$WORK/disk.raw" >&2
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$WORK/disk.raw" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/boot.raw" of="$WORK/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$WORK/root.raw" of="$WORK/disk.raw" bs=1M seek="$((1 + BOOT_SIZE_MIB))" conv=notrunc,sparse status=none
rm -f "$WORK/boot.raw" "$WORK/root.raw"
qemu-img convert -f raw -O qcow2 "$WORK/disk.raw" "$STAGE/root.qcow2"

# --- metadata -------------------------------------------------------------------------------
VERSION="$(date -u +%Y%m%d)-${HASH:0:12}"
if [ "$KERNEL_FLAVOR" = cloud-amd64 ]; then
	DESCRIPTION="vmkit built-in appliance (Debian cloud kernel + busybox)"
else
	DESCRIPTION="vmkit built-in appliance (Debian $KERNEL_FLAVOR kernel + busybox)"
fi
json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
cat > "$STAGE/image.json" <<EOF
{
  "name": "appliance",
  "version": "$VERSION",
  "description": $(json_str "$DESCRIPTION"),
  "arch": "x86_64",
  "boot": {
    "kernel": "vmlinuz",
    "initrd": "initrd.img",
    "cmdline": $(json_str "$GUEST_CMDLINE")
  },
  "defaults": { "cpus": 1, "memoryMiB": 256 },
  "nicModels": [$GUEST_NIC_MODELS],
  "display": "none",
  "disks": [{ "file": "root.qcow2", "format": "qcow2" }],
  "kernelPackage": $(json_str "$KPKG $KPKG_VERSION")
}
EOF
echo "$HASH" > "$STAGE/.build-hash"

# --- publish atomically ------------------------------------------------------------------
if [ -e "$OUTDIR" ]; then
	mv "$OUTDIR" "$OUTDIR.old-$$"
	mv "$STAGE" "$OUTDIR"
	rm -rf "$OUTDIR.old-$$"
else
	mv "$STAGE" "$OUTDIR"
fi
log "built $OUTDIR ($KPKG $KPKG_VERSION, version $VERSION)"
