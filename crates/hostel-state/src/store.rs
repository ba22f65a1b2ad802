//! The storage trait the daemon programs against.
//!
//! It exists so the single-host SQLite backend can later be swapped for a
//! clustered one (etcd) without touching callers: nothing here mentions a
//! backend type, every method is one atomic operation, and the trait is
//! object-safe so the daemon can hold an `Arc<dyn Store>`.
//!
//! Methods are synchronous; async callers should use `spawn_blocking`
//! (writes wait for an fsync, which must not stall an executor thread).

use crate::error::Result;
use crate::ids::{
    NetworkId, NetworkName, SettingKey, TenantId, TenantName, TokenId, VmId, VmName, VolumeId,
    VolumeName,
};
use crate::model::agent::AgentSettings;
use crate::model::audit::{AuditEntry, AuditQuery, NewAuditEntry};
use crate::model::ids::IdsSettings;

use crate::model::edge::{ExternalSetup, FirewallDoc, NetworkEdge, PublicAddress};
use crate::model::network::{Network, NewNetwork, NewNic, VmNic};
use crate::model::nic_limits::{NicLimits, NicLimitsRecord};
use crate::model::tenant::{Quota, Tenant, Usage};
use crate::model::token::{validate_token_name, ApiToken, IssuedToken, TokenHash, TokenSecret};
use crate::model::vm::{
    DesiredState, IntentOp, NewVm, ObservedStatus, Vm, VmIntent, VmSpecRecord, VpsRecord,
};
use crate::model::volume::{
    DeviceState, NewVolume, StorageDevice, StorageQuota, Volume, VolumeState,
};

/// Desired-state storage. Every write is a single transaction: it either
/// happens completely and durably, or not at all.
///
/// Writes a tenant or an operator asks for take the [`NewAuditEntry`] that describes
/// them and append it in the same transaction: a change is never committed without
/// its entry, nor an entry without its change, whatever point a crash cuts at.
///
/// `expected_generation` parameters implement compare-and-set: when `Some`,
/// the write fails with [`Conflict`](crate::StoreError::Conflict) unless the
/// VM's current generation matches, so two API clients editing the same VM
/// cannot silently overwrite each other.
pub trait Store: Send + Sync {
    // ---- tenants -------------------------------------------------------

    /// Fails with `Conflict` if the name is taken.
    fn create_tenant(
        &self,
        name: &TenantName,
        quota: Quota,
        audit: &NewAuditEntry,
    ) -> Result<Tenant>;
    fn get_tenant(&self, id: &TenantId) -> Result<Tenant>;
    fn get_tenant_by_name(&self, name: &TenantName) -> Result<Tenant>;
    /// All tenants, ordered by name.
    fn list_tenants(&self) -> Result<Vec<Tenant>>;
    /// Replaces the quota. Lowering it below current usage is allowed (it
    /// only blocks growth); existing VMs are never evicted by the store.
    fn set_quota(&self, id: &TenantId, quota: Quota, audit: &NewAuditEntry) -> Result<Tenant>;
    /// Fails with `Conflict` while the tenant still has VMs, networks or volumes, so
    /// deleting a tenant can never orphan running machines or switch state.
    /// Its tokens are deleted too.
    fn delete_tenant(&self, id: &TenantId) -> Result<()>;
    /// Resources reserved by the tenant's VMs (running or not).
    fn tenant_usage(&self, id: &TenantId) -> Result<Usage>;

    // ---- API tokens ----------------------------------------------------

