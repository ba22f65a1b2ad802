//! Tenants and their resource quotas.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::ids::{TenantId, TenantName};
use crate::time::Timestamp;

/// Upper bounds on what one tenant may reserve across all of its VMs.
///
/// A VM counts against the quota whether it is running or stopped: its disk
/// exists either way, and letting stopped VMs be free would let a tenant
/// overcommit the host simply by starting them later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub max_vcpus: u32,
    pub max_memory_mib: u64,
    pub max_disk_gib: u64,
    pub max_vms: u32,
    /// Networks the tenant may have. Each costs switch tables and, with an uplink, a
    /// host device, so it is bounded like VMs are.
    pub max_networks: u32,
    /// Of those, networks with an uplink (a TAP device in the host each).
    pub max_uplinks: u32,
    /// Floating public addresses on the external network (the edge's own address is
    /// not counted).
    pub max_public_addresses: u32,
}

impl Quota {
    /// Rejects values the storage layer cannot represent (SQLite integers are
    /// signed 64-bit); any smaller value, including 0 (a frozen tenant), is a
    /// legitimate policy choice.
    pub fn validate(&self) -> Result<(), StoreError> {
        let max = i64::MAX as u64;
        if self.max_memory_mib > max {
            return Err(StoreError::invalid("quota.max_memory_mib", "too large"));
        }
        if self.max_disk_gib > max {
            return Err(StoreError::invalid("quota.max_disk_gib", "too large"));
        }
        Ok(())
    }
}

/// What a tenant currently has reserved; the left-hand side of quota checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub vms: u64,
    pub networks: u64,
    /// Networks with an uplink.
    pub uplinks: u64,
    /// Floating public addresses held.
    pub public_addresses: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: TenantName,
    pub created_at: Timestamp,
    pub quota: Quota,
}
