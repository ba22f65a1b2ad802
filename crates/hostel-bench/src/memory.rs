//! Host memory of a VM process, split into the guest's own RAM and what the VMM costs on top.
//!
//! RSS alone would charge a VMM for the pages its guest touched; the guest's RAM is the same
//! whoever runs it, so the figure that compares VMMs is RSS minus the guest-RAM mapping.

use std::path::Path;

/// How to recognise the mapping that holds guest RAM in `/proc/PID/smaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestRam {
    /// A memfd memory backend: the mapping's path starts with this (`/memfd:NAME`).
    Memfd(String),
    /// QEMU's default RAM: an anonymous private mapping of the guest's size; QEMU may round
    /// it up for alignment, so up to `slack_kib` more is accepted.
    Anonymous { size_kib: u64, slack_kib: u64 },
}

impl GuestRam {
    /// QEMU's default `-m` RAM of `mib` MiB.
    pub fn anonymous_mib(mib: u64) -> Self {
        GuestRam::Anonymous {
            size_kib: mib * 1024,
            slack_kib: 4 * 1024,
        }
    }

    fn matches(&self, m: &Mapping) -> bool {
        match self {
            GuestRam::Memfd(prefix) => m.path.starts_with(prefix.as_str()),
            GuestRam::Anonymous {
                size_kib,
                slack_kib,
            } => {
                m.path.is_empty()
                    && m.perms.starts_with("rw")
                    && (*size_kib..=size_kib + slack_kib).contains(&m.size_kib)
            }
        }
    }
}

/// One process's resident memory, in KiB, by where it goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemSample {
    /// Resident set of the whole process.
    pub rss_kib: u64,
    /// Resident part of the guest-RAM mapping.
    pub guest_kib: u64,
    /// Resident part of TCG's translated-code cache (the one anonymous `rwx` mapping): it is
    /// bounded by `-accel tcg,tb-size=`, so it is worth seeing on its own.
    pub tcg_kib: u64,
    /// Resident file-backed pages (binary, libraries, mapped images): page cache that other
    /// VMs on the host share.
    pub file_kib: u64,
}

impl MemSample {
    /// What the VMM costs beyond the guest's RAM.
    pub fn overhead_kib(&self) -> u64 {
        self.rss_kib.saturating_sub(self.guest_kib)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MemError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no guest-RAM mapping ({0:?}) in the process's smaps")]
    NoGuestRam(GuestRam),
}

/// Samples `/proc/PID/smaps` of a VMM process.
pub fn sample(pid: i32, guest: &GuestRam) -> Result<MemSample, MemError> {
    let text = read(&format!("/proc/{pid}/smaps"))?;
    split(&parse_smaps(&text), guest)
}

/// Resident set of any process (for the `hostel run` process itself), in KiB.
pub fn rss_kib(pid: i32) -> Result<u64, MemError> {
    let text = read(&format!("/proc/{pid}/smaps_rollup"))?;
    Ok(text.lines().find_map(|l| field_kib(l, "Rss:")).unwrap_or(0))
}

fn read(path: &str) -> Result<String, MemError> {
    std::fs::read_to_string(Path::new(path)).map_err(|source| MemError::Read {
        path: path.to_owned(),
        source,
    })
}

/// One entry of smaps: the header line's permissions and path, and two of its fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    pub perms: String,
    pub path: String,
    pub size_kib: u64,
    pub rss_kib: u64,
}

/// Parses the text of `/proc/PID/smaps`.
pub fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        if let Some(m) = parse_header(line) {
            out.push(m);
        } else if let Some(cur) = out.last_mut() {
            if let Some(v) = field_kib(line, "Size:") {
                cur.size_kib = v;
            } else if let Some(v) = field_kib(line, "Rss:") {
                cur.rss_kib = v;
            }
        }
    }
    out
}

