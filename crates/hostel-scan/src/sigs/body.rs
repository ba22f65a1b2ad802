//! ClamAV `.ndb` body signatures: `Name:TargetType:Offset:HexSignature[:MinFL[:MaxFL]]`.
//!
//! Supported in the hex part: bytes, `??`, nibbles `a?`/`?a`, `*`, `{n}`, `{n-m}`, `{-n}`,
//! `{n-}`, `[n-m]`, alternatives `(aa|bb)` (of any lengths) and negated ones `!(aa|bb)` (of one
//! length). Offsets: `*`, `n`, `n,m`, `EOF-n`, `EOF-n,m`. Target types: 0 (any file), 1 (PE:
//! only files with an `MZ` header whose `e_lfanew` points at `PE\0\0`) and 6 (ELF: the
//! `\x7fELF` magic); the others need ClamAV's normalisers (HTML, mail, ASCII text) or parsers
//! and are refused, as are the PE-relative offsets (`EP+n`, `Sx+n`, `SL+n`) and the boundary
//! markers `(B)`/`(L)`/`(W)`.

use super::SigError;

/// The longest hex part accepted (ClamAV's own signatures are far shorter).
pub const MAX_HEX_CHARS: usize = 64 * 1024;
/// Largest jump or offset number accepted: larger ones are refused rather than clamped.
pub const MAX_NUMBER: u64 = 1 << 30;
/// Most alternatives in one group.
const MAX_ALTERNATIVES: usize = 256;

/// One position of a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elem {
    /// `data & mask == value` (mask 0xFF exact, 0xF0/0x0F a nibble, 0 `??`).
    Byte { value: u8, mask: u8 },
    /// One byte in a set (single-byte alternatives, negated or not).
    Class(Box<[bool; 256]>),
    /// One of several byte strings; `negated`: any string of their (common) length but them.
    Alt { alts: Vec<Vec<u8>>, negated: bool },
    /// A gap of `min..=max` bytes (`max` None: unbounded).
    Jump { min: u32, max: Option<u32> },
}

impl Elem {
    /// Bytes this element covers: (min, max); max None when unbounded.
    pub fn width(&self) -> (u64, Option<u64>) {
        match self {
            Elem::Byte { .. } | Elem::Class(_) => (1, Some(1)),
            Elem::Alt { alts, .. } => {
                let min = alts.iter().map(Vec::len).min().unwrap_or(0) as u64;
                let max = alts.iter().map(Vec::len).max().unwrap_or(0) as u64;
                (min, Some(max))
            }
            Elem::Jump { min, max } => (u64::from(*min), max.map(u64::from)),
        }
    }

    /// The same element read backwards (alternatives reversed).
    pub fn reversed(&self) -> Elem {
        match self {
            Elem::Alt { alts, negated } => Elem::Alt {
                alts: alts
                    .iter()
                    .map(|a| a.iter().rev().copied().collect())
                    .collect(),
                negated: *negated,
            },
            other => other.clone(),
        }
    }
}

/// Where a match may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    Any,
    /// Start in `start..=start+shift`.
    Abs {
        start: u64,
        shift: u64,
    },
    /// Start in `len-back..=len-back+shift` (needs the file's length).
    Eof {
        back: u64,
        shift: u64,
    },
}

/// Which files a signature applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Any,
    Pe,
    Elf,
}

/// A parsed `.ndb` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodySig {
    pub name: String,
    pub target: Target,
    pub offset: Offset,
    pub elems: Vec<Elem>,
}

/// Parses one `.ndb` line (already known not to be blank or a comment).
pub fn parse_ndb_line(line: &str) -> Result<BodySig, SigError> {
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 4 || fields.len() > 6 {
        return Err(SigError::Fields {
            want: "4 to 6 (Name:TargetType:Offset:HexSignature[:MinFL[:MaxFL]])",
            got: fields.len(),
        });
    }
    let name = check_name(fields[0])?;
    let target = match fields[1] {
        "0" => Target::Any,
        "1" => Target::Pe,
        "6" => Target::Elf,
        other => return Err(SigError::TargetType(other.to_string())),
    };
    let offset = parse_offset(fields[2])?;
    for fl in &fields[4..] {
        if !fl.is_empty() && fl.parse::<u32>().is_err() {
            return Err(SigError::Flevel(fl.to_string()));
        }
    }
    let elems = parse_hex(fields[3])?;
    Ok(BodySig {
        name,
        target,
        offset,
        elems,
    })
}

