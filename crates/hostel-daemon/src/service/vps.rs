//! A tenant's VPSs (system containers): create, start, stop, restart, delete, exec, and the
//! start-up reconcile that re-adopts running containers and finishes what a killed daemon
//! left half done. Same conventions as VMs: each change is on record (desired state, intent
//! and audit entry in one transaction) before the host is touched; names, quotas and
//! addresses are shared with the tenant's VMs (one `vms` table, kind `vps`); another
//! tenant's VPS is not found.

use super::vms::check_shape;
use super::{blocking, DaemonError};
use crate::adapters::networking;
use crate::adapters::vps::{self as host_vps, VpsHost, VPS_IMAGES};
use crate::Ctx;
use hostel_api::{CreateVm, ExecVps, ExecVpsResult};
use hostel_state::{
    AuditResult, DesiredState, EntityKind, IntentOp, Network, NetworkName, NewAuditEntry, NewNic,
    NewVm, ObservedState, ObservedStatus, Store, StoreError, TenantId, Timestamp, Vm, VmId,
    VmIntent, VmName, VmNic, VmSpecRecord, VpsRecord,
};
use hostel_vps::VpsStatus;
use std::sync::Arc;
use std::time::Duration;

/// A VPS's memory when the request names none.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Its disk when the request names none.
pub const DEFAULT_DISK_GIB: u64 = 1;
/// The longest exec.
pub const MAX_EXEC_SECS: u64 = 3600;

/// The VPS operations. Cheap to make: one per call.
pub struct Vpss<'a> {
    ctx: &'a Arc<Ctx>,
    host: VpsHost,
}

impl<'a> Vpss<'a> {
    pub fn new(ctx: &'a Arc<Ctx>) -> Self {
        Self {
            host: VpsHost::new(&ctx.layout),
            ctx,
        }
    }

    /// The VPS `name` of `tenant` (a malformed name, a VM's name or another tenant's VPS is
    /// not found).
    pub async fn find(&self, tenant: TenantId, name: &str) -> Result<VpsRecord, DaemonError> {
        let name = name.to_owned();
        Ok(blocking(&self.ctx.store, move |store| {
            let n = VmName::new(&name).map_err(|_| StoreError::NotFound {
                kind: EntityKind::Vm,
                name: name.clone(),
            })?;
            store.get_vps_by_name(&tenant, &n)
        })
        .await?)
    }

    async fn fresh(&self, id: VmId) -> Result<Vm, DaemonError> {
        Ok(blocking(&self.ctx.store, move |store| store.get_vm(&id)).await?)
    }

