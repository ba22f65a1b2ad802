//! Intrusion detection on a tenant's edge (`hostel-ids`), after the tenant's firewall: each
//! IP packet crossing the edge to or from a watched network goes through the tenant's engine
//! (tenant-side addresses both ways: outbound before source NAT, inbound after destination
//! NAT, so one connection is one flow). Detect raises alerts; prevent also drops what a
//! `drop`/`reject` rule matched and the rest of that flow.
//!
//! Bounded work, and no tenant waits for another: each tenant has its own engine behind its
//! own lock, held for one packet's inspection (itself bounded: reassembly depth, flow table
//! and chain-match limits in `hostel-ids`). Each tenant also has a CPU budget per second
//! (`budget_us_per_sec`, a quarter of a core by default); once it is spent, that tenant's
//! packets are not inspected until the next second: passed (`fail_open`, counted
//! `overload_passed`) or dropped (`fail_closed`, counted `overload_dropped`).
//!
//! Rules are compiled aside (the control thread) and swapped in between two packets, so a
//! reload never stops traffic; the new engine starts with an empty flow table (a flow
//! established before the swap is inspected as untracked: content rules still match, rules
//! needing `flow:established` wait for the next connection).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostel_ids::packet::{decode, Link};
use hostel_ids::{Classifications, Config, Engine, Mode, RuleSet, Vars};
use hostel_switch_proto::ids::{
    IdsAlerts, IdsLoadReport, IdsMode, IdsOverload, IdsRefusal, IdsSpec, IdsStats,
};

/// Alerts kept per tenant until fetched; older ones are dropped first (counted).
const ALERT_RING: usize = 4096;
const DEFAULT_BUDGET_US: u64 = 250_000;

/// What detection says about one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdsVerdict {
    Pass,
    Drop,
}

struct Active {
    engine: Engine,
    networks: Vec<String>,
    /// Networks whose VM-to-VM traffic is inspected too.
    intra: Vec<String>,
    overload: IdsOverload,
    budget_ns: u64,
    /// The current second's start and the inspection time spent in it.
    window: Instant,
    spent_ns: u64,
}

#[derive(Default)]
struct AlertLog {
    ring: VecDeque<(u64, serde_json::Value)>,
    next: u64,
    lost: u64,
    per_sid: BTreeMap<u32, u64>,
}

/// A tenant's detection state, kept with its edge across table rebuilds.
#[derive(Default)]
pub struct EdgeIds {
    active: Mutex<Option<Active>>,
    alerts: Mutex<AlertLog>,
    packets: AtomicU64,
    drops: AtomicU64,
    overload_passed: AtomicU64,
    overload_dropped: AtomicU64,
    rules: AtomicU64,
    reloads: AtomicU64,
    /// Whether any network is watched: the one load on the path of an edge without detection.
    on: std::sync::atomic::AtomicBool,
    /// Whether any network's VM-to-VM traffic is inspected: the one load per TX batch of a
    /// tenant without it.
    intra_on: std::sync::atomic::AtomicBool,
}

/// Which traffic a packet is: crossing the tenant's edge, or between two of its VMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Edge,
    Intra,
}

/// Compiles `spec`'s rules into an engine; what was refused is in the report.
fn compile(spec: &IdsSpec) -> (Engine, IdsLoadReport) {
    let mut vars = Vars::default();
    for (k, v) in &spec.vars {
        vars.set(k, v);
    }
    let mut set = RuleSet::default();
    let r = set.load(&spec.rules, &vars, &Classifications::default());
    let report = IdsLoadReport {
        loaded: r.loaded,
        refused: r
            .refused
            .iter()
            .map(|e| IdsRefusal {
                sid: e.sid,
                keyword: e.keyword.clone(),
                reason: e.reason.clone(),
            })
            .collect(),
        active: false,
    };
    let config = Config {
        mode: match spec.mode {
            IdsMode::Detect => Mode::Detect,
            IdsMode::Prevent => Mode::Prevent,
        },
        stream_depth: spec.stream_depth.unwrap_or(1 << 20),
        ..Config::default()
    };
    (Engine::new(set, config), report)
}

