#!/usr/bin/env bash
# Installs Suricata 7 (in Debian 12 only from bookworm-backports) for the comparison tests
# (crates/hostel-ids/tests/replay.rs) and `make bench-ids`. Test set-up only: not part of
# install-deps.sh, and the backports suite is among apt's sources only for the one install.
#
# Why only then: with bookworm-backports listed, apt refuses Debian's qemu-system-x86 7.2 beside a
# backport qemu-utils ("held broken packages"; /work/shared/FACTS.md), so a later install-deps.sh
# run would fail. The source goes away again on every exit path (trap), then `apt-get update`
# forgets its package lists. No QEMU package may be touched: the install is simulated first and
# refused if apt would install, upgrade or remove any qemu* package, or remove anything at all.
#
# Idempotent: when `suricata -V` already reports 7.x nothing is installed. Afterwards it checks
# that suricata, qemu-system-x86_64 and qemu-img all run.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

check_all() {
  local status=0 cmd out
  for cmd in "suricata -V" "qemu-system-x86_64 --version" "qemu-img --version"; do
    if out=$($cmd 2>&1 | head -1) && [ -n "$out" ]; then
      echo "ok: $cmd: $out"
    else
      echo "FAILED: $cmd: $out" >&2
      status=1
    fi
  done
  return $status
}

if suricata -V 2>/dev/null | grep -q 'version 7\.'; then
  echo "suricata 7 already installed"
  check_all
  exit $?
fi

list=/etc/apt/sources.list.d/hostel-bookworm-backports.list
cleanup() {
  $SUDO rm -f "$list"
  $SUDO apt-get update -qq || echo "warning: apt-get update after removing $list failed" >&2
}
trap cleanup EXIT
echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee "$list" >/dev/null
$SUDO apt-get update -qq

sim=$(apt-get -s -t bookworm-backports install -y --no-install-recommends suricata)
removals=$(printf '%s\n' "$sim" | awk '/^Remv /{print $2}')
qemu=$(printf '%s\n' "$sim" | awk '/^(Inst|Remv|Conf) qemu/{print $2}' | sort -u)
if [ -n "$removals" ] || [ -n "$qemu" ]; then
  echo "refusing: apt would remove [$removals] / touch QEMU packages [$qemu]" >&2
  exit 1
fi
$SUDO env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q -t bookworm-backports --no-install-recommends suricata
# Debian's package starts a suricata service on a systemd host; the tests run their own.
$SUDO systemctl disable --now suricata >/dev/null 2>&1 || true

cleanup
trap - EXIT
check_all
