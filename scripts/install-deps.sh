#!/usr/bin/env bash
# Installs the Debian packages hostel builds, tests and runs with, then checks that every command
# it needs runs. Quick when all are there.
#
# The machine image may ship a newer qemu-utils (from backports) than Debian 12's
# qemu-system-x86: installing the one would remove the other, and with it qemu-img. Both QEMU
# packages are taken from the same Debian 12 version, in the same apt call as everything else.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
pkgs=(
  build-essential pkg-config   # the Rust build: cc as linker, the bundled SQLite
  busybox-static kmod lz4 cpio # guest initramfs: busybox, depmod, kernel extraction, cpio
  iproute2                     # TAP devices and network namespaces in tests
  debootstrap debian-archive-keyring e2fsprogs util-linux mount  # OS image builds
  dosfstools mtools            # cloud-init NoCloud seed disks (vfat)
  openssh-client curl          # image tests: SSH and HTTP into guests
  postgresql-client openssl    # image tests: the database template's login and TLS
  tcpdump                      # network tests: captures on uplinks
  ethtool                      # edge tests: offloads off on the external veth (software GSO)
  iperf3 openvswitch-switch    # bench-net: iperf3 in the guests, Open vSwitch to compare
  nftables                     # bench-firewall: nftables in a namespace as the kernel reference
  python3 python3-venv         # the OpenAPI conformance run (schemathesis in a virtualenv)
  clamav clamav-testfiles yara # hostel-scan's references: clamscan (run with --database=DIR only,
                               # no freshclam), ClamAV's test files, Debian's yara; bench-scan
  runc                         # VPSs: the OCI runtime (hostel-vps)
  ca-certificates
)
# Commands the build, the tests and the daemon run; each must start after the install.
cmds=(cc qemu-system-x86_64 qemu-img busybox depmod lz4 cpio ip debootstrap mkfs.ext4 mkfs.vfat
  mcopy ssh curl psql openssl tcpdump ethtool iperf3 ovs-vswitchd nft python3
  qemu-storage-daemon losetup runc nsenter  # bench-storage's reference (qemu-system-common, with qemu-system-x86); hostel-pool's loop-device test; VPSs (hostel-vps)
  clamscan yara debugfs)  # hostel-scan's comparison tests and bench-scan; debugfs edits test images unmounted

installed() { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | grep -q "ok installed"; }
installed_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null; }

missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
# QEMU: the system emulator and qemu-utils of one version (the candidate of qemu-system-x86).
qemu_want=""
if ! installed qemu-system-x86 || ! installed qemu-utils \
   || [ "$(installed_version qemu-system-x86)" != "$(installed_version qemu-utils)" ]; then
  qemu_want=yes
fi
if ((${#missing[@]})) || [ -n "$qemu_want" ] || ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi
if ((${#missing[@]})) || [ -n "$qemu_want" ]; then
  if [ -n "$qemu_want" ]; then
    v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    [ -n "$v" ] && [ "$v" != "(none)" ] || { echo "deps: apt has no qemu-system-x86 candidate" >&2; exit 1; }
    missing+=("qemu-system-x86=$v" "qemu-utils=$v")
  fi
  echo "deps: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    --allow-downgrades "${missing[@]}" >/dev/null
fi
bad=()
for c in "${cmds[@]}"; do command -v "$c" >/dev/null 2>&1 || bad+=("$c"); done
qemu-img --version >/dev/null 2>&1 || bad+=("qemu-img (does not start)")
nft --version >/dev/null 2>&1 || bad+=("nft (does not start)")
clamscan --version >/dev/null 2>&1 || bad+=("clamscan (does not start)")
[ -d /usr/share/clamav-testfiles ] || bad+=("/usr/share/clamav-testfiles")
qemu-system-x86_64 --version >/dev/null 2>&1 || bad+=("qemu-system-x86_64 (does not start)")
if ((${#bad[@]})); then
  echo "deps: after the install these commands are still missing or broken: ${bad[*]}" >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "deps: cargo (Rust toolchain) is required" >&2; exit 1; }