/// A header is `START-END PERMS OFFSET DEV INODE [PATH]`; field lines start with `Name:`.
fn parse_header(line: &str) -> Option<Mapping> {
    let mut parts = line.splitn(6, char::is_whitespace);
    let range = parts.next()?;
    let (start, end) = range.split_once('-')?;
    if u64::from_str_radix(start, 16).is_err() || u64::from_str_radix(end, 16).is_err() {
        return None;
    }
    let perms = parts.next()?.to_owned();
    let _offset = parts.next()?;
    let _dev = parts.next()?;
    let _inode = parts.next()?;
    let path = parts.next().unwrap_or("").trim().to_owned();
    Some(Mapping {
        perms,
        path,
        ..Default::default()
    })
}

fn field_kib(line: &str, name: &str) -> Option<u64> {
    let rest = line.strip_prefix(name)?;
    rest.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// Splits parsed mappings into a sample; fails when no mapping is guest RAM, since the
/// overhead would then silently include the whole guest.
pub fn split(maps: &[Mapping], guest: &GuestRam) -> Result<MemSample, MemError> {
    let mut s = MemSample::default();
    let mut found = false;
    for m in maps {
        s.rss_kib += m.rss_kib;
        if !found && guest.matches(m) {
            s.guest_kib += m.rss_kib;
            found = true;
        } else if m.path.is_empty() && m.perms.starts_with("rwx") {
            s.tcg_kib += m.rss_kib;
        } else if m.path.starts_with('/') && !m.path.starts_with("/memfd:") {
            s.file_kib += m.rss_kib;
        }
    }
    if found {
        Ok(s)
    } else {
        Err(MemError::NoGuestRam(guest.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55dc1d82e000-55dc1dc35000 r--p 00000000 fe:00 10199053                   /usr/bin/qemu-system-x86_64
Size:               4124 kB
Rss:                4000 kB
7f16fbe00000-7f1703e00000 rw-p 00000000 00:00 0 
Size:             131072 kB
Rss:              120832 kB
7f1704000000-7f1743fff000 rwxp 00000000 00:00 0 
Size:            1048572 kB
Rss:               47104 kB
7f0000000000-7f0008000000 rw-s 00000000 00:01 1234                       /memfd:memory-backend-memfd (deleted)
Size:             131072 kB
Rss:               20000 kB
55dc23428000-55dc245d0000 rw-p 00000000 00:00 0                          [heap]
Size:              18080 kB
Rss:                5204 kB
";

    #[test]
    fn parses_headers_and_fields() {
        let maps = parse_smaps(SMAPS);
        assert_eq!(maps.len(), 5);
        assert_eq!(maps[0].path, "/usr/bin/qemu-system-x86_64");
        assert_eq!(maps[1].path, "");
        assert_eq!(maps[1].size_kib, 131072);
        assert_eq!(maps[2].perms, "rwxp");
        assert_eq!(maps[4].path, "[heap]");
    }

    #[test]
    fn anonymous_guest_ram_is_found_by_size() {
        let maps = parse_smaps(SMAPS);
        let s = split(&maps, &GuestRam::anonymous_mib(128)).unwrap();
        assert_eq!(s.rss_kib, 4000 + 120832 + 47104 + 20000 + 5204);
        assert_eq!(s.guest_kib, 120832);
        assert_eq!(s.tcg_kib, 47104);
        assert_eq!(s.file_kib, 4000);
        assert_eq!(s.overhead_kib(), s.rss_kib - 120832);
    }

    #[test]
    fn memfd_guest_ram_is_found_by_name() {
        let maps = parse_smaps(SMAPS);
        let s = split(&maps, &GuestRam::Memfd("/memfd:memory-backend".into())).unwrap();
        assert_eq!(s.guest_kib, 20000);
        // The 128 MiB anonymous mapping is then just overhead.
        assert_eq!(s.overhead_kib(), 4000 + 120832 + 47104 + 5204);
    }

    #[test]
    fn missing_guest_ram_is_an_error() {
        let maps = parse_smaps(SMAPS);
        assert!(split(&maps, &GuestRam::anonymous_mib(512)).is_err());
    }
}
