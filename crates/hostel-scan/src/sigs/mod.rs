//! Signature sources: parsing an operator's directory (or text) into hash, body and YARA
//! signatures. A line or file that cannot be used is refused by name with the reason; the
//! rest load, and the report counts both.

pub mod body;
pub mod hash;

use std::path::Path;

pub use body::{BodySig, Elem, Offset, Target};
pub use hash::{HashKind, HashSig};

/// Why one signature was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SigError {
    #[error("expected {want} fields, got {got}")]
    Fields { want: &'static str, got: usize },
    #[error("bad signature name (1-256 printable ASCII characters, no spaces)")]
    Name,
    #[error("target type {0} is not supported (only 0 any, 1 PE, 6 ELF)")]
    TargetType(String),
    #[error("offset {0:?} is not supported (only *, n, n,m, EOF-n, EOF-n,m)")]
    Offset(String),
    #[error("bad functionality level {0:?}")]
    Flevel(String),
    #[error("bad number {0:?} (decimal, at most 2^30)")]
    Number(String),
    #[error("hex signature: {0}")]
    Hex(String),
    #[error("a hash of {0} hex digits (want 32 MD5, 40 SHA-1 or 64 SHA-256)")]
    HashLength(usize),
    #[error("hash is not hex")]
    HashHex,
    #[error("no literal run of at least 2 exact bytes to anchor the signature on")]
    NoAnchor,
    #[error("YARA: {0}")]
    Yara(String),
    #[error("file type not supported (.hdb, .hsb, .ndb, .yar, .yara)")]
    FileType,
    #[error("cannot read: {0}")]
    Io(String),
    #[error("larger than {0} bytes")]
    TooLarge(u64),
}

/// A refused signature (or file), by name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    /// The file it came from.
    pub file: String,
    /// 1-based line, 0 for a whole file.
    pub line: usize,
    /// The signature's name when it could be read, else the line's start.
    pub name: String,
    pub reason: String,
}

/// How many signatures of each kind loaded, and which were refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoadReport {
    pub hash: usize,
    pub body: usize,
    pub yara_files: usize,
    pub refused: Vec<Refused>,
}

/// Parsed signatures, not yet compiled.
#[derive(Debug, Clone, Default)]
pub struct SigSources {
    pub hashes: Vec<HashSig>,
    pub bodies: Vec<BodySig>,
    /// (file name, rule text).
    pub yara: Vec<(String, String)>,
    pub report: LoadReport,
}

/// One signature file at most this large (the whole of ClamAV's main.hdb is ~20 MB).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// The EICAR test file, detected out of the box.
pub const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
pub const EICAR_NAME: &str = "Hostel.Test.EICAR";

impl SigSources {
    /// The built-in signatures only (EICAR, as a body signature so the inline tier finds it in
    /// a volume's bytes too).
    pub fn builtin() -> Self {
        let mut s = Self::default();
        s.bodies.push(BodySig {
            name: EICAR_NAME.to_string(),
            target: Target::Any,
            offset: Offset::Any,
            elems: EICAR
                .iter()
                .map(|&b| Elem::Byte {
                    value: b,
                    mask: 0xff,
                })
                .collect(),
        });
        s.report.body = 1;
        s
    }

    /// Adds every supported file of `dir` (sorted by name; subdirectories ignored).
    pub fn add_dir(&mut self, dir: &Path) -> Result<(), std::io::Error> {
        let mut files: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            self.add_file(&f);
        }
        Ok(())
    }

    /// Adds one file; an unreadable or unsupported file is refused as a whole.
    pub fn add_file(&mut self, path: &Path) {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if !matches!(ext.as_str(), "hdb" | "hsb" | "ndb" | "yar" | "yara") {
            self.refuse_file(&file, SigError::FileType);
            return;
        }
        let text = match read_bounded(path) {
            Ok(t) => t,
            Err(e) => {
                self.refuse_file(&file, e);
                return;
            }
        };
        self.add_text(&file, &ext, &text);
    }

    /// Adds signatures of one kind (`ext`: hdb, hsb, ndb, yar, yara) from text.
    pub fn add_text(&mut self, file: &str, ext: &str, text: &str) {
        if matches!(ext, "yar" | "yara") {
            self.yara.push((file.to_string(), text.to_string()));
            return;
        }
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let result = match ext {
                "ndb" => body::parse_ndb_line(line).map(|s| self.bodies.push(s)),
                _ => hash::parse_hash_line(line).map(|s| self.hashes.push(s)),
            };
            if let Err(e) = result {
                let name = match ext {
                    "ndb" => line.split(':').next(),
                    _ => line.split(':').nth(2),
                }
                .unwrap_or("")
                .chars()
                .take(64)
                .collect();
                self.report.refused.push(Refused {
                    file: file.to_string(),
                    line: i + 1,
                    name,
                    reason: e.to_string(),
                });
            }
        }
        self.report.hash = self.hashes.len();
        self.report.body = self.bodies.len();
    }

    pub(crate) fn refuse_file(&mut self, file: &str, e: SigError) {
        self.report.refused.push(Refused {
            file: file.to_string(),
            line: 0,
            name: file.to_string(),
            reason: e.to_string(),
        });
    }
}

fn read_bounded(path: &Path) -> Result<String, SigError> {
    let meta = std::fs::metadata(path).map_err(|e| SigError::Io(e.to_string()))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(SigError::TooLarge(MAX_FILE_BYTES));
    }
    let bytes = std::fs::read(path).map_err(|e| SigError::Io(e.to_string()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
