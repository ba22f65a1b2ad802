//! The compiled signature set and the two ways to scan with it: a whole file (all kinds of
//! signature: hashes, body with offsets and target types, YARA), and a stream of bytes with no
//! file around them (a volume's writes: body signatures with offset `*` and target type 0, and
//! YARA), both through [`StreamMatcher`], which keeps the last `longest signature - 1` bytes
//! so a match spanning two buffers is found.

use crate::hashes::{HashIndex, Hasher};
use crate::matcher::{BodySet, FileKind, Window, BUDGET_FIXED, BUDGET_PER_BYTE};
use crate::sigs::{LoadReport, SigSources};
use crate::yara::YaraSet;
use std::collections::BTreeSet;
use std::io::Read;

/// The kind of signature that matched.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SigKind {
    Hash,
    Body,
    Yara,
}

/// One signature found in a file or a volume's bytes.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Finding {
    pub signature: String,
    pub kind: SigKind,
    /// Where a body signature's match starts (absolute); None for hashes and YARA.
    pub offset: Option<u64>,
}

/// Limits of one file's scan.
#[derive(Debug, Clone, Copy)]
pub struct FileLimits {
    /// Bytes read per buffer: files up to this size are scanned in one piece.
    pub chunk: usize,
    /// Longest kept tail between buffers (for signatures with unbounded jumps).
    pub tail_cap: usize,
    /// Bytes of one file scanned at most; the rest is skipped and the scan marked truncated.
    pub max_file_bytes: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            chunk: 16 << 20,
            tail_cap: 1 << 20,
            max_file_bytes: 1 << 30,
        }
    }
}

/// The outcome of one file's scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileScan {
    pub findings: Vec<Finding>,
    pub bytes: u64,
    /// The file was longer than the limit (or than its stated size): not all of it scanned.
    pub truncated: bool,
    /// A body or YARA scan ran out of its work budget.
    pub incomplete: bool,
}

/// The compiled signatures; shared read-only (`Arc`) by every scanner of a generation.
#[derive(Debug)]
pub struct Engine {
    pub body: BodySet,
    pub hashes: HashIndex,
    pub yara: Option<YaraSet>,
    pub report: LoadReport,
}

impl Engine {
    /// Compiles parsed signatures; those that cannot be compiled join the report's refusals.
    pub fn compile(mut src: SigSources) -> Engine {
        let yara = YaraSet::compile(&mut src);
        let (body, refused) = BodySet::compile(std::mem::take(&mut src.bodies));
        for (name, e) in refused {
            src.report.refused.push(crate::sigs::Refused {
                file: String::new(),
                line: 0,
                name,
                reason: e.to_string(),
            });
        }
        src.report.body = body.len();
        let hashes = HashIndex::new(std::mem::take(&mut src.hashes));
        src.report.hash = hashes.len();
        Engine {
            body,
            hashes,
            yara,
            report: src.report,
        }
    }

    /// The built-in signatures plus a directory's (when given).
    pub fn load(
        dir: Option<&std::path::Path>,
        yara_file: Option<&std::path::Path>,
    ) -> Result<Engine, std::io::Error> {
        let mut src = SigSources::builtin();
        if let Some(d) = dir {
            src.add_dir(d)?;
        }
        if let Some(f) = yara_file {
            src.add_file(f);
        }
        Ok(Engine::compile(src))
    }

    /// Bytes kept between buffers: the longest signature minus one, at most `cap`.
    pub fn tail_len(&self, cap: usize) -> usize {
        match self.body.max_len {
            Some(m) => (m.saturating_sub(1)).min(cap as u64) as usize,
            None => cap,
        }
    }

