//! Payload keywords: `content` (with its modifiers) and `pcre`, and matching a rule's chain of
//! them against a buffer as Suricata does: relative items retry earlier matches (bounded steps).

use regex::bytes::{Regex, RegexBuilder};

use crate::error::RuleError;

/// Largest compiled regex and its lazy DFA cache: compile work and memory stay bounded for
/// tenant-written patterns.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const MAX_PATTERN: usize = 4096;
/// Steps of the backtracking chain match per rule and buffer (Suricata's recursion limit is 3000).
const MAX_STEPS: usize = 3000;

#[derive(Debug, Clone)]
pub struct Content {
    pub pattern: Vec<u8>,
    pub negated: bool,
    pub nocase: bool,
    pub offset: Option<u32>,
    pub depth: Option<u32>,
    pub distance: Option<i32>,
    pub within: Option<u32>,
    pub fast_pattern: bool,
    /// Built once the rule's modifiers are known (`prepare`): a linear-time search, where a
    /// naive one costs pattern × buffer on hostile input.
    pub finder: Option<aho_corasick::AhoCorasick>,
}

impl Content {
    /// Builds the searcher; called when the rule is complete (nocase is a later modifier).
    pub fn prepare(&mut self) -> Result<(), RuleError> {
        let ac = aho_corasick::AhoCorasickBuilder::new()
            .ascii_case_insensitive(self.nocase)
            .build([&self.pattern])
            .map_err(|e| RuleError::new("content", format!("pattern not searchable: {e}")))?;
        self.finder = Some(ac);
        Ok(())
    }

    fn find(&self, hay: &[u8]) -> Option<usize> {
        match &self.finder {
            Some(f) => f.find(hay).map(|m| m.start()),
            None => find_at(hay, &self.pattern, self.nocase),
        }
    }

    fn relative(&self) -> bool {
        self.distance.is_some() || self.within.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct Pcre {
    pub regex: Regex,
    pub negated: bool,
    pub relative: bool,
}

#[derive(Debug, Clone)]
pub enum Item {
    Content(Content),
    Pcre(Pcre),
}

impl Item {
    fn relative(&self) -> bool {
        match self {
            Item::Content(c) => c.relative(),
            Item::Pcre(p) => p.relative,
        }
    }
}

/// Parses a `content` value: quoted, with `|41 42|` hex runs and `\"`, `\;`, `\\` escapes.
pub fn parse_content(value: &str) -> Result<(Vec<u8>, bool), RuleError> {
    let err = |r: &str| RuleError::new("content", r.to_string());
    let mut v = value.trim();
    let negated = if let Some(rest) = v.strip_prefix('!') {
        v = rest.trim_start();
        true
    } else {
        false
    };
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| err("value must be quoted"))?;
    let mut out = Vec::new();
    let mut bytes = inner.bytes();
    let mut hex = false;
    let mut nib: Option<u8> = None;
    while let Some(b) = bytes.next() {
        if hex {
            match b {
                b'|' => {
                    if nib.is_some() {
                        return Err(err("odd number of hex digits"));
                    }
                    hex = false;
                }
                b' ' => {}
                _ => {
                    let d = (b as char)
                        .to_digit(16)
                        .ok_or_else(|| err("bad hex digit between `|`"))?
                        as u8;
                    match nib.take() {
                        Some(h) => out.push(h << 4 | d),
                        None => nib = Some(d),
                    }
                }
            }
            continue;
        }
        match b {
            b'|' => hex = true,
            b'\\' => match bytes.next() {
                Some(c @ (b'"' | b';' | b'\\' | b':')) => out.push(c),
                _ => return Err(err("bad escape")),
            },
            b'"' | b';' => return Err(err("unescaped `\"` or `;`")),
            _ => out.push(b),
        }
        if out.len() > MAX_PATTERN {
            return Err(err("pattern too long"));
        }
    }
    if hex {
        return Err(err("unterminated `|`"));
    }
    if out.is_empty() {
        return Err(err("empty pattern"));
    }
    Ok((out, negated))
}

/// Parses `pcre:"/re/flags"`. Flags i, s, m, x map onto the `regex` crate, R is relative;
/// any other flag (HTTP buffers, PCRE-only behaviour) is refused.
pub fn parse_pcre(value: &str) -> Result<Pcre, RuleError> {
    let err = |r: String| RuleError::new("pcre", r);
    let mut v = value.trim();
    let negated = if let Some(rest) = v.strip_prefix('!') {
        v = rest.trim_start();
        true
    } else {
        false
    };
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| err("value must be quoted".into()))?;
    let body = inner
        .strip_prefix('/')
        .ok_or_else(|| err("expected /regex/flags".into()))?;
    let end = body
        .rfind('/')
        .ok_or_else(|| err("expected /regex/flags".into()))?;
    let (re, flags) = (&body[..end], &body[end + 1..]);
    let re = re.replace("\\;", ";").replace("\\\"", "\"");
    let mut b = RegexBuilder::new(&re);
    // PCRE without UTF mode: byte-oriented, ASCII classes.
    b.unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(64);
    let mut relative = false;
    for f in flags.chars() {
        match f {
            'i' => {
                b.case_insensitive(true);
            }
            's' => {
                b.dot_matches_new_line(true);
            }
            'm' => {
                b.multi_line(true);
            }
            'x' => {
                b.ignore_whitespace(true);
            }
            'R' => relative = true,
            other => return Err(err(format!("flag `{other}` is not supported"))),
        }
    }
    let regex = b.build().map_err(|e| {
        err(format!(
            "regex not supported: {}",
            first_line(&e.to_string())
        ))
    })?;
    Ok(Pcre {
        regex,
        negated,
        relative,
    })
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

fn find_at(hay: &[u8], needle: &[u8], nocase: bool) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    if nocase {
        hay.windows(needle.len())
            .position(|w| w.eq_ignore_ascii_case(needle))
    } else {
        memfind(hay, needle)
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let off = hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        let s = i + off;
        if &hay[s..s + needle.len()] == needle {
            return Some(s);
        }
        i = s + 1;
    }
    None
}

