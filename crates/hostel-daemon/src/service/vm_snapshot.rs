//! `hostel vm snapshot`: all of a VM's pool volumes snapshotted at one instant.

use super::volumes::{
    check_allocated, must_be_stopped, pool_info, storage_error, view, VolumeView,
};
use super::DaemonError;
use crate::Ctx;
use hostel_state::{NewAuditEntry, TenantId, Volume, VolumeName, VolumeState};
use hostel_storage_proto::Request;

/// `vm snapshot`: one snapshot of every pool volume of a VM, taken at one instant.
pub enum VmSnapshotOp {
    Create,
    Restore,
    Delete,
}

/// Snapshots all of a VM's pool volumes as one. A create on a running VM pauses its vCPUs
/// (QMP `stop`), snapshots each volume (metadata only: milliseconds each), and continues
/// it (`cont`) whatever happened: the snapshots are crash-consistent, as if the power had
/// gone at that instant, or filesystem-consistent when the guest's agent froze its
/// filesystems around it (`agent_freeze.rs`; the audit entry says which). A create that
/// fails on one volume deletes the ones it made; a restore needs the VM stopped.
pub async fn vm_snapshot(
    ctx: &Ctx,
    supervisor: &crate::supervisor::Supervisor,
    agent: &super::agent::GuestAgent<'_>,
    (tenant, vm_name): (TenantId, hostel_state::VmName),
    snapshot: VolumeName,
    op: VmSnapshotOp,
    mut audit: NewAuditEntry,
) -> Result<Vec<VolumeView>, DaemonError> {
    let vm = ctx.db(move |s| s.get_vm_by_name(&tenant, &vm_name)).await?;
    let vm_id = vm.id;
    let vols: Vec<Volume> = ctx
        .db(move |s| s.list_volumes_of_vm(&vm_id))
        .await?
        .into_iter()
        .filter(|v| v.state == VolumeState::Ready)
        .collect();
    if vols.is_empty() {
        return Err(DaemonError::conflict(
            Some("name"),
            format!("VM {} has no pool volumes", vm.name),
        ));
    }
    let Some(pool) = pool_info(ctx).await? else {
        return Err(DaemonError::conflict(None, "this host has no storage pool"));
    };
    let snap = snapshot.as_str().to_string();
    let has = |v: &Volume| {
        pool.volumes
            .iter()
            .any(|p| p.name == v.pool_name() && p.snapshots.contains(&snap))
    };
    match op {
        VmSnapshotOp::Create => {
            if let Some(v) = vols.iter().find(|v| has(v)) {
                return Err(DaemonError::conflict(
                    Some("snapshot"),
                    format!("volume {} has a snapshot {snap} already", v.name),
                ));
            }
            check_allocated(ctx, tenant, &pool).await?;
            // The guest's filesystems first (flushed and held), then its vCPUs.
            let consistency = agent.freeze_for_snapshot(&vm).await;
            let paused = supervisor.freeze(&vm, true).await;
            if let Err(e) = paused {
                if consistency.is_frozen() {
                    let _ = agent.thaw(&vm).await;
                }
                return Err(e.into());
            }
            let mut made = Vec::new();
            let mut failed = None;
            for v in &vols {
                let r = ctx
                    .storage
                    .request(&Request::SnapshotCreate {
                        volume: v.pool_name(),
                        snapshot: snap.clone(),
                    })
                    .await;
                match r {
                    Ok(_) => made.push(v.pool_name()),
                    Err(e) => {
                        failed = Some(storage_error(e, "snapshot"));
                        break;
                    }
                }
            }
            let resumed = supervisor.freeze(&vm, false).await;
            if consistency.is_frozen() {
                if let Err(e) = agent.thaw(&vm).await {
                    // The intent stays: the next start thaws it.
                    tracing::error!(vm = %vm.name, error = %e, "thawing the guest after a snapshot");
                }
            }
            audit.target = format!("{} ({consistency})", audit.target);
            if let Some(e) = failed {
                for name in made {
                    let _ = ctx
                        .storage
                        .request(&Request::SnapshotDelete {
                            volume: name,
                            snapshot: snap.clone(),
                        })
                        .await;
                }
                return Err(e);
            }
            resumed?;
        }
        VmSnapshotOp::Restore => {
            must_be_stopped(&vm, "restore its snapshot")?;
            if let Some(v) = vols.iter().find(|v| !has(v)) {
                return Err(DaemonError::NotFound {
                    kind: "snapshot",
                    name: format!("{}@{snap}", v.name),
                });
            }
            for v in &vols {
                ctx.storage
                    .request(&Request::SnapshotRestore {
                        volume: v.pool_name(),
                        snapshot: snap.clone(),
                    })
                    .await
                    .map_err(|e| storage_error(e, "snapshot"))?;
            }
        }
        VmSnapshotOp::Delete => {
            if !vols.iter().any(&has) {
                return Err(DaemonError::NotFound {
                    kind: "snapshot",
                    name: snap,
                });
            }
            for v in vols.iter().filter(|v| has(v)) {
                ctx.storage
                    .request(&Request::SnapshotDelete {
                        volume: v.pool_name(),
                        snapshot: snap.clone(),
                    })
                    .await
                    .map_err(|e| storage_error(e, "snapshot"))?;
            }
        }
    }
    ctx.db(move |s| s.append_audit(&audit)).await?;
    view(ctx, vols).await
}
