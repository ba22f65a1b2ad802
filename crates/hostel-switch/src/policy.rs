//! Policy stages compiled for the datapath: the rule lists the daemon programs (their config
//! types and the rules of evaluation are in [`hostel_switch_proto::policy`], re-exported
//! here) with mirror targets resolved, and their evaluation on a parsed frame.

use std::net::IpAddr;

pub use hostel_switch_proto::policy::{
    Action, IpCidr, PolicyConfig, PolicyScope, RuleConfig, MAX_ATTACHED, MAX_RULES,
};

use crate::error::ConfigError;
use crate::packet::{Parsed, L3};
use crate::stats::DropReason;
use crate::tables::PortIdx;

/// A rule's action once port names are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    Pass,
    Drop,
    Mirror(PortIdx),
}

/// A compiled rule: same fields, mirror target resolved to a table index.
#[derive(Clone, Debug)]
pub struct Rule {
    ethertype: Option<u16>,
    protocol: Option<u8>,
    src: Option<IpCidr>,
    dst: Option<IpCidr>,
    src_ports: Option<(u16, u16)>,
    dst_ports: Option<(u16, u16)>,
    action: RuleAction,
}

/// A stage's typed verdict on one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageVerdict {
    Pass,
    Drop(DropReason),
}

/// Validates `pc` and compiles it, with `port` resolving mirror targets.
pub fn compile(
    pc: &PolicyConfig,
    port: impl Fn(&str) -> Option<PortIdx>,
) -> Result<Vec<Rule>, ConfigError> {
    pc.validate()?;
    let mut out = Vec::with_capacity(pc.rules.len());
    for (i, r) in pc.rules.iter().enumerate() {
        let action = match &r.action {
            Action::Pass => RuleAction::Pass,
            Action::Drop => RuleAction::Drop,
            Action::Mirror(p) => {
                RuleAction::Mirror(port(p).ok_or_else(|| ConfigError::Policy {
                    id: pc.id.clone(),
                    reason: format!("rules[{i}]: mirror port {p:?} not found"),
                })?)
            }
        };
        out.push(Rule {
            ethertype: r.ethertype,
            protocol: r.protocol,
            src: r.src,
            dst: r.dst,
            src_ports: r.src_ports,
            dst_ports: r.dst_ports,
            action,
        });
    }
    Ok(out)
}

/// The header fields rules look at, read once per frame.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fields {
    ethertype: u16,
    protocol: Option<u8>,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    ports: Option<(u16, u16)>,
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;

impl Fields {
    /// `window` is the switch's private copy of the frame's first bytes, already parsed.
    pub fn of(p: &Parsed, window: &[u8]) -> Fields {
        let l4 = |proto: u8, off: usize| -> Option<(u16, u16)> {
            if !matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
                return None;
            }
            let b = window.get(off..off + 4)?;
            Some((
                u16::from_be_bytes([b[0], b[1]]),
                u16::from_be_bytes([b[2], b[3]]),
            ))
        };
        match &p.l3 {
            L3::Ipv4(ip) => {
                // A later fragment carries payload where the ports would be.
                let frag = window
                    .get(20..22)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]) & 0x1fff)
                    .unwrap_or(1);
                Fields {
                    ethertype: crate::packet::parse::ETHERTYPE_IPV4,
                    protocol: Some(ip.proto),
                    src: Some(IpAddr::V4(ip.src)),
                    dst: Some(IpAddr::V4(ip.dst)),
                    ports: if frag == 0 {
                        l4(ip.proto, ip.l4_off)
                    } else {
                        None
                    },
                }
            }
            L3::Ipv6(ip) => Fields {
                ethertype: crate::packet::parse::ETHERTYPE_IPV6,
                protocol: Some(ip.next),
                src: Some(IpAddr::V6(ip.src)),
                dst: Some(IpAddr::V6(ip.dst)),
                ports: l4(ip.next, ip.l4_off),
            },
            L3::Arp(_) => Fields {
                ethertype: crate::packet::parse::ETHERTYPE_ARP,
                ..Fields::default()
            },
            L3::Vlan => Fields {
                ethertype: crate::packet::parse::ETHERTYPE_VLAN,
                ..Fields::default()
            },
            L3::Other(e) => Fields {
                ethertype: *e,
                ..Fields::default()
            },
        }
    }
}

fn in_range(v: Option<u16>, r: Option<(u16, u16)>) -> bool {
    match (r, v) {
        (None, _) => true,
        (Some((lo, hi)), Some(v)) => lo <= v && v <= hi,
        (Some(_), None) => false,
    }
}

fn in_cidr(a: Option<IpAddr>, c: Option<IpCidr>) -> bool {
    match (c, a) {
        (None, _) => true,
        (Some(c), Some(a)) => c.contains(a),
        (Some(_), None) => false,
    }
}

impl Rule {
    fn matches(&self, f: &Fields) -> bool {
        self.ethertype.map_or(true, |e| e == f.ethertype)
            && self.protocol.map_or(true, |p| Some(p) == f.protocol)
            && in_cidr(f.src, self.src)
            && in_cidr(f.dst, self.dst)
            && in_range(f.ports.map(|p| p.0), self.src_ports)
            && in_range(f.ports.map(|p| p.1), self.dst_ports)
    }
}

