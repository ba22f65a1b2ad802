//! The tenant firewall (`hostel-firewall`) as an edge's [`EdgeFilter`]: one [`Firewall`] per
//! tenant edge, made when the edge first appears and kept across table swaps, so a rule change
//! or any other reconfiguration keeps the tenant's connection table (the firewall's own
//! rule swap cuts only what the new rules forbid).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hostel_firewall::nat::{NatConfig, SnatNetwork};
use hostel_firewall::{Config, Direction, DropReason, Firewall, FirewallError, Stage, Validate};
use hostel_switch_proto::{
    ConfigError, EdgeConfig, FirewallLogEntry, FirewallStats, PolicySpec, RuleHits,
};

use crate::datapath::edge::{EdgeFilter, EdgeVerdict, FilterFactory};

/// The translation set-up an edge's config asks for.
fn nat_of(e: &EdgeConfig) -> NatConfig {
    NatConfig {
        floating: e.attached4.clone(),
        snat: e
            .snat4
            .iter()
            .map(|n| SnatNetwork {
                network: *n,
                outside: e.outside4,
            })
            .collect(),
        ..NatConfig::default()
    }
}

fn settings_of(e: &EdgeConfig) -> Config {
    let limit = e.conntrack_limit as usize;
    let d = Config::default();
    Config {
        conntrack_limit: limit,
        // Half-open connections may take at most a quarter of a small table.
        max_embryonic: d.max_embryonic.min(limit.div_ceil(4)),
        ..d
    }
}

fn refused(tenant: usize, what: &str, e: FirewallError) -> ConfigError {
    let field = match &e {
        FirewallError::Rule(r) => format!("edges[{tenant}].policy.{}", r.field),
        FirewallError::Nat(_) => format!("edges[{tenant}].{what}"),
    };
    ConfigError::External {
        field,
        reason: e.to_string(),
    }
}

/// Checks that edge `i`'s rules and translations are valid, before any of it is committed.
pub fn check_edge(i: usize, e: &EdgeConfig) -> Result<(), ConfigError> {
    e.policy
        .validate()
        .map_err(|r| refused(i, "policy", r.into()))?;
    hostel_firewall::nat::Nat::new(&nat_of(e)).map_err(|n| refused(i, "attached4", n.into()))?;
    Ok(())
}

/// A tenant edge's firewall.
pub struct FirewallFilter {
    fw: Firewall,
}

impl FirewallFilter {
    /// The firewall `e` describes (checked with [`check_edge`] first; an invalid set-up
    /// falls back to the default policy without translation: deny in, allow out).
    pub fn new(e: &EdgeConfig) -> FirewallFilter {
        let fw = Firewall::new(settings_of(e), &e.policy, &nat_of(e)).unwrap_or_else(|err| {
            tracing::error!(tenant = %e.tenant, error = %err, "edge firewall refused; default policy");
            let fallback = Firewall::new(
                settings_of(e),
                &PolicySpec::default(),
                &NatConfig::default(),
            );
            match fallback {
                Ok(fw) => fw,
                // The default policy without translation always validates.
                Err(_) => unreachable!("the default policy is valid"),
            }
        });
        FirewallFilter { fw }
    }

    pub fn firewall(&self) -> &Firewall {
        &self.fw
    }
}

/// Every edge gets a [`FirewallFilter`].
pub fn firewall_filters() -> FilterFactory {
    std::sync::Arc::new(|e| Box::new(FirewallFilter::new(e)))
}

fn verdict(v: hostel_firewall::Verdict) -> EdgeVerdict {
    match v {
        hostel_firewall::Verdict::Accept => EdgeVerdict::Pass,
        hostel_firewall::Verdict::Drop(_) => EdgeVerdict::Drop,
        hostel_firewall::Verdict::Reject { len } if len > 0 => EdgeVerdict::Reply(len),
        hostel_firewall::Verdict::Reject { .. } => EdgeVerdict::Drop,
    }
}

fn addr(v6: bool, a: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        // IPv4 addresses sit in the low 32 bits.
        IpAddr::V4(Ipv4Addr::from(a as u32))
    }
}

impl EdgeFilter for FirewallFilter {
    fn outbound(&mut self, pkt: &mut [u8], reply: &mut [u8], now: u64) -> EdgeVerdict {
        verdict(self.fw.process(Direction::Egress, pkt, now, reply))
    }

    fn inbound(&mut self, pkt: &mut [u8], reply: &mut [u8], now: u64) -> EdgeVerdict {
        verdict(self.fw.process(Direction::Ingress, pkt, now, reply))
    }

    fn prefetch(&self, pkt: &[u8], stage: Stage) {
        self.fw.prefetch(pkt, stage);
    }

    fn takes_hints(&self) -> bool {
        true
    }

    fn reconfigure(&mut self, e: &EdgeConfig) {
        // Both were checked by `check_edge` before the tables were committed.
        if let Err(err) = self.fw.set_nat(&nat_of(e)) {
            tracing::error!(tenant = %e.tenant, error = %err, "edge translations not applied");
        }
        self.set_policy(&e.policy);
    }

    fn set_policy(&mut self, p: &PolicySpec) -> Option<Result<u64, FirewallError>> {
        Some(self.fw.set_policy(p).map(|c| {
            tracing::info!(
                generation = c.generation,
                cut = c.cut,
                "edge firewall rules swapped"
            );
            c.generation
        }))
    }

    fn firewall_stats(&self) -> Option<FirewallStats> {
        let s = self.fw.stats();
        let ct = self.fw.conntrack();
        let mut rules = Vec::new();
        for d in [Direction::Ingress, Direction::Egress] {
            for (rule, h) in self.fw.rule_stats(d) {
                rules.push(RuleHits {
                    direction: d,
                    rule,
                    packets: h.packets,
                    bytes: h.bytes,
                });
            }
        }
        Some(FirewallStats {
            generation: s.generation,
            accepted: s.accepted,
            drops: DropReason::ALL
                .iter()
                .filter(|r| s.drops(**r) > 0)
                .map(|r| (r.name().to_string(), s.drops(*r)))
                .collect(),
            rejects_sent: s.rejects_sent,
            rules,
            conntrack: ct.occupancy,
            conntrack_limit: self.fw.conntrack_limit(),
            cut_by_policy: ct.cut_by_policy,
            log_written: self.fw.log_stats().written,
            log_rate_limited: self.fw.log_stats().rate_limited,
        })
    }

    fn drain_log(&mut self, out: &mut Vec<FirewallLogEntry>) {
        out.extend(self.fw.drain_log().map(|l| FirewallLogEntry {
            time_ns: l.time,
            rule: l.rule_id,
            direction: l.direction,
            action: l.action,
            protocol: l.tuple.proto,
            src: addr(l.tuple.v6, l.tuple.src),
            dst: addr(l.tuple.v6, l.tuple.dst),
            sport: l.tuple.sport,
            dport: l.tuple.dport,
            len: l.len,
        }));
    }
}