    /// Stores a token given only its hash. Most callers want [`Store::issue_token`].
    fn insert_token(
        &self,
        tenant: Option<&TenantId>,
        name: &str,
        hash: &TokenHash,
        audit: &NewAuditEntry,
    ) -> Result<ApiToken>;
    /// `Ok(None)` when no token has this hash (an authentication failure,
    /// not an error).
    fn find_token_by_hash(&self, hash: &TokenHash) -> Result<Option<ApiToken>>;
    /// With `Some(tenant)`, that tenant's tokens; with `None`, every token
    /// (operator tokens have `tenant == None`). Ordered by creation.
    fn list_tokens(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiToken>>;
    /// Revokes a token: the next call presenting its secret is unauthorized. Returns the
    /// removed record.
    fn delete_token(&self, id: &TokenId, audit: &NewAuditEntry) -> Result<ApiToken>;
    fn get_token(&self, id: &TokenId) -> Result<ApiToken>;

    /// Generates a fresh secret, stores only its hash, and returns the secret
    /// this one time.
    fn issue_token(
        &self,
        tenant: Option<&TenantId>,
        name: &str,
        audit: &NewAuditEntry,
    ) -> Result<IssuedToken> {
        validate_token_name(name)?;
        let secret = TokenSecret::generate()?;
        let token = self.insert_token(tenant, name, &secret.hash(), audit)?;
        Ok(IssuedToken { token, secret })
    }

    /// Resolves a presented secret to its token, if any.
    fn authenticate(&self, secret: &str) -> Result<Option<ApiToken>> {
        self.find_token_by_hash(&TokenHash::of_secret(secret))
    }

    // ---- VMs -----------------------------------------------------------

    /// Records a VM without a quota check (operator imports, tests). Tenant
    /// requests must go through [`Store::create_vm_within_quota`].
    /// Fails with `Conflict` if the tenant already has a VM of that name.
    fn create_vm(&self, tenant: &TenantId, vm: &NewVm) -> Result<Vm>;
    /// Like [`Store::create_vm`], but checks the tenant's quota against its
    /// current usage in the same transaction as the insert, so concurrent
    /// creates cannot jointly overshoot. Fails with `QuotaExceeded`.
    fn create_vm_within_quota(&self, tenant: &TenantId, vm: &NewVm) -> Result<Vm>;
    /// Like [`Store::create_vm_within_quota`], and attaches `nics` (NIC `i`
    /// gets index `i`) in the same transaction, so a VM never exists half
    /// wired and two concurrent creates never receive the same address.
    ///
    /// Per NIC: the network must belong to `tenant` (else `NotFound`, exactly
    /// as if it did not exist); a requested address must be a host address of
    /// the subnet other than the gateway (else `Invalid` on `ipv4`) and free
    /// (else `Conflict` naming it); without one, the lowest free host address
    /// is allocated (`Conflict` "no free address" when the subnet is full).
    /// MACs are `52:54:00:xx:xx:xx`, derived from the VM id and index and
    /// unique within the network. Any failure creates nothing.
    fn create_vm_with_nics_within_quota(
        &self,
        tenant: &TenantId,
        vm: &NewVm,
        nics: &[NewNic],
        audit: &NewAuditEntry,
    ) -> Result<(Vm, Vec<VmNic>)>;
    fn get_vm(&self, id: &VmId) -> Result<Vm>;
    /// A VPS (a system container): recorded like [`Store::create_vm_with_nics_within_quota`]
    /// (one name space, quota and address pool with the tenant's VMs) and given the lowest
    /// free slot of host UID/GID ranges, in one transaction. VM queries never return it;
    /// the by-id calls (`get_vm`, intents, observed state, `delete_vm`) serve both.
    fn create_vps_with_nics_within_quota(
        &self,
        tenant: &TenantId,
        vm: &NewVm,
        nics: &[NewNic],
        audit: &NewAuditEntry,
    ) -> Result<(VpsRecord, Vec<VmNic>)>;
    /// A tenant's VPS by name (`NotFound` for a VM of that name or another tenant's).
    fn get_vps_by_name(&self, tenant: &TenantId, name: &VmName) -> Result<VpsRecord>;
    /// One tenant's VPSs, ordered by name.
    fn list_vpss(&self, tenant: &TenantId) -> Result<Vec<VpsRecord>>;
    /// Every VPS on the host (reconciler, switch tables).
    fn list_all_vpss(&self) -> Result<Vec<VpsRecord>>;
    fn get_vm_by_name(&self, tenant: &TenantId, name: &VmName) -> Result<Vm>;
    /// One tenant's VMs, ordered by name.
    fn list_vms(&self, tenant: &TenantId) -> Result<Vec<Vm>>;
    /// Every VM on the host (for the reconciler), ordered by tenant id then name.
    fn list_all_vms(&self) -> Result<Vec<Vm>>;
    /// Replaces the spec without a quota check (operator use).
    fn update_vm_spec(
        &self,
        id: &VmId,
        spec: &VmSpecRecord,
        expected_generation: Option<u64>,
    ) -> Result<Vm>;
    /// Replaces the spec, checking the quota atomically. Only dimensions that
    /// grow are checked, so a tenant already over a lowered quota can still
    /// shrink a VM.
    fn resize_vm_within_quota(
        &self,
        id: &VmId,
        spec: &VmSpecRecord,
        expected_generation: Option<u64>,
        audit: &NewAuditEntry,
    ) -> Result<Vm>;
    fn set_vm_desired(
        &self,
        id: &VmId,
        desired: DesiredState,
        expected_generation: Option<u64>,
    ) -> Result<Vm>;
    /// Sets the desired state and the pending operation (`None`: nothing pending) in one
    /// transaction, so an operation is on record before any of it is done; `audit` (the
    /// call that asked for it) commits with it.
    fn set_vm_intent(
        &self,
        id: &VmId,
        desired: DesiredState,
        intent: Option<&VmIntent>,
        audit: Option<&NewAuditEntry>,
    ) -> Result<Vm>;
    /// Removes the record of a VM whose delete was asked for (intent `delete`, audited
    /// then): the last step of a delete, logged no second time. `Conflict` for any other VM.
    fn finish_vm_delete(&self, id: &VmId) -> Result<Vm>;
    /// Clears the pending operation if (and only if) it is still `op`.
    fn clear_vm_intent(&self, id: &VmId, op: IntentOp) -> Result<Vm>;
    /// Records what the engine saw. Writing a status identical to the stored
    /// one is a no-op (no generation bump), so engines can report
    /// periodically without churning watchers.
    /// [`Store::set_vm_desired`] for a tenant's or the operator's call (start, stop): the
    /// entry is appended even when the VM already had that desired state, since the call
    /// was made.
    fn set_vm_desired_audited(
        &self,
        id: &VmId,
        desired: DesiredState,
        audit: &NewAuditEntry,
    ) -> Result<Vm>;
    fn set_vm_observed(&self, id: &VmId, observed: &ObservedStatus) -> Result<Vm>;
    /// Removes the record and returns its last state. Its NICs go with it,
    /// freeing their addresses.
    fn delete_vm(
        &self,
        id: &VmId,
        expected_generation: Option<u64>,
        audit: &NewAuditEntry,
    ) -> Result<Vm>;

    // ---- networks ------------------------------------------------------

    /// `gateway4` defaults to the subnet's first host (`.1`) and must be a
    /// host address of `subnet4` (else `Invalid`). Fails with `Conflict` if
    /// the tenant already has a network of that name. Subnets may overlap,
    /// even within a tenant: networks are separate L2 domains. Checks the tenant's
    /// network quota (and its uplink quota for a network with an uplink) in the same
    /// transaction (`QuotaExceeded`); loopback, multicast, link-local, unspecified and
    /// broadcast subnets are `Invalid`.
    fn create_network(
        &self,
        tenant: &TenantId,
        new: &NewNetwork,
        audit: &NewAuditEntry,
    ) -> Result<Network>;
    /// Not tenant-scoped (like [`Store::get_vm`]): callers acting for a tenant
    /// must compare `network.tenant` and answer `NotFound` on a mismatch.
    fn get_network(&self, id: &NetworkId) -> Result<Network>;
    fn get_network_by_name(&self, tenant: &TenantId, name: &NetworkName) -> Result<Network>;
    /// One tenant's networks, ordered by name.
    fn list_networks(&self, tenant: &TenantId) -> Result<Vec<Network>>;
    /// Every network on the host (to rebuild the switch), ordered by tenant
    /// id then name.
    fn list_all_networks(&self) -> Result<Vec<Network>>;
    /// Fails with `Conflict` while any NIC is attached. Returns the removed record.
    fn delete_network(&self, id: &NetworkId, audit: &NewAuditEntry) -> Result<Network>;
    /// A VM's NICs ordered by index (empty for unknown VMs).
    fn list_nics_of_vm(&self, vm: &VmId) -> Result<Vec<VmNic>>;
    /// A network's NICs ordered by address (the ports of `network show`).
    fn list_nics_of_network(&self, network: &NetworkId) -> Result<Vec<VmNic>>;
    /// Every NIC on the host (to rebuild the switch tables), ordered by
    /// network id then address.
    fn list_all_nics(&self) -> Result<Vec<VmNic>>;

    // ---- audit log -----------------------------------------------------

    fn append_audit(&self, entry: &NewAuditEntry) -> Result<AuditEntry>;
    /// Newest first.
    fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>>;

    // ---- settings ------------------------------------------------------

    fn get_setting(&self, key: &SettingKey) -> Result<Option<String>>;
    fn set_setting(&self, key: &SettingKey, value: &str) -> Result<()>;
    /// Sets several settings at once, all or none, with the entry describing the change.
    fn set_settings(&self, values: &[(SettingKey, String)], audit: &NewAuditEntry) -> Result<()>;
    /// Returns whether the key existed.
    fn delete_setting(&self, key: &SettingKey) -> Result<bool>;
    /// All settings, ordered by key.
    fn list_settings(&self) -> Result<Vec<(SettingKey, String)>>;

    /// One NIC's limits: its ceiling, the tenant's default ceiling and the tenant's own.
    fn get_nic_limits(&self, vm: &VmId, idx: u32) -> Result<NicLimitsRecord>;
    /// Sets the tenant's own limits on a NIC, refused (`Invalid`, naming the field) when
    /// one is zero, too large, or above the ceiling in force. Commits `audit` with it.
    fn set_nic_limits(
        &self,
        vm: &VmId,
        idx: u32,
        limits: &NicLimits,
        audit: &NewAuditEntry,
    ) -> Result<NicLimitsRecord>;
    /// Sets (or with `None` clears) the operator's ceiling on a NIC.
    fn set_nic_ceiling(
        &self,
        vm: &VmId,
        idx: u32,
        ceiling: Option<&NicLimits>,
        audit: &NewAuditEntry,
    ) -> Result<NicLimitsRecord>;
    /// The tenant's default ceiling for NICs without their own.
    fn get_tenant_nic_ceiling(&self, tenant: &TenantId) -> Result<Option<NicLimits>>;
    fn set_tenant_nic_ceiling(
        &self,
        tenant: &TenantId,
        ceiling: Option<&NicLimits>,
        audit: &NewAuditEntry,
    ) -> Result<Option<NicLimits>>;
    /// Every NIC's effective limits (per field the lower of ceiling and tenant's own).
    fn list_effective_nic_limits(&self) -> Result<Vec<(VmId, u32, NicLimits)>>;

    // --- the guest agent ------------------------------------------------------
    /// What the tenant may do through its VMs' guest agents (everything, if never set).
    fn get_agent(&self, tenant: &TenantId) -> Result<AgentSettings>;
    /// Replaces them with `audit` in the same transaction; `Invalid` naming
    /// `max_file_bytes` outside 1 to `MAX_FILE_BYTES_LIMIT`.
    fn set_agent(
        &self,
        tenant: &TenantId,
        settings: &AgentSettings,
        audit: &NewAuditEntry,
    ) -> Result<AgentSettings>;

    // --- intrusion detection --------------------------------------------------
    /// The tenant's detection settings (the defaults, detection off, if never set).
    fn get_ids(&self, tenant: &TenantId) -> Result<IdsSettings>;
    /// Replaces them with `audit` in the same transaction; every network must be the
    /// tenant's (another's is not found), the rules at most `MAX_IDS_RULES` bytes.
    fn set_ids(
        &self,
        tenant: &TenantId,
        settings: &IdsSettings,
        audit: &NewAuditEntry,
    ) -> Result<IdsSettings>;
    /// Every tenant's settings that were ever set, for the switch.
    fn list_ids(&self) -> Result<Vec<(TenantId, IdsSettings)>>;
    /// Designates NIC `nic` (a VM of the tenant, on `network`) as the network's security
    /// appliance, or with `None` removes it, with `audit` in the same transaction. Another
    /// tenant's network or VM is not found; a NIC the VM lacks or on another network is
    /// invalid (`nic`).
    fn set_appliance(
        &self,
        tenant: &TenantId,
        network: &NetworkId,
        nic: Option<&(VmId, u32)>,
        audit: &NewAuditEntry,
    ) -> Result<()>;
    /// Every network's appliance, for the switch and `network show`.
    fn list_appliances(&self) -> Result<Vec<crate::SecurityAppliance>>;

    // ---- the edge: external network, public addresses, firewalls ---------

    /// The external network's set-up, if the operator made one.
    fn get_external(&self) -> Result<Option<ExternalSetup>>;
    /// Replaces the set-up; `Conflict` naming an address a tenant holds that the new
    /// pools would leave out.
    fn set_external(&self, setup: &ExternalSetup, audit: &NewAuditEntry) -> Result<ExternalSetup>;
    /// Attaches a network to the external network (or changes its `snat`); the tenant's
    /// edge takes an address from the pools with its first network. `Conflict` without an
    /// external network, for a network with an uplink, or when the pools are used up.
    /// `routed`: the network's subnet is a public one from the operator's routed pools
    /// (`Invalid` on `routed` otherwise; `Conflict` when another network has it).
    fn attach_network_external(
        &self,
        network: &NetworkId,
        snat: bool,
        routed: bool,
        audit: &NewAuditEntry,
    ) -> Result<NetworkEdge>;
    /// Detaches it: its NICs' floating addresses are detached, and the edge's own address
    /// goes back to the pools with the tenant's last network. `Conflict` when not attached.
    fn detach_network_external(&self, network: &NetworkId, audit: &NewAuditEntry) -> Result<()>;
    /// Every attached network.
    fn list_network_edges(&self) -> Result<Vec<NetworkEdge>>;
    /// A floating address for the tenant (`requested`, or the lowest free), within its
    /// `max_public_addresses` quota (`QuotaExceeded`).
    fn allocate_public_address(
        &self,
        tenant: &TenantId,
        requested: Option<std::net::Ipv4Addr>,
        audit: &NewAuditEntry,
    ) -> Result<PublicAddress>;
    /// Attaches the tenant's floating address to NIC `idx` of `vm` (a VM the caller found
    /// in the tenant). Another tenant's address is `NotFound`; one already attached, or a
    /// NIC that has one, `Conflict` naming it.
    fn attach_public_address(
        &self,
        tenant: &TenantId,
        address: std::net::Ipv4Addr,
        vm: &VmId,
        idx: u32,
        audit: &NewAuditEntry,
    ) -> Result<PublicAddress>;
    fn detach_public_address(
        &self,
        tenant: &TenantId,
        address: std::net::Ipv4Addr,
        audit: &NewAuditEntry,
    ) -> Result<PublicAddress>;
    /// Gives the address back to the pools (detached first if need be).
    fn release_public_address(
        &self,
        tenant: &TenantId,
        address: std::net::Ipv4Addr,
        audit: &NewAuditEntry,
    ) -> Result<PublicAddress>;
    /// One tenant's public addresses, or with `None` every one; ordered by address.
    fn list_public_addresses(&self, tenant: Option<&TenantId>) -> Result<Vec<PublicAddress>>;
    /// The tenant's firewall (the default one if never written).
    fn get_firewall(&self, tenant: &TenantId) -> Result<FirewallDoc>;
    /// Replaces the tenant's firewall if nobody changed it since `doc.revision` was read
    /// (else `Conflict`); returns it with its new revision.
    fn put_firewall(
        &self,
        tenant: &TenantId,
        doc: &FirewallDoc,
        audit: &NewAuditEntry,
    ) -> Result<FirewallDoc>;
    /// Every firewall ever written, by tenant.
    fn list_firewalls(&self) -> Result<Vec<(TenantId, FirewallDoc)>>;

    // ---- storage pool ----------------------------------------------------

    /// The devices the operator added, oldest first.
    fn list_storage_devices(&self) -> Result<Vec<StorageDevice>>;
    /// Records a device as `adding` (before the storage process formats it). `Conflict`
    /// if it is recorded already.
    fn add_storage_device(&self, path: &str, audit: &NewAuditEntry) -> Result<StorageDevice>;
    fn set_storage_device_state(&self, path: &str, state: DeviceState) -> Result<()>;
    /// Forgets a device record (an `adding` the pool never got, or an operator's removal).
    fn remove_storage_device(&self, path: &str, audit: Option<&NewAuditEntry>) -> Result<()>;

    fn get_storage_quota(&self, tenant: &TenantId) -> Result<StorageQuota>;
    fn set_storage_quota(
        &self,
        tenant: &TenantId,
        quota: StorageQuota,
        audit: &NewAuditEntry,
    ) -> Result<StorageQuota>;

    /// Records a volume as `creating`, its provisioned bytes checked against the tenant's
    /// quota in the same transaction. `Conflict` if the name is taken in the tenant.
    fn create_volume(
        &self,
        tenant: &TenantId,
        new: &NewVolume,
        audit: &NewAuditEntry,
    ) -> Result<Volume>;
    fn get_volume(&self, id: &VolumeId) -> Result<Volume>;
    fn get_volume_by_name(&self, tenant: &TenantId, name: &VolumeName) -> Result<Volume>;
    fn list_volumes(&self, tenant: &TenantId) -> Result<Vec<Volume>>;
    fn list_all_volumes(&self) -> Result<Vec<Volume>>;
    fn list_volumes_of_vm(&self, vm: &VmId) -> Result<Vec<Volume>>;
    fn set_volume_state(&self, id: &VolumeId, state: VolumeState) -> Result<Volume>;
    /// Attaches the volume to `vm` (of its tenant; refused while attached anywhere or not
    /// ready), or detaches it (`None`).
    fn set_volume_vm(
        &self,
        id: &VolumeId,
        vm: Option<&VmId>,
        audit: &NewAuditEntry,
    ) -> Result<Volume>;
    /// A new size, within the tenant's quota.
    fn resize_volume(&self, id: &VolumeId, size: u64, audit: &NewAuditEntry) -> Result<Volume>;
    /// Marks the volume `deleting` (refused while attached).
    fn begin_volume_delete(&self, id: &VolumeId, audit: &NewAuditEntry) -> Result<Volume>;
    /// Drops the row once the pool no longer has the volume.
    fn finish_volume_delete(&self, id: &VolumeId) -> Result<()>;
}
