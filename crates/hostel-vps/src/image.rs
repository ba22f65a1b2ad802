//! Image roots. A minimal one made from Debian's `busybox-static` (tests, benchmarks, a
//! VPS that runs one command); the Debian image's root comes from the image build.

use crate::{cmd, VpsError};
use std::fs;
use std::path::Path;

/// Where `busybox-static` installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Builds a busybox root at `dir` (into a sibling temporary directory, renamed when
/// complete, so a half-built root is never used). Nothing to do if `dir` exists.
pub fn build_busybox(dir: &Path) -> Result<(), VpsError> {
    if dir.join("bin/busybox").exists() {
        return Ok(());
    }
    let tmp = dir.with_extension("building");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(VpsError::io("remove", &tmp))?;
    }
    for d in [
        "bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root", "var", "usr/bin",
    ] {
        let p = tmp.join(d);
        fs::create_dir_all(&p).map_err(VpsError::io("create", &p))?;
    }
    let bb = tmp.join("bin/busybox");
    fs::copy(BUSYBOX, &bb).map_err(VpsError::io("copy", BUSYBOX))?;
    let list = cmd::run("busybox", &["--list"])?;
    for applet in list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        if applet.contains('/') || applet.starts_with('.') {
            continue;
        }
        let link = tmp.join("bin").join(applet);
        std::os::unix::fs::symlink("busybox", &link).map_err(VpsError::io("symlink", &link))?;
    }
    let files: [(&str, &str); 4] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hosts", "127.0.0.1 localhost\n"),
        ("etc/resolv.conf", ""),
    ];
    for (f, text) in files {
        let p = tmp.join(f);
        fs::write(&p, text).map_err(VpsError::io("write", &p))?;
    }
    fs::rename(&tmp, dir).map_err(VpsError::io("rename", &tmp))
}
