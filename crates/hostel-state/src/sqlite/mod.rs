//! Single-host backend: one SQLite file, `<state-dir>/hostel.db`.
//!
//! Concurrency model: one writer connection behind a mutex (SQLite allows one
//! writer at a time anyway, and serializing in-process avoids busy-waiting on
//! the file lock) plus a small pool of reader connections, which in WAL mode
//! read a consistent snapshot without ever blocking on, or blocking, the writer.
//! Every write runs in a `BEGIN IMMEDIATE` transaction, which also serializes
//! against other processes opening the same file (e.g. an admin CLI).

mod agent;
mod appliance;
mod audit;
mod convert;
mod edge;
mod ids;
mod networks;
mod nic_limits;
mod rows;
mod schema;
mod settings;
mod tenants;
mod tokens;
#[cfg(test)]
mod upgrade_tests;
mod vms;
mod volumes;
mod vps;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

pub(crate) use convert::DbResult;
pub use schema::LATEST_VERSION as SCHEMA_VERSION;

use crate::error::{Result, StoreError};
use crate::ids::{
    NetworkId, NetworkName, SettingKey, TenantId, TenantName, TokenId, VmId, VmName, VolumeId,
    VolumeName,
};
use crate::model::agent::AgentSettings;
use crate::model::audit::{AuditEntry, AuditQuery, NewAuditEntry};
use crate::model::edge::{ExternalSetup, FirewallDoc, NetworkEdge, PublicAddress};
use crate::model::ids::IdsSettings;
use crate::model::network::{Network, NewNetwork, NewNic, VmNic};
use crate::model::nic_limits::{NicLimits, NicLimitsRecord};
use crate::model::tenant::{Quota, Tenant, Usage};
use crate::model::token::{ApiToken, TokenHash};
use crate::model::vm::{
    DesiredState, IntentOp, NewVm, ObservedStatus, Vm, VmIntent, VmSpecRecord, VpsRecord,
};
use crate::model::volume::{
    DeviceState, NewVolume, StorageDevice, StorageQuota, Volume, VolumeState,
};
use crate::store::Store;

/// File name of the database inside the state directory.
pub const DB_FILE_NAME: &str = "hostel.db";

/// How long a write waits for another process holding the write lock before
/// failing; long enough to ride out a checkpoint, short enough that a stuck
/// process surfaces as an error rather than a hung API.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle reader connections kept open. More concurrent readers than this still
/// work; the extras are just closed after use.
const MAX_IDLE_READERS: usize = 8;

/// Enough cached statements for every distinct query the store issues, so
/// hot reads skip SQL parsing.
const STATEMENT_CACHE: usize = 64;

/// SQLite-backed [`Store`]. `Send + Sync`: share it as `Arc<SqliteStore>` or
/// `Arc<dyn Store>`.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