/// A signature name: printable, no separators, bounded.
pub fn check_name(name: &str) -> Result<String, SigError> {
    if name.is_empty() || name.len() > 256 || !name.chars().all(|c| c.is_ascii_graphic()) {
        return Err(SigError::Name);
    }
    Ok(name.to_string())
}

fn number(s: &str) -> Result<u64, SigError> {
    let n: u64 = s
        .parse()
        .map_err(|_| SigError::Number(s.chars().take(32).collect()))?;
    if n > MAX_NUMBER {
        return Err(SigError::Number(s.chars().take(32).collect()));
    }
    Ok(n)
}

/// `*`, `n`, `n,m`, `EOF-n`, `EOF-n,m`.
pub fn parse_offset(s: &str) -> Result<Offset, SigError> {
    if s == "*" {
        return Ok(Offset::Any);
    }
    let (base, shift) = match s.split_once(',') {
        Some((b, m)) => (b, number(m)?),
        None => (s, 0),
    };
    if let Some(back) = base.strip_prefix("EOF-") {
        return Ok(Offset::Eof {
            back: number(back)?,
            shift,
        });
    }
    if base.bytes().all(|b| b.is_ascii_digit()) && !base.is_empty() {
        return Ok(Offset::Abs {
            start: number(base)?,
            shift,
        });
    }
    Err(SigError::Offset(s.chars().take(32).collect()))
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Exact bytes only (inside alternatives).
fn hex_bytes(s: &[u8]) -> Result<Vec<u8>, SigError> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return Err(SigError::Hex("an alternative is not whole bytes".into()));
    }
    s.chunks(2)
        .map(|p| match (hex_val(p[0]), hex_val(p[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(SigError::Hex(
                "alternatives hold exact bytes only (no wildcards)".into(),
            )),
        })
        .collect()
}

/// The hex part into elements; adjacent jumps merged; no leading or trailing jump.
pub fn parse_hex(hex: &str) -> Result<Vec<Elem>, SigError> {
    let s = hex.as_bytes();
    if s.is_empty() {
        return Err(SigError::Hex("empty".into()));
    }
    if s.len() > MAX_HEX_CHARS {
        return Err(SigError::Hex(format!(
            "longer than {MAX_HEX_CHARS} characters"
        )));
    }
    let mut out: Vec<Elem> = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'*' => {
                push_jump(&mut out, 0, None);
                i += 1;
            }
            b'{' | b'[' => {
                let close = if s[i] == b'{' { b'}' } else { b']' };
                let end = s[i..]
                    .iter()
                    .position(|&c| c == close)
                    .ok_or_else(|| SigError::Hex("unclosed jump".into()))?;
                let body = std::str::from_utf8(&s[i + 1..i + end])
                    .map_err(|_| SigError::Hex("jump".into()))?;
                let (min, max) = match body.split_once('-') {
                    None => {
                        let n = number(body)?;
                        (n, Some(n))
                    }
                    Some(("", m)) => (0, Some(number(m)?)),
                    Some((n, "")) => (number(n)?, None),
                    Some((n, m)) => (number(n)?, Some(number(m)?)),
                };
                if let Some(m) = max {
                    if m < min {
                        return Err(SigError::Hex(format!("jump {{{body}}}: max below min")));
                    }
                }
                // MAX_NUMBER fits in u32.
                push_jump(&mut out, min as u32, max.map(|m| m as u32));
                i += end + 1;
            }
            b'!' | b'(' => {
                let negated = s[i] == b'!';
                let open = if negated { i + 1 } else { i };
                if s.get(open) != Some(&b'(') {
                    return Err(SigError::Hex("`!` not followed by `(`".into()));
                }
                let end = s[open..]
                    .iter()
                    .position(|&c| c == b')')
                    .ok_or_else(|| SigError::Hex("unclosed alternative".into()))?;
                let body = &s[open + 1..open + end];
                if matches!(body, b"B" | b"L" | b"W") {
                    return Err(SigError::Hex(format!(
                        "boundary marker ({}) not supported",
                        body[0] as char
                    )));
                }
                let alts = body
                    .split(|&c| c == b'|')
                    .map(hex_bytes)
                    .collect::<Result<Vec<_>, _>>()?;
                if alts.len() > MAX_ALTERNATIVES {
                    return Err(SigError::Hex("too many alternatives".into()));
                }
                out.push(alt_elem(alts, negated)?);
                i = open + end + 1;
            }
            _ => {
                let (Some(&a), Some(&b)) = (s.get(i), s.get(i + 1)) else {
                    return Err(SigError::Hex("odd number of hex digits".into()));
                };
                let nib = |c: u8| -> Result<(u8, u8), SigError> {
                    if c == b'?' {
                        Ok((0, 0))
                    } else {
                        hex_val(c).map(|v| (v, 0xF)).ok_or_else(|| {
                            SigError::Hex(format!("unexpected character {:?}", c as char))
                        })
                    }
                };
                let (hv, hm) = nib(a)?;
                let (lv, lm) = nib(b)?;
                out.push(Elem::Byte {
                    value: hv << 4 | lv,
                    mask: hm << 4 | lm,
                });
                i += 2;
            }
        }
    }
    if matches!(out.first(), Some(Elem::Jump { .. }))
        || matches!(out.last(), Some(Elem::Jump { .. }))
    {
        return Err(SigError::Hex("starts or ends with a jump".into()));
    }
    Ok(out)
}

