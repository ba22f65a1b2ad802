//! The VM engine as the services see it ([`EngineAdapter`]): making a VM's disks, the VM
//! lifecycle (admission, start, stop, restart, delete, and killing a failed create's QEMU)
//! and the standbys a create can take. [`QemuEngine`] is the real one: the supervisor and
//! its actors (`crate::supervisor`, `crate::launch`), which launch and control QEMU, and the
//! standby pool (`crate::standby`). The services' unit tests use a fake
//! (`service::fakes::FakeEngine`) that can be told to fail a launch.

use crate::images::{ROOT_DISK, SEED_DISK};
use crate::standby::{Shape, Standby};
use crate::supervisor::{Supervisor, VmOpError};
use crate::Ctx;
use hostel_engine::DiskFormat;
use hostel_images::{ImageError, SeedConfig};
use hostel_state::{NewAuditEntry, Vm, VmId};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The disks a new VM gets before its first start.
pub enum DiskPlan {
    /// A direct-boot image's VM: one raw data disk, sparse, of `gib`.
    Data { path: PathBuf, gib: u64 },
    /// An OS image's VM, in `dir`: a copy-on-write clone of `image` of `bytes`, and the
    /// cloud-init seed.
    Os {
        dir: PathBuf,
        image: Box<hostel_images::Image>,
        bytes: u64,
        seed: Box<SeedConfig>,
    },
}

/// Which of a standby's disks to grow under its running guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandbyDisk {
    /// Its root disk, when the VM ordered a larger one than the standby was booted with.
    Root,
    /// Its seed: the guest starts configuring itself the moment the seed has a size.
    Seed,
}

/// Why the engine could not make a VM's disks or wake a standby.
#[derive(Debug, thiserror::Error)]
pub enum EngineOpError {
    #[error("creating disk {}: {source}", path.display())]
    Disk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The image library refused (a clone, a seed the customer's data makes invalid).
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("standby {vm}: {what}: {source}")]
    Standby {
        vm: VmId,
        what: &'static str,
        #[source]
        source: hostel_engine::EngineError,
    },
    #[error("disk task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A booted standby VM, as the create that takes it sees it.
pub trait StandbyHandle: Send + 'static {
    /// The id it was booted with; the VM that takes it gets this id.
    fn id(&self) -> VmId;
    fn shape(&self) -> &Shape;
}

impl StandbyHandle for Standby {
    fn id(&self) -> VmId {
        self.id
    }
    fn shape(&self) -> &Shape {
        &self.shape
    }
}

/// What the services need of the VM engine.
pub trait EngineAdapter: Send + Sync + 'static {
    type Standby: StandbyHandle;

    /// Makes a new VM's disks (before its record is acknowledged; a failed create
    /// removes its disk directory).
    fn make_disks(&self, plan: DiskPlan) -> impl Future<Output = Result<(), EngineOpError>> + Send;

    /// Checks the host can hold the VM and marks it wanted-running (committing `audit`
    /// with that change).
    fn admit(
        &self,
        vm: &Vm,
        audit: Option<NewAuditEntry>,
    ) -> impl Future<Output = Result<(), VmOpError>> + Send;

    /// Admits and starts the VM, waiting (bounded) until its guest runs.
    fn start(
        &self,
        vm: &Vm,
        audit: Option<NewAuditEntry>,
    ) -> impl Future<Output = Result<(), VmOpError>> + Send;

    /// A VM created not to be started: recorded stopped.
    fn created(&self, vm: &Vm) -> impl Future<Output = Result<(), VmOpError>> + Send;

    /// Stops the VM (see `Supervisor::stop`).
    fn stop(
        &self,
        vm: &Vm,
        force: bool,
        grace: Duration,
        audit: NewAuditEntry,
    ) -> impl Future<Output = Result<(), VmOpError>> + Send;

    /// Restarts the VM (see `Supervisor::restart`).
    fn restart(
        &self,
        vm: &Vm,
        grace: Duration,
        audit: NewAuditEntry,
    ) -> impl Future<Output = Result<(), VmOpError>> + Send;

    /// Deletes the VM: on record with `audit` first, then its QEMU, disks, run directory,
    /// record and switch ports go.
    fn delete(
        &self,
        vm: &Vm,
        audit: NewAuditEntry,
    ) -> impl Future<Output = Result<(), VmOpError>> + Send;

    /// Kills a failed create's QEMU for good, leaving its record to the caller's undo.
    fn remove(&self, vm: &Vm) -> impl Future<Output = ()> + Send;

    /// A standby of exactly `shape` (or of a smaller disk), if the host keeps one.
    fn take_standby(&self, shape: &Shape) -> Option<Self::Standby>;

    /// Gives back a standby taken by a create that was refused before it touched it.
    fn put_back_standby(&self, sb: Self::Standby);

    /// Kills a standby that could not serve its create and deletes its disks.
    fn discard_standby(&self, sb: Self::Standby) -> impl Future<Output = ()> + Send;

    /// Grows one of a standby's disks to `bytes` under its running guest.
    fn grow_standby_disk(
        &self,
        sb: &Self::Standby,
        disk: StandbyDisk,
        bytes: u64,
    ) -> impl Future<Output = Result<(), EngineOpError>> + Send;

    /// Hands an admitted VM the standby's running QEMU: from here on it is the VM's.
    fn attach(&self, vm: &Vm, sb: Self::Standby) -> impl Future<Output = ()> + Send;
}

