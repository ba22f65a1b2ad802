//! The host's storage pool as the store sees it: the devices the operator added, and the
//! tenants' volumes (their size, copies, the VM each is attached to, and the step a change
//! is at). The pool's own metadata (what is allocated where, snapshots) lives on the pool's
//! devices; rows here are the intent the reconciler finishes or undoes after a crash.

use serde::{Deserialize, Serialize};

use super::word_enum;
use crate::ids::{TenantId, VmId, VolumeId, VolumeName};
use crate::time::Timestamp;

/// A tenant's default quota on provisioned and on allocated volume bytes (100 GiB each).
pub const DEFAULT_MAX_VOLUME_BYTES: u64 = 100 << 30;

word_enum!(
    /// Where a device's addition stands: recorded before the storage process formats it,
    /// ready once the pool has it.
    DeviceState {
        Adding => "adding",
        Ready => "ready",
    }
);

word_enum!(
    /// Where a volume stands: recorded (`creating`) before the pool makes it, `ready`
    /// once the pool has it, `deleting` from the delete's start until the pool dropped it.
    VolumeState {
        Creating => "creating",
        Ready => "ready",
        Deleting => "deleting",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageDevice {
    pub path: String,
    pub state: DeviceState,
    pub added_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewVolume {
    pub name: VolumeName,
    pub size_bytes: u64,
    /// 1 or 2 copies on distinct devices.
    pub copies: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub id: VolumeId,
    pub tenant: TenantId,
    pub name: VolumeName,
    pub size_bytes: u64,
    pub copies: u8,
    /// The VM it is attached to (one at a time).
    pub vm: Option<VmId>,
    pub state: VolumeState,
    pub created_at: Timestamp,
}

impl Volume {
    /// The volume's name in the pool (and its socket's): its id, unique across tenants.
    pub fn pool_name(&self) -> String {
        format!("v-{}", self.id)
    }
}

/// A tenant's storage limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageQuota {
    pub max_volume_bytes: u64,
    pub max_volume_allocated_bytes: u64,
}
