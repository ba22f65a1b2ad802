#!/usr/bin/env bash
# Installs the Debian packages hostel builds, tests and runs with. Quick when all are there.
set -euo pipefail
pkgs=(
  qemu-system-x86 qemu-utils   # the engine, and qemu-img for disk images
  busybox-static kmod lz4 cpio # guest initramfs: busybox, depmod, kernel extraction, cpio
  iproute2                     # TAP devices and network namespaces in tests
  debootstrap debian-archive-keyring e2fsprogs util-linux mount  # OS image builds
  dosfstools mtools            # cloud-init NoCloud seed disks (vfat)
  openssh-client curl          # image tests: SSH and HTTP into guests
  postgresql-client openssl    # image tests: the database template's login and TLS
  tcpdump                      # network tests: captures on uplinks
  iperf3 openvswitch-switch    # bench-net: iperf3 in the guests, Open vSwitch to compare
  ca-certificates
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The guest build resolves the kernel package through apt's lists.
if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
fi
command -v cargo >/dev/null || { echo "deps: cargo (Rust toolchain) is required" >&2; exit 1; }
