//! Address and port expressions of a rule header: CIDRs, lists, negation, ranges and variables.
//! Expansion of variables and nesting are bounded, since tenants write these.

use std::collections::HashMap;
use std::net::IpAddr;

use hostel_switch_proto::types::{Ipv4Cidr, Ipv6Cidr};

use crate::error::RuleError;

const MAX_DEPTH: usize = 8;
const MAX_ITEMS: usize = 4096;

/// Variables as `suricata.yaml` declares them (`HOME_NET`, `HTTP_PORTS`, ...), names without `$`.
#[derive(Debug, Clone)]
pub struct Vars {
    map: HashMap<String, String>,
}

impl Default for Vars {
    /// Suricata 7's defaults from Debian's `suricata.yaml`.
    fn default() -> Self {
        let mut v = Vars {
            map: HashMap::new(),
        };
        for (k, val) in [
            ("HOME_NET", "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]"),
            ("EXTERNAL_NET", "!$HOME_NET"),
            ("HTTP_SERVERS", "$HOME_NET"),
            ("SMTP_SERVERS", "$HOME_NET"),
            ("SQL_SERVERS", "$HOME_NET"),
            ("DNS_SERVERS", "$HOME_NET"),
            ("TELNET_SERVERS", "$HOME_NET"),
            ("AIM_SERVERS", "$EXTERNAL_NET"),
            ("DC_SERVERS", "$HOME_NET"),
            ("DNP3_SERVER", "$HOME_NET"),
            ("DNP3_CLIENT", "$HOME_NET"),
            ("MODBUS_CLIENT", "$HOME_NET"),
            ("MODBUS_SERVER", "$HOME_NET"),
            ("ENIP_CLIENT", "$HOME_NET"),
            ("ENIP_SERVER", "$HOME_NET"),
            ("HTTP_PORTS", "80"),
            ("SHELLCODE_PORTS", "!80"),
            ("ORACLE_PORTS", "1521"),
            ("SSH_PORTS", "22"),
            ("DNP3_PORTS", "20000"),
            ("MODBUS_PORTS", "502"),
            ("FILE_DATA_PORTS", "[$HTTP_PORTS,110,143]"),
            ("FTP_PORTS", "21"),
            ("GENEVE_PORTS", "6081"),
            ("VXLAN_PORTS", "4789"),
            ("TEREDO_PORTS", "3544"),
        ] {
            v.map.insert(k.to_string(), val.to_string());
        }
        v
    }
}

impl Vars {
    /// Sets or replaces a variable (`name` without the `$`).
    pub fn set(&mut self, name: &str, value: &str) {
        self.map
            .insert(name.trim_start_matches('$').to_string(), value.to_string());
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    V4(Ipv4Cidr),
    V6(Ipv6Cidr),
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Net::V4(c), IpAddr::V4(a)) => c.contains(a),
            (Net::V6(c), IpAddr::V6(a)) => c.contains(a),
            _ => false,
        }
    }
}

/// A compiled address expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrExpr {
    Any,
    Net(Net2),
    Not(Box<AddrExpr>),
    /// Matches when any positive element matches (or there is none) and no negated one does.
    List(Vec<AddrExpr>),
}

/// Opaque wrapper so the enum's variants stay private to this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net2(Net);

impl AddrExpr {
    pub fn matches(&self, ip: IpAddr) -> bool {
        match self {
            AddrExpr::Any => true,
            AddrExpr::Net(n) => n.0.contains(ip),
            AddrExpr::Not(e) => !e.matches(ip),
            AddrExpr::List(items) => list_matches(
                items,
                |e| e.matches(ip),
                |e| match e {
                    AddrExpr::Not(inner) => Some(inner),
                    _ => None,
                },
            ),
        }
    }
}

fn list_matches<T>(
    items: &[T],
    m: impl Fn(&T) -> bool,
    negated: impl Fn(&T) -> Option<&T>,
) -> bool {
    let mut any_pos = false;
    let mut pos_hit = false;
    for it in items {
        if let Some(inner) = negated(it) {
            if m(inner) {
                return false;
            }
        } else {
            any_pos = true;
            pos_hit = pos_hit || m(it);
        }
    }
    !any_pos || pos_hit
}

