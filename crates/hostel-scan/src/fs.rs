//! The file-level tier: a volume (a snapshot of it) read by hostel itself as an ext4
//! filesystem, read-only and in userspace (`ext4-view`: pure Rust, built against corrupt
//! input; never a kernel mount of a customer's filesystem), every regular file scanned with
//! every signature. The walk's work is bounded (depth, entries, bytes per file) so a hostile
//! filesystem (directory loops through hard links, huge sparse files, corrupt inodes) ends
//! with its findings and errors, never a hang; a panic inside the reader is caught and
//! reported.
//!
//! Incremental: the record of the previous scan (per path: size, mtime, creation time, mode)
//! lets the next scan skip unchanged files (their findings carried over). `ext4-view` 1.0
//! exposes neither inode numbers nor ctime nor extents, so a tenant that rewrites a file in
//! place with its size kept and its mtime set back escapes an incremental pass; the inline
//! tier sees those writes, and a full pass (no record) sees the file.

use crate::engine::{Engine, FileLimits, Finding};
use ext4_view::{Ext4, Ext4Error, Ext4Read};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where a filesystem's bytes come from: a raw image file, a pool volume (later, through
/// `hostel-pool`), or memory.
pub trait BlockSource: Send + Sync {
    /// Length in bytes.
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`; an error when the range is not all there.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), std::io::Error>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BlockSource for std::fs::File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), std::io::Error> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// A volume in memory (tests, imported images already read).
impl BlockSource for std::sync::RwLock<Vec<u8>> {
    fn len(&self) -> u64 {
        self.read().map(|v| v.len() as u64).unwrap_or(0)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), std::io::Error> {
        let v = self
            .read()
            .map_err(|_| std::io::Error::other("volume lock poisoned"))?;
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let src = v
            .get(start..start.checked_add(buf.len()).ok_or_else(eof)?)
            .ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

fn eof() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::UnexpectedEof)
}

struct Reader(Arc<dyn BlockSource>);

impl Ext4Read for Reader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0
            .read_at(start_byte, dst)
            .map_err(|e| Box::new(e) as _)
    }
}

/// Bounds of one filesystem walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkLimits {
    pub max_depth: usize,
    pub max_entries: u64,
    pub file: FileLimits,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits {
            max_depth: 64,
            max_entries: 1_000_000,
            file: FileLimits::default(),
        }
    }
}

/// What a file looked like when it was scanned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    pub size: u64,
    pub mtime: (i64, u32),
    pub crtime: Option<(i64, u32)>,
    pub mode: u16,
    pub findings: Vec<Finding>,
}

/// The previous scan's record, by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScanRecord {
    pub files: BTreeMap<String, FileStamp>,
}

/// A finding with the file it is in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PathFinding {
    pub path: String,
    #[serde(flatten)]
    pub finding: Finding,
}

/// A path the walk could not read, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WalkError {
    pub path: String,
    pub error: String,
}

/// The outcome of one filesystem's scan.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImageScan {
    pub findings: Vec<PathFinding>,
    pub files_scanned: u64,
    pub files_unchanged: u64,
    pub bytes_scanned: u64,
    pub errors: Vec<WalkError>,
    /// The walk stopped at a limit (entries or depth): not every file was seen.
    pub walk_truncated: bool,
    /// Files not scanned whole (too large) or whose scan ran out of budget.
    pub partial_files: Vec<String>,
    #[serde(skip)]
    pub record: ScanRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("not a readable ext4 filesystem: {0}")]
    NotExt4(#[source] Ext4Error),
    #[error("the filesystem reader panicked on this filesystem: {0}")]
    ReaderPanicked(String),
}

/// A path's bytes as a string, injectively: non-UTF-8 bytes as `\xNN`, `\` as `\\`.
pub fn path_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Scans every regular file of the ext4 filesystem in `src`; with `prev`, only files whose
/// stamp changed (`prev` must come from a scan with the same signatures).
pub fn scan_ext4(
    src: Arc<dyn BlockSource>,
    engine: &Engine,
    prev: Option<&ScanRecord>,
    limits: &WalkLimits,
) -> Result<ImageScan, FsError> {
    let run = std::panic::AssertUnwindSafe(|| -> Result<ImageScan, FsError> {
        let fs = Ext4::load(Box::new(Reader(src))).map_err(FsError::NotExt4)?;
        let mut out = ImageScan::default();
        walk(&fs, engine, prev, limits, &mut out);
        out.findings.sort();
        Ok(out)
    });
    match std::panic::catch_unwind(run) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%msg, "ext4 reader panicked");
            Err(FsError::ReaderPanicked(msg))
        }
    }
}

fn walk(
    fs: &Ext4,
    engine: &Engine,
    prev: Option<&ScanRecord>,
    limits: &WalkLimits,
    out: &mut ImageScan,
) {
    let mut entries = 0u64;
    // Depth-first with an explicit stack: a directory loop ends at max_depth, a wide or
    // self-repeating tree at max_entries.
    let mut stack: Vec<(ext4_view::PathBuf, usize)> = vec![(ext4_view::PathBuf::new("/"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let dir_name = path_string(dir.as_ref());
        let rd = match fs.read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                out.errors.push(WalkError {
                    path: dir_name,
                    error: e.to_string(),
                });
                continue;
            }
        };
        for entry in rd {
            entries += 1;
            if entries > limits.max_entries {
                out.walk_truncated = true;
                return;
            }
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    out.errors.push(WalkError {
                        path: dir_name.clone(),
                        error: e.to_string(),
                    });
                    // A corrupt directory block can repeat its error forever: leave the dir.
                    break;
                }
            };
            let name = entry.file_name();
            if name.as_ref() == b"." || name.as_ref() == b".." {
                continue;
            }
            let path = entry.path();
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) => {
                    out.errors.push(WalkError {
                        path: path_string(path.as_ref()),
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            if meta.is_dir() {
                if depth + 1 >= limits.max_depth {
                    out.walk_truncated = true;
                } else {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if !meta.file_type().is_regular_file() {
                continue;
            }
            scan_file(fs, engine, prev, limits, &path, &meta, out);
        }
    }
}

fn scan_file(
    fs: &Ext4,
    engine: &Engine,
    prev: Option<&ScanRecord>,
    limits: &WalkLimits,
    path: &ext4_view::PathBuf,
    meta: &ext4_view::Metadata,
    out: &mut ImageScan,
) {
    let name = path_string(path.as_ref());
    let ts = |t: ext4_view::Timestamp| (t.seconds(), t.nanoseconds());
    let mut stamp = FileStamp {
        size: meta.len(),
        mtime: ts(meta.modified()),
        crtime: meta.created().map(ts),
        mode: meta.mode(),
        findings: Vec::new(),
    };
    if let Some(old) = prev.and_then(|p| p.files.get(&name)) {
        let same = old.size == stamp.size
            && old.mtime == stamp.mtime
            && old.crtime == stamp.crtime
            && old.mode == stamp.mode;
        if same {
            out.files_unchanged += 1;
            for f in &old.findings {
                out.findings.push(PathFinding {
                    path: name.clone(),
                    finding: f.clone(),
                });
            }
            out.record.files.insert(name, old.clone());
            return;
        }
    }
    let mut file = match fs.open(path) {
        Ok(f) => f,
        Err(e) => {
            out.errors.push(WalkError {
                path: name,
                error: e.to_string(),
            });
            return;
        }
    };
    match engine.scan_reader(&mut file, stamp.size, &limits.file) {
        Ok(scan) => {
            out.files_scanned += 1;
            out.bytes_scanned += scan.bytes;
            if scan.truncated || scan.incomplete {
                out.partial_files.push(name.clone());
            }
            for f in &scan.findings {
                out.findings.push(PathFinding {
                    path: name.clone(),
                    finding: f.clone(),
                });
            }
            stamp.findings = scan.findings;
            out.record.files.insert(name, stamp);
        }
        Err(e) => out.errors.push(WalkError {
            path: name,
            error: e.to_string(),
        }),
    }
}