/// Runs one policy over a frame; a mirror target is stored in `mirror` if none is yet (one
/// copy per frame, whatever the number of mirror rules that match).
pub fn evaluate(rules: &[Rule], f: &Fields, mirror: &mut Option<PortIdx>) -> StageVerdict {
    for r in rules {
        if !r.matches(f) {
            continue;
        }
        match r.action {
            RuleAction::Pass => return StageVerdict::Pass,
            RuleAction::Drop => return StageVerdict::Drop(DropReason::Filtered),
            RuleAction::Mirror(m) => {
                mirror.get_or_insert(m);
            }
        }
    }
    StageVerdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse;
    use crate::packet::parse::tests::udp4;
    use crate::types::MacAddr;

    fn compiled(rules: Vec<RuleConfig>) -> Vec<Rule> {
        let pc = PolicyConfig {
            id: "t".into(),
            scope: PolicyScope {
                network: Some("n".into()),
                port: None,
            },
            rules,
        };
        compile(&pc, |_| Some(7)).unwrap()
    }

    fn drop_if(f: impl FnOnce(&mut RuleConfig)) -> Vec<Rule> {
        let mut r = RuleConfig {
            ethertype: None,
            protocol: None,
            src: None,
            dst: None,
            src_ports: None,
            dst_ports: None,
            action: Action::Drop,
        };
        f(&mut r);
        compiled(vec![r])
    }

    fn verdict(rules: &[Rule], frame: &[u8]) -> StageVerdict {
        let p = parse(frame).unwrap();
        evaluate(rules, &Fields::of(&p, frame), &mut None)
    }

    fn frame() -> Vec<u8> {
        let m = MacAddr([2, 0, 0, 0, 0, 2]);
        udp4(
            m,
            m,
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
            b"x",
        )
    }

    const DROP: StageVerdict = StageVerdict::Drop(DropReason::Filtered);

    #[test]
    fn each_field_must_match() {
        let f = frame();
        let v4 = |s: &str| Some(IpCidr::V4(s.parse().unwrap()));
        assert_eq!(verdict(&drop_if(|r| r.protocol = Some(17)), &f), DROP);
        assert_eq!(
            verdict(&drop_if(|r| r.protocol = Some(6)), &f),
            StageVerdict::Pass
        );
        assert_eq!(verdict(&drop_if(|r| r.dst = v4("10.0.0.3/32")), &f), DROP);
        assert_eq!(
            verdict(&drop_if(|r| r.src = v4("10.0.0.3/32")), &f),
            StageVerdict::Pass
        );
        let v6 = Some(IpCidr::V6("::/0".parse().unwrap()));
        assert_eq!(verdict(&drop_if(|r| r.src = v6), &f), StageVerdict::Pass);
        assert_eq!(
            verdict(&drop_if(|r| r.ethertype = Some(0x86dd)), &f),
            StageVerdict::Pass
        );
        // udp4 sends from port 1234 to 5678.
        assert_eq!(
            verdict(&drop_if(|r| r.src_ports = Some((1234, 1234))), &f),
            DROP
        );
        assert_eq!(
            verdict(&drop_if(|r| r.dst_ports = Some((1, 5677))), &f),
            StageVerdict::Pass
        );
    }

    #[test]
    fn later_fragments_have_no_ports_to_match() {
        let mut f = frame();
        f[20] = 0x00;
        f[21] = 0x10; // fragment offset 16 (x 8 bytes): payload where the ports would be
        let rules = drop_if(|r| r.dst_ports = Some((0, u16::MAX)));
        assert_eq!(verdict(&rules, &f), StageVerdict::Pass);
        let by_proto = drop_if(|r| r.protocol = Some(17));
        assert_eq!(
            verdict(&by_proto, &f),
            DROP,
            "a fragment still has its protocol"
        );
    }

    #[test]
    fn first_match_decides_and_one_mirror_is_kept() {
        let f = frame();
        let rules = compiled(vec![
            RuleConfig {
                action: Action::Mirror("a".into()),
                ..drop_rule()
            },
            RuleConfig {
                action: Action::Pass,
                ..drop_rule()
            },
            drop_rule(),
        ]);
        let p = parse(&f).unwrap();
        let mut mirror = None;
        assert_eq!(
            evaluate(&rules, &Fields::of(&p, &f), &mut mirror),
            StageVerdict::Pass
        );
        assert_eq!(mirror, Some(7));
    }

    /// Guest bytes: every cut of a real frame and random windows, against rules that read
    /// every field, never panic and never read past the window.
    #[test]
    fn hostile_windows_are_judged_without_panics() {
        let all = compiled(vec![RuleConfig {
            ethertype: Some(0x0800),
            protocol: Some(17),
            src: Some(IpCidr::V4("10.0.0.0/8".parse().unwrap())),
            dst: Some(IpCidr::V4("10.0.0.0/8".parse().unwrap())),
            src_ports: Some((0, u16::MAX)),
            dst_ports: Some((0, u16::MAX)),
            action: Action::Mirror("x".into()),
        }]);
        let f = frame();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut windows: Vec<Vec<u8>> = (0..=f.len()).map(|n| f[..n].to_vec()).collect();
        for _ in 0..2000 {
            let mut w = f.clone();
            w.resize(128, 0);
            for b in w.iter_mut().skip(12) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            w[12] = if seed & 1 == 0 { 0x08 } else { 0x86 };
            w[13] = if seed & 1 == 0 { 0x00 } else { 0xdd };
            w[14] = if seed & 1 == 0 { 0x45 } else { 0x60 };
            windows.push(w);
        }
        let mut judged = 0;
        for w in &windows {
            if let Ok(p) = parse(w) {
                let mut m = None;
                evaluate(&all, &Fields::of(&p, w), &mut m);
                judged += 1;
            }
        }
        assert!(judged > 1000, "only {judged} windows parsed");
    }

    fn drop_rule() -> RuleConfig {
        RuleConfig {
            ethertype: None,
            protocol: None,
            src: None,
            dst: None,
            src_ports: None,
            dst_ports: None,
            action: Action::Drop,
        }
    }
}
