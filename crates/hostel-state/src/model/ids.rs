//! A tenant's intrusion detection: its own rules, the networks it watches, mode and overload
//! behaviour. The operator's rules (a directory of `.rules` files) are not in the store.

use hostel_types::{IdsMode, IdsOverload};
use serde::{Deserialize, Serialize};

use crate::ids::NetworkId;

/// Largest rule text a tenant may store (bytes): rules are compiled by the switch, and a
/// request carrying them is bounded too.
pub const MAX_IDS_RULES: usize = 1 << 20;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdsSettings {
    pub mode: IdsMode,
    pub overload: IdsOverload,
    /// The tenant's networks detection is on for (traffic crossing its firewall).
    pub networks: Vec<NetworkId>,
    /// Of those, the networks whose traffic between the tenant's own VMs is inspected too.
    #[serde(default)]
    pub intra_networks: Vec<NetworkId>,
    /// The tenant's own rules, in Suricata's language.
    pub rules: String,
}
