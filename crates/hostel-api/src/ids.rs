//! Intrusion detection on a tenant's networks: the tenant's rules (Suricata's language), which
//! networks are watched and how (detect or prevent, fail open or closed when detection cannot
//! keep up), and its alerts as Suricata EVE JSON records.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `PUT /v1/ids`: which of the tenant's networks are watched, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdsSettingsBody {
    /// `detect` (alerts only) or `prevent` (a `drop`/`reject` rule's match is dropped with the
    /// rest of its flow).
    #[schema(pattern = "^(detect|prevent)$")]
    pub mode: String,
    /// `fail_open` (default) or `fail_closed`: what happens to packets once the tenant's
    /// inspection budget for the second is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(fail_open|fail_closed)$")]
    pub overload: Option<String>,
    /// Names of the tenant's networks to watch (traffic crossing its firewall); empty: off.
    pub networks: Vec<String>,
    /// Of those, the networks whose traffic between the tenant's own VMs (which never crosses
    /// its firewall) is inspected too, with the same budget and overload behaviour. Default:
    /// none. Only networks attached to the external network are inspected (the tenant's
    /// detection runs with its edge).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intra_networks: Vec<String>,
}

/// `PUT /v1/ids/rules`: the tenant's own rules, one per line (replacing the previous ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdsRulesBody {
    #[schema(max_length = 1048576)]
    pub rules: String,
}

/// A rule that was not loaded: its sid (0 when unreadable), the keyword or part at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IdsRefusalView {
    pub sid: u32,
    pub keyword: String,
    pub reason: String,
}

/// A tenant's detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IdsView {
    pub mode: String,
    pub overload: String,
    /// Watched networks, by name.
    pub networks: Vec<String>,
    /// Watched networks whose VM-to-VM traffic is inspected too.
    #[serde(default)]
    pub intra_networks: Vec<String>,
    /// The tenant's rules that load, and those refused (each with its sid and keyword).
    pub rules_loaded: usize,
    pub rules_refused: Vec<IdsRefusalView>,
    /// The operator's rules (every tenant's) that load.
    pub operator_rules_loaded: usize,
    /// `applied`, `off`, or `pending: <why>` (e.g. the tenant has no edge on the switch yet).
    pub switch: String,
}

/// `GET /v1/ids/alerts?after=N`: EVE `alert` records after sequence number `after`, the
/// number to ask after next (follow by asking again), and how many were lost in between.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IdsAlertsView {
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<serde_json::Value>,
    pub next: u64,
    pub lost: u64,
}
