//! Desired-state store of the hostel daemon.
//!
//! Holds what customers asked for — tenants, API tokens, VM specs and their
//! desired state, virtual networks and the VMs' NICs on them — plus what the
//! engine last observed, an audit trail and host settings. The daemon talks
//! to the [`Store`] trait; [`SqliteStore`] is the single-host backend
//! (`<state-dir>/hostel.db`, WAL, fsync on every commit). A clustered
//! backend can implement the same trait later.
//!
//! ```no_run
//! use hostel_state::{Actor, NewAuditEntry, Quota, SqliteStore, Store, TenantName};
//! let store = SqliteStore::open("/var/lib/hostel")?;
//! let quota = Quota {
//!     max_vcpus: 8, max_memory_mib: 16_384, max_disk_gib: 200, max_vms: 4,
//!     max_networks: 4, max_uplinks: 1, max_public_addresses: 2,
//! };
//! // Every change a caller asks for is committed with the audit entry describing it.
//! let audit = |action: &str| NewAuditEntry::ok(Actor::Operator, None, action, "acme");
//! let acme = store.create_tenant(&TenantName::new("acme")?, quota, &audit("tenant.create"))?;
//! let issued = store.issue_token(Some(&acme.id), "ci", &audit("token.create"))?;
//! println!("token (shown once): {}", issued.secret.expose());
//! # Ok::<(), hostel_state::StoreError>(())
//! ```

#![forbid(unsafe_code)]

mod error;
mod ids;
mod model;
mod quota;
mod sqlite;
mod store;
mod time;

pub use error::{EntityKind, QuotaResource, QuotaViolation, Result, StoreError};
pub use ids::{
    NetworkId, NetworkName, SettingKey, TenantId, TenantName, TokenId, VmId, VmName, VolumeId,
    VolumeName,
};
pub use model::agent::{AgentSettings, DEFAULT_MAX_FILE_BYTES, MAX_FILE_BYTES_LIMIT};
pub use model::appliance::SecurityAppliance;
pub use model::audit::{Actor, AuditEntry, AuditQuery, AuditResult, NewAuditEntry};
pub use model::edge::{
    AddressKind, ExternalSetup, FirewallDoc, NetworkEdge, PublicAddress,
    DEFAULT_MAX_PUBLIC_ADDRESSES, MAX_POOLS,
};
pub use model::ids::{IdsSettings, MAX_IDS_RULES};
pub use model::network::{
    first_choice_mac, slaac_address, Ipv4Net, Ipv6Prefix64, MacAddr, Network, NewNetwork, NewNic,
    Uplink, VmNic, MAX_NICS_PER_VM, MAX_PREFIX, MIN_PREFIX,
};
pub use model::nic_limits::{CeilingSource, NicLimits, NicLimitsRecord, RateLimit, MAX_NIC_LIMIT};
pub use model::tenant::{Quota, Tenant, Usage};
pub use model::token::{ApiToken, IssuedToken, TokenHash, TokenSecret, SECRET_PREFIX};
pub use model::vm::{
    DesiredState, IntentOp, NewVm, ObservedState, ObservedStatus, RestartPolicy, Vm, VmIntent,
    VmSpecRecord, VpsRecord,
};
pub use model::volume::{
    DeviceState, NewVolume, StorageDevice, StorageQuota, Volume, VolumeState,
    DEFAULT_MAX_VOLUME_BYTES,
};
pub use sqlite::{SqliteStore, DB_FILE_NAME, SCHEMA_VERSION};
pub use store::Store;
pub use time::{Timestamp, TimestampParseError};