    /// Creates (and, unless `start` is false, starts) a VPS. A refusal before the record
    /// changes nothing; a failure after it removes everything made and the record, the
    /// failure committed to the audit log with the removal ([`DaemonError::Undone`]).
    pub async fn create(
        &self,
        tenant: TenantId,
        req: &CreateVm,
        audit: NewAuditEntry,
    ) -> Result<Vm, DaemonError> {
        let name = VmName::new(&req.name).map_err(|e| DaemonError::invalid("name", e))?;
        let image = req.image.clone().unwrap_or_else(|| "busybox".into());
        if !VPS_IMAGES.contains(&image.as_str()) {
            return Err(DaemonError::invalid(
                "image",
                format!("{image:?} is not a VPS image on this host (have: {VPS_IMAGES:?})"),
            ));
        }
        let memory = match &req.memory {
            None => DEFAULT_MEMORY_MIB,
            Some(m) => m.to_mib().map_err(|e| DaemonError::invalid("memory", e))?,
        };
        if memory < 16 {
            return Err(DaemonError::invalid(
                "memory",
                "a VPS needs at least 16 MiB",
            ));
        }
        let vcpus = req.vcpus.unwrap_or(1);
        let disk_gib = req.disk_gib.unwrap_or(DEFAULT_DISK_GIB);
        check_shape(vcpus, memory, disk_gib)?;
        if disk_gib > 1 << 16 {
            return Err(DaemonError::invalid("disk_gib", "at most 65536 for a VPS"));
        }
        if req.networks.len() > 1 {
            return Err(DaemonError::invalid(
                "networks",
                "a VPS has at most one NIC",
            ));
        }
        let spec =
            VmSpecRecord::new(vcpus, memory, disk_gib, image)?.with_cmdline(req.cmdline.clone())?;
        let start = req.start.unwrap_or(true);
        let new = NewVm {
            id: None,
            name,
            spec,
            desired: if start {
                DesiredState::Running
            } else {
                DesiredState::Stopped
            },
        };
        let requests = req.networks.clone();
        let entry = audit.clone();
        let (rec, _) = blocking(&self.ctx.store, move |store| {
            let nics = requests
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let field = format!("networks[{i}]");
                    let net = NetworkName::new(&r.network)
                        .ok()
                        .and_then(|n| store.get_network_by_name(&tenant, &n).ok())
                        .ok_or_else(|| {
                            DaemonError::invalid(
                                field.clone(),
                                format!("no network {:?}", r.network),
                            )
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
                .collect::<Result<Vec<_>, DaemonError>>()?;
            Ok::<_, DaemonError>(
                store.create_vps_with_nics_within_quota(&tenant, &new, &nics, &entry)?,
            )
        })
        .await?;
        let made = async {
            if start {
                self.bring_up(&rec).await
            } else {
                let v = self
                    .host
                    .vps(&rec, self.nic_of(rec.vm.id).await?.as_ref())?;
                self.host
                    .prepare(v, rec.vm.spec.image().to_string())
                    .await?;
                self.set_observed(rec.vm.id, ObservedState::Stopped, None)
                    .await
            }
        }
        .await;
        match made {
            Ok(()) => self.fresh(rec.vm.id).await,
            Err(e) => {
                let reason = e.to_string();
                if let Err(d) = self.host.destroy(&rec.vm.id).await {
                    tracing::error!(vps = %rec.vm.id, error = %d, "removing a failed VPS create");
                }
                let (id, failed) = (
                    rec.vm.id,
                    audit.with_result(AuditResult::Error(format!("{reason} (undone)"))),
                );
                let removed = blocking(&self.ctx.store, move |store| {
                    store.delete_vm(&id, None, &failed)
                })
                .await;
                if let Err(e) = removed {
                    tracing::error!(vps = %id, error = %e, "removing the record of a failed VPS create");
                }
                self.sync().await;
                Err(DaemonError::Undone(Box::new(e)))
            }
        }
    }

    /// The first NIC of `id` with its network.
    async fn nic_of(&self, id: VmId) -> Result<Option<(VmNic, Network)>, DaemonError> {
        Ok(blocking(&self.ctx.store, move |store| {
            let Some(nic) = store.list_nics_of_vm(&id)?.into_iter().find(|n| n.idx == 0) else {
                return Ok(None);
            };
            let net = store.get_network(&nic.network)?;
            Ok::<_, StoreError>(Some((nic, net)))
        })
        .await?)
    }

    /// Prepares the host's side, gives the switch the NIC's port, moves the NIC in and
    /// starts the container; records it running.
    async fn bring_up(&self, rec: &VpsRecord) -> Result<(), DaemonError> {
        let nic = self.nic_of(rec.vm.id).await?;
        let v = self.host.vps(rec, nic.as_ref())?;
        let (v, plugged) = self
            .host
            .prepare(v, rec.vm.spec.image().to_string())
            .await?;
        if nic.is_some() && !plugged {
            networking::sync(self.ctx).await?;
            if let Some(i) = self.ctx.switch.instance() {
                host_vps::record_switch(&self.host, &rec.vm.id, &i.key());
            }
        }
        let pid = self.host.plug_and_start(v).await?;
        self.set_observed(rec.vm.id, ObservedState::Running, Some(pid))
            .await
    }

    async fn set_observed(
        &self,
        id: VmId,
        state: ObservedState,
        pid: Option<u32>,
    ) -> Result<(), DaemonError> {
        blocking(&self.ctx.store, move |store| {
            let vm = store.get_vm(&id)?;
            if vm.observed.state == state && vm.observed.pid == pid {
                return Ok(());
            }
            let observed = ObservedStatus {
                state,
                pid,
                since: Timestamp::now(),
                last_exit: vm.observed.last_exit.clone(),
                restart_count: vm.observed.restart_count,
            };
            store.set_vm_observed(&id, &observed).map(drop)
        })
        .await?;
        Ok(())
    }

    async fn sync(&self) {
        if let Err(e) = networking::sync(self.ctx).await {
            tracing::warn!(error = %e, "switch tables after a VPS change; the watchdog retries");
        }
    }

    pub async fn start(
        &self,
        tenant: TenantId,
        name: &str,
        audit: NewAuditEntry,
    ) -> Result<Vm, DaemonError> {
        let rec = self.find(tenant, name).await?;
        let id = rec.vm.id;
        blocking(&self.ctx.store, move |store| {
            store.set_vm_intent(&id, DesiredState::Running, None, Some(&audit))
        })
        .await?;
        self.bring_up(&rec).await?;
        self.fresh(id).await
    }

    /// Stops the container (its disk, namespaces and NIC stay). The intent is on record
    /// first, so a daemon killed meanwhile finishes the stop at its next start.
    pub async fn stop(
        &self,
        tenant: TenantId,
        name: &str,
        audit: NewAuditEntry,
    ) -> Result<Vm, DaemonError> {
        let rec = self.find(tenant, name).await?;
        let id = rec.vm.id;
        let intent = VmIntent {
            op: IntentOp::Stop,
            deadline: deadline_after(host_vps::STOP_GRACE),
        };
        blocking(&self.ctx.store, move |store| {
            store.set_vm_intent(&id, DesiredState::Stopped, Some(&intent), Some(&audit))
        })
        .await?;
        self.finish_stop(id).await?;
        self.fresh(id).await
    }

    async fn finish_stop(&self, id: VmId) -> Result<(), DaemonError> {
        self.host.stop(&id).await?;
        self.set_observed(id, ObservedState::Stopped, None).await?;
        blocking(&self.ctx.store, move |store| {
            store.clear_vm_intent(&id, IntentOp::Stop)
        })
        .await?;
        Ok(())
    }

    pub async fn restart(
        &self,
        tenant: TenantId,
        name: &str,
        audit: NewAuditEntry,
    ) -> Result<Vm, DaemonError> {
        let rec = self.find(tenant, name).await?;
        self.stop(tenant, name, audit.clone()).await?;
        let _ = rec;
        self.start(tenant, name, audit).await
    }

    /// Deletes the VPS: the intent on record, then every trace on the host, then the
    /// record (its addresses freed) and the switch's port.
    pub async fn delete(
        &self,
        tenant: TenantId,
        name: &str,
        audit: NewAuditEntry,
    ) -> Result<(), DaemonError> {
        let rec = self.find(tenant, name).await?;
        let id = rec.vm.id;
        let intent = VmIntent {
            op: IntentOp::Delete,
            deadline: Timestamp::now(),
        };
        blocking(&self.ctx.store, move |store| {
            store.set_vm_intent(&id, DesiredState::Stopped, Some(&intent), Some(&audit))
        })
        .await?;
        self.finish_delete(id).await
    }

    async fn finish_delete(&self, id: VmId) -> Result<(), DaemonError> {
        self.host.destroy(&id).await?;
        blocking(&self.ctx.store, move |store| store.finish_vm_delete(&id)).await?;
        self.sync().await;
        Ok(())
    }

    /// Runs a command in the running VPS as its root.
    pub async fn exec(
        &self,
        tenant: TenantId,
        name: &str,
        req: &ExecVps,
        audit: NewAuditEntry,
    ) -> Result<ExecVpsResult, DaemonError> {
        if req.command.is_empty() || req.command.iter().any(|a| a.contains('\0')) {
            return Err(DaemonError::invalid(
                "command",
                "a program and its arguments, no NUL",
            ));
        }
        if req.command.len() > 1024 || req.command.iter().map(String::len).sum::<usize>() > 1 << 16
        {
            return Err(DaemonError::invalid(
                "command",
                "at most 1024 arguments, 64 KiB",
            ));
        }
        let secs = req.timeout_secs.unwrap_or(60);
        if secs == 0 || secs > MAX_EXEC_SECS {
            return Err(DaemonError::invalid(
                "timeout_secs",
                format!("1 to {MAX_EXEC_SECS}"),
            ));
        }
        let rec = self.find(tenant, name).await?;
        if !matches!(
            self.host.status(&rec.vm.id).await?,
            VpsStatus::Running { .. }
        ) {
            return Err(DaemonError::Conflict {
                field: None,
                message: format!("VPS {name} is not running"),
            });
        }
        blocking(&self.ctx.store, move |store| store.append_audit(&audit)).await?;
        let out = self
            .host
            .exec(&rec.vm.id, req.command.clone(), Duration::from_secs(secs))
            .await?;
        Ok(ExecVpsResult {
            exit_code: out.code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// What runc says now, recorded if it differs (a PID 1 that ended is `stopped`).
    pub async fn refresh(&self, vm: Vm) -> Result<Vm, DaemonError> {
        let (state, pid) = match self.host.status(&vm.id).await? {
            VpsStatus::Running { pid } => (ObservedState::Running, Some(pid)),
            VpsStatus::Stopped => (ObservedState::Stopped, None),
        };
        if vm.observed.state == state && vm.observed.pid == pid {
            return Ok(vm);
        }
        self.set_observed(vm.id, state, pid).await?;
        self.fresh(vm.id).await
    }

    /// At start-up: finishes deletes and stops a killed daemon left, re-adopts running
    /// containers (runc's state is on disk; the container never depended on the daemon),
    /// starts the ones wanted running that are not, and removes the host pieces of VPSs
    /// with no record (a create cut before its record, or a delete cut after it).
    pub async fn reconcile(&self) {
        let store = Arc::clone(&self.ctx.store);
        let all = match blocking(&store, |s: &dyn Store| s.list_all_vpss()).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "listing VPSs at start-up");
                return;
            }
        };
        for dir in self.host.dirs() {
            if !all.iter().any(|r| r.vm.id == dir) {
                tracing::info!(vps = %dir, "removing the remains of a VPS with no record");
                if let Err(e) = self.host.destroy(&dir).await {
                    tracing::error!(vps = %dir, error = %e, "removing an unrecorded VPS");
                }
            }
        }
        for rec in all {
            let id = rec.vm.id;
            let result = match (rec.vm.intent.map(|i| i.op), rec.vm.desired) {
                (Some(IntentOp::Delete), _) => self.finish_delete(id).await,
                (Some(_), _) => self.finish_stop(id).await,
                (None, DesiredState::Stopped) => match self.host.status(&id).await {
                    Ok(VpsStatus::Running { .. }) => self.host.stop(&id).await.map_err(Into::into),
                    Ok(VpsStatus::Stopped) => {
                        self.set_observed(id, ObservedState::Stopped, None).await
                    }
                    Err(e) => Err(e.into()),
                },
                (None, DesiredState::Running) => match self.host.status(&id).await {
                    Ok(VpsStatus::Running { pid }) => {
                        tracing::info!(vps = %id, pid, "re-adopted a running VPS");
                        self.set_observed(id, ObservedState::Running, Some(pid))
                            .await
                    }
                    Ok(VpsStatus::Stopped) => self.bring_up(&rec).await,
                    Err(e) => Err(e.into()),
                },
            };
            if let Err(e) = result {
                tracing::error!(vps = %id, error = %e, "reconciling a VPS at start-up");
            }
        }
    }
}

fn deadline_after(d: Duration) -> Timestamp {
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_unix_millis(Timestamp::now().unix_millis().saturating_add(ms))
}
