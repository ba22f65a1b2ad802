//! A network's security appliance: the VM NIC all of the network's outside traffic goes
//! through (issue 16, item 7). One per network at most.

use serde::{Deserialize, Serialize};

use crate::ids::{NetworkId, TenantId, VmId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityAppliance {
    pub network: NetworkId,
    pub tenant: TenantId,
    /// The appliance's VM and NIC index; `None` once that VM was deleted (the designation
    /// stays, so the network keeps failing closed until the tenant changes it).
    pub nic: Option<(VmId, u32)>,
}
