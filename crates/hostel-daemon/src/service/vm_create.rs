//! A VM create: the image and shape checked before anything is made, the record (with its
//! NICs, quota check and audit entry, one transaction), its disks (or a standby's), then
//! its start. A failure after the record exists undoes all of it through one [`Revert`]:
//! no record, disks, ports or quota usage are left, and the audit log gets the failure in
//! the same transaction as the record's removal.

use super::images::{resolve_for_vm, OsPlan, VmImage};
use super::revert::Revert;
use super::standby::{self, Claim};
use super::vms::{check_shape, parse_policy, Vms};
use super::{blocking, DaemonError};
use crate::adapters::engine::{DiskPlan, EngineAdapter, StandbyHandle};
use crate::adapters::SwitchAdapter;
use crate::images::GIB;
use crate::layout::Layout;
use hostel_api::{CreateVm, NicRequest};
use hostel_state::{
    AuditResult, DesiredState, NetworkName, NewAuditEntry, NewNic, NewVm, Store, TenantId, Vm,
    VmName, VmSpecRecord,
};
use std::sync::Arc;

impl<E: EngineAdapter, S: SwitchAdapter + 'static> Vms<'_, E, S> {
    /// Creates the VM `req` describes for `tenant`, `audit` committed with its record.
    /// A refusal before the record (a bad field, a quota) changes nothing and never asks
    /// the engine; a failure after it is [`DaemonError::Undone`]: everything undone, the
    /// failure already in the audit log.
    pub async fn create(
        &self,
        tenant: TenantId,
        req: &CreateVm,
        audit: NewAuditEntry,
    ) -> Result<Vm, DaemonError> {
        let name = VmName::new(&req.name).map_err(|e| DaemonError::invalid("name", e))?;
        let (spec, image) = self.spec_from(req)?;
        // A standby of this shape, if the host keeps one: the VM gets its id and its boot.
        let standby = image
            .os
            .as_ref()
            .and_then(|_| standby::wanted_shape(req, &spec))
            .and_then(|shape| self.engine.take_standby(&shape));
        let new = NewVm {
            id: standby.as_ref().map(StandbyHandle::id),
            name,
            spec,
            desired: DesiredState::Stopped,
        };
        let requests = req.networks.clone();
        let record_entry = audit.clone();
        let created = blocking(self.store, move |store| {
            let nics = nics_from(store, tenant, &requests)?;
            let (vm, _) =
                store.create_vm_with_nics_within_quota(&tenant, &new, &nics, &record_entry)?;
            Ok::<_, DaemonError>(vm)
        })
        .await;
        let vm = match created {
            Ok(vm) => vm,
            Err(e) => {
                if let Some(sb) = standby {
                    self.engine.put_back_standby(sb);
                }
                return Err(e);
            }
        };
        let mut revert = Revert::new();
        {
            let (store, layout, switch, vm) = (
                Arc::clone(self.store),
                self.layout.clone(),
                Arc::clone(self.switch),
                vm.clone(),
            );
            revert.add("record", move |reason| async move {
                unmake(store, &layout, switch.as_ref(), &vm, audit, reason).await;
            });
        }
        match self
            .make_and_start(&vm, req, &image, standby, &mut revert)
            .await
        {
            Ok(()) => {
                revert.success();
                let id = vm.id;
                Ok(blocking(self.store, move |store| store.get_vm(&id)).await?)
            }
            Err(e) => {
                revert.fail(&e.to_string()).await;
                Err(DaemonError::Undone(Box::new(e)))
            }
        }
    }

    /// The record's spec and the image it boots, checked before anything is made.
    fn spec_from(&self, req: &CreateVm) -> Result<(VmSpecRecord, VmImage), DaemonError> {
        let image = resolve_for_vm(self.images, req)?;
        let memory = match &req.memory {
            None => image.default_memory_mib(),
            Some(m) => m.to_mib().map_err(|e| DaemonError::invalid("memory", e))?,
        };
        let vcpus = req.vcpus.unwrap_or(1);
        let disk_gib = req.disk_gib.unwrap_or(image.default_disk_gib());
        check_shape(vcpus, memory, disk_gib)?;
        image.check_disk(disk_gib)?;
        let mut spec = VmSpecRecord::new(vcpus, memory, disk_gib, image.name.clone())?
            .with_cmdline(req.cmdline.clone())?;
        if let Some(p) = &req.restart_policy {
            spec = spec.with_restart_policy(parse_policy(p)?);
        }
        Ok((spec, image))
    }

