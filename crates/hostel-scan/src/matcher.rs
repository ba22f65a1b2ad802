//! Body signatures compiled: one Aho-Corasick automaton over each signature's best literal
//! anchor finds candidates in one pass; each candidate is verified outwards from its anchor
//! (the elements before it backwards, those after it forwards) with a work budget per scan, so
//! a hostile buffer (say megabytes of the anchor's bytes under a signature with `*`) costs a
//! bounded number of steps and is reported incomplete instead of hanging.

use crate::sigs::{BodySig, Elem, Offset, SigError, Target};
use crate::verify::{verify, verify_positional};
use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use std::collections::HashMap;

/// Longest anchor kept: longer literal runs are split, the rest verified.
const MAX_ANCHOR: usize = 32;
/// Verification steps per scanned byte, plus a fixed allowance, before a scan gives up.
pub const BUDGET_PER_BYTE: u64 = 64;
pub const BUDGET_FIXED: u64 = 1 << 20;

#[derive(Debug)]
pub(crate) struct CompiledBody {
    pub name: String,
    pub target: Target,
    pub offset: Offset,
    /// The elements before the anchor, last first, alternatives reversed.
    pub(crate) before: Vec<Elem>,
    /// The elements after the anchor.
    pub(crate) after: Vec<Elem>,
    pub(crate) anchor_len: usize,
    /// Longest match, None when a jump is unbounded.
    pub max_len: Option<u64>,
}

/// The file kind a window belongs to, for target types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Not a file (a volume's bytes): only target-type-0 signatures apply.
    Unknown,
    Pe,
    Elf,
    Other,
}

impl FileKind {
    /// From a file's first bytes.
    pub fn sniff(head: &[u8]) -> FileKind {
        if head.starts_with(b"\x7fELF") {
            return FileKind::Elf;
        }
        if head.starts_with(b"MZ") && head.len() >= 0x40 {
            let e = u32::from_le_bytes([head[0x3c], head[0x3d], head[0x3e], head[0x3f]]) as usize;
            if head.get(e..e.saturating_add(4)) == Some(b"PE\0\0".as_slice()) {
                return FileKind::Pe;
            }
        }
        FileKind::Other
    }
}

/// Where a window sits and which matches count.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Absolute offset of the window's first byte (in the file or volume).
    pub base: u64,
    /// The file's length when the window is part of a file (offsets need it); None for a
    /// volume's bytes, where only signatures with offset `*` apply.
    pub file_len: Option<u64>,
    pub kind: FileKind,
    /// Only matches ending after this window index count (bytes before it were scanned).
    pub end_after: usize,
    /// Only matches starting before this window index count.
    pub start_before: usize,
}

/// The compiled body signatures.
#[derive(Debug)]
pub struct BodySet {
    pub(crate) sigs: Vec<CompiledBody>,
    ac: Option<AhoCorasick>,
    /// The anchors, and their ids by first byte.
    patterns: Vec<Vec<u8>>,
    by_first: Vec<Vec<u32>>,
    /// Aho-Corasick pattern id → the signatures anchored on it.
    pattern_sigs: Vec<Vec<u32>>,
    /// Signatures at a fixed offset (from the start or the end of a file).
    positional: Vec<u32>,
    /// Longest bounded match of all, None when one is unbounded.
    pub max_len: Option<u64>,
}

impl BodySet {
    /// Compiles; signatures without a usable anchor come back refused.
    pub fn compile(sigs: Vec<BodySig>) -> (BodySet, Vec<(String, SigError)>) {
        let mut refused = Vec::new();
        let mut compiled = Vec::new();
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut pattern_ids: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut pattern_sigs: Vec<Vec<u32>> = Vec::new();
        let mut positional = Vec::new();
        for sig in sigs {
            let mut max_len = Some(0u64);
            for e in &sig.elems {
                let (_, m) = e.width();
                max_len = match (max_len, m) {
                    (Some(a), Some(b)) => Some(a.saturating_add(b)),
                    _ => None,
                };
            }
            // A signature at a fixed offset is tried at that offset only (no anchor, no
            // prefilter): a common anchor such as `00000000` at `EOF-4` would otherwise be
            // verified at every run of zeros.
            if sig.offset != Offset::Any {
                positional.push(compiled.len() as u32);
                compiled.push(CompiledBody {
                    before: Vec::new(),
                    after: sig.elems,
                    anchor_len: 0,
                    name: sig.name,
                    target: sig.target,
                    offset: sig.offset,
                    max_len,
                });
                continue;
            }
            let Some((start, len)) = best_anchor(&sig.elems) else {
                refused.push((sig.name, SigError::NoAnchor));
                continue;
            };
            let anchor: Vec<u8> = sig.elems[start..start + len]
                .iter()
                .map(|e| match e {
                    Elem::Byte { value, .. } => *value,
                    _ => 0,
                })
                .collect();
            let id = *pattern_ids.entry(anchor.clone()).or_insert_with(|| {
                patterns.push(anchor);
                pattern_sigs.push(Vec::new());
                patterns.len() - 1
            });
            pattern_sigs[id].push(compiled.len() as u32);
            compiled.push(CompiledBody {
                before: sig.elems[..start]
                    .iter()
                    .rev()
                    .map(Elem::reversed)
                    .collect(),
                after: sig.elems[start + len..].to_vec(),
                anchor_len: len,
                name: sig.name,
                target: sig.target,
                offset: sig.offset,
                max_len,
            });
        }
        let ac = if patterns.is_empty() {
            None
        } else {
            // A DFA while the set is small enough to build quickly; the automaton picks a
            // contiguous NFA past that.
            let kind = (patterns.len() <= 5_000).then_some(AhoCorasickKind::DFA);
            match AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .kind(kind)
                .build(&patterns)
            {
                Ok(ac) => Some(ac),
                Err(e) => {
                    tracing::warn!(error = %e, "body signatures: automaton not built; retrying as NFA");
                    AhoCorasick::builder()
                        .match_kind(MatchKind::LeftmostFirst)
                        .build(&patterns)
                        .ok()
                }
            }
        };
        let mut by_first: Vec<Vec<u32>> = vec![Vec::new(); 256];
        for (pid, p) in patterns.iter().enumerate() {
            by_first[usize::from(p[0])].push(pid as u32);
        }
        let max_len = compiled
            .iter()
            .try_fold(0u64, |acc, s| s.max_len.map(|m| acc.max(m)));
        (
            BodySet {
                sigs: compiled,
                ac,
                by_first,
                patterns,
                pattern_sigs,
                positional,
                max_len,
            },
            refused,
        )
    }