/// A compiled port expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortExpr {
    Any,
    Range(u16, u16),
    Not(Box<PortExpr>),
    List(Vec<PortExpr>),
}

impl PortExpr {
    pub fn matches(&self, port: u16) -> bool {
        match self {
            PortExpr::Any => true,
            PortExpr::Range(a, b) => (*a..=*b).contains(&port),
            PortExpr::Not(e) => !e.matches(port),
            PortExpr::List(items) => list_matches(
                items,
                |e| e.matches(port),
                |e| match e {
                    PortExpr::Not(inner) => Some(inner),
                    _ => None,
                },
            ),
        }
    }
    /// The single port this expression is, if it is one (for grouping rules by port).
    pub fn single(&self) -> Option<u16> {
        match self {
            PortExpr::Range(a, b) if a == b => Some(*a),
            _ => None,
        }
    }
}

struct Budget(usize);

impl Budget {
    fn take(&mut self, part: &str) -> Result<(), RuleError> {
        self.0 += 1;
        if self.0 > MAX_ITEMS {
            return Err(RuleError::new(
                part,
                "expression too large after variable expansion",
            ));
        }
        Ok(())
    }
}

/// Splits a `[a, b, [c, d]]` list body at its top-level commas.
fn split_list<'a>(s: &'a str, part: &str) -> Result<Vec<&'a str>, RuleError> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| RuleError::new(part, "unbalanced `]`"))?
            }
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(RuleError::new(part, "unbalanced `[`"));
    }
    out.push(s[start..].trim());
    Ok(out)
}

/// Parses an address expression (`any`, `$HOME_NET`, `!10.0.0.0/8`, `[1.2.3.4,!5.6.7.0/24]`).
pub fn parse_addr(s: &str, vars: &Vars, part: &str) -> Result<AddrExpr, RuleError> {
    addr_rec(s.trim(), vars, part, 0, &mut Budget(0))
}

fn addr_rec(
    s: &str,
    vars: &Vars,
    part: &str,
    depth: usize,
    budget: &mut Budget,
) -> Result<AddrExpr, RuleError> {
    budget.take(part)?;
    if depth > MAX_DEPTH {
        return Err(RuleError::new(part, "nested too deeply"));
    }
    if s.is_empty() {
        return Err(RuleError::new(part, "empty address"));
    }
    if let Some(rest) = s.strip_prefix('!') {
        return Ok(AddrExpr::Not(Box::new(addr_rec(
            rest.trim(),
            vars,
            part,
            depth + 1,
            budget,
        )?)));
    }
    if let Some(body) = s.strip_prefix('[') {
        let body = body
            .strip_suffix(']')
            .ok_or_else(|| RuleError::new(part, format!("unterminated list `{s}`")))?;
        let items = split_list(body, part)?
            .into_iter()
            .map(|it| addr_rec(it, vars, part, depth + 1, budget))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(AddrExpr::List(items));
    }
    if let Some(name) = s.strip_prefix('$') {
        let val = vars
            .get(name)
            .ok_or_else(|| RuleError::new(part, format!("undefined variable `${name}`")))?;
        return addr_rec(val.trim(), vars, part, depth + 1, budget);
    }
    if s.eq_ignore_ascii_case("any") {
        return Ok(AddrExpr::Any);
    }
    parse_net(s)
        .map(|n| AddrExpr::Net(Net2(n)))
        .ok_or_else(|| RuleError::new(part, format!("not an address or CIDR: `{s}`")))
}

fn parse_net(s: &str) -> Option<Net> {
    if s.contains('/') {
        if let Ok(c) = s.parse::<Ipv4Cidr>() {
            return Some(Net::V4(c));
        }
        return s.parse::<Ipv6Cidr>().ok().map(Net::V6);
    }
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V4(addr) => Some(Net::V4(Ipv4Cidr { addr, prefix: 32 })),
        IpAddr::V6(addr) => Some(Net::V6(Ipv6Cidr { addr, prefix: 128 })),
    }
}

