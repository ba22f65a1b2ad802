//! The firewall benchmark's policy (`hostel_firewall::bench_policy`) translated into nftables
//! rulesets for the kernel reference of `bench-nft`: a linear chain (one nft rule per policy
//! rule, in evaluation order) and a set/map ruleset (the rules of one shape in one verdict map
//! keyed by concatenated intervals). Both start with `ct state established,related accept`.

use std::collections::BTreeSet;
use std::fmt::Write;

use hostel_firewall::rule::{Action, Direction, PolicySpec, PortSpec, ProtocolSpec, RuleSpec};

/// How the policy's rules become nftables rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One rule per policy rule, first match decides, as `iptables` users write it.
    Linear,
    /// Named sets and verdict maps: a lookup per rule shape instead of a walk.
    Maps,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Linear => "nft linear chain",
            Layout::Maps => "nft sets/maps",
        }
    }
}

/// The interface the ingress (outside → VM) traffic arrives on in the forwarding namespace.
pub const OUTSIDE_IF: &str = "a1";

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("rule {id}: {what} has no nftables translation in this benchmark")]
    Unsupported { id: u32, what: String },
    #[error("rule {id}: address set {name:?} is not defined")]
    UnknownSet { id: u32, name: String },
}

fn verdict(a: &Action) -> &'static str {
    match a {
        Action::Allow => "accept",
        // The benchmark traffic never reaches these; a reject would answer, a drop does not.
        Action::Drop | Action::Reject => "drop",
    }
}

fn proto(r: &RuleSpec) -> Result<String, TranslateError> {
    match &r.protocol {
        ProtocolSpec::Name(n) if ["tcp", "udp", "icmp"].contains(&n.as_str()) => Ok(n.clone()),
        other => Err(TranslateError::Unsupported {
            id: r.id,
            what: format!("protocol {other:?}"),
        }),
    }
}

fn ports(list: &[PortSpec]) -> Vec<String> {
    list.iter()
        .map(|p| match p {
            PortSpec::One(p) => p.to_string(),
            PortSpec::Range { from, to } if from == to => from.to_string(),
            PortSpec::Range { from, to } => format!("{from}-{to}"),
        })
        .collect()
}

fn family(cidr: &str) -> &'static str {
    if cidr.contains(':') {
        "ip6"
    } else {
        "ip"
    }
}

/// The policy's ingress rules in evaluation order (lowest priority, then lowest id).
fn ingress(p: &PolicySpec) -> Vec<&RuleSpec> {
    let mut v: Vec<&RuleSpec> = p
        .rules
        .iter()
        .filter(|r| r.direction == Direction::Ingress)
        .collect();
    v.sort_by_key(|r| (r.priority, r.id));
    v
}

/// A rule's sources with `set:NAME` expanded (a set of one family gives one nft match).
fn sources(p: &PolicySpec, r: &RuleSpec) -> Result<Vec<String>, TranslateError> {
    let mut out = Vec::new();
    for s in &r.source {
        match s.strip_prefix("set:") {
            Some(name) => out.extend(
                p.sets
                    .get(name)
                    .ok_or_else(|| TranslateError::UnknownSet {
                        id: r.id,
                        name: name.into(),
                    })?
                    .iter()
                    .cloned(),
            ),
            None => out.push(s.clone()),
        }
    }
    Ok(out)
}

fn header(out: &mut String) {
    out.push_str("table inet hostel_bench {\n");
}

fn forward_chain(out: &mut String) {
    // Egress (VM → outside) is allowed by the policy's default; ingress jumps to its rules.
    let _ = writeln!(
        out,
        "  chain forward {{\n    type filter hook forward priority filter; policy drop;\n    \
         ct state established,related accept\n    ct state invalid drop\n    \
         iifname \"{OUTSIDE_IF}\" jump ingress\n    accept\n  }}"
    );
}

/// The whole ruleset for `nft -f`, replacing any previous `hostel_bench` table.
pub fn ruleset(p: &PolicySpec, layout: Layout) -> Result<String, TranslateError> {
    let mut out = String::from("table inet hostel_bench\ndelete table inet hostel_bench\n");
    header(&mut out);
    // Named sets, as the policy names them, in both layouts.
    for (name, list) in &p.sets {
        let fam = if list.iter().any(|c| c.contains(':')) {
            "ipv6_addr"
        } else {
            "ipv4_addr"
        };
        let _ = writeln!(
            out,
            "  set {name} {{ type {fam}; flags interval; auto-merge; elements = {{ {} }} }}",
            list.join(", ")
        );
    }
    let body = match layout {
        Layout::Linear => linear(p)?,
        Layout::Maps => maps(p, &mut out)?,
    };
    forward_chain(&mut out);
    // The counter shows how many packets reached the policy (`bench-nft` checks that the
    // established traffic does not).
    out.push_str("  chain ingress {\n    counter\n");
    out.push_str(&body);
    out.push_str("    drop\n  }\n}\n");
    Ok(out)
}

