//! One rule in Suricata's language: the header (action, protocol, addresses, ports, direction)
//! and the options this engine supports. Anything else refuses the rule, naming the keyword.

use crate::addr::{parse_addr, parse_port, AddrExpr, PortExpr, Vars};
use crate::classify::Classifications;
use crate::error::RuleError;
use crate::payload::{parse_content, parse_pcre, Content, Item};

use crate::keywords::{parse_flags, parse_threshold};
pub use crate::keywords::{FlagsMode, NumCmp, TcpFlags, Threshold, ThresholdKind};

/// Longest rule line accepted.
pub const MAX_RULE_LEN: usize = 64 * 1024;
const MAX_OPTIONS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    // Declaration order is precedence: a matching pass suppresses everything after it.
    Pass,
    Drop,
    Reject,
    Alert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Ip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowOpts {
    pub established: Option<bool>,
    /// `Some(true)` = to_server / from_client.
    pub to_server: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowbitOp {
    Set(u32),
    Unset(u32),
    IsSet(u32),
    IsNotSet(u32),
    NoAlert,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub action: Action,
    pub proto: Proto,
    pub src: AddrExpr,
    pub src_port: PortExpr,
    pub dst: AddrExpr,
    pub dst_port: PortExpr,
    pub bidirectional: bool,
    pub msg: String,
    pub sid: u32,
    pub gid: u32,
    pub rev: u32,
    pub category: String,
    pub priority: u32,
    pub items: Vec<Item>,
    pub flow: FlowOpts,
    pub flowbits: Vec<FlowbitOp>,
    pub dsize: Option<NumCmp>,
    pub flags: Option<TcpFlags>,
    pub itype: Option<NumCmp>,
    pub icode: Option<NumCmp>,
    pub ttl: Option<NumCmp>,
    pub threshold: Option<Threshold>,
}

impl Rule {
    /// The content the prefilter keys this rule on: the one marked `fast_pattern`, else the
    /// longest non-negated one (Suricata's default choice).
    pub fn fast_pattern(&self) -> Option<&Content> {
        let contents = self.items.iter().filter_map(|i| match i {
            Item::Content(c) if !c.negated => Some(c),
            _ => None,
        });
        let mut best: Option<&Content> = None;
        for c in contents {
            if c.fast_pattern {
                return Some(c);
            }
            if best.map_or(true, |b| c.pattern.len() > b.pattern.len()) {
                best = Some(c);
            }
        }
        best
    }
}

/// Flowbit names to small integers, shared by every rule of a set.
#[derive(Debug, Default)]
pub struct FlowbitNames {
    names: std::collections::HashMap<String, u32>,
}

impl FlowbitNames {
    fn id(&mut self, name: &str) -> u32 {
        let next = self.names.len() as u32;
        *self.names.entry(name.to_string()).or_insert(next)
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Splits `key:value; key; ...` at unescaped, unquoted `;`.
fn split_options(s: &str) -> Result<Vec<(String, Option<String>)>, RuleError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                in_quote = !in_quote;
                cur.push(c);
            }
            ';' if !in_quote => {
                let opt = cur.trim();
                if !opt.is_empty() {
                    let (k, v) = match opt.split_once(':') {
                        Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
                        None => (opt.to_string(), None),
                    };
                    out.push((k, v));
                    if out.len() > MAX_OPTIONS {
                        return Err(RuleError::new("options", "too many options"));
                    }
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if in_quote {
        return Err(RuleError::new("options", "unterminated quote"));
    }
    if !cur.trim().is_empty() {
        return Err(RuleError::new("options", "last option lacks its `;`"));
    }
    Ok(out)
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v);
    v.replace("\\\"", "\"")
        .replace("\\;", ";")
        .replace("\\\\", "\\")
}

fn num<T: std::str::FromStr>(kw: &str, v: Option<&str>) -> Result<T, RuleError> {
    let v = v.ok_or_else(|| RuleError::new(kw, "needs a value"))?;
    v.trim()
        .parse()
        .map_err(|_| RuleError::new(kw, format!("bad number `{v}`")))
}

/// Parses one rule line. The caller skips blank lines and comments.
pub fn parse_rule(
    line: &str,
    vars: &Vars,
    classes: &Classifications,
    bits: &mut FlowbitNames,
) -> Result<Rule, RuleError> {
    if line.len() > MAX_RULE_LEN {
        return Err(RuleError::new("rule", "longer than 64 KiB"));
    }
    // The sid first, so every later refusal can name it.
    let sid = line
        .find("sid:")
        .and_then(|i| {
            let rest = &line[i + 4..];
            let end = rest.find(';')?;
            rest[..end].trim().parse::<u32>().ok()
        })
        .unwrap_or(0);
    parse_inner(line, vars, classes, bits).map_err(|mut e| {
        e.sid = sid;
        e
    })
}

fn parse_inner(
    line: &str,
    vars: &Vars,
    classes: &Classifications,
    bits: &mut FlowbitNames,
) -> Result<Rule, RuleError> {
    let open = line
        .find('(')
        .ok_or_else(|| RuleError::new("rule", "no `(` option list"))?;
    let close = line
        .rfind(')')
        .filter(|&c| c > open)
        .ok_or_else(|| RuleError::new("rule", "no closing `)`"))?;
    let header: Vec<&str> = line[..open].split_whitespace().collect();
    let [action, proto, src, sp, dir, dst, dp] = header[..] else {
        return Err(RuleError::new(
            "header",
            "expected: action proto src sport -> dst dport",
        ));
    };
    let action = match action {
        "alert" => Action::Alert,
        "drop" => Action::Drop,
        "reject" | "rejectsrc" | "rejectdst" | "rejectboth" => Action::Reject,
        "pass" => Action::Pass,
        other => {
            return Err(RuleError::new(
                "action",
                format!("`{other}` is not supported"),
            ))
        }
    };
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "ip" => Proto::Ip,
        other => {
            return Err(RuleError::new(
                "protocol",
                format!("`{other}` is not supported (tcp, udp, icmp, ip are)"),
            ))
        }
    };
    let bidirectional = match dir {
        "->" => false,
        "<>" => true,
        other => return Err(RuleError::new("direction", format!("`{other}`"))),
    };
    let mut r = Rule {
        action,
        proto,
        src: parse_addr(src, vars, "source")?,
        src_port: parse_port(sp, vars, "source port")?,
        dst: parse_addr(dst, vars, "destination")?,
        dst_port: parse_port(dp, vars, "destination port")?,
        bidirectional,
        msg: String::new(),
        sid: 0,
        gid: 1,
        rev: 0,
        category: String::new(),
        priority: 0,
        items: Vec::new(),
        flow: FlowOpts::default(),
        flowbits: Vec::new(),
        dsize: None,
        flags: None,
        itype: None,
        icode: None,
        ttl: None,
        threshold: None,
    };
    let mut class_prio = None;
    for (kw, val) in split_options(&line[open + 1..close])? {
        apply_option(&mut r, &kw, val.as_deref(), classes, bits, &mut class_prio)?;
    }
    if r.sid == 0 {
        return Err(RuleError::new("sid", "missing"));
    }
    for item in &mut r.items {
        if let Item::Content(c) = item {
            c.prepare()?;
        }
    }
    if r.priority == 0 {
        r.priority = class_prio.unwrap_or(3);
    }
    Ok(r)
}

fn last_content<'a>(r: &'a mut Rule, kw: &str) -> Result<&'a mut Content, RuleError> {
    match r.items.last_mut() {
        Some(Item::Content(c)) => Ok(c),
        _ => Err(RuleError::new(kw, "must follow a content")),
    }
}

