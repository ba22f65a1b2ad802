//! Intrusion detection on a tenant's edge: what the daemon asks of the switch (`set_ids`) and
//! what the switch reports (load report, counters, alerts as EVE JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use hostel_types::{IdsMode, IdsOverload};

/// One tenant's detection: the networks it watches (traffic crossing the tenant's firewall to
/// or from them), its mode, and its rules (the operator's and the tenant's, as one text).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdsSpec {
    /// Network ids detection is on for; the others cross the edge uninspected.
    pub networks: Vec<String>,
    #[serde(default)]
    pub mode: IdsMode,
    #[serde(default)]
    pub overload: IdsOverload,
    /// Networks whose traffic between the tenant's own VMs (frames from one of its NICs to
    /// another on that network, which never cross the firewall) is inspected too; off
    /// (empty) by default. Each carries the same budget and overload behaviour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intra_networks: Vec<String>,
    /// Rules in Suricata's language, one per line.
    pub rules: String,
    /// Rule variables (`HOME_NET` = the tenant's networks, ...), as `[a,b]` lists or single
    /// values; Suricata's defaults for the rest.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Reassembly depth per flow and direction (bytes); 1 MiB when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_depth: Option<usize>,
    /// CPU time (microseconds) this tenant's inspection may take per second; 250,000 (a
    /// quarter of a core) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_us_per_sec: Option<u64>,
}

/// A rule the switch refused: its sid (0 when unreadable), the keyword at fault and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdsRefusal {
    pub sid: u32,
    pub keyword: String,
    pub reason: String,
}

/// How a rule text loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdsLoadReport {
    pub loaded: usize,
    pub refused: Vec<IdsRefusal>,
    /// Whether detection runs now (false: off, or kept until the tenant has an edge).
    #[serde(default)]
    pub active: bool,
}

/// One tenant's detection counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IdsStats {
    /// Packets inspected.
    pub packets: u64,
    pub alerts: u64,
    /// Packets dropped in prevent mode (the matching one and the rest of its flow).
    pub drops: u64,
    /// Packets passed uninspected, or dropped, because the budget was spent.
    pub overload_passed: u64,
    pub overload_dropped: u64,
    /// Alerts that fell out of the bounded alert buffer before anyone fetched them.
    pub alerts_lost: u64,
    /// Alerts per signature id.
    pub per_sid: BTreeMap<u32, u64>,
    /// Rules loaded now, and how many times rules were (re)loaded.
    pub rules: usize,
    pub reloads: u64,
}

/// Alerts after sequence number `after` (`ids_alerts`): EVE `alert` records in order, the
/// sequence number to ask after next time, and how many were lost in between.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IdsAlerts {
    pub alerts: Vec<serde_json::Value>,
    pub next: u64,
    pub lost: u64,
}
