//! Packet keywords' values: numeric comparisons (dsize, itype, icode, ttl), TCP flags, and
//! threshold / detection_filter.

use crate::error::RuleError;

/// `N`, `<N`, `>N`, `<=N`, `>=N`, `!N`, `A<>B` (exclusive) and `A-B` (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumCmp {
    Eq(u32),
    Ne(u32),
    Lt(u32),
    Gt(u32),
    Le(u32),
    Ge(u32),
    Between(u32, u32),
    Range(u32, u32),
}

impl NumCmp {
    pub fn test(&self, v: u32) -> bool {
        match *self {
            NumCmp::Eq(n) => v == n,
            NumCmp::Ne(n) => v != n,
            NumCmp::Lt(n) => v < n,
            NumCmp::Gt(n) => v > n,
            NumCmp::Le(n) => v <= n,
            NumCmp::Ge(n) => v >= n,
            NumCmp::Between(a, b) => v > a && v < b,
            NumCmp::Range(a, b) => v >= a && v <= b,
        }
    }
    pub(crate) fn parse(s: &str, kw: &str) -> Result<Self, RuleError> {
        let s = s.trim();
        let bad = || RuleError::new(kw, format!("bad value `{s}`"));
        let n = |t: &str| t.trim().parse::<u32>().map_err(|_| bad());
        Ok(if let Some((a, b)) = s.split_once("<>") {
            NumCmp::Between(n(a)?, n(b)?)
        } else if let Some(r) = s.strip_prefix("<=") {
            NumCmp::Le(n(r)?)
        } else if let Some(r) = s.strip_prefix(">=") {
            NumCmp::Ge(n(r)?)
        } else if let Some(r) = s.strip_prefix('<') {
            NumCmp::Lt(n(r)?)
        } else if let Some(r) = s.strip_prefix('>') {
            NumCmp::Gt(n(r)?)
        } else if let Some(r) = s.strip_prefix('!') {
            NumCmp::Ne(n(r)?)
        } else if let Some((a, b)) = s.split_once('-') {
            NumCmp::Range(n(a)?, n(b)?)
        } else {
            NumCmp::Eq(n(s)?)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagsMode {
    Exact,
    All,
    Any,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFlags {
    pub mode: FlagsMode,
    pub set: u8,
    pub ignore: u8,
}

impl TcpFlags {
    pub fn test(&self, flags: u8) -> bool {
        let f = flags & !self.ignore;
        match self.mode {
            FlagsMode::Exact => f == self.set,
            FlagsMode::All => f & self.set == self.set,
            FlagsMode::Any => f & self.set != 0,
            FlagsMode::Not => f & self.set == 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdKind {
    Limit,
    Threshold,
    Both,
    DetectionFilter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub kind: ThresholdKind,
    pub by_src: bool,
    pub count: u32,
    pub seconds: u32,
}

pub(crate) fn parse_flags(v: &str) -> Result<TcpFlags, RuleError> {
    let (set, ignore) = match v.split_once(',') {
        Some((s, i)) => (s.trim(), Some(i.trim())),
        None => (v.trim(), None),
    };
    let bit = |c: char| -> Result<u8, RuleError> {
        Ok(match c {
            'F' => 0x01,
            'S' => 0x02,
            'R' => 0x04,
            'P' => 0x08,
            'A' => 0x10,
            'U' => 0x20,
            'E' | '2' => 0x40,
            'C' | '1' => 0x80,
            '0' => 0,
            other => return Err(RuleError::new("flags", format!("unknown flag `{other}`"))),
        })
    };
    let mut mode = FlagsMode::Exact;
    let mut bits = 0u8;
    for c in set.chars() {
        match c {
            '+' => mode = FlagsMode::All,
            '*' => mode = FlagsMode::Any,
            '!' => mode = FlagsMode::Not,
            c => bits |= bit(c)?,
        }
    }
    let mut ign = 0u8;
    for c in ignore.unwrap_or("").chars() {
        ign |= bit(c)?;
    }
    Ok(TcpFlags {
        mode,
        set: bits,
        ignore: ign,
    })
}

pub(crate) fn parse_threshold(kw: &str, v: &str) -> Result<Threshold, RuleError> {
    let mut kind = (kw == "detection_filter").then_some(ThresholdKind::DetectionFilter);
    let (mut by_src, mut count, mut seconds) = (None, None, None);
    for part in v.split(',') {
        let mut it = part.split_whitespace();
        let (Some(k), Some(val), None) = (it.next(), it.next(), it.next()) else {
            return Err(RuleError::new(kw, format!("bad part `{}`", part.trim())));
        };
        match (k, val) {
            ("type", "limit") => kind = Some(ThresholdKind::Limit),
            ("type", "threshold") => kind = Some(ThresholdKind::Threshold),
            ("type", "both") => kind = Some(ThresholdKind::Both),
            ("track", "by_src") => by_src = Some(true),
            ("track", "by_dst") => by_src = Some(false),
            ("count", n) => count = n.parse::<u32>().ok(),
            ("seconds", n) => seconds = n.parse::<u32>().ok(),
            _ => return Err(RuleError::new(kw, format!("`{k} {val}` is not supported"))),
        }
    }
    match (kind, by_src, count, seconds) {
        (Some(kind), Some(by_src), Some(count), Some(seconds)) => Ok(Threshold {
            kind,
            by_src,
            count,
            seconds,
        }),
        _ => Err(RuleError::new(kw, "needs type, track, count and seconds")),
    }
}