    pub fn len(&self) -> usize {
        self.sigs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sigs.is_empty()
    }

    pub fn name(&self, idx: usize) -> &str {
        self.sigs.get(idx).map(|s| s.name.as_str()).unwrap_or("")
    }

    /// Scans one window; `found[i]` marks signatures already reported (skipped, and set on a
    /// new match). Calls `hit(sig, absolute start)` per new match. Returns false when the
    /// budget ran out (the window was not fully verified).
    pub fn scan(
        &self,
        data: &[u8],
        w: &Window,
        found: &mut [bool],
        budget: &mut u64,
        mut hit: impl FnMut(usize, u64),
    ) -> bool {
        if w.file_len.is_some() {
            for &si in &self.positional {
                let si = si as usize;
                if found.get(si).copied().unwrap_or(true) || !applies(&self.sigs[si], w) {
                    continue;
                }
                match verify_positional(&self.sigs[si], data, w, budget) {
                    Ok(Some(start)) => {
                        found[si] = true;
                        hit(si, w.base + start as u64);
                    }
                    Ok(None) => {}
                    Err(()) => return false,
                }
            }
        }
        let Some(ac) = &self.ac else { return true };
        // A leftmost search (the automaton's SIMD prefilter at full speed) finds the next
        // position where any anchor starts; every anchor starting there is checked, and the
        // search goes on one byte later, so overlapping anchors are all seen.
        let mut from = 0;
        while from < data.len() {
            let Some(m) = ac.find(aho_corasick::Input::new(data).range(from..)) else {
                break;
            };
            let at = m.start();
            from = at + 1;
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            for &pid in &self.by_first[usize::from(data[at])] {
                let pid = pid as usize;
                if !data[at..].starts_with(&self.patterns[pid]) {
                    continue;
                }
                if !self.scan_anchor(pid, data, at, w, found, budget, &mut hit) {
                    return false;
                }
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn scan_anchor(
        &self,
        pid: usize,
        data: &[u8],
        at: usize,
        w: &Window,
        found: &mut [bool],
        budget: &mut u64,
        hit: &mut impl FnMut(usize, u64),
    ) -> bool {
        {
            let Some(sig_ids) = self.pattern_sigs.get(pid) else {
                return true;
            };
            for &si in sig_ids {
                let si = si as usize;
                if found.get(si).copied().unwrap_or(true) {
                    continue;
                }
                let sig = &self.sigs[si];
                if !applies(sig, w) {
                    continue;
                }
                match verify(sig, data, at, w, budget) {
                    Ok(Some(start)) => {
                        found[si] = true;
                        hit(si, w.base + start as u64);
                    }
                    Ok(None) => {}
                    Err(()) => return false,
                }
            }
        }
        true
    }
}

fn applies(sig: &CompiledBody, w: &Window) -> bool {
    let target_ok = match sig.target {
        Target::Any => true,
        Target::Pe => w.kind == FileKind::Pe,
        Target::Elf => w.kind == FileKind::Elf,
    };
    target_ok && (sig.offset == Offset::Any || w.file_len.is_some())
}

/// The longest run of exact bytes (runs of one repeated byte count as 1), capped.
fn best_anchor(elems: &[Elem]) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize, usize)> = None; // start, len, score
    let mut i = 0;
    while i < elems.len() {
        if !matches!(elems[i], Elem::Byte { mask: 0xff, .. }) {
            i += 1;
            continue;
        }
        let start = i;
        while i < elems.len() && matches!(elems[i], Elem::Byte { mask: 0xff, .. }) {
            i += 1;
        }
        let len = (i - start).min(MAX_ANCHOR);
        let first = &elems[start];
        let score = if elems[start..start + len].iter().all(|e| e == first) {
            1
        } else {
            len
        };
        if len >= 2 && best.is_none_or(|(_, _, s)| score > s) {
            best = Some((start, len, score));
        }
    }
    best.map(|(s, l, _)| (s, l))
}

#[cfg(test)]
#[path = "matcher_tests.rs"]
mod tests;
