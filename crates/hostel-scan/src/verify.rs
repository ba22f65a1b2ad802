//! Verifying a body signature around a prefilter hit (or at its fixed offset): the elements
//! before the anchor walked backwards, those after it forwards, backtracking over jumps and
//! alternatives, every step charged to the scan's budget.

use crate::matcher::{CompiledBody, Window};
use crate::sigs::{Elem, Offset};

/// A verification walk's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    Found,
    No,
    OutOfBudget,
}

/// A match around the anchor found at `at`: Some(start index) or None; Err when out of budget.
pub(crate) fn verify(
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
pub(crate) fn verify_positional(
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