/// The real engine: QEMU processes, driven by the supervisor's actors.
pub struct QemuEngine {
    ctx: Arc<Ctx>,
    supervisor: Arc<Supervisor>,
}

impl QemuEngine {
    pub fn new(ctx: Arc<Ctx>, supervisor: Arc<Supervisor>) -> Self {
        Self { ctx, supervisor }
    }
}

impl EngineAdapter for QemuEngine {
    type Standby = Standby;

    async fn make_disks(&self, plan: DiskPlan) -> Result<(), EngineOpError> {
        tokio::task::spawn_blocking(move || match plan {
            DiskPlan::Data { path, gib } => crate::launch::grow_disk(&path, gib)
                .map_err(|source| EngineOpError::Disk { path, source }),
            DiskPlan::Os {
                dir,
                image,
                bytes,
                seed,
            } => {
                std::fs::create_dir_all(&dir).map_err(|source| EngineOpError::Disk {
                    path: dir.clone(),
                    source,
                })?;
                image.create_vm_disk(&dir.join(ROOT_DISK), Some(bytes))?;
                seed.write_disk(&dir.join(SEED_DISK))?;
                Ok(())
            }
        })
        .await?
    }

    async fn admit(&self, vm: &Vm, audit: Option<NewAuditEntry>) -> Result<(), VmOpError> {
        self.supervisor.admit(vm, audit).await
    }

    async fn start(&self, vm: &Vm, audit: Option<NewAuditEntry>) -> Result<(), VmOpError> {
        self.supervisor.start(vm, audit).await
    }

    async fn created(&self, vm: &Vm) -> Result<(), VmOpError> {
        self.supervisor.created(vm).await
    }

    async fn stop(
        &self,
        vm: &Vm,
        force: bool,
        grace: Duration,
        audit: NewAuditEntry,
    ) -> Result<(), VmOpError> {
        self.supervisor.stop(vm, force, grace, Some(audit)).await
    }

    async fn restart(
        &self,
        vm: &Vm,
        grace: Duration,
        audit: NewAuditEntry,
    ) -> Result<(), VmOpError> {
        self.supervisor.restart(vm, grace, audit).await
    }

    async fn delete(&self, vm: &Vm, audit: NewAuditEntry) -> Result<(), VmOpError> {
        self.supervisor.delete(vm, audit).await
    }

    async fn remove(&self, vm: &Vm) {
        if let Err(e) = self.supervisor.remove(vm).await {
            tracing::warn!(vm = %vm.id, error = %e, "stopping a failed create's VM");
        }
    }

    fn take_standby(&self, shape: &Shape) -> Option<Standby> {
        self.ctx.standby.take(shape)
    }

    fn put_back_standby(&self, sb: Standby) {
        self.ctx.standby.put_back(sb);
    }

    async fn discard_standby(&self, sb: Standby) {
        crate::standby::discard(&self.ctx, sb).await;
    }

    async fn grow_standby_disk(
        &self,
        sb: &Standby,
        disk: StandbyDisk,
        bytes: u64,
    ) -> Result<(), EngineOpError> {
        let (index, format, read_only, what) = match disk {
            StandbyDisk::Root => (0, DiskFormat::Qcow2, false, "growing the root disk"),
            StandbyDisk::Seed => (1, DiskFormat::Raw, true, "handing over the seed"),
        };
        sb.engine
            .grow_disk(index, format, bytes, read_only)
            .await
            .map_err(|source| EngineOpError::Standby {
                vm: sb.id,
                what,
                source,
            })
    }

    async fn attach(&self, vm: &Vm, sb: Standby) {
        self.supervisor.attach(vm, sb.engine).await;
    }
}