/// Shows only the path: connections carry no useful state to print, and
/// owners of a store (daemon state structs) want to derive `Debug`.
impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the connection mid-write:
    // an unfinished transaction rolls back when dropped. So poisoning is safe
    // to ignore, and ignoring it keeps one bad request from wedging the store.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating if needed) `<state_dir>/hostel.db` and migrates it.
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Self> {
        let dir = state_dir.as_ref();
        create_private_dir(dir)?;
        let path = dir.join(DB_FILE_NAME);
        Self::open_file(&path).map_err(StoreError::from)
    }

    fn open_file(path: &Path) -> DbResult<Self> {
        let mut writer = Connection::open(path)?;
        restrict_permissions(path)?;
        // WAL must be set outside a transaction; it is persistent in the file.
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "could not enable WAL mode (got {mode:?}); is {} on a network filesystem?",
                path.display()
            ))
            .into());
        }
        configure(&writer)?;
        // FULL fsyncs the WAL on every commit: a committed write survives
        // power loss, not just a process crash. Worth the latency for a
        // store of customer intent.
        writer.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        let applied = schema::migrate(&mut writer)?;
        tracing::info!(
            path = %path.display(),
            schema_version = schema::LATEST_VERSION,
            ?applied,
            "opened state database"
        );
        Ok(SqliteStore {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u32> {
        self.read(schema::user_version)
    }

    /// Runs SQLite's full consistency check; `Ok(())` if the file is sound.
    /// Meant for startup diagnostics and tests, not the request path.
    pub fn integrity_check(&self) -> Result<()> {
        self.read(|c| {
            let mut stmt = c.prepare("PRAGMA integrity_check")?;
            let problems: Vec<String> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if problems == ["ok"] {
                Ok(())
            } else {
                Err(StoreError::Backend(format!("integrity check: {}", problems.join("; "))).into())
            }
        })
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction and commits if it returns Ok.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> DbResult<T>) -> Result<T> {
        let mut conn = lock(&self.writer);
        let run = || -> DbResult<T> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run().map_err(StoreError::from)
    }

    /// [`SqliteStore::write`] that also appends `audit` in the same transaction: both
    /// commit, or neither does.
    fn write_audited<T>(
        &self,
        audit: &NewAuditEntry,
        f: impl FnOnce(&Transaction<'_>) -> DbResult<T>,
    ) -> Result<T> {
        self.write(|tx| {
            let out = f(tx)?;
            audit::append(tx, audit)?;
            Ok(out)
        })
    }

    /// Runs `f` on a pooled reader connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> DbResult<T>) -> Result<T> {
        let pooled = lock(&self.readers).pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.open_reader()?,
        };
        let out = f(&conn);
        let mut idle = lock(&self.readers);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        drop(idle);
        out.map_err(StoreError::from)
    }

    fn open_reader(&self) -> Result<Connection> {
        let open = || -> DbResult<Connection> {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI;
            let conn = Connection::open_with_flags(&self.path, flags)?;
            configure(&conn)?;
            // Defence in depth: a bug that routes a write through a reader
            // fails loudly instead of bypassing the writer's transaction rules.
            conn.execute_batch("PRAGMA query_only = ON;")?;
            Ok(conn)
        };
        open().map_err(StoreError::from)
    }
}

fn configure(conn: &Connection) -> DbResult<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// The database holds token hashes and tenant data: keep the directory
/// private to the daemon's user.
fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))
}

