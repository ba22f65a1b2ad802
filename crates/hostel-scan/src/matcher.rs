//! Body signatures compiled: one Aho-Corasick automaton over each signature's best literal
//! anchor finds candidates in one pass; each candidate is verified outwards from its anchor
//! (the elements before it backwards, those after it forwards) with a work budget per scan, so
//! a hostile buffer (say megabytes of the anchor's bytes under a signature with `*`) costs a
//! bounded number of steps and is reported incomplete instead of hanging.

use crate::sigs::{BodySig, Elem, Offset, SigError, Target};
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
    before: Vec<Elem>,
    /// The elements after the anchor.
    after: Vec<Elem>,
    anchor_len: usize,
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

/// A verification walk's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    Found,
    No,
    OutOfBudget,
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

/// A match around the anchor found at `at`: Some(start index) or None; Err when out of budget.
fn verify(
    sig: &CompiledBody,
    data: &[u8],
    at: usize,
    w: &Window,
    budget: &mut u64,
) -> Result<Option<usize>, ()> {
    let mut start_found = None;
    let before = Bwd(&data[..at]);
    let mut accept_start = |consumed: usize| {
        let start = at - consumed;
        if start >= w.start_before || !offset_ok(sig.offset, w, start) {
            return false;
        }
        start_found = Some(start);
        true
    };
    match walk(&before, &sig.before, 0, budget, &mut accept_start) {
        Walk::Found => {}
        Walk::No => return Ok(None),
        Walk::OutOfBudget => return Err(()),
    }
    let after_at = at + sig.anchor_len;
    let mut accept_end = |pos: usize| after_at + pos > w.end_after;
    match walk(
        &Fwd(&data[after_at..]),
        &sig.after,
        0,
        budget,
        &mut accept_end,
    ) {
        Walk::Found => Ok(start_found),
        Walk::No => Ok(None),
        Walk::OutOfBudget => Err(()),
    }
}

/// A fixed-offset signature tried at each start its offset allows inside the window.
fn verify_positional(
    sig: &CompiledBody,
    data: &[u8],
    w: &Window,
    budget: &mut u64,
) -> Result<Option<usize>, ()> {
    let (lo, shift) = match sig.offset {
        Offset::Any => return Ok(None),
        Offset::Abs { start, shift } => (start, shift),
        Offset::Eof { back, shift } => match w.file_len.and_then(|l| l.checked_sub(back)) {
            Some(lo) => (lo, shift),
            None => return Ok(None),
        },
    };
    let end = data.len() as u64 + w.base;
    let first = lo.max(w.base);
    let last = lo.saturating_add(shift).min(end.saturating_sub(1));
    if first > last {
        return Ok(None);
    }
    for abs in first..=last {
        let start = (abs - w.base) as usize;
        if start >= w.start_before {
            break;
        }
        let mut accept_end = |pos: usize| start + pos > w.end_after;
        match walk(&Fwd(&data[start..]), &sig.after, 0, budget, &mut accept_end) {
            Walk::Found => return Ok(Some(start)),
            Walk::No => {}
            Walk::OutOfBudget => return Err(()),
        }
    }
    Ok(None)
}

fn offset_ok(offset: Offset, w: &Window, start: usize) -> bool {
    let abs = w.base + start as u64;
    let (lo, shift) = match offset {
        Offset::Any => return true,
        Offset::Abs { start, shift } => (start, shift),
        Offset::Eof { back, shift } => match w.file_len.and_then(|l| l.checked_sub(back)) {
            Some(lo) => (lo, shift),
            None => return false,
        },
    };
    abs >= lo && abs - lo <= shift
}

trait Hay {
    fn len(&self) -> usize;
    fn at(&self, i: usize) -> u8;
    /// The smallest `i` in `from..=to` (both < len) with `at(i) == b`.
    fn find_byte(&self, b: u8, from: usize, to: usize) -> Option<usize>;
}

