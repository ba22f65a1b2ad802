//! Running commands inside a build root. Every mount a build makes (proc, sys, dev, a loop
//! mounted image) lives in a private mount namespace created by `unshare`: when the build ends
//! or is killed the kernel drops them, so a failure can never leave the host's /dev mounted
//! under a directory that is about to be deleted.

use crate::cmd;
use crate::error::Result;
use crate::progress::{CancelToken, Phase, Reporter};
use std::path::Path;
use std::process::Command;

/// Mounts the pseudo filesystems package scripts need, then runs `script` with `sh -eu` in
/// the chroot. `$ROOT` is the root in `prelude`, which runs on the host side first (a loop
/// mount, say) inside the same namespace.
const WRAPPER: &str = r#"set -eu
ROOT="$1"; SCRIPT="$2"; PRELUDE="$3"
eval "$PRELUDE"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount -t tmpfs tmpfs "$ROOT/tmp"
if [ -L "$ROOT/etc/resolv.conf" ] || [ -e "$ROOT/etc/resolv.conf" ]; then
  mv "$ROOT/etc/resolv.conf" "$ROOT/etc/resolv.conf.hostel-saved"
fi
cat /etc/resolv.conf > "$ROOT/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
rc=0
chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
  /bin/sh -euc "$SCRIPT" || rc=$?
rm -f "$ROOT/usr/sbin/policy-rc.d"
if [ -L "$ROOT/etc/resolv.conf" ]; then
  # A package (resolvconf) made it a link during the run: that is the guest's own setup.
  rm -f "$ROOT/etc/resolv.conf.hostel-saved"
else
  rm -f "$ROOT/etc/resolv.conf"
  if [ -e "$ROOT/etc/resolv.conf.hostel-saved" ] || [ -L "$ROOT/etc/resolv.conf.hostel-saved" ]; then
    mv "$ROOT/etc/resolv.conf.hostel-saved" "$ROOT/etc/resolv.conf"
  fi
fi
umount "$ROOT/tmp" "$ROOT/dev" "$ROOT/sys" "$ROOT/proc"
exit $rc
"#;

/// Runs `script` in the chroot at `root` (after `prelude` on the host), reporting apt's
/// progress as the Packages phase.
pub(crate) fn run(
    root: &Path,
    prelude: &str,
    script: &str,
    report: &Reporter<'_>,
    cancel: &CancelToken,
) -> Result<()> {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "--kill-child",
    ])
    .args(["sh", "-c", WRAPPER, "hostel-chroot"])
    .arg(root)
    .arg(format!("{APT_FN}\n{script}"))
    .arg(prelude);
    let mut apt = AptProgress::default();
    cmd::stream(&mut cmd, cancel, |line| {
        report.log_line(line);
        if let Some((fraction, what)) = apt.parse(line) {
            report.report(Phase::Packages, fraction, what);
        }
    })
}

/// Reads `APT::Status-Fd` lines: downloads are the first 40% of the phase, dpkg the rest.
#[derive(Default)]
pub(crate) struct AptProgress {
    /// Which apt-get run of the script this is (update, install...): the fraction restarts.
    _runs: u32,
}

impl AptProgress {
    pub fn parse(&mut self, line: &str) -> Option<(f64, String)> {
        let mut parts = line.splitn(4, ':');
        let kind = parts.next()?;
        let _item = parts.next()?;
        let pct: f64 = parts.next()?.trim().parse().ok()?;
        let what = parts.next().unwrap_or("").to_string();
        match kind {
            "dlstatus" => Some((0.4 * pct / 100.0, what)),
            "pmstatus" => Some((0.4 + 0.6 * pct / 100.0, what)),
            _ => None,
        }
    }
}

/// The apt-get invocation used by build scripts (a shell function defined by [`run`]).
pub(crate) const APT_GET: &str = "hostel_apt";

/// apt's machine-readable progress goes to fd 3, joined to stdout. `APT::Status-Fd=1` itself
/// breaks dpkg's stdout: maintainer scripts' `echo` then fails with EIO and the install fails.
const APT_FN: &str = "hostel_apt() { apt-get -q -y -o APT::Status-Fd=3 -o Dpkg::Use-Pty=0 \\
 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \"$@\" 3>&1; }";

/// Quotes `s` for a POSIX shell.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Debian package names: refuse anything else before it reaches a shell script.
pub(crate) fn valid_package(p: &str) -> bool {
    !p.is_empty()
        && p.len() < 128
        && p.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.:=~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_status_lines_become_fractions() {
        let mut a = AptProgress::default();
        let (f, w) = a.parse("dlstatus:3:50.0:Retrieving file 3 of 6").unwrap();
        assert!((f - 0.2).abs() < 1e-9);
        assert_eq!(w, "Retrieving file 3 of 6");
        let (f, _) = a.parse("pmstatus:nginx:100:Installed nginx").unwrap();
        assert!((f - 1.0).abs() < 1e-9);
        assert!(a.parse("Setting up nginx (1.22)").is_none());
    }

    #[test]
    fn package_names_are_checked_and_quoting_is_safe() {
        assert!(valid_package("linux-image-cloud-amd64"));
        assert!(valid_package("libstdc++6"));
        assert!(!valid_package("x; rm -rf /"));
        assert!(!valid_package("-o"));
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