fn apply_option(
    r: &mut Rule,
    kw: &str,
    val: Option<&str>,
    classes: &Classifications,
    bits: &mut FlowbitNames,
    class_prio: &mut Option<u32>,
) -> Result<(), RuleError> {
    let need = || val.ok_or_else(|| RuleError::new(kw, "needs a value"));
    match kw {
        "msg" => r.msg = unquote(need()?),
        "sid" => r.sid = num(kw, val)?,
        "rev" => r.rev = num(kw, val)?,
        "gid" => r.gid = num(kw, val)?,
        "priority" => r.priority = num(kw, val)?,
        "metadata" | "reference" => {
            need()?;
        }
        "classtype" => {
            let name = need()?.trim();
            let c = classes
                .get(name)
                .ok_or_else(|| RuleError::new(kw, format!("unknown classtype `{name}`")))?;
            r.category = c.description.clone();
            *class_prio = Some(c.priority);
        }
        "content" => {
            let (pattern, negated) = parse_content(need()?)?;
            r.items.push(Item::Content(Content {
                pattern,
                negated,
                nocase: false,
                offset: None,
                depth: None,
                distance: None,
                within: None,
                fast_pattern: false,
                finder: None,
            }));
        }
        "nocase" => last_content(r, kw)?.nocase = true,
        "fast_pattern" => {
            if val.is_some() {
                return Err(RuleError::new(
                    kw,
                    "`fast_pattern:only` and chop are not supported",
                ));
            }
            let c = last_content(r, kw)?;
            if c.negated {
                return Err(RuleError::new(kw, "on a negated content"));
            }
            c.fast_pattern = true;
        }
        "offset" => {
            let n = num(kw, val)?;
            let c = last_content(r, kw)?;
            if c.distance.is_some() || c.within.is_some() {
                return Err(RuleError::new(kw, "mixed with distance/within"));
            }
            c.offset = Some(n);
        }
        "depth" => {
            let n: u32 = num(kw, val)?;
            let c = last_content(r, kw)?;
            if c.distance.is_some() || c.within.is_some() {
                return Err(RuleError::new(kw, "mixed with distance/within"));
            }
            if (n as usize) < c.pattern.len() {
                return Err(RuleError::new(kw, "smaller than the content"));
            }
            c.depth = Some(n);
        }
        "distance" => {
            let n = num(kw, val)?;
            let c = last_content(r, kw)?;
            if c.offset.is_some() || c.depth.is_some() {
                return Err(RuleError::new(kw, "mixed with offset/depth"));
            }
            c.distance = Some(n);
        }
        "within" => {
            let n: u32 = num(kw, val)?;
            let c = last_content(r, kw)?;
            if c.offset.is_some() || c.depth.is_some() {
                return Err(RuleError::new(kw, "mixed with offset/depth"));
            }
            if (n as usize) < c.pattern.len() {
                return Err(RuleError::new(kw, "smaller than the content"));
            }
            c.within = Some(n);
        }
        "pcre" => r.items.push(Item::Pcre(parse_pcre(need()?)?)),
        "flow" => {
            for part in need()?.split(',').map(str::trim) {
                match part {
                    "established" => r.flow.established = Some(true),
                    "not_established" => r.flow.established = Some(false),
                    "to_server" | "from_client" => r.flow.to_server = Some(true),
                    "to_client" | "from_server" => r.flow.to_server = Some(false),
                    other => {
                        return Err(RuleError::new(
                            kw,
                            format!("option `{other}` is not supported"),
                        ))
                    }
                }
            }
        }
        "flowbits" => {
            let v = need()?;
            let mut parts = v.splitn(2, ',').map(str::trim);
            let op = parts.next().unwrap_or("");
            let name = parts.next();
            let id = |bits: &mut FlowbitNames| -> Result<u32, RuleError> {
                match name {
                    Some(n) if !n.is_empty() && !n.contains(['|', '&']) && n.len() <= 256 => {
                        Ok(bits.id(n))
                    }
                    _ => Err(RuleError::new(kw, "needs one flowbit name")),
                }
            };
            r.flowbits.push(match op {
                "set" => FlowbitOp::Set(id(bits)?),
                "unset" => FlowbitOp::Unset(id(bits)?),
                "isset" => FlowbitOp::IsSet(id(bits)?),
                "isnotset" => FlowbitOp::IsNotSet(id(bits)?),
                "noalert" if name.is_none() => FlowbitOp::NoAlert,
                other => {
                    return Err(RuleError::new(
                        kw,
                        format!("operation `{other}` is not supported"),
                    ))
                }
            });
        }
        "dsize" => r.dsize = Some(NumCmp::parse(need()?, kw)?),
        "itype" => r.itype = Some(NumCmp::parse(need()?, kw)?),
        "icode" => r.icode = Some(NumCmp::parse(need()?, kw)?),
        "ttl" => r.ttl = Some(NumCmp::parse(need()?, kw)?),
        "flags" => r.flags = Some(parse_flags(need()?)?),
        "threshold" | "detection_filter" => {
            if r.threshold.is_some() {
                return Err(RuleError::new(kw, "only one threshold or detection_filter"));
            }
            r.threshold = Some(parse_threshold(kw, need()?)?);
        }
        other => {
            return Err(RuleError::new(other, "keyword is not supported"));
        }
    }
    Ok(())
}
