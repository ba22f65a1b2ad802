#!/bin/sh
# hostel's initramfs for the images it builds: load the disk drivers listed in /modules (in
# order), mount the root the kernel command line names, hand over to its init. Shell
# builtins wherever possible: every process spawned costs tens of milliseconds under TCG.
# On failure it says what went wrong on the console and gives the console a rescue shell.
PATH=/bin
busybox mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
busybox mount -t proc -o nosuid,nodev,noexec proc /proc
exec </dev/console >/dev/console 2>&1

fail() {
  echo "hostel-initrd: $*"
  echo "hostel-initrd: starting a shell on the console (the kernel command line: $cmdline)"
  exec sh
}

read -r cmdline </proc/cmdline
root=
fstype=ext4
flags=
mode=rw
init=/sbin/init
for arg in $cmdline; do
  case "$arg" in
    root=*) root=${arg#root=} ;;
    rootfstype=*) fstype=${arg#rootfstype=} ;;
    rootflags=*) flags=,${arg#rootflags=} ;;
    init=*) init=${arg#init=} ;;
    ro) mode=ro ;;
    rw) mode=rw ;;
  esac
done
case "$root" in
  /dev/*) ;;
  '') fail "no root= on the kernel command line" ;;
  *) fail "root=$root: only a device path (/dev/...) is understood here" ;;
esac

while read -r module; do
  busybox insmod "/lib/modules/$module.ko" || fail "cannot load module $module"
done </modules

# The disk's node appears when its driver probes it, normally during the insmod above.
tries=0
while [ ! -b "$root" ]; do
  tries=$((tries + 1))
  [ "$tries" -gt 500 ] && fail "root device $root did not appear within 10 s"
  busybox usleep 20000
done

busybox mount -t "$fstype" -o "$mode$flags" "$root" /newroot \
  || fail "cannot mount $root ($fstype, $mode$flags)"
[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || fail "$root has no $init"
busybox umount /proc
busybox mount --move /dev /newroot/dev || fail "cannot move /dev into the root"
exec busybox switch_root /newroot "$init"