/// SQLite gives the -wal and -shm files the main file's mode, so 0600 here
/// covers all three.
fn restrict_permissions(path: &Path) -> DbResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Backend(format!("chmod {}: {e}", path.display())))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl Store for SqliteStore {
    fn list_storage_devices(&self) -> Result<Vec<StorageDevice>> {
        self.read(volumes::list_devices)
    }
    fn add_storage_device(&self, path: &str, audit: &NewAuditEntry) -> Result<StorageDevice> {
        self.write_audited(audit, |tx| volumes::add_device(tx, path))
    }
    fn set_storage_device_state(&self, path: &str, state: DeviceState) -> Result<()> {
        self.write(|tx| volumes::set_device_state(tx, path, state))
    }
    fn remove_storage_device(&self, path: &str, audit: Option<&NewAuditEntry>) -> Result<()> {
        match audit {
            Some(a) => self.write_audited(a, |tx| volumes::remove_device(tx, path)),
            None => self.write(|tx| volumes::remove_device(tx, path)),
        }
    }
    fn get_storage_quota(&self, tenant: &TenantId) -> Result<StorageQuota> {
        self.read(|c| volumes::storage_quota(c, tenant))
    }
    fn set_storage_quota(
        &self,
        tenant: &TenantId,
        quota: StorageQuota,
        audit: &NewAuditEntry,
    ) -> Result<StorageQuota> {
        self.write_audited(audit, |tx| volumes::set_storage_quota(tx, tenant, quota))
    }
    fn create_volume(
        &self,
        tenant: &TenantId,
        new: &NewVolume,
        audit: &NewAuditEntry,
    ) -> Result<Volume> {
        self.write_audited(audit, |tx| volumes::insert(tx, tenant, new))
    }
    fn get_volume(&self, id: &VolumeId) -> Result<Volume> {
        self.read(|c| volumes::get(c, id))
    }
    fn get_volume_by_name(&self, tenant: &TenantId, name: &VolumeName) -> Result<Volume> {
        self.read(|c| volumes::get_by_name(c, tenant, name))
    }
    fn list_volumes(&self, tenant: &TenantId) -> Result<Vec<Volume>> {
        self.read(|c| volumes::list_for_tenant(c, tenant))
    }
    fn list_all_volumes(&self) -> Result<Vec<Volume>> {
        self.read(volumes::list_all)
    }
    fn list_volumes_of_vm(&self, vm: &VmId) -> Result<Vec<Volume>> {
        self.read(|c| volumes::list_of_vm(c, vm))
    }
    fn set_volume_state(&self, id: &VolumeId, state: VolumeState) -> Result<Volume> {
        self.write(|tx| volumes::set_state(tx, id, state))
    }
    fn set_volume_vm(
        &self,
        id: &VolumeId,
        vm: Option<&VmId>,
        audit: &NewAuditEntry,
    ) -> Result<Volume> {
        self.write_audited(audit, |tx| volumes::set_vm(tx, id, vm))
    }
    fn resize_volume(&self, id: &VolumeId, size: u64, audit: &NewAuditEntry) -> Result<Volume> {
        self.write_audited(audit, |tx| volumes::resize(tx, id, size))
    }
    fn begin_volume_delete(&self, id: &VolumeId, audit: &NewAuditEntry) -> Result<Volume> {
        self.write_audited(audit, |tx| volumes::begin_delete(tx, id))
    }
    fn finish_volume_delete(&self, id: &VolumeId) -> Result<()> {
        self.write(|tx| volumes::remove(tx, id))
    }
    fn get_external(&self) -> Result<Option<ExternalSetup>> {
        self.read(edge::get_external)
    }
    fn set_external(&self, setup: &ExternalSetup, audit: &NewAuditEntry) -> Result<ExternalSetup> {
        self.write_audited(audit, |tx| edge::set_external(tx, setup))
    }
    fn attach_network_external(
        &self,
        network: &NetworkId,
        snat: bool,
        routed: bool,
        audit: &NewAuditEntry,
    ) -> Result<NetworkEdge> {
        self.write_audited(audit, |tx| edge::attach_network(tx, network, snat, routed))
    }
    fn detach_network_external(&self, network: &NetworkId, audit: &NewAuditEntry) -> Result<()> {
        self.write_audited(audit, |tx| edge::detach_network(tx, network))
    }
    fn list_network_edges(&self) -> Result<Vec<NetworkEdge>> {
        self.read(edge::list_edges)
    }
    fn allocate_public_address(
        &self,
        tenant: &TenantId,
        requested: Option<std::net::Ipv4Addr>,
        audit: &NewAuditEntry,
    ) -> Result<PublicAddress> {
        self.write_audited(audit, |tx| edge::allocate(tx, tenant, requested))
    }
    fn attach_public_address(
        &self,
        tenant: &TenantId,
        address: std::net::Ipv4Addr,
        vm: &VmId,
        idx: u32,
        audit: &NewAuditEntry,
    ) -> Result<PublicAddress> {
        self.write_audited(audit, |tx| edge::attach(tx, tenant, address, vm, idx))
    }
    fn detach_public_address(
        &self,
        tenant: &TenantId,
        address: std::net::Ipv4Addr,
        audit: &NewAuditEntry,
    ) -> Result<PublicAddress> {
        self.write_audited(audit, |tx| edge::detach(tx, tenant, address))
    }
    fn release_public_address(
        &self,
        tenant: &TenantId,
        address: std::net::Ipv4Addr,
        audit: &NewAuditEntry,
    ) -> Result<PublicAddress> {
        self.write_audited(audit, |tx| edge::release(tx, tenant, address))
    }
    fn list_public_addresses(&self, tenant: Option<&TenantId>) -> Result<Vec<PublicAddress>> {
        self.read(|c| edge::list_addresses(c, tenant))
    }
    fn get_firewall(&self, tenant: &TenantId) -> Result<FirewallDoc> {
        self.read(|c| edge::get_firewall(c, tenant))
    }
    fn put_firewall(
        &self,
        tenant: &TenantId,
        doc: &FirewallDoc,
        audit: &NewAuditEntry,
    ) -> Result<FirewallDoc> {
        self.write_audited(audit, |tx| edge::put_firewall(tx, tenant, doc))
    }
    fn list_firewalls(&self) -> Result<Vec<(TenantId, FirewallDoc)>> {
        self.read(edge::list_firewalls)
    }
    fn create_tenant(
        &self,
        name: &TenantName,
        quota: Quota,
        audit: &NewAuditEntry,
    ) -> Result<Tenant> {
        self.write_audited(audit, |tx| tenants::insert(tx, name, quota))
    }
    fn get_tenant(&self, id: &TenantId) -> Result<Tenant> {
        self.read(|c| tenants::get(c, id))
    }
    fn get_tenant_by_name(&self, name: &TenantName) -> Result<Tenant> {
        self.read(|c| tenants::get_by_name(c, name))
    }
    fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.read(tenants::list)
    }
    fn set_quota(&self, id: &TenantId, quota: Quota, audit: &NewAuditEntry) -> Result<Tenant> {
        self.write_audited(audit, |tx| tenants::set_quota(tx, id, quota))
    }
    fn delete_tenant(&self, id: &TenantId) -> Result<()> {
        self.write(|tx| tenants::delete(tx, id))
    }
    fn tenant_usage(&self, id: &TenantId) -> Result<Usage> {
        self.read(|c| {
            tenants::get(c, id)?;
            let mut usage = vms::usage(c, id)?;
            networks::add_usage(c, id, &mut usage)?;
            edge::add_usage(c, id, &mut usage)?;
            Ok(usage)
        })
    }

    fn insert_token(
        &self,
        tenant: Option<&TenantId>,
        name: &str,
        hash: &TokenHash,
        audit: &NewAuditEntry,
    ) -> Result<ApiToken> {
        self.write_audited(audit, |tx| tokens::insert(tx, tenant, name, hash))
    }
    fn find_token_by_hash(&self, hash: &TokenHash) -> Result<Option<ApiToken>> {
        self.read(|c| tokens::find_by_hash(c, hash))
    }
    fn list_tokens(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiToken>> {
        self.read(|c| tokens::list(c, tenant))
    }
    fn delete_token(&self, id: &TokenId, audit: &NewAuditEntry) -> Result<ApiToken> {
        self.write_audited(audit, |tx| tokens::delete(tx, id))
    }
    fn get_token(&self, id: &TokenId) -> Result<ApiToken> {
        self.read(|c| tokens::get(c, id))
    }

    fn create_vm(&self, tenant: &TenantId, vm: &NewVm) -> Result<Vm> {
        self.write(|tx| vms::insert(tx, tenant, vm, vms::QuotaCheck::Skip))
    }
    fn create_vm_within_quota(&self, tenant: &TenantId, vm: &NewVm) -> Result<Vm> {
        self.write(|tx| vms::insert(tx, tenant, vm, vms::QuotaCheck::Enforce))
    }
    fn create_vm_with_nics_within_quota(
        &self,
        tenant: &TenantId,
        vm: &NewVm,
        nics: &[NewNic],
        audit: &NewAuditEntry,
    ) -> Result<(Vm, Vec<VmNic>)> {
        self.write_audited(audit, |tx| {
            networks::check_nic_count(nics)?;
            let vm = vms::insert(tx, tenant, vm, vms::QuotaCheck::Enforce)?;
            let nics = networks::attach(tx, tenant, &vm.id, nics)?;
            Ok((vm, nics))
        })
    }
    fn get_vm(&self, id: &VmId) -> Result<Vm> {
        self.read(|c| vms::get(c, id))
    }
    fn create_vps_with_nics_within_quota(
        &self,
        tenant: &TenantId,
        vm: &NewVm,
        nics: &[NewNic],
        audit: &NewAuditEntry,
    ) -> Result<(VpsRecord, Vec<VmNic>)> {
        self.write_audited(audit, |tx| {
            networks::check_nic_count(nics)?;
            let vps = vps::insert(tx, tenant, vm)?;
            let nics = networks::attach(tx, tenant, &vps.vm.id, nics)?;
            Ok((vps, nics))
        })
    }
    fn get_vps_by_name(&self, tenant: &TenantId, name: &VmName) -> Result<VpsRecord> {
        self.read(|c| vps::get_by_name(c, tenant, name))
    }
    fn list_vpss(&self, tenant: &TenantId) -> Result<Vec<VpsRecord>> {
        self.read(|c| vps::list_for_tenant(c, tenant))
    }
    fn list_all_vpss(&self) -> Result<Vec<VpsRecord>> {
        self.read(vps::list_all)
    }
    fn get_vm_by_name(&self, tenant: &TenantId, name: &VmName) -> Result<Vm> {
        self.read(|c| vms::get_by_name(c, tenant, name))
    }
    fn list_vms(&self, tenant: &TenantId) -> Result<Vec<Vm>> {
        self.read(|c| vms::list_for_tenant(c, tenant))
    }
    fn list_all_vms(&self) -> Result<Vec<Vm>> {
        self.read(vms::list_all)
    }
    fn update_vm_spec(
        &self,
        id: &VmId,
        spec: &VmSpecRecord,
        expected_generation: Option<u64>,
    ) -> Result<Vm> {
        self.write(|tx| vms::update_spec(tx, id, spec, expected_generation, vms::QuotaCheck::Skip))
    }
    fn resize_vm_within_quota(
        &self,
        id: &VmId,
        spec: &VmSpecRecord,
        expected_generation: Option<u64>,
        audit: &NewAuditEntry,
    ) -> Result<Vm> {
        self.write_audited(audit, |tx| {
            vms::update_spec(tx, id, spec, expected_generation, vms::QuotaCheck::Enforce)
        })
    }
    fn set_vm_desired(
        &self,
        id: &VmId,
        desired: DesiredState,
        expected_generation: Option<u64>,
    ) -> Result<Vm> {
        self.write(|tx| vms::set_desired(tx, id, desired, expected_generation))
    }
    fn set_vm_intent(
        &self,
        id: &VmId,
        desired: DesiredState,
        intent: Option<&VmIntent>,
        audit: Option<&NewAuditEntry>,
    ) -> Result<Vm> {
        let set = |tx: &Transaction<'_>| vms::set_intent(tx, id, desired, intent);
        match audit {
            Some(entry) => self.write_audited(entry, set),
            None => self.write(set),
        }
    }
    fn finish_vm_delete(&self, id: &VmId) -> Result<Vm> {
        self.write(|tx| vms::finish_delete(tx, id))
    }
    fn clear_vm_intent(&self, id: &VmId, op: IntentOp) -> Result<Vm> {
        self.write(|tx| vms::clear_intent(tx, id, op))
    }
    fn set_vm_desired_audited(
        &self,
        id: &VmId,
        desired: DesiredState,
        audit: &NewAuditEntry,
    ) -> Result<Vm> {
        self.write_audited(audit, |tx| vms::set_desired(tx, id, desired, None))
    }
    fn set_vm_observed(&self, id: &VmId, observed: &ObservedStatus) -> Result<Vm> {
        self.write(|tx| vms::set_observed(tx, id, observed))
    }
    fn delete_vm(
        &self,
        id: &VmId,
        expected_generation: Option<u64>,
        audit: &NewAuditEntry,
    ) -> Result<Vm> {
        self.write_audited(audit, |tx| vms::delete(tx, id, expected_generation))
    }

    fn create_network(
        &self,
        tenant: &TenantId,
        new: &NewNetwork,
        audit: &NewAuditEntry,
    ) -> Result<Network> {
        self.write_audited(audit, |tx| networks::insert(tx, tenant, new))
    }
    fn get_network(&self, id: &NetworkId) -> Result<Network> {
        self.read(|c| networks::get(c, id))
    }
    fn get_network_by_name(&self, tenant: &TenantId, name: &NetworkName) -> Result<Network> {
        self.read(|c| networks::get_by_name(c, tenant, name))
    }
    fn list_networks(&self, tenant: &TenantId) -> Result<Vec<Network>> {
        self.read(|c| networks::list_for_tenant(c, tenant))
    }
    fn list_all_networks(&self) -> Result<Vec<Network>> {
        self.read(networks::list_all)
    }
    fn delete_network(&self, id: &NetworkId, audit: &NewAuditEntry) -> Result<Network> {
        self.write_audited(audit, |tx| networks::delete(tx, id))
    }
    fn list_nics_of_vm(&self, vm: &VmId) -> Result<Vec<VmNic>> {
        self.read(|c| networks::nics_of_vm(c, vm))
    }
    fn list_nics_of_network(&self, network: &NetworkId) -> Result<Vec<VmNic>> {
        self.read(|c| networks::nics_of_network(c, network))
    }
    fn list_all_nics(&self) -> Result<Vec<VmNic>> {
        self.read(networks::all_nics)
    }

    fn append_audit(&self, entry: &NewAuditEntry) -> Result<AuditEntry> {
        self.write(|tx| audit::append(tx, entry))
    }
    fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        self.read(|c| audit::list(c, query))
    }

    fn get_setting(&self, key: &SettingKey) -> Result<Option<String>> {
        self.read(|c| settings::get(c, key))
    }
    fn set_setting(&self, key: &SettingKey, value: &str) -> Result<()> {
        self.write(|tx| settings::set(tx, key, value))
    }
    fn set_settings(&self, values: &[(SettingKey, String)], audit: &NewAuditEntry) -> Result<()> {
        self.write_audited(audit, |tx| {
            values
                .iter()
                .try_for_each(|(key, value)| settings::set(tx, key, value))
        })
    }
    fn delete_setting(&self, key: &SettingKey) -> Result<bool> {
        self.write(|tx| settings::delete(tx, key))
    }
    fn list_settings(&self) -> Result<Vec<(SettingKey, String)>> {
        self.read(settings::list)
    }

    fn get_agent(&self, tenant: &TenantId) -> Result<AgentSettings> {
        self.read(|c| agent::get(c, tenant))
    }
    fn set_agent(
        &self,
        tenant: &TenantId,
        settings: &AgentSettings,
        audit: &NewAuditEntry,
    ) -> Result<AgentSettings> {
        self.write_audited(audit, |tx| agent::set(tx, tenant, settings))
    }

    fn get_ids(&self, tenant: &TenantId) -> Result<IdsSettings> {
        self.read(|c| ids::get(c, tenant))
    }
    fn set_ids(
        &self,
        tenant: &TenantId,
        settings: &IdsSettings,
        audit: &NewAuditEntry,
    ) -> Result<IdsSettings> {
        self.write_audited(audit, |tx| ids::set(tx, tenant, settings))
    }
    fn list_ids(&self) -> Result<Vec<(TenantId, IdsSettings)>> {
        self.read(ids::list)
    }
    fn set_appliance(
        &self,
        tenant: &TenantId,
        network: &NetworkId,
        nic: Option<&(VmId, u32)>,
        audit: &NewAuditEntry,
    ) -> Result<()> {
        self.write_audited(audit, |tx| appliance::set(tx, tenant, network, nic))
    }
    fn list_appliances(&self) -> Result<Vec<crate::SecurityAppliance>> {
        self.read(appliance::list)
    }
    fn get_nic_limits(&self, vm: &VmId, idx: u32) -> Result<NicLimitsRecord> {
        self.read(|c| nic_limits::get(c, vm, idx))
    }
    fn set_nic_limits(
        &self,
        vm: &VmId,
        idx: u32,
        limits: &NicLimits,
        audit: &NewAuditEntry,
    ) -> Result<NicLimitsRecord> {
        self.write_audited(audit, |tx| nic_limits::set_limits(tx, vm, idx, limits))
    }
    fn set_nic_ceiling(
        &self,
        vm: &VmId,
        idx: u32,
        ceiling: Option<&NicLimits>,
        audit: &NewAuditEntry,
    ) -> Result<NicLimitsRecord> {
        self.write_audited(audit, |tx| nic_limits::set_ceiling(tx, vm, idx, ceiling))
    }
    fn get_tenant_nic_ceiling(&self, tenant: &TenantId) -> Result<Option<NicLimits>> {
        self.read(|c| nic_limits::tenant_ceiling(c, tenant))
    }
    fn set_tenant_nic_ceiling(
        &self,
        tenant: &TenantId,
        ceiling: Option<&NicLimits>,
        audit: &NewAuditEntry,
    ) -> Result<Option<NicLimits>> {
        self.write_audited(audit, |tx| {
            nic_limits::set_tenant_ceiling(tx, tenant, ceiling)
        })
    }
    fn list_effective_nic_limits(&self) -> Result<Vec<(VmId, u32, NicLimits)>> {
        self.read(nic_limits::all_effective)
    }
}
