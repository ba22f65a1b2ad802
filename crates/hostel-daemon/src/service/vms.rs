//! A tenant's VMs: finding one by name, start, stop, restart, delete and resize (a create
//! and its undo are in `vm_create.rs`). Every change goes on record with its audit entry
//! (in the same transaction) before the engine is asked to do it; the engine is the
//! [`EngineAdapter`], the switch the [`SwitchAdapter`].

use super::{blocking, DaemonError};
use crate::adapters::engine::EngineAdapter;
use crate::adapters::SwitchAdapter;
use crate::images::ImageRegistry;
use crate::layout::Layout;
use crate::supervisor::MAX_STOP_GRACE;
use hostel_api::ResizeVm;
use hostel_state::{
    EntityKind, NewAuditEntry, RestartPolicy, Store, StoreError, TenantId, Vm, VmId, VmName,
};
use std::sync::Arc;
use std::time::Duration;

/// A stop's grace period when the caller names none, and a restart's.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(30);

/// What the VM operations work with. Cheap to make: one per call.
pub struct Vms<'a, E, S> {
    pub(super) store: &'a Arc<dyn Store>,
    pub(super) layout: &'a Layout,
    pub(super) images: &'a ImageRegistry,
    pub(super) engine: &'a Arc<E>,
    pub(super) switch: &'a Arc<S>,
}

impl<'a, E: EngineAdapter, S: SwitchAdapter + 'static> Vms<'a, E, S> {
    pub fn new(
        store: &'a Arc<dyn Store>,
        layout: &'a Layout,
        images: &'a ImageRegistry,
        engine: &'a Arc<E>,
        switch: &'a Arc<S>,
    ) -> Self {
        Self {
            store,
            layout,
            images,
            engine,
            switch,
        }
    }

    /// The VM `name` of `tenant`. A malformed name is as missing as an absent one, and
    /// another tenant's VM is not found either.
    pub async fn find(&self, tenant: TenantId, name: &str) -> Result<Vm, DaemonError> {
        let name = name.to_owned();
        Ok(blocking(self.store, move |store| {
            let missing = || StoreError::NotFound {
                kind: EntityKind::Vm,
                name: name.clone(),
            };
            let n = VmName::new(&name).map_err(|_| missing())?;
            store.get_vm_by_name(&tenant, &n)
        })
        .await?)
    }

    /// The VM as it is now: after an operation, its record has moved on from the one found.
    async fn fresh(&self, id: VmId) -> Result<Vm, DaemonError> {
        Ok(blocking(self.store, move |store| store.get_vm(&id)).await?)
    }

    /// Admits and starts the VM (wanted running goes on record with `audit`).
    pub async fn start(
        &self,
        tenant: TenantId,
        name: &str,
        audit: NewAuditEntry,
    ) -> Result<Vm, DaemonError> {
        let vm = self.find(tenant, name).await?;
        self.engine.start(&vm, Some(audit)).await?;
        self.fresh(vm.id).await
    }

    /// Stops the VM: the power button, `timeout_secs` (at most [`MAX_STOP_GRACE`]) for
    /// the guest to power off, then a kill; `force` kills at once, over a stop under way.
    pub async fn stop(
        &self,
        tenant: TenantId,
        name: &str,
        force: bool,
        timeout_secs: Option<u64>,
        audit: NewAuditEntry,
    ) -> Result<Vm, DaemonError> {
        let grace = match timeout_secs {
            None => DEFAULT_STOP_GRACE,
            Some(t) if t > MAX_STOP_GRACE.as_secs() => {
                return Err(DaemonError::invalid(
                    "timeout_secs",
                    format!("{t} is more than {} seconds", MAX_STOP_GRACE.as_secs()),
                ))
            }
            Some(t) => Duration::from_secs(t),
        };
        let vm = self.find(tenant, name).await?;
        self.engine.stop(&vm, force, grace, audit).await?;
        self.fresh(vm.id).await
    }

    /// Restarts the VM. The entry goes with the call's one change on record (wanted
    /// running, a stop pending): a restart cut anywhere is finished at the next start.
    pub async fn restart(
        &self,
        tenant: TenantId,
        name: &str,
        audit: NewAuditEntry,
    ) -> Result<Vm, DaemonError> {
        let vm = self.find(tenant, name).await?;
        self.engine.restart(&vm, DEFAULT_STOP_GRACE, audit).await?;
        self.fresh(vm.id).await
    }

    /// Deletes the VM. The delete is on record (with `audit`) before anything is done; the
    /// engine kills QEMU (over a stop under way) and removes disks, record and ports. A
    /// daemon killed meanwhile finishes it at its next start.
    pub async fn delete(
        &self,
        tenant: TenantId,
        name: &str,
        audit: NewAuditEntry,
    ) -> Result<(), DaemonError> {
        let vm = self.find(tenant, name).await?;
        Ok(self.engine.delete(&vm, audit).await?)
    }

    /// Gives the VM a new shape (applied at its next start), checked as a create's is and
    /// against the tenant's quota in the writing transaction. A disk never shrinks.
    pub async fn resize(
        &self,
        tenant: TenantId,
        name: &str,
        req: &ResizeVm,
        audit: NewAuditEntry,
    ) -> Result<Vm, DaemonError> {
        let vm = self.find(tenant, name).await?;
        let memory = match &req.memory {
            None => vm.spec.memory_mib(),
            Some(m) => m.to_mib().map_err(|e| DaemonError::invalid("memory", e))?,
        };
        let disk = req.disk_gib.unwrap_or(vm.spec.disk_gib());
        let vcpus = req.vcpus.unwrap_or(vm.spec.vcpus());
        check_shape(vcpus, memory, disk)?;
        if disk < vm.spec.disk_gib() {
            return Err(DaemonError::invalid(
                "disk_gib",
                format!("a disk cannot shrink ({} GiB now)", vm.spec.disk_gib()),
            ));
        }
        let spec = vm.spec.resized(vcpus, memory, disk)?;
        Ok(blocking(self.store, move |store| {
            store.resize_vm_within_quota(&vm.id, &spec, None, &audit)
        })
        .await?)
    }
}

pub(super) fn parse_policy(s: &str) -> Result<RestartPolicy, DaemonError> {
    RestartPolicy::ALL
        .iter()
        .copied()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| {
            DaemonError::invalid(
                "restart_policy",
                format!("{s:?} is not never, on_failure or always"),
            )
        })
}

/// What every VM shape must be, at create and at resize alike: one the engine can boot
/// (a VM recorded with a shape no start can launch would only fail later, every time).
pub(super) fn check_shape(vcpus: u32, memory_mib: u64, disk_gib: u64) -> Result<(), DaemonError> {
    use hostel_engine::spec::{MAX_VCPUS, MIN_MEMORY_MIB};
    if !(1..=MAX_VCPUS).contains(&vcpus) {
        return Err(DaemonError::invalid(
            "vcpus",
            format!("{vcpus} is out of range (1-{MAX_VCPUS})"),
        ));
    }
    if memory_mib < MIN_MEMORY_MIB {
        return Err(DaemonError::invalid(
            "memory",
            format!("{memory_mib} MiB is below the minimum of {MIN_MEMORY_MIB} MiB"),
        ));
    }
    if disk_gib == 0 {
        return Err(DaemonError::invalid("disk_gib", "must be at least 1"));
    }
    // The upper bounds the store can hold are checked by `VmSpecRecord`.
    Ok(())
}