/// Parses a port expression (`any`, `80`, `1024:`, `!22`, `[80,443,8000:8100]`, `$HTTP_PORTS`).
pub fn parse_port(s: &str, vars: &Vars, part: &str) -> Result<PortExpr, RuleError> {
    port_rec(s.trim(), vars, part, 0, &mut Budget(0))
}

fn port_rec(
    s: &str,
    vars: &Vars,
    part: &str,
    depth: usize,
    budget: &mut Budget,
) -> Result<PortExpr, RuleError> {
    budget.take(part)?;
    if depth > MAX_DEPTH {
        return Err(RuleError::new(part, "nested too deeply"));
    }
    if s.is_empty() {
        return Err(RuleError::new(part, "empty port"));
    }
    if let Some(rest) = s.strip_prefix('!') {
        return Ok(PortExpr::Not(Box::new(port_rec(
            rest.trim(),
            vars,
            part,
            depth + 1,
            budget,
        )?)));
    }
    if let Some(body) = s.strip_prefix('[') {
        let body = body
            .strip_suffix(']')
            .ok_or_else(|| RuleError::new(part, format!("unterminated list `{s}`")))?;
        let items = split_list(body, part)?
            .into_iter()
            .map(|it| port_rec(it, vars, part, depth + 1, budget))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(PortExpr::List(items));
    }
    if let Some(name) = s.strip_prefix('$') {
        let val = vars
            .get(name)
            .ok_or_else(|| RuleError::new(part, format!("undefined variable `${name}`")))?;
        return port_rec(val.trim(), vars, part, depth + 1, budget);
    }
    if s.eq_ignore_ascii_case("any") {
        return Ok(PortExpr::Any);
    }
    let bad = || RuleError::new(part, format!("not a port or range: `{s}`"));
    let num = |t: &str, dflt: u16| -> Result<u16, RuleError> {
        let t = t.trim();
        if t.is_empty() {
            Ok(dflt)
        } else {
            t.parse::<u16>().map_err(|_| bad())
        }
    };
    if let Some((a, b)) = s.split_once(':') {
        let (a, b) = (num(a, 0)?, num(b, u16::MAX)?);
        if a > b {
            return Err(bad());
        }
        return Ok(PortExpr::Range(a, b));
    }
    let p = s.parse::<u16>().map_err(|_| bad())?;
    Ok(PortExpr::Range(p, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_negation() {
        let v = Vars::default();
        let home = parse_addr("$HOME_NET", &v, "source").unwrap();
        let ext = parse_addr("$EXTERNAL_NET", &v, "source").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(home.matches(ip("10.1.2.3")));
        assert!(!home.matches(ip("8.8.8.8")));
        assert!(ext.matches(ip("8.8.8.8")));
        assert!(!ext.matches(ip("192.168.1.1")));
        let l = parse_addr("[10.0.0.0/8,!10.1.0.0/16]", &v, "source").unwrap();
        assert!(l.matches(ip("10.2.0.1")));
        assert!(!l.matches(ip("10.1.0.1")));
        assert!(!l.matches(ip("11.0.0.1")));
        let six = parse_addr("fd00::/8", &v, "source").unwrap();
        assert!(six.matches(ip("fd00::1")));
    }

    #[test]
    fn ports() {
        let v = Vars::default();
        let p = parse_port("[80,1024:2048,!1500]", &v, "dst_port").unwrap();
        assert!(p.matches(80) && p.matches(1024) && !p.matches(1500) && !p.matches(81));
        assert!(parse_port("!$HTTP_PORTS", &v, "x").unwrap().matches(81));
        assert!(parse_port(":1023", &v, "x").unwrap().matches(0));
        assert!(parse_port("70000", &v, "x").is_err());
        assert!(parse_port("[80", &v, "x").is_err());
    }

    #[test]
    fn self_referencing_variable_is_refused() {
        let mut v = Vars::default();
        v.set("LOOP", "[$LOOP,$LOOP]");
        let e = parse_addr("$LOOP", &v, "source").unwrap_err();
        assert_eq!(e.keyword, "source");
    }
}
