//! A create served by a standby (`crate::standby`): the VM's record takes the standby's id,
//! the standby's disks become the VM's, its seed is written and grown under the running
//! guest, and the engine hands the VM its QEMU. cloud-init in the guest then configures the
//! instance exactly as on a cold boot.

use super::vms::Vms;
use super::{blocking, DaemonError};
use crate::adapters::engine::{EngineAdapter, StandbyDisk, StandbyHandle};
use crate::adapters::SwitchAdapter;
use crate::images::{GIB, SEED_DISK};
use crate::standby::Shape;
use hostel_api::CreateVm;
use hostel_images::Template;
use hostel_state::{first_choice_mac, Vm, VmSpecRecord};
use std::io::Write;
use std::path::Path;

/// The shape a create asks for, if a standby could serve it at all: started at once, one
/// network, no extra kernel arguments (a standby's kernel has booted already).
pub fn wanted_shape(req: &CreateVm, spec: &VmSpecRecord) -> Option<Shape> {
    let eligible = req.start.unwrap_or(true) && req.networks.len() == 1 && spec.cmdline().is_none();
    eligible.then(|| Shape {
        image: spec.image().to_string(),
        vcpus: spec.vcpus(),
        memory_mib: spec.memory_mib(),
        disk_gib: spec.disk_gib(),
    })
}

/// What became of a create offered a standby.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The VM runs on the standby.
    Taken,
    /// The standby could not serve this VM (its NIC got another MAC) and is gone; the
    /// create goes on the usual way.
    Declined,
}

/// Turns `sb` into `vm` (created with `sb`'s id). On an error the standby is discarded and
/// the caller removes the record, as for any failed create.
pub(super) async fn claim<E: EngineAdapter, S: SwitchAdapter + 'static>(
    vms: &Vms<'_, E, S>,
    vm: &Vm,
    req: &CreateVm,
    template: Option<&Template>,
    sb: E::Standby,
) -> Result<Claim, DaemonError> {
    let (mac_matches, seed) = {
        let (vm, req, template) = (vm.clone(), req.clone(), template.cloned());
        blocking(vms.store, move |store| {
            let nics = store.list_nics_of_vm(&vm.id)?;
            let matches = nics.len() == 1 && nics[0].mac == first_choice_mac(&vm.id, 0);
            let seed = crate::seed::config(store, &vm, &req, template.as_ref())?;
            Ok::<_, DaemonError>((matches, seed))
        })
        .await?
    };
    if !mac_matches {
        tracing::info!(vm = %vm.id, "standby's MAC is taken in this network; booting cold");
        vms.engine.discard_standby(sb).await;
        return Ok(Claim::Declined);
    }
    let from = vms.layout.standby_disk_dir(&vm.id);
    let to = vms.layout.vm_disk_dir(&vm.tenant, &vm.id);
    let written = {
        let from = from.clone();
        tokio::task::spawn_blocking(move || write_seed_in_place(&from, &seed)).await
    };
    let seed_len = match written.map_err(DaemonError::from).and_then(|r| r) {
        Ok(n) => n,
        Err(e) => {
            vms.engine.discard_standby(sb).await;
            return Err(e);
        }
    };
    // The disks move once QEMU has reopened the seed (it does so by path); its open files
    // follow the rename.
    let woken = match wake(vms, vm, &sb, seed_len).await {
        Ok(()) => move_disks(&from, &to),
        Err(e) => Err(e),
    };
    if let Err(e) = woken {
        vms.engine.discard_standby(sb).await;
        return Err(e);
    }
    vms.engine.attach(vm, sb).await;
    tracing::info!(vm = %vm.id, name = %vm.name, "created from a standby");
    Ok(Claim::Taken)
}

/// Grows the root disk if the VM ordered more, connects the NIC to the VM's network,
/// admits the VM, and hands the guest its seed.
async fn wake<E: EngineAdapter, S: SwitchAdapter + 'static>(
    vms: &Vms<'_, E, S>,
    vm: &Vm,
    sb: &E::Standby,
    seed_len: u64,
) -> Result<(), DaemonError> {
    if vm.spec.disk_gib() > sb.shape().disk_gib {
        let root = vm.spec.disk_gib().saturating_mul(GIB);
        vms.engine
            .grow_standby_disk(sb, StandbyDisk::Root, root)
            .await?;
    }
    vms.switch.sync().await?;
    vms.engine.admit(vm, None).await?;
    // Last: the guest starts configuring itself the moment the seed has a size.
    Ok(vms
        .engine
        .grow_standby_disk(sb, StandbyDisk::Seed, seed_len)
        .await?)
}

/// Writes the seed into the standby's (empty) seed file in place, since QEMU holds it open.
/// Returns its size.
fn write_seed_in_place(dir: &Path, seed: &hostel_images::SeedConfig) -> Result<u64, DaemonError> {
    let staged = dir.join("seed.staged");
    seed.write_disk(&staged)
        .map_err(|e| DaemonError::invalid("user_data", e))?;
    let bytes = std::fs::read(&staged).map_err(|e| DaemonError::io(&staged, e))?;
    let _ = std::fs::remove_file(&staged);
    let target = dir.join(SEED_DISK);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&target)
        .map_err(|e| DaemonError::io(&target, e))?;
    f.write_all(&bytes)
        .map_err(|e| DaemonError::io(&target, e))?;
    f.sync_all().map_err(|e| DaemonError::io(&target, e))?;
    Ok(bytes.len() as u64)
}

/// The standby's disks become the VM's.
fn move_disks(from: &Path, to: &Path) -> Result<(), DaemonError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DaemonError::io(parent, e))?;
    }
    std::fs::rename(from, to).map_err(|e| DaemonError::io(to, e))
}