    /// Scans one whole file of stated `size` from `r`.
    pub fn scan_reader(
        &self,
        r: &mut dyn Read,
        size: u64,
        limits: &FileLimits,
    ) -> Result<FileScan, std::io::Error> {
        let needed = self.hashes.needed(size);
        let mut hasher = needed.any().then(|| Hasher::new(needed));
        let chunk = (limits.chunk.max(4096) as u64).min(size.max(1)) as usize;
        let mut m = StreamMatcher::new(self, Some(size), limits.tail_cap);
        let mut out = FileScan::default();
        let mut buf = vec![0u8; chunk];
        let want = size.min(limits.max_file_bytes);
        while out.bytes < want {
            let n = ((want - out.bytes) as usize).min(chunk);
            let got = read_full(r, &mut buf[..n])?;
            if got == 0 {
                break;
            }
            if let Some(h) = &mut hasher {
                h.update(&buf[..got]);
            }
            m.feed(&buf[..got], &mut out.findings);
            out.bytes += got as u64;
        }
        // Anything past the stated size or the limit is not scanned.
        out.truncated =
            size > limits.max_file_bytes || out.bytes < size || read_full(r, &mut [0u8; 1])? > 0;
        if let (Some(h), false) = (hasher, out.truncated) {
            let digests = h.finish();
            for name in self.hashes.matches(size, &digests) {
                out.findings.push(Finding {
                    signature: name.to_string(),
                    kind: SigKind::Hash,
                    offset: None,
                });
            }
        }
        out.incomplete = m.incomplete;
        out.findings.sort();
        Ok(out)
    }

    /// Scans bytes that are a whole file.
    pub fn scan_bytes(&self, data: &[u8]) -> FileScan {
        let limits = FileLimits {
            chunk: data.len().max(1),
            max_file_bytes: u64::MAX,
            ..FileLimits::default()
        };
        // Reading from a slice cannot fail.
        self.scan_reader(&mut &data[..], data.len() as u64, &limits)
            .unwrap_or_default()
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize, std::io::Error> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A stream of buffers scanned as one: each signature reported once, a match spanning two
/// buffers found through the kept tail.
pub struct StreamMatcher<'e> {
    engine: &'e Engine,
    /// The previous buffers' last bytes, then the new buffer.
    window: Vec<u8>,
    keep: usize,
    /// Absolute offset of `window[0]`.
    base: u64,
    file_len: Option<u64>,
    kind: Option<FileKind>,
    found: Vec<bool>,
    yara_found: BTreeSet<String>,
    pub incomplete: bool,
}

impl<'e> StreamMatcher<'e> {
    /// `file_len`: Some for a file (offsets and target types apply), None for a volume's bytes.
    pub fn new(engine: &'e Engine, file_len: Option<u64>, tail_cap: usize) -> Self {
        StreamMatcher {
            engine,
            window: Vec::new(),
            keep: engine.tail_len(tail_cap),
            base: 0,
            file_len,
            kind: file_len.is_none().then_some(FileKind::Unknown),
            found: vec![false; engine.body.len()],
            yara_found: BTreeSet::new(),
            incomplete: false,
        }
    }

    /// Starts the stream at an absolute offset (a volume range).
    pub fn at(mut self, offset: u64) -> Self {
        self.base = offset;
        self
    }

    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Finding>) {
        let old = self.window.len();
        self.window.extend_from_slice(data);
        let kind = *self.kind.get_or_insert_with(|| FileKind::sniff(data));
        let w = Window {
            base: self.base,
            file_len: self.file_len,
            kind,
            end_after: old,
            start_before: usize::MAX,
        };
        let mut budget = BUDGET_FIXED + BUDGET_PER_BYTE * data.len() as u64;
        let body = &self.engine.body;
        let complete = body.scan(&self.window, &w, &mut self.found, &mut budget, |i, at| {
            out.push(Finding {
                signature: body.name(i).to_string(),
                kind: SigKind::Body,
                offset: Some(at),
            })
        });
        self.incomplete |= !complete;
        if let Some(y) = &self.engine.yara {
            let (names, complete) = y.scan(&self.window);
            self.incomplete |= !complete;
            for n in names {
                if self.yara_found.insert(n.clone()) {
                    out.push(Finding {
                        signature: n,
                        kind: SigKind::Yara,
                        offset: None,
                    });
                }
            }
        }
        let drop = self.window.len().saturating_sub(self.keep);
        self.window.drain(..drop);
        self.base += drop as u64;
    }
}