fn linear(p: &PolicySpec) -> Result<String, TranslateError> {
    let mut body = String::new();
    for r in ingress(p) {
        let pr = proto(r)?;
        let mut m = String::new();
        let mut fam = None;
        if let [one] = r.source.as_slice() {
            if let Some(name) = one.strip_prefix("set:") {
                let _ = write!(m, "ip saddr @{name} ");
                fam = Some("ip");
            }
        }
        if fam.is_none() && !r.source.is_empty() {
            let s = sources(p, r)?;
            let f = family(&s[0]);
            let _ = write!(m, "{f} saddr {{ {} }} ", s.join(", "));
            fam = Some(f);
        }
        if !r.destination.is_empty() {
            let f = family(&r.destination[0]);
            let _ = write!(m, "{f} daddr {{ {} }} ", r.destination.join(", "));
            fam = Some(f);
        }
        if fam.is_none() && pr != "icmp" {
            let _ = write!(m, "meta l4proto {pr} ");
        }
        if pr == "icmp" {
            match r.icmp_type {
                Some(t) => {
                    let _ = write!(m, "icmp type {t} ");
                }
                None => m.push_str("meta l4proto icmp "),
            }
        } else if !r.destination_ports.is_empty() {
            let _ = write!(
                m,
                "{pr} dport {{ {} }} ",
                ports(&r.destination_ports).join(", ")
            );
        } else if fam.is_some() {
            let _ = write!(m, "meta l4proto {pr} ");
        }
        if !r.source_ports.is_empty() {
            let _ = write!(m, "{pr} sport {{ {} }} ", ports(&r.source_ports).join(", "));
        }
        let _ = writeln!(body, "    {m}{}", verdict(&r.action));
    }
    Ok(body)
}

/// A verdict map: its name, key type, match expression, elements and their keys seen.
type Shape = (String, String, String, Vec<String>, BTreeSet<String>);

/// One verdict map per (family, protocol, key shape); an element per (source, port) pair.
/// A key that an earlier rule already took keeps the earlier verdict (first match decides);
/// the benchmark's generated rules do not otherwise overlap in ways where order matters.
fn maps(p: &PolicySpec, decl: &mut String) -> Result<String, TranslateError> {
    let mut shapes: Vec<Shape> = Vec::new();
    let mut tail = String::new();
    for r in ingress(p) {
        let pr = proto(r)?;
        let srcs = sources(p, r)?;
        let (key, types, expr) = if pr == "icmp" {
            let Some(t) = r.icmp_type else {
                return Err(TranslateError::Unsupported {
                    id: r.id,
                    what: "icmp without a type".into(),
                });
            };
            (
                vec![t.to_string()],
                "ipv4_addr . icmp_type",
                "ip saddr . icmp type",
            )
        } else if !srcs.is_empty() && r.destination.is_empty() {
            let f = family(&srcs[0]);
            let (types, expr) = match (f, pr.as_str()) {
                ("ip", "tcp") => ("ipv4_addr . inet_service", "ip saddr . tcp dport"),
                ("ip", _) => ("ipv4_addr . inet_service", "ip saddr . udp dport"),
                (_, "tcp") => ("ipv6_addr . inet_service", "ip6 saddr . tcp dport"),
                _ => ("ipv6_addr . inet_service", "ip6 saddr . udp dport"),
            };
            (ports(&r.destination_ports), types, expr)
        } else {
            // Other shapes (the allowing rule: destination and port) stay plain rules, after
            // the maps: the benchmark puts that rule last in evaluation order anyway.
            let d = r.destination.join(", ");
            let _ = writeln!(
                tail,
                "    ip daddr {{ {d} }} {pr} dport {{ {} }} {}",
                ports(&r.destination_ports).join(", "),
                verdict(&r.action)
            );
            continue;
        };
        let name = format!("m{}", shapes.len());
        let slot = match shapes.iter().position(|s| s.2 == expr) {
            Some(i) => i,
            None => {
                shapes.push((name, types.into(), expr.into(), Vec::new(), BTreeSet::new()));
                shapes.len() - 1
            }
        };
        let s = &mut shapes[slot];
        for src in &srcs {
            for k in &key {
                let el = format!("{src} . {k}");
                if s.4.insert(el.clone()) {
                    s.3.push(format!("{el} : {}", verdict(&r.action)));
                }
            }
        }
    }
    let mut body = String::new();
    for (name, types, expr, elements, _) in &shapes {
        let _ = writeln!(
            decl,
            "  map {name} {{ type {types} : verdict; flags interval; elements = {{ {} }} }}",
            elements.join(", ")
        );
        let _ = writeln!(body, "    {expr} vmap @{name}");
    }
    body.push_str(&tail);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostel_firewall::bench_policy::policy;

    #[test]
    fn both_layouts_translate_every_rule_count() {
        for n in [0, 100, 1000] {
            let lin = ruleset(&policy(n), Layout::Linear).expect("linear");
            // Every policy rule is one line of the ingress chain, plus the final drop.
            let chain = lin.split("chain ingress {").nth(1).expect("chain");
            assert_eq!(
                chain
                    .lines()
                    .filter(|l| l.ends_with("accept") || l.ends_with("drop"))
                    .count(),
                n + 2
            );
            let maps = ruleset(&policy(n), Layout::Maps).expect("maps");
            assert!(maps.contains("ct state established,related accept"));
            assert!(maps.contains("ip daddr { 10.0.0.0/16 } tcp dport { 80 } accept"));
        }
    }
}
