#!/usr/bin/env bash
# Sets up everything vmkit needs on a Debian 12 host, idempotently: system packages (apt),
# npm dependencies, the TypeScript build and the built-in appliance. Run as root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# qemu-system-x86/qemu-utils: the hypervisor and volumes; busybox-static, e2fsprogs, cpio:
# the appliance build; dosfstools/mtools: config drives; iproute2, nftables, dnsmasq-base:
# networks; curl, socat: the demo and tests; chromium, chromium-driver: the web console's
# browser tests (driven by playwright-core, which downloads no browser of its own);
# etcd-server, etcd-client (etcdctl): the cluster store (tests run their own etcd processes);
# iputils-arping, conntrack: floating forward addresses are announced with gratuitous ARP, and a
# migration source forgets the tracked connections that led to its copy of the guest;
# util-linux: setpriv, which drops each QEMU to its guest uid (essential, listed to be explicit);
# mmdebstrap, extlinux, syslinux-common, fdisk: "vmkit image build-debian" (guest/debian/build.sh);
# openssh-client: the Debian guest test logs in with ssh; qemu-guest-agent: the appliance build
# copies its qemu-ga; syslinux, syslinux-efi: the appliance's own boot loader (BIOS and UEFI);
# ovmf: UEFI firmware for --firmware uefi.
PACKAGES=(qemu-system-x86 qemu-utils busybox-static e2fsprogs cpio gzip dosfstools mtools iproute2 nftables dnsmasq-base curl socat ca-certificates chromium chromium-driver etcd-server etcd-client iputils-arping conntrack util-linux mmdebstrap extlinux syslinux-common fdisk openssh-client qemu-guest-agent syslinux syslinux-efi ovmf)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "These packages are missing: ${missing[*]} — run this as root (or install them with apt-get)." >&2
    exit 1
  fi
  log "Installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Installing etcd-server starts Debian's etcd service on 2379. vmkit's tests never use it
  # (they start their own etcd on other ports), so the one just installed is stopped and
  # disabled where systemd runs. Without systemd nothing is killed: the tests just ignore it.
  if printf '%s\n' "${missing[@]}" | grep -qx etcd-server && [ -d /run/systemd/system ]; then
    log "Stopping and disabling the packaged etcd service (tests run their own)"
    systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
fi

# Every guest's QEMU runs under its own uid and opens /dev/net/tun itself to attach to the tap
# vmkit made for it. Debian's udev rule makes the node 0666 (attaching to someone else's tap
# or creating one still needs CAP_NET_ADMIN); hosts without udev (containers) leave it 0600.
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ] && [ "$(id -u)" = 0 ]; then
  log "Making /dev/net/tun 0666 (Debian's udev default) for unprivileged QEMU"
  chmod 0666 /dev/net/tun
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "Installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

log "Building vmkit"
npx tsc -p tsconfig.json
npx tsc -p tsconfig.unit.json
npx tsc -p tsconfig.test.json

log "Building the web console"
npm run --silent build:web

log "Building the built-in appliance"
bash guest/build.sh .cache/appliance
# The same appliance on Debian's generic kernel, which has the e1000 and rtl8139 drivers the
# cloud kernel lacks: the network tests boot it to read the NIC model from inside the guest.
KERNEL_FLAVOR=amd64 GUEST_EXTRA_MODULES="e1000 8139cp 8139too" \
  GUEST_NIC_MODELS='"virtio-net","e1000","rtl8139"' bash guest/build.sh .cache/appliance-net

# A real distribution for test/debian.test.ts (cloud kernel, systemd, cloud-init, openssh):
# built once from the host's Debian mirror (3-5 min), then reused while its inputs are unchanged.
log "Building the Debian test image (skipped when cached)"
bash guest/debian/build.sh .cache/debian-bookworm