struct Fwd<'a>(&'a [u8]);
impl Hay for Fwd<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn at(&self, i: usize) -> u8 {
        self.0[i]
    }
    fn find_byte(&self, b: u8, from: usize, to: usize) -> Option<usize> {
        memchr::memchr(b, self.0.get(from..=to)?).map(|k| from + k)
    }
}

/// The bytes before the anchor, read backwards.
struct Bwd<'a>(&'a [u8]);
impl Hay for Bwd<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn at(&self, i: usize) -> u8 {
        self.0[self.0.len() - 1 - i]
    }
    fn find_byte(&self, b: u8, from: usize, to: usize) -> Option<usize> {
        // Index i is data[len-1-i]: from..=to backwards is data[len-1-to..=len-1-from].
        let last = self.0.len().checked_sub(1)?;
        let lo = last.checked_sub(to)?;
        let hi = last.checked_sub(from)?;
        memchr::memrchr(b, self.0.get(lo..=hi)?).map(|k| last - (lo + k))
    }
}

fn alt_at<H: Hay>(h: &H, pos: usize, alt: &[u8]) -> bool {
    pos + alt.len() <= h.len() && alt.iter().enumerate().all(|(k, &b)| h.at(pos + k) == b)
}

fn one_byte(e: &Elem, b: u8) -> Option<bool> {
    match e {
        Elem::Byte { value, mask } => Some(b & mask == *value),
        Elem::Class(set) => Some(set[usize::from(b)]),
        _ => None,
    }
}

