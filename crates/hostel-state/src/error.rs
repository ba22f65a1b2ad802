//! The one error type every store operation returns.
//!
//! Variants are chosen so the API layer can map them to HTTP statuses without
//! string matching (NotFound→404, Conflict→409, QuotaExceeded→403/422,
//! Invalid→400, Backend→500), and so no backend type (rusqlite, etcd) leaks
//! through the [`Store`](crate::Store) trait.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which kind of record an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Tenant,
    Vm,
    Token,
    Setting,
    Network,
    Nic,
    /// A public address on the external network.
    Address,
    /// The host's external network.
    External,
    /// A firewall rule, address set or VM group.
    Firewall,
    /// A tenant's storage volume.
    Volume,
    /// A device of the host's storage pool.
    Device,
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntityKind::Tenant => "tenant",
            EntityKind::Vm => "vm",
            EntityKind::Token => "token",
            EntityKind::Setting => "setting",
            EntityKind::Network => "network",
            EntityKind::Nic => "nic",
            EntityKind::Address => "address",
            EntityKind::External => "external network",
            EntityKind::Firewall => "firewall",
            EntityKind::Volume => "volume",
            EntityKind::Device => "device",
        })
    }
}

/// A quota dimension; named in errors so tenants learn which limit bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaResource {
    Vcpus,
    MemoryMib,
    DiskGib,
    Vms,
    Networks,
    Uplinks,
    PublicAddresses,
    /// Bytes of volumes provisioned (their sizes).
    VolumeBytes,
    /// Bytes of volumes allocated in the pool (written clusters, snapshots included).
    VolumeAllocatedBytes,
}

impl fmt::Display for QuotaResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuotaResource::Vcpus => "vcpus",
            QuotaResource::MemoryMib => "memory_mib",
            QuotaResource::DiskGib => "disk_gib",
            QuotaResource::Vms => "vms",
            QuotaResource::Networks => "networks",
            QuotaResource::Uplinks => "uplinks",
            QuotaResource::PublicAddresses => "public_addresses",
            QuotaResource::VolumeBytes => "volume_bytes",
            QuotaResource::VolumeAllocatedBytes => "volume_allocated_bytes",
        })
    }
}

/// The numbers behind a refused create/resize, so the message can say
/// exactly how far over the limit the request was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaViolation {
    pub resource: QuotaResource,
    pub requested: u64,
    pub in_use: u64,
    pub limit: u64,
}

impl fmt::Display for QuotaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} requested + {} in use > quota {}",
            self.resource, self.requested, self.in_use, self.limit
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: EntityKind, name: String },

    /// The write would break a uniqueness rule or lost an optimistic-concurrency race.
    #[error("{kind} {name:?}: {reason}")]
    Conflict {
        kind: EntityKind,
        name: String,
        reason: String,
    },

    #[error("quota exceeded: {0}")]
    QuotaExceeded(QuotaViolation),

    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },

    /// Storage failure (I/O, corruption, busy beyond the timeout). Carries text
    /// only, so callers never depend on which backend produced it.
    #[error("storage backend: {0}")]
    Backend(String),
}

impl StoreError {
    pub(crate) fn not_found(kind: EntityKind, name: impl fmt::Display) -> Self {
        StoreError::NotFound {
            kind,
            name: name.to_string(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn conflict(
        kind: EntityKind,
        name: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        StoreError::Conflict {
            kind,
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_message_names_limit_and_numbers() {
        let e = StoreError::QuotaExceeded(QuotaViolation {
            resource: QuotaResource::Vcpus,
            requested: 6,
            in_use: 4,
            limit: 8,
        });
        assert_eq!(
            e.to_string(),
            "quota exceeded: vcpus: 6 requested + 4 in use > quota 8"
        );
    }
}
