//! A create served by a standby (`crate::standby`): the VM's record takes the standby's id,
//! the standby's disks become the VM's, its seed is written and grown under the running
//! guest, and the supervisor adopts its QEMU. cloud-init in the guest then configures the
//! instance exactly as on a cold boot.

use super::images::OsPlan;
use super::AppState;
use crate::adapters::networking;
use crate::error::{ApiError, ApiResult};
use crate::images::{GIB, SEED_DISK};
use crate::standby::{self, Shape, Standby};
use hostel_api::CreateVm;
use hostel_engine::DiskFormat;
use hostel_state::{first_choice_mac, Vm, VmSpecRecord};
use std::io::Write;
use std::path::Path;

/// The shape a create asks for, if a standby could serve it at all: started at once, one
/// network, no extra kernel arguments (a standby's kernel has booted already).
pub fn wanted_shape(body: &CreateVm, spec: &VmSpecRecord) -> Option<Shape> {
    let eligible =
        body.start.unwrap_or(true) && body.networks.len() == 1 && spec.cmdline().is_none();
    eligible.then(|| Shape {
        image: spec.image().to_string(),
        vcpus: spec.vcpus(),
        memory_mib: spec.memory_mib(),
        disk_gib: spec.disk_gib(),
    })
}

/// What became of a create offered a standby.
pub enum Claim {
    /// The VM runs on the standby.
    Taken,
    /// The standby could not serve this VM (its NIC got another MAC) and is gone; the
    /// create goes on the usual way.
    Declined,
}

/// Turns `sb` into `vm` (created with `sb`'s id). On an error the standby is discarded and
/// the caller removes the record, as for any failed create.
pub async fn claim(
    state: &AppState,
    vm: &Vm,
    body: &CreateVm,
    os: &OsPlan,
    sb: Standby,
) -> ApiResult<Claim> {
    let ctx = &state.ctx;
    let (mac_matches, seed) = {
        let (vm, body, template) = (vm.clone(), body.clone(), os.template.clone());
        state
            .db(move |store| {
                let nics = store.list_nics_of_vm(&vm.id)?;
                let matches = nics.len() == 1 && nics[0].mac == first_choice_mac(&vm.id, 0);
                let seed = crate::seed::config(store, &vm, &body, template.as_ref())?;
                Ok((matches, seed))
            })
            .await?
    };
    if !mac_matches {
        tracing::info!(vm = %vm.id, "standby's MAC is taken in this network; booting cold");
        standby::discard(ctx, sb).await;
        return Ok(Claim::Declined);
    }
    let from = ctx.layout.standby_disk_dir(&vm.id);
    let to = ctx.layout.vm_disk_dir(&vm.tenant, &vm.id);
    let written = {
        let from = from.clone();
        tokio::task::spawn_blocking(move || write_seed_in_place(&from, &seed))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
    };
    let seed_len = match written {
        Ok(n) => n,
        Err(e) => {
            standby::discard(ctx, sb).await;
            return Err(e);
        }
    };
    // The disks move once QEMU has reopened the seed (it does so by path); its open files
    // follow the rename.
    let woken = match wake(state, vm, &sb, seed_len).await {
        Ok(()) => move_disks(&from, &to),
        Err(e) => Err(e),
    };
    if let Err(e) = woken {
        standby::discard(ctx, sb).await;
        return Err(e);
    }
    state.supervisor.attach(vm, sb.engine).await;
    tracing::info!(vm = %vm.id, name = %vm.name, "created from a standby");
    Ok(Claim::Taken)
}

/// Grows the seed (and the root disk if the VM ordered more), connects the NIC to the VM's
/// network and admits the VM.
async fn wake(state: &AppState, vm: &Vm, sb: &Standby, seed_len: u64) -> ApiResult<()> {
    let engine_err = |what: &str, e: hostel_engine::EngineError| {
        ApiError::internal(format!("standby {}: {what}: {e}", vm.id))
    };
    let root = vm.spec.disk_gib().saturating_mul(GIB);
    if vm.spec.disk_gib() > sb.shape.disk_gib {
        sb.engine
            .grow_disk(0, DiskFormat::Qcow2, root, false)
            .await
            .map_err(|e| engine_err("growing the root disk", e))?;
    }
    networking::sync(&state.ctx)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    state.supervisor.admit(vm, None).await?;
    // Last: the guest starts configuring itself the moment the seed has a size.
    sb.engine
        .grow_disk(1, DiskFormat::Raw, seed_len, true)
        .await
        .map_err(|e| engine_err("handing over the seed", e))
}

/// Writes the seed into the standby's (empty) seed file in place, since QEMU holds it open.
/// Returns its size.
fn write_seed_in_place(dir: &Path, seed: &hostel_images::SeedConfig) -> ApiResult<u64> {
    let staged = dir.join("seed.staged");
    seed.write_disk(&staged)
        .map_err(|e| ApiError::invalid("user_data", e.to_string()))?;
    let bytes = std::fs::read(&staged).map_err(|e| io_error(&staged, e))?;
    let _ = std::fs::remove_file(&staged);
    let target = dir.join(SEED_DISK);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&target)
        .map_err(|e| io_error(&target, e))?;
    f.write_all(&bytes).map_err(|e| io_error(&target, e))?;
    f.sync_all().map_err(|e| io_error(&target, e))?;
    Ok(bytes.len() as u64)
}

/// The standby's disks become the VM's.
fn move_disks(from: &Path, to: &Path) -> ApiResult<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    }
    std::fs::rename(from, to).map_err(|e| io_error(to, e))
}

fn io_error(p: &Path, e: std::io::Error) -> ApiError {
    ApiError::internal(format!("{}: {e}", p.display()))
}