/// The window a content may match in: `[lo, hi)` of the buffer.
fn window(c: &Content, prev_end: usize, len: usize) -> Option<(usize, usize)> {
    let (mut lo, mut hi) = (0i64, len as i64);
    if c.relative() {
        let start = prev_end as i64 + i64::from(c.distance.unwrap_or(0));
        lo = start.max(0);
        if let Some(w) = c.within {
            hi = hi.min(start + i64::from(w));
        }
    } else {
        let off = i64::from(c.offset.unwrap_or(0));
        lo = lo.max(off);
        if let Some(d) = c.depth {
            hi = hi.min(off + i64::from(d));
        }
    }
    (lo <= hi && lo <= len as i64).then_some((lo as usize, hi.clamp(0, len as i64) as usize))
}

/// Whether the chain of payload items matches `buf`.
pub fn matches(items: &[Item], buf: &[u8]) -> bool {
    matches_after(items, buf, None)
}

/// Like [`matches`], but with `min_end` the match must end after that position: on a stream,
/// a match must take in new bytes (old ones were inspected before). A chain without a positive
/// item has no end and is not held to it.
pub fn matches_after(items: &[Item], buf: &[u8], min_end: Option<usize>) -> bool {
    let positive = items.iter().any(|i| match i {
        Item::Content(c) => !c.negated,
        Item::Pcre(p) => !p.negated,
    });
    let min_end = min_end.filter(|_| positive);
    let mut steps = 0usize;
    chain(items, buf, 0, min_end, &mut steps)
}