impl EdgeIds {
    fn active(&self) -> std::sync::MutexGuard<'_, Option<Active>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self) -> std::sync::MutexGuard<'_, AlertLog> {
        self.alerts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Installs `spec` (compiled before the swap) or, with `None`, turns detection off.
    pub fn set(&self, spec: Option<&IdsSpec>) -> IdsLoadReport {
        let Some(spec) = spec else {
            self.on.store(false, Ordering::Release);
            self.intra_on.store(false, Ordering::Release);
            *self.active() = None;
            return IdsLoadReport::default();
        };
        let (engine, report) = compile(spec);
        let next = Active {
            engine,
            networks: spec.networks.clone(),
            intra: spec.intra_networks.clone(),
            overload: spec.overload,
            budget_ns: spec
                .budget_us_per_sec
                .unwrap_or(DEFAULT_BUDGET_US)
                .saturating_mul(1000),
            window: Instant::now(),
            spent_ns: 0,
        };
        let on = !next.networks.is_empty();
        let intra_on = !next.intra.is_empty();
        *self.active() = Some(next);
        self.on.store(on, Ordering::Release);
        self.intra_on.store(intra_on, Ordering::Release);
        self.rules.store(report.loaded as u64, Ordering::Relaxed);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        report
    }

    /// Whether detection is on for any network (cheap: one atomic load).
    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Whether any network's VM-to-VM traffic is inspected (one atomic load).
    pub fn intra_enabled(&self) -> bool {
        self.intra_on.load(Ordering::Acquire)
    }

    /// Inspects one IP packet (no Ethernet header) crossing the edge to or from network `net`.
    pub fn inspect(&self, net: &str, ip: &[u8]) -> IdsVerdict {
        self.inspect_scoped(Scope::Edge, net, ip)
    }

    /// Inspects one IP packet of network `net`, crossing the edge or (`Scope::Intra`) from
    /// one of the tenant's VMs to another: one engine, one budget, one alert ring for both,
    /// so a tenant's VM-to-VM traffic cannot buy it more inspection time than its share.
    pub fn inspect_scoped(&self, scope: Scope, net: &str, ip: &[u8]) -> IdsVerdict {
        let on = match scope {
            Scope::Edge => self.enabled(),
            Scope::Intra => self.intra_enabled(),
        };
        if !on {
            return IdsVerdict::Pass;
        }
        let mut guard = self.active();
        let Some(a) = guard.as_mut() else {
            return IdsVerdict::Pass;
        };
        let list = match scope {
            Scope::Edge => &a.networks,
            Scope::Intra => &a.intra,
        };
        if !list.iter().any(|n| n == net) {
            return IdsVerdict::Pass;
        }
        let start = Instant::now();
        if start.duration_since(a.window) >= Duration::from_secs(1) {
            a.window = start;
            a.spent_ns = 0;
        }
        if a.spent_ns >= a.budget_ns {
            return match a.overload {
                IdsOverload::FailOpen => {
                    self.overload_passed.fetch_add(1, Ordering::Relaxed);
                    IdsVerdict::Pass
                }
                IdsOverload::FailClosed => {
                    self.overload_dropped.fetch_add(1, Ordering::Relaxed);
                    IdsVerdict::Drop
                }
            };
        }
        let Some(p) = decode(Link::RawIp, ip) else {
            return IdsVerdict::Pass;
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let v = a.engine.inspect(ts, &p);
        a.spent_ns = a
            .spent_ns
            .saturating_add(start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64);
        drop(guard);
        self.packets.fetch_add(1, Ordering::Relaxed);
        if !v.alerts.is_empty() {
            let mut log = self.log();
            for alert in &v.alerts {
                *log.per_sid.entry(alert.sid).or_default() += 1;
                if log.ring.len() == ALERT_RING {
                    log.ring.pop_front();
                    log.lost += 1;
                }
                let seq = log.next + 1;
                log.next = seq;
                log.ring.push_back((seq, hostel_ids::eve::to_json(alert)));
            }
        }
        if v.drop {
            self.drops.fetch_add(1, Ordering::Relaxed);
            IdsVerdict::Drop
        } else {
            IdsVerdict::Pass
        }
    }

    /// Alerts with a sequence number above `after`, and how many such were lost.
    pub fn alerts_after(&self, after: u64) -> IdsAlerts {
        let log = self.log();
        let first_kept = log.ring.front().map_or(log.next + 1, |(s, _)| *s);
        IdsAlerts {
            alerts: log
                .ring
                .iter()
                .filter(|(s, _)| *s > after)
                .map(|(_, v)| v.clone())
                .collect(),
            next: log.next,
            lost: first_kept.saturating_sub(after + 1),
        }
    }

    /// Counters, or `None` while detection was never configured.
    pub fn stats(&self) -> Option<IdsStats> {
        if self.reloads.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let log = self.log();
        Some(IdsStats {
            packets: self.packets.load(Ordering::Relaxed),
            alerts: log.next,
            drops: self.drops.load(Ordering::Relaxed),
            overload_passed: self.overload_passed.load(Ordering::Relaxed),
            overload_dropped: self.overload_dropped.load(Ordering::Relaxed),
            alerts_lost: log.lost,
            per_sid: log.per_sid.clone(),
            rules: self.rules.load(Ordering::Relaxed) as usize,
            reloads: self.reloads.load(Ordering::Relaxed),
        })
    }
}

/// The outbound hook: inspects before the filter (the packet still carries the tenant's own
/// addresses); the caller drops on `Drop` only if the filter then accepts the packet.
/// A packet the filter drops was still seen by the engine (its flow state), a known cost of
/// keeping one connection one flow without a second copy.
pub fn before_filter(ids: &EdgeIds, net: &str, ip: &[u8]) -> IdsVerdict {
    ids.inspect(net, ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 5, 8, 8, 8, 8,
        ];
        let total = (20 + 8 + payload.len()) as u16;
        v[2..4].copy_from_slice(&total.to_be_bytes());
        v.extend_from_slice(&[0x30, 0x39, 0, 53]);
        v.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(payload);
        v
    }

    fn spec(mode: IdsMode, rules: &str) -> IdsSpec {
        IdsSpec {
            networks: vec!["net1".into()],
            mode,
            rules: rules.into(),
            ..IdsSpec::default()
        }
    }

    #[test]
    fn refused_rules_are_named_and_the_rest_load() {
        let ids = EdgeIds::default();
        let r = ids.set(Some(&spec(
            IdsMode::Detect,
            "alert udp any any -> any 53 (msg:\"x\"; content:\"evil\"; sid:1;)\n\
             alert udp any any -> any 53 (msg:\"y\"; http.uri; content:\"a\"; sid:2;)\n",
        )));
        assert_eq!(r.loaded, 1);
        assert_eq!(r.refused.len(), 1);
        assert_eq!(r.refused[0].sid, 2);
        assert_eq!(r.refused[0].keyword, "http.uri");
    }

    #[test]
    fn detect_alerts_prevent_drops_other_networks_untouched() {
        let rule = "drop udp any any -> any 53 (msg:\"evil\"; content:\"evil\"; sid:7;)\n";
        let ids = EdgeIds::default();
        ids.set(Some(&spec(IdsMode::Detect, rule)));
        assert_eq!(
            ids.inspect("net1", &udp4(b"an evil query")),
            IdsVerdict::Pass
        );
        assert_eq!(
            ids.inspect("net2", &udp4(b"an evil query")),
            IdsVerdict::Pass
        );
        let a = ids.alerts_after(0);
        assert_eq!(a.alerts.len(), 1, "{a:?}");
        assert_eq!(a.alerts[0]["alert"]["signature_id"], 7);
        assert_eq!(ids.alerts_after(a.next).alerts.len(), 0);
        ids.set(Some(&spec(IdsMode::Prevent, rule)));
        assert_eq!(
            ids.inspect("net1", &udp4(b"an evil query")),
            IdsVerdict::Drop
        );
        assert_eq!(
            ids.inspect("net1", &udp4(b"fine")),
            IdsVerdict::Drop,
            "rest of flow"
        );
        let s = ids.stats().expect("stats");
        assert_eq!((s.alerts, s.drops, s.reloads), (2, 2, 2));
        assert_eq!(s.per_sid.get(&7), Some(&2));
    }

    #[test]
    fn vm_to_vm_traffic_is_inspected_only_on_the_networks_asked_for() {
        let rule = "drop udp any any -> any 53 (msg:\"evil\"; content:\"evil\"; sid:7;)\n";
        let ids = EdgeIds::default();
        ids.set(Some(&spec(IdsMode::Prevent, rule)));
        assert!(!ids.intra_enabled(), "off by default");
        let p = udp4(b"an evil query");
        assert_eq!(
            ids.inspect_scoped(Scope::Intra, "net1", &p),
            IdsVerdict::Pass
        );
        assert!(ids.alerts_after(0).alerts.is_empty(), "not inspected");
        let mut s = spec(IdsMode::Prevent, rule);
        s.intra_networks = vec!["net1".into()];
        ids.set(Some(&s));
        assert!(ids.intra_enabled());
        assert_eq!(
            ids.inspect_scoped(Scope::Intra, "net1", &p),
            IdsVerdict::Drop
        );
        assert_eq!(
            ids.inspect_scoped(Scope::Intra, "net2", &p),
            IdsVerdict::Pass
        );
        assert_eq!(ids.alerts_after(0).alerts.len(), 1);
        ids.set(None);
        assert!(!ids.intra_enabled(), "off with the rest");
    }

    #[test]
    fn a_spent_budget_fails_open_or_closed_as_configured() {
        let rule = "alert udp any any -> any 53 (msg:\"e\"; content:\"evil\"; sid:1;)\n";
        for (overload, want) in [
            (IdsOverload::FailOpen, IdsVerdict::Pass),
            (IdsOverload::FailClosed, IdsVerdict::Drop),
        ] {
            let ids = EdgeIds::default();
            let mut s = spec(IdsMode::Detect, rule);
            s.overload = overload;
            s.budget_us_per_sec = Some(0);
            ids.set(Some(&s));
            assert_eq!(ids.inspect("net1", &udp4(b"evil")), want);
            let st = ids.stats().expect("stats");
            assert_eq!(st.alerts, 0, "nothing inspected over budget");
            assert_eq!(st.overload_passed + st.overload_dropped, 1);
        }
    }

    #[test]
    fn the_alert_ring_is_bounded_and_counts_what_it_lost() {
        let ids = EdgeIds::default();
        let mut s = spec(
            IdsMode::Detect,
            "alert udp any any -> any 53 (msg:\"e\"; content:\"evil\"; sid:1;)\n",
        );
        // 4,106 inspections of a debug build on a loaded host can spend the default quarter
        // second: the budget is not what this test is about.
        s.budget_us_per_sec = Some(60_000_000);
        ids.set(Some(&s));
        for _ in 0..ALERT_RING + 10 {
            ids.inspect("net1", &udp4(b"evil"));
        }
        let a = ids.alerts_after(0);
        assert_eq!(a.alerts.len(), ALERT_RING);
        assert_eq!(a.lost, 10);
        assert_eq!(ids.stats().expect("stats").alerts_lost, 10);
    }

    #[test]
    fn a_tenant_without_an_edge_keeps_its_spec_inactive_until_one_appears() {
        let sw = crate::switch::Switch::new();
        let r = sw
            .set_ids(
                "t9",
                Some(spec(
                    IdsMode::Detect,
                    "alert udp any any -> any 53 (msg:\"e\"; content:\"evil\"; sid:1;)\n",
                )),
            )
            .expect("kept");
        assert_eq!((r.loaded, r.active), (1, false));
        assert!(sw.ids_alerts("t9", 0).is_none(), "no edge, no alerts");
        let off = sw.set_ids("t9", None).expect("turned off");
        assert!(!off.active);
    }
}