    /// The part of a create after its record: disks (or a standby's), then the start.
    async fn make_and_start(
        &self,
        vm: &Vm,
        req: &CreateVm,
        image: &VmImage,
        standby: Option<E::Standby>,
        revert: &mut Revert,
    ) -> Result<(), DaemonError> {
        let mut running = false;
        match (&image.os, standby) {
            (Some(os), Some(sb)) => {
                match standby::claim(self, vm, req, os.template.as_ref(), sb).await? {
                    Claim::Taken => running = true,
                    Claim::Declined => self.make_os_disks(vm, req, os).await?,
                }
            }
            (Some(os), None) => self.make_os_disks(vm, req, os).await?,
            (None, _) => {
                let plan = DiskPlan::Data {
                    path: self.layout.vm_root_disk(&vm.tenant, &vm.id),
                    gib: vm.spec.disk_gib(),
                };
                self.engine.make_disks(plan).await?;
            }
        }
        let start = req.start.unwrap_or(true);
        if running || start {
            // A QEMU that runs it (a standby's, or one a start launched before failing) goes
            // before the record does.
            let (engine, vm) = (Arc::clone(self.engine), vm.clone());
            revert.add("qemu", move |_| async move { engine.remove(&vm).await });
        }
        if !running && start {
            self.engine.start(vm, None).await?;
        } else if !running {
            self.engine.created(vm).await?;
            // A start gives the switch the VM's ports; a VM created stopped gets them now (the
            // watchdog compares switch generations, not tables, so it would not notice them).
            if let Err(e) = self.switch.sync().await {
                tracing::warn!(vm = %vm.id, error = %e, "switch ports of a VM created stopped; the watchdog retries");
            }
        }
        Ok(())
    }

    /// An OS-image VM's disks: the copy-on-write clone of its image and its seed.
    async fn make_os_disks(&self, vm: &Vm, req: &CreateVm, os: &OsPlan) -> Result<(), DaemonError> {
        let (v, r, template) = (vm.clone(), req.clone(), os.template.clone());
        let seed = blocking(self.store, move |store| {
            crate::seed::config(store, &v, &r, template.as_ref())
        })
        .await?;
        let plan = DiskPlan::Os {
            dir: self.layout.vm_disk_dir(&vm.tenant, &vm.id),
            image: Box::new(os.image.clone()),
            bytes: vm.spec.disk_gib().saturating_mul(GIB),
            seed: Box::new(seed),
        };
        Ok(self.engine.make_disks(plan).await?)
    }
}

/// The requested NICs, resolved within the tenant (another tenant's network is not found).
fn nics_from(
    store: &dyn Store,
    tenant: TenantId,
    requests: &[NicRequest],
) -> Result<Vec<NewNic>, DaemonError> {
    requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let field = format!("networks[{i}]");
            let net = NetworkName::new(&r.network)
                .ok()
                .and_then(|n| store.get_network_by_name(&tenant, &n).ok())
                .ok_or_else(|| {
                    DaemonError::invalid(field.clone(), format!("no network {:?}", r.network))
                })?;
            let ipv4 =
                r.ip.as_deref()
                    .map(|ip| {
                        ip.parse().map_err(|_| {
                            DaemonError::invalid(
                                field.clone(),
                                format!("{ip:?} is not an IPv4 address"),
                            )
                        })
                    })
                    .transpose()?;
            Ok(NewNic {
                network: net.id,
                ipv4,
            })
        })
        .collect()
}

/// Undoes a create's record: removes it (committing the failure to the audit log with
/// the removal), its disk and run directories, and its switch ports.
async fn unmake<S: SwitchAdapter>(
    store: Arc<dyn Store>,
    layout: &Layout,
    switch: &S,
    vm: &Vm,
    entry: NewAuditEntry,
    reason: String,
) {
    let (id, disks, run) = (
        vm.id,
        layout.vm_disk_dir(&vm.tenant, &vm.id),
        layout.vm_run_dir(&vm.id),
    );
    let failed = entry.with_result(AuditResult::Error(format!("{reason} (undone)")));
    let removed = blocking(&store, move |store| {
        let removed = store.delete_vm(&id, None, &failed);
        let _ = std::fs::remove_dir_all(disks);
        let _ = std::fs::remove_dir_all(run);
        removed
    })
    .await;
    if let Err(e) = removed {
        tracing::error!(vm = %id, error = %e, "removing the record of a failed create");
    }
    if let Err(e) = switch.sync().await {
        tracing::warn!(vm = %id, error = %e, "switch ports of a failed create");
    }
}