/// Matches `elems` from `pos`; at their end asks `accept(position)`. Backtracks over jumps
/// and alternatives; every step spends budget.
fn walk<H: Hay>(
    h: &H,
    elems: &[Elem],
    mut pos: usize,
    budget: &mut u64,
    accept: &mut dyn FnMut(usize) -> bool,
) -> Walk {
    let mut i = 0;
    loop {
        if *budget == 0 {
            return Walk::OutOfBudget;
        }
        *budget -= 1;
        let Some(e) = elems.get(i) else {
            return if accept(pos) { Walk::Found } else { Walk::No };
        };
        match e {
            Elem::Byte { .. } | Elem::Class(_) => {
                if pos >= h.len() || one_byte(e, h.at(pos)) != Some(true) {
                    return Walk::No;
                }
                pos += 1;
                i += 1;
            }
            Elem::Alt {
                alts,
                negated: true,
            } => {
                let l = alts.first().map(Vec::len).unwrap_or(0);
                if pos + l > h.len() || alts.iter().any(|a| alt_at(h, pos, a)) {
                    return Walk::No;
                }
                pos += l;
                i += 1;
            }
            Elem::Alt {
                alts,
                negated: false,
            } => {
                for a in alts {
                    if alt_at(h, pos, a) {
                        match walk(h, &elems[i + 1..], pos + a.len(), budget, accept) {
                            Walk::No => {}
                            r => return r,
                        }
                    }
                }
                return Walk::No;
            }
            Elem::Jump { min, max } => {
                let lo = pos + *min as usize;
                let hi = match max {
                    Some(m) => (pos + *m as usize).min(h.len()),
                    None => h.len(),
                };
                let next = elems.get(i + 1);
                let exact = match next {
                    Some(Elem::Byte { value, mask: 0xff }) => Some(*value),
                    _ => None,
                };
                let mut p = lo;
                while p <= hi {
                    if *budget == 0 {
                        return Walk::OutOfBudget;
                    }
                    *budget -= 1;
                    if let Some(b) = exact {
                        // The next exact byte found by memchr: a long gap costs a fraction
                        // of a step per byte, still charged to the budget.
                        let to = hi.min(h.len().saturating_sub(1));
                        if p > to {
                            break;
                        }
                        let q = h.find_byte(b, p, to);
                        let skipped = (q.unwrap_or(to) - p) as u64 / 16;
                        *budget = budget.saturating_sub(skipped);
                        match q {
                            Some(q) => p = q,
                            None => break,
                        }
                    } else {
                        // A cheap look at the next byte before recursing.
                        let plausible = match next {
                            Some(n @ (Elem::Byte { .. } | Elem::Class(_))) => {
                                p < h.len() && one_byte(n, h.at(p)) == Some(true)
                            }
                            _ => true,
                        };
                        if !plausible {
                            p += 1;
                            continue;
                        }
                    }
                    match walk(h, &elems[i + 1..], p, budget, accept) {
                        Walk::No => {}
                        r => return r,
                    }
                    p += 1;
                }
                return Walk::No;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigs::body::parse_ndb_line;

    fn set(lines: &[&str]) -> BodySet {
        let sigs = lines.iter().map(|l| parse_ndb_line(l).unwrap()).collect();
        let (s, refused) = BodySet::compile(sigs);
        assert!(refused.is_empty(), "{refused:?}");
        s
    }

    fn hits(s: &BodySet, data: &[u8]) -> Vec<(String, u64)> {
        let w = Window {
            base: 0,
            file_len: Some(data.len() as u64),
            kind: FileKind::sniff(data),
            end_after: 0,
            start_before: usize::MAX,
        };
        let mut found = vec![false; s.len()];
        let mut out = Vec::new();
        let mut budget = BUDGET_FIXED;
        assert!(s.scan(data, &w, &mut found, &mut budget, |i, at| out
            .push((s.name(i).to_string(), at))));
        out.sort();
        out
    }

    #[test]
    fn wildcards_jumps_alternatives_offsets() {
        let s = set(&[
            "Nib:0:*:787841?2??44",
            "Jump:0:*:4142{2-3}4546",
            "Star:0:*:7878*7979",
            "Alt:0:*:(5a|5b5b)6162",
            "Not:0:*:6364!(65|66)67",
            "At2:0:2:4142",
            "Eof:0:EOF-2:7979",
            "Late:0:EOF-2,0:4142",
        ]);
        let data = b"xxABxDxyABzzEFxxxxxx[Zab][[ab]cdhgxxyy";
        let got = hits(&s, data);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Alt", "At2", "Eof", "Jump", "Nib", "Not", "Star"]);
        assert!(got.contains(&("Jump".into(), 8)));
        // Not: `cde` has an excluded byte, `cdhg`... `!(65|66)` wants one byte then `g`.
        assert!(hits(&s, b"cdeg").is_empty());
    }

    #[test]
    fn target_types_gate_on_the_file_kind() {
        let s = set(&[
            "Pe:1:*:4b45524e454c",
            "Elf:6:*:4b45524e454c",
            "Any:0:*:4b45524e454c",
        ]);
        let mut pe = b"MZ".to_vec();
        pe.resize(0x40, 0);
        pe[0x3c] = 0x40;
        pe.extend_from_slice(b"PE\0\0 KERNEL");
        let names = |d: &[u8]| hits(&s, d).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(names(&pe), ["Any", "Pe"]);
        assert_eq!(names(b"\x7fELF KERNEL"), ["Any", "Elf"]);
        // MZ without a PE header is not PE.
        assert_eq!(names(b"MZ KERNEL"), ["Any"]);
    }

    #[test]
    fn hostile_input_is_bounded() {
        let s = set(&["Slow:0:*:6162*6364{5-9}7a7a"]);
        let data = b"ab".repeat(1 << 20);
        let w = Window {
            base: 0,
            file_len: None,
            kind: FileKind::Unknown,
            end_after: 0,
            start_before: usize::MAX,
        };
        let mut budget = BUDGET_FIXED;
        let mut found = vec![false];
        let complete = s.scan(&data, &w, &mut found, &mut budget, |_, _| {});
        assert!(!complete, "a quadratic search must hit the budget");
        assert_eq!(budget, 0);
    }
}
