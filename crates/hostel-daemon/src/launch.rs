//! Launching a VM's QEMU from its record: image, disks, NICs (switch ports first), QEMU
//! paused, then `cont`. A launch that fails after QEMU exists kills it: no paused QEMU is
//! left behind by a failed start.

use crate::adapters::networking;
use crate::images::{ImageBoot, ROOT_DISK, SEED_DISK};
use crate::Ctx;
use hostel_engine::{
    DiskFormat, DiskSpec, EngineError, LaunchOptions, NicBackend, NicSpec, Vm as Engine,
    VmSpecInput,
};
use hostel_state::{StoreError, VmId};
use std::path::{Path, PathBuf};

/// Why a VM could not be started; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("image {0:?} is not available on this host")]
    ImageMissing(String),
    #[error("disk {path}: {source}")]
    Disk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image: {0}")]
    Image(#[from] hostel_images::ImageError),
    #[error("switch: {0}")]
    Switch(#[from] networking::SyncError),
    #[error("storage: {0}")]
    Storage(#[from] crate::adapters::storage_link::StorageLinkError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Starts the VM's QEMU and lets the guest run.
pub async fn launch(ctx: &Ctx, id: VmId) -> Result<Engine, LaunchError> {
    let rec = ctx.db(move |store| store.get_vm(&id)).await?;
    let image = ctx
        .images
        .get(rec.spec.image())
        .ok_or_else(|| LaunchError::ImageMissing(rec.spec.image().to_string()))?;
    let mut input = match &image.boot {
        ImageBoot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            let disk = ctx.layout.vm_root_disk(&rec.tenant, &rec.id);
            grow_disk(&disk, rec.spec.disk_gib()).map_err(|source| LaunchError::Disk {
                path: disk.clone(),
                source,
            })?;
            VmSpecInput {
                kernel: Some(kernel.clone()),
                initrd: Some(initrd.clone()),
                cmdline: Some(format!("{cmdline} hostel.hostname={}", rec.name)),
                disks: vec![DiskSpec {
                    path: disk,
                    format: Some(DiskFormat::Raw),
                    readonly: false,
                }],
                ..Default::default()
            }
        }
        // An OS image: its CoW clone and the cloud-init seed made at create.
        ImageBoot::Os(os) => {
            let dir = ctx.layout.vm_disk_dir(&rec.tenant, &rec.id);
            os.boot_input(&dir.join(ROOT_DISK), Some(&dir.join(SEED_DISK)))?
        }
    };
    if let (Some(line), Some(extra)) = (input.cmdline.as_mut(), rec.spec.cmdline()) {
        line.push(' ');
        line.push_str(extra);
    }
    input.name = Some(rec.name.to_string());
    input.vcpus = Some(rec.spec.vcpus());
    input.memory_mib = Some(rec.spec.memory_mib());
    input.nics = nics(ctx, id).await?;
    input.vhost_disks = volumes(ctx, id).await?;
    let spec = input.validate().map_err(EngineError::from)?;
    let opts = LaunchOptions::new(ctx.layout.vm_run_dir(&id));
    crate::failpoint::hit("launch.before-spawn").await;
    let vm = Engine::launch(&spec, &opts).await?;
    crate::failpoint::hit("launch.before-cont").await;
    if let Err(e) = vm.start().await {
        vm.kill();
        vm.wait().await;
        return Err(e.into());
    }
    Ok(vm)
}

/// The VM's NICs as vhost-user ports of the switch, made sure to exist first.
async fn nics(ctx: &Ctx, id: VmId) -> Result<Vec<NicSpec>, LaunchError> {
    let nics = ctx.db(move |store| store.list_nics_of_vm(&id)).await?;
    if nics.is_empty() {
        return Ok(Vec::new());
    }
    networking::sync(ctx).await?;
    Ok(nics
        .iter()
        .map(|n| NicSpec {
            backend: NicBackend::VhostUser(
                ctx.switch.port_socket(&networking::port_id(&n.vm, n.idx)),
            ),
            mac: Some(n.mac),
        })
        .collect())
}

/// The VM's attached pool volumes as the storage process's sockets, each served first.
async fn volumes(ctx: &Ctx, id: VmId) -> Result<Vec<PathBuf>, LaunchError> {
    let vols = ctx.db(move |store| store.list_volumes_of_vm(&id)).await?;
    let mut socks = Vec::new();
    for v in vols
        .iter()
        .filter(|v| v.state == hostel_state::VolumeState::Ready)
    {
        if !ctx.storage.alive().await {
            let devices = crate::adapters::storage::pool_devices(ctx).await?;
            ctx.storage.ensure_running(&devices).await?;
        }
        crate::adapters::storage::serve(ctx, v).await?;
        socks.push(ctx.storage.disk_socket(&v.pool_name()));
    }
    Ok(socks)
}

/// Makes the VM's disk at least `gib` large (sparse); never shrinks, a disk keeps its data.
pub fn grow_disk(path: &Path, gib: u64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let want = gib.saturating_mul(1 << 30);
    if f.metadata()?.len() < want {
        f.set_len(want)?;
    }
    Ok(())
}
