#!/usr/bin/env bash
# Builds the guest assets every test and benchmark boots: the stock Debian cloud kernel
# (vmlinuz, plus the uncompressed PVH-bootable vmlinux) and a busybox initramfs carrying that
# kernel's virtio modules and hostel's init (guest/init). Also initrd-iperf.img: the same
# initramfs with the host's iperf3 and its shared libraries appended as a second cpio archive
# (the kernel unpacks concatenated archives in order), for `make bench-net`. Idempotent and
# cached: a second run with the same kernel package and the same inputs does nothing.
#
# Usage: guest/build.sh [OUT_DIR]   (default: target/guest)
# Needs (installed by `make deps`): apt-get, dpkg, depmod (kmod), lz4, cpio, busybox-static,
# iperf3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-target/guest}" && cd "${1:-target/guest}" && pwd)
work="$out/work"

# Modules the init may load, each group in load order (dependencies first). The init decides
# at boot which groups the machine's devices need, so a VM pays only for what it has.
declare -A groups=(
  [mmio]="virtio_mmio"
  [pci]="virtio_pci"
  [net]="virtio_net"
  [blk]="virtio_blk"
  [vsock]="vmw_vsock_virtio_transport"
  [button]="button evdev"
)

iperf=$(command -v iperf3 || true)
[ -n "$iperf" ] || { echo "guest: iperf3 not installed (make deps)" >&2; exit 1; }

inputs_hash() {
  cat "$here/build.sh" "$here/init" "$here/udhcpc.script" /bin/busybox "$iperf" \
    | sha256sum | cut -c1-16
}

kernel_pkg() {
  # The meta package names the concrete image package of the current kernel ABI.
  apt-cache depends linux-image-cloud-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

pkg=$(kernel_pkg || true)
if [ -z "$pkg" ]; then
  if [ -f "$out/.stamp" ]; then
    echo "guest: apt knows no linux-image-cloud-amd64 (offline?); keeping cached assets" >&2
    exit 0
  fi
  echo "guest: cannot resolve linux-image-cloud-amd64; run 'apt-get update' first" >&2
  exit 1
fi
stamp="$pkg $(inputs_hash)"
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ] \
   && [ -s "$out/vmlinuz" ] && [ -s "$out/vmlinux" ] && [ -s "$out/initrd.img" ] \
   && [ -s "$out/initrd-iperf.img" ]; then
  echo "guest: up to date ($pkg)"
  exit 0
fi

rm -rf "$work"
mkdir -p "$work/deb" "$work/kernel" "$work/initrd"
echo "guest: fetching $pkg"
(cd "$work/deb" && apt-get download "$pkg" >/dev/null 2>&1) || {
  echo "guest: apt-get download $pkg failed" >&2; exit 1; }
dpkg -x "$work"/deb/*.deb "$work/kernel"
kver=$(ls "$work/kernel/lib/modules")
moddir="$work/kernel/lib/modules/$kver"
# The package ships no modules.dep; compute it so the load order below is the kernel's own.
depmod -b "$work/kernel" "$kver"

cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"

# extract-vmlinux for an LZ4 kernel: the payload starts at the legacy LZ4 frame magic.
offset=$(grep -obUaP '\x02\x21\x4c\x18' "$work/vmlinuz" | head -n1 | cut -d: -f1)
[ -n "$offset" ] || { echo "guest: no LZ4 payload in vmlinuz-$kver" >&2; exit 1; }
tail -c +"$((offset + 1))" "$work/vmlinuz" | lz4 -dc > "$work/vmlinux" 2>/dev/null || true
if [ "$(head -c4 "$work/vmlinux" | od -An -tx1 | tr -d ' ')" != "7f454c46" ]; then
  echo "guest: extracted vmlinux is not an ELF file" >&2; exit 1
fi

# Resolve each group to module files in dependency order from modules.dep.
deps_of() { # prints the dependency chain of one module, dependencies first
  local path line
  path=$(awk -F: -v m="/$1.ko" 'index($1, m) && substr($1, length($1)-length(m)+1) == m {print $1; exit}' "$moddir/modules.dep")
  [ -n "$path" ] || { echo "guest: module $1 not in $kver" >&2; return 1; }
  line=$(grep "^$path:" "$moddir/modules.dep" | cut -d: -f2)
  # modules.dep lists what a module needs nearest-first; load the farthest first.
  for d in $line; do echo "$d"; done | tac
  echo "$path"
}
ird="$work/initrd"
mkdir -p "$ird"/{bin,sbin,etc/hostel,proc,sys,dev,tmp,run,root,lib/modules,usr/share/udhcpc}
for g in "${!groups[@]}"; do
  : > "$ird/etc/hostel/modules.$g"
  for m in ${groups[$g]}; do
    deps_of "$m" | while read -r p; do
      name=$(basename "$p" .ko)
      cp -n "$moddir/$p" "$ird/lib/modules/$name.ko"
      grep -qx "$name" "$ird/etc/hostel/modules.$g" || echo "$name" >> "$ird/etc/hostel/modules.$g"
    done
  done
done
cp /bin/busybox "$ird/bin/busybox"
for applet in $("$ird/bin/busybox" --list); do
  [ -e "$ird/bin/$applet" ] || ln -s busybox "$ird/bin/$applet"
done
install -m 0755 "$here/init" "$ird/init"
install -m 0755 "$here/udhcpc.script" "$ird/usr/share/udhcpc/default.script"
echo "$kver" > "$ird/etc/hostel/kernel"
# Uncompressed: the guest then spends no boot time decompressing under emulation.
(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) > "$work/initrd.img"

# iperf3 with the libraries and loader ldd names, at the paths the binary looks them up.
ipd="$work/iperf3"
mkdir -p "$ipd/bin"
cp "$iperf" "$ipd/bin/iperf3"
for lib in $(ldd "$iperf" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  mkdir -p "$ipd$(dirname "$lib")"
  cp -L "$lib" "$ipd$lib"
done
(cd "$ipd" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) > "$work/iperf3.cpio"
cat "$work/initrd.img" "$work/iperf3.cpio" > "$work/initrd-iperf.img"

mv "$work/vmlinuz" "$out/vmlinuz"
mv "$work/vmlinux" "$out/vmlinux"
mv "$work/initrd.img" "$out/initrd.img"
mv "$work/initrd-iperf.img" "$out/initrd-iperf.img"
echo "$kver" > "$out/kernel-version"
rm -rf "$work"
echo "$stamp" > "$out/.stamp"
echo "guest: built $out (kernel $kver)"