fn chain(
    items: &[Item],
    buf: &[u8],
    prev_end: usize,
    min_end: Option<usize>,
    steps: &mut usize,
) -> bool {
    let Some((item, rest)) = items.split_first() else {
        return min_end.map_or(true, |m| prev_end > m);
    };
    *steps += 1;
    if *steps > MAX_STEPS {
        return false;
    }
    // Only a later relative item, or the need to end in new bytes, makes this item's other
    // occurrences worth trying.
    let retry = min_end.is_some() || rest.first().is_some_and(Item::relative);
    match item {
        Item::Content(c) => {
            let Some((lo, hi)) = window(c, prev_end, buf.len()) else {
                return c.negated && chain(rest, buf, prev_end, min_end, steps);
            };
            let hay = &buf[lo..hi];
            if c.negated {
                return c.find(hay).is_none() && chain(rest, buf, prev_end, min_end, steps);
            }
            let mut from = 0;
            while let Some(p) = c.find(&hay[from..]) {
                let end = lo + from + p + c.pattern.len();
                if chain(rest, buf, end, min_end, steps) {
                    return true;
                }
                if !retry || *steps > MAX_STEPS {
                    return false;
                }
                *steps += 1;
                from += p + 1;
            }
            false
        }
        Item::Pcre(p) => {
            let lo = if p.relative {
                prev_end.min(buf.len())
            } else {
                0
            };
            let hay = &buf[lo..];
            if p.negated {
                return !p.regex.is_match(hay) && chain(rest, buf, prev_end, min_end, steps);
            }
            for m in p.regex.find_iter(hay) {
                if chain(rest, buf, lo + m.end(), min_end, steps) {
                    return true;
                }
                if !retry || *steps > MAX_STEPS {
                    return false;
                }
                *steps += 1;
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(p: &[u8]) -> Content {
        Content {
            pattern: p.to_vec(),
            negated: false,
            nocase: false,
            offset: None,
            depth: None,
            distance: None,
            within: None,
            fast_pattern: false,
            finder: None,
        }
    }

    #[test]
    fn hex_and_escapes() {
        assert_eq!(
            parse_content("\"GET|20 2f|a\\;\"").unwrap(),
            (b"GET /a;".to_vec(), false)
        );
        assert!(parse_content("!\"x\"").unwrap().1);
        assert!(parse_content("\"|4\"").is_err());
        assert!(parse_content("\"|zz|\"").is_err());
        assert!(parse_content("\"\"").is_err());
    }

    #[test]
    fn offset_depth_distance_within() {
        let buf = b"xxGETyyyHTTP";
        let mut a = c(b"GET");
        a.offset = Some(2);
        a.depth = Some(3);
        assert!(matches(&[Item::Content(a.clone())], buf));
        a.depth = Some(2);
        assert!(!matches(&[Item::Content(a.clone())], buf));
        let a = c(b"GET");
        let mut b = c(b"HTTP");
        b.distance = Some(3);
        b.within = Some(4);
        assert!(matches(
            &[Item::Content(a.clone()), Item::Content(b.clone())],
            buf
        ));
        b.within = Some(3);
        assert!(!matches(&[Item::Content(a.clone()), Item::Content(b)], buf));
        // A relative content retries the earlier one's later occurrences.
        let buf2 = b"ab..ab-c";
        let mut x = c(b"-c");
        x.within = Some(2);
        assert!(matches(&[Item::Content(c(b"ab")), Item::Content(x)], buf2));
    }

    #[test]
    fn negation_and_nocase() {
        let mut a = c(b"admin");
        a.nocase = true;
        assert!(matches(&[Item::Content(a.clone())], b"ADMIN"));
        a.negated = true;
        assert!(!matches(&[Item::Content(a)], b"ADMIN"));
    }

    #[test]
    fn pcre_flags() {
        let p = parse_pcre("\"/^get\\s+\\/x/i\"").unwrap();
        assert!(matches(&[Item::Pcre(p)], b"GET /x"));
        let e = parse_pcre("\"/x/U\"").unwrap_err();
        assert_eq!(e.keyword, "pcre");
        assert!(parse_pcre("\"/(?<=a)b/\"").is_err());
        let r = parse_pcre("\"/^b/R\"").unwrap();
        assert!(matches(&[Item::Content(c(b"a")), Item::Pcre(r)], b"ab"));
    }
}
