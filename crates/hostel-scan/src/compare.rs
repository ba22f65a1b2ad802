//! The references hostel's scanner is compared with, for the tests and `make bench-scan`:
//! Debian's `clamscan` and `yara` run on the same files with the same signatures, their
//! findings parsed into the same (file, signature) pairs.
//!
//! `clamscan` runs with its format parsers and unpackers off (archives, PE, OLE2, PDF, HTML,
//! mail, …) and no heuristics: hostel scans the raw bytes of each file (unpacking is not part of
//! it), so those are the findings to agree on. ClamAV appends `.UNOFFICIAL` to the names of
//! signatures from unsigned databases; it is taken off.

use crate::hashes::{Hasher, Needed};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// clamscan on raw bytes only, every match reported.
pub const CLAMSCAN_RAW: &[&str] = &[
    "--no-summary",
    "--allmatch",
    "--infected",
    "--scan-archive=no",
    "--scan-pe=no",
    "--scan-elf=no",
    "--scan-ole2=no",
    "--scan-pdf=no",
    "--scan-swf=no",
    "--scan-html=no",
    "--scan-xmldocs=no",
    "--scan-hwp3=no",
    "--scan-onenote=no",
    "--scan-mail=no",
    "--scan-image=no",
    "--scan-image-fuzzy-hash=no",
    "--heuristic-alerts=no",
    "--max-filesize=4000M",
    "--max-scansize=4000M",
];

/// Body signatures exercising the syntax, written from bytes of ClamAV's own test file
/// (`clam.exe`: its import names) and EICAR.
pub const NDB: &str = "\
Cmp.Plain:0:*:4b45524e454c33322e444c4c
Cmp.Nibble:0:*:4b45524e454c3?3?2e444c4c
Cmp.Wild:0:*:4b45524e454c????2e444c4c{1-4}4578697450726f63657373
Cmp.Alt:0:*:5553455233322e(44|45|4646)4c4c
Cmp.Star:0:*:4b45524e454c3332*434c414d657373616765426f7841
Cmp.Neg:0:*:434c41!(4e|4f)657373616765
Cmp.Offset:0:0:4d5a50
Cmp.Shift:0:0,300:4b45524e454c
Cmp.Eof:0:EOF-4,4:00000000
Cmp.Jumps:0:*:4578697450{-8}55534552{2-}4d657373616765
Cmp.Never:0:*:deadbeefcafebabe1122
Cmp.Eicar:0:*:58354f2150254041505b345c505a58353428505e2937434329377d2445494341522d5354414e444152442d414e544956495255532d544553542d46494c452124482b482a
";

/// YARA rules exercising text, hex with jumps and alternatives, counts and conditions.
pub const YARA_RULES: &str = r#"
rule CmpImports { strings: $a = "KERNEL32.DLL" $b = "ExitProcess" condition: $a and $b }
rule CmpHex { strings: $h = { 4B 45 52 4E [2-6] 2E 44 4C 4C ( 00 | 01 ) } condition: $h }
rule CmpMz { condition: uint16(0) == 0x5A4D and filesize < 100KB }
rule CmpNocase { strings: $m = "clamessagebox" nocase condition: #m >= 1 }
rule CmpEicar { strings: $e = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE" condition: $e }
rule CmpNever { strings: $n = "no-such-string-anywhere-1234" condition: $n }
"#;

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        cmd: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CompareError {
    let what = what.into();
    move |source| CompareError::Io { what, source }
}

/// Every regular file under `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Writes `ref.hdb` (MD5) and `ref.hsb` (SHA-256 and SHA-1, one of any size) made from the
/// hashes of `hashed` (every other file, alternating kinds), `ref.ndb` and `ref.yar` into `db`.
pub fn write_reference_db(db: &Path, hashed: &[PathBuf]) -> Result<(), CompareError> {
    let mut hdb = String::new();
    let mut hsb = String::new();
    for (i, f) in hashed.iter().enumerate() {
        let data = std::fs::read(f).map_err(io(f.display().to_string()))?;
        let mut h = Hasher::new(Needed {
            md5: true,
            sha1: true,
            sha256: true,
        });
        h.update(&data);
        let d = h.finish();
        let hex = |v: &Option<Vec<u8>>| {
            v.iter()
                .flatten()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let name = format!("Cmp.Hash.{i}");
        match i % 4 {
            0 => hdb.push_str(&format!("{}:{}:{name}\n", hex(&d.md5), data.len())),
            1 => hsb.push_str(&format!("{}:{}:{name}\n", hex(&d.sha256), data.len())),
            2 => hsb.push_str(&format!("{}:{}:{name}\n", hex(&d.sha1), data.len())),
            _ => hsb.push_str(&format!("{}:*:{name}:73\n", hex(&d.sha256))),
        }
    }
    for (name, text) in [
        ("ref.hdb", hdb.as_str()),
        ("ref.hsb", hsb.as_str()),
        ("ref.ndb", NDB),
    ] {
        std::fs::write(db.join(name), text).map_err(io(name))?;
    }
    Ok(())
}

/// CPU time (user + system) of this process's waited-for children so far.
pub fn children_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_CHILDREN)
}

/// CPU time of the calling thread so far.
pub fn thread_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_THREAD)
}

fn rusage_cpu(who: libc::c_int) -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointer it is given, which points at a
    // zeroed rusage of the right size owned by this frame.
    let rc = unsafe { libc::getrusage(who, ru.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: zero-initialised then filled by a successful getrusage: every field is valid.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `clamscan` with only `db` on everything under `target`: (path, signature) pairs.
pub fn clamscan(db: &Path, target: &Path) -> Result<BTreeSet<(String, String)>, CompareError> {
    let out = Command::new("clamscan")
        .args(CLAMSCAN_RAW)
        .arg(format!("--database={}", db.display()))
        .arg("-r")
        .arg(target)
        .output()
        .map_err(io("clamscan"))?;
    // 0: clean, 1: found; anything else is an error.
    if !matches!(out.status.code(), Some(0 | 1)) {
        return Err(CompareError::Failed {
            cmd: "clamscan",
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.strip_suffix(" FOUND")?;
            let (path, sig) = l.rsplit_once(": ")?;
            let sig = sig.strip_suffix(".UNOFFICIAL").unwrap_or(sig);
            Some((path.to_string(), sig.to_string()))
        })
        .collect())
}

/// Debian's `yara` with `rules` on everything under `target`, one thread: (path, rule) pairs.
pub fn yara(rules: &Path, target: &Path) -> Result<BTreeSet<(String, String)>, CompareError> {
    let out = Command::new("yara")
        .args(["-r", "-p", "1"])
        .arg(rules)
        .arg(target)
        .output()
        .map_err(io("yara"))?;
    if !out.status.success() {
        return Err(CompareError::Failed {
            cmd: "yara",
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (rule, path) = l.split_once(' ')?;
            Some((path.to_string(), rule.to_string()))
        })
        .collect())
}

/// Whether a command runs here.
pub fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