fn push_jump(out: &mut Vec<Elem>, min: u32, max: Option<u32>) {
    if let Some(Elem::Jump {
        min: pmin,
        max: pmax,
    }) = out.last_mut()
    {
        *pmin = pmin.saturating_add(min);
        *pmax = match (*pmax, max) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            _ => None,
        };
        return;
    }
    out.push(Elem::Jump { min, max });
}

fn alt_elem(alts: Vec<Vec<u8>>, negated: bool) -> Result<Elem, SigError> {
    if alts.iter().all(|a| a.len() == 1) {
        let mut set = Box::new([negated; 256]);
        for a in &alts {
            set[usize::from(a[0])] = !negated;
        }
        return Ok(Elem::Class(set));
    }
    if negated && alts.iter().any(|a| a.len() != alts[0].len()) {
        return Err(SigError::Hex(
            "negated alternatives must all have one length".into(),
        ));
    }
    Ok(Elem::Alt { alts, negated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_syntax_parses() {
        let sig =
            parse_ndb_line("T:0:EOF-10,4:aa??b??c*{2}{3-}(01|0203)!(ff|fe)[1-2]dd:51").unwrap();
        assert_eq!(sig.offset, Offset::Eof { back: 10, shift: 4 });
        assert_eq!(sig.elems[1], Elem::Byte { value: 0, mask: 0 });
        assert_eq!(
            sig.elems[2],
            Elem::Byte {
                value: 0xb0,
                mask: 0xf0
            }
        );
        assert_eq!(
            sig.elems[3],
            Elem::Byte {
                value: 0x0c,
                mask: 0x0f
            }
        );
        // `*{2}{3-}` merge into one unbounded jump of at least 5.
        assert_eq!(sig.elems[4], Elem::Jump { min: 5, max: None });
        assert!(matches!(&sig.elems[5], Elem::Alt { alts, negated: false } if alts.len() == 2));
        assert!(matches!(&sig.elems[6], Elem::Class(set) if !set[0xff] && set[0]));
    }

    #[test]
    fn refusals_name_the_reason() {
        for (line, want) in [
            ("T:3:*:aabb", "target type"),
            ("T:0:EP+0:aabb", "offset"),
            ("T:0:*:*aabb", "jump"),
            ("T:0:*:aa(B)bb", "boundary"),
            ("T:0:*:aabbc", "odd"),
            ("T:0:*:aa{5-2}bb", "max below min"),
            ("T:0:*:aa!(01|0203)bb", "one length"),
            ("T:0:*", "4 to 6"),
            ("T:0:*:aa{99999999999}bb", "number"),
        ] {
            let err = parse_ndb_line(line).unwrap_err().to_string();
            assert!(err.contains(want), "{line}: {err}");
        }
    }
}
