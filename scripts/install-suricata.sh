#!/usr/bin/env bash
# Installs Suricata 7 (only in Debian 12's bookworm-backports) for the comparison test in
# crates/hostel-ids/tests/replay.rs and for bench-ids. Not part of install-deps.sh: adding the
# backports suite changes which QEMU apt picks, and apt refuses Debian's qemu-system-x86 7.2
# beside the backport qemu-utils ("held broken packages"). So both QEMU packages come from the
# same suite as Suricata here (bookworm-backports: QEMU 10.0), in the same apt call.
#
# It simulates the install first (apt-get -s) and stops if apt would remove any package, unless
# run with --allow-removals. Afterwards it checks suricata, qemu-system-x86_64 and qemu-img run.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
allow_removals=0
[ "${1:-}" = "--allow-removals" ] && allow_removals=1

list=/etc/apt/sources.list.d/bookworm-backports.list
if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "adding bookworm-backports to $list"
  echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee "$list" >/dev/null
fi
$SUDO apt-get update -qq

pkgs=(suricata qemu-system-x86 qemu-utils)
sim=$(apt-get -s -t bookworm-backports install -y "${pkgs[@]}")
removals=$(printf '%s\n' "$sim" | awk '/^Remv /{print $2}')
if [ -n "$removals" ] && [ "$allow_removals" -ne 1 ]; then
  echo "apt would remove: $removals" >&2
  echo "not installing; rerun with --allow-removals to accept that" >&2
  exit 1
fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -t bookworm-backports "${pkgs[@]}"

status=0
for cmd in "suricata -V" "qemu-system-x86_64 --version" "qemu-img --version"; do
  if out=$($cmd 2>&1 | head -1); then
    echo "ok: $out"
  else
    echo "FAILED: $cmd" >&2
    status=1
  fi
done
exit $status
