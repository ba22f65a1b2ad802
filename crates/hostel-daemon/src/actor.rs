//! One task per VM: the only code that touches that VM's QEMU. Commands from the API and the
//! VM's own exit arrive on one loop, so a stop and a crash can never race each other.

use crate::images::{ImageBoot, ROOT_DISK, SEED_DISK};
use crate::networking;
use crate::Ctx;
use hostel_engine::{
    DiskFormat, DiskSpec, ExitReason, LaunchOptions, NicBackend, NicSpec, RunDir, Vm as Engine,
    VmSpecInput,
};
use hostel_state::{DesiredState, ObservedState, ObservedStatus, RestartPolicy, Timestamp, VmId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

pub type Reply = oneshot::Sender<Result<(), String>>;

pub enum Command {
    Start(Reply),
    Stop {
        force: bool,
        grace: Duration,
        reply: Reply,
    },
    /// Stops QEMU and ends the actor (the VM is being deleted).
    Remove(Reply),
}

/// A crash sooner than this after start counts towards the restart backoff.
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct Actor {
    id: VmId,
    ctx: Arc<Ctx>,
    vm: Option<Engine>,
    started: Instant,
    crash_streak: u32,
}

impl Actor {
    pub fn new(id: VmId, ctx: Arc<Ctx>, adopted: Option<Engine>) -> Self {
        Self {
            id,
            ctx,
            vm: adopted,
            started: Instant::now(),
            crash_streak: 0,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let exit = self.vm.as_ref().map(Engine::exit_watch);
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Start(reply)) => {
                        let _ = reply.send(self.start().await);
                    }
                    Some(Command::Stop { force, grace, reply }) => {
                        self.stop(force, grace).await;
                        let _ = reply.send(Ok(()));
                    }
                    Some(Command::Remove(reply)) => {
                        self.stop(true, Duration::ZERO).await;
                        let _ = reply.send(Ok(()));
                        break;
                    }
                    None => break,
                },
                reason = wait_exit(exit) => self.on_exit(reason).await,
            }
        }
    }

    /// Records a state; the last exit reason stays until a newer one replaces it, so a
    /// restarted VM still says why it was restarted.
    async fn observe(&self, state: ObservedState, last_exit: Option<String>) {
        let (id, pid) = (self.id, self.vm.as_ref().map(|v| v.pid() as u32));
        let written = self
            .ctx
            .db(move |store| {
                let previous = store.get_vm(&id).ok().map(|v| v.observed);
                let status = ObservedStatus {
                    state,
                    pid,
                    since: Timestamp::now(),
                    last_exit: last_exit
                        .or_else(|| previous.as_ref().and_then(|p| p.last_exit.clone())),
                    restart_count: previous.map_or(0, |p| p.restart_count),
                };
                store.set_vm_observed(&id, &status)
            })
            .await;
        if let Err(e) = written {
            tracing::error!(vm = %self.id, error = %e, "recording VM state");
        }
    }

    /// Best effort: the actor's own record of what runs is what matters next.
    async fn set_desired(&self, desired: DesiredState) {
        let id = self.id;
        let _ = self
            .ctx
            .db(move |store| store.set_vm_desired(&id, desired, None))
            .await;
    }

    async fn start(&mut self) -> Result<(), String> {
        if self.vm.is_some() {
            return Ok(());
        }
        self.observe(ObservedState::Starting, None).await;
        match self.launch().await {
            Ok(vm) => {
                self.vm = Some(vm);
                self.started = Instant::now();
                self.observe(ObservedState::Running, None).await;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(vm = %self.id, error = %e, "start failed");
                self.set_desired(DesiredState::Stopped).await;
                self.observe(ObservedState::Failed, Some(e.clone())).await;
                Err(e)
            }
        }
    }

    async fn launch(&self) -> Result<Engine, String> {
        let id = self.id;
        let rec = self
            .ctx
            .db(move |store| store.get_vm(&id))
            .await
            .map_err(|e| e.to_string())?;
        let image =
            self.ctx.images.get(rec.spec.image()).ok_or_else(|| {
                format!("image {:?} is not available on this host", rec.spec.image())
            })?;
        let mut input = match &image.boot {
            ImageBoot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                let disk = self.ctx.layout.vm_root_disk(&rec.tenant, &rec.id);
                grow_disk(&disk, rec.spec.disk_gib())
                    .map_err(|e| format!("disk {}: {e}", disk.display()))?;
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
                let dir = self.ctx.layout.vm_disk_dir(&rec.tenant, &rec.id);
                os.boot_input(&dir.join(ROOT_DISK), Some(&dir.join(SEED_DISK)))
                    .map_err(|e| e.to_string())?
            }
        };
        if let (Some(line), Some(extra)) = (input.cmdline.as_mut(), rec.spec.cmdline()) {
            line.push(' ');
            line.push_str(extra);
        }
        input.name = Some(rec.name.to_string());
        input.vcpus = Some(rec.spec.vcpus());
        input.memory_mib = Some(rec.spec.memory_mib());
        input.nics = self.nics().await?;
        let spec = input.validate().map_err(|e| e.to_string())?;
        let opts = LaunchOptions::new(self.ctx.layout.vm_run_dir(&self.id));
        let vm = Engine::launch(&spec, &opts)
            .await
            .map_err(|e| e.to_string())?;
        vm.start().await.map_err(|e| e.to_string())?;
        Ok(vm)
    }

    /// The VM's NICs as vhost-user ports of the switch, made sure to exist first.
    async fn nics(&self) -> Result<Vec<NicSpec>, String> {
        let id = self.id;
        let nics = self
            .ctx
            .db(move |store| store.list_nics_of_vm(&id))
            .await
            .map_err(|e| e.to_string())?;
        if nics.is_empty() {
            return Ok(Vec::new());
        }
        networking::sync(&self.ctx).await?;
        nics.iter()
            .map(|n| {
                let socket = self
                    .ctx
                    .switch
                    .port_socket(&networking::port_id(&n.vm, n.idx));
                let mac = n.mac.parse().map_err(|e| format!("NIC {}: {e}", n.idx))?;
                Ok(NicSpec {
                    backend: NicBackend::VhostUser(socket),
                    mac: Some(mac),
                })
            })
            .collect()
    }

    async fn stop(&mut self, force: bool, grace: Duration) {
        let Some(vm) = self.vm.as_ref() else {
            return;
        };
        self.observe(ObservedState::Stopping, None).await;
        let reason = if force {
            vm.kill();
            vm.wait().await
        } else {
            vm.stop(grace).await
        };
        self.vm = None;
        self.observe(ObservedState::Stopped, Some(reason.to_string()))
            .await;
    }

    /// QEMU ended on its own: record why, then apply the restart policy.
    async fn on_exit(&mut self, reason: ExitReason) {
        self.vm = None;
        let clean = reason.is_clean();
        tracing::info!(vm = %self.id, %reason, "VM exited");
        let id = self.id;
        let Ok(rec) = self.ctx.db(move |store| store.get_vm(&id)).await else {
            return;
        };
        let restart = rec.desired == DesiredState::Running
            && match rec.spec.restart_policy() {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !clean,
                RestartPolicy::Never => false,
            };
        let state = if clean {
            ObservedState::Stopped
        } else {
            ObservedState::Crashed
        };
        if clean && !restart && rec.desired == DesiredState::Running {
            // The guest powered itself off: that is its owner's request to stop. A crash is
            // not, so it leaves the tenant's wish as it was.
            self.set_desired(DesiredState::Stopped).await;
        }
        let mut status = ObservedStatus {
            state,
            pid: None,
            since: Timestamp::now(),
            last_exit: Some(reason.to_string()),
            restart_count: rec.observed.restart_count,
        };
        if restart {
            status.restart_count += 1;
        }
        let _ = self
            .ctx
            .db(move |store| store.set_vm_observed(&id, &status))
            .await;
        if !restart {
            return;
        }
        if self.started.elapsed() < CRASH_LOOP_WINDOW {
            self.crash_streak += 1;
        } else {
            self.crash_streak = 0;
        }
        if self.crash_streak > 1 {
            let delay = Duration::from_secs(1 << self.crash_streak.min(5)).min(MAX_BACKOFF);
            tracing::warn!(vm = %self.id, ?delay, "VM keeps exiting; backing off before restart");
            tokio::time::sleep(delay).await;
        }
        let _ = self.start().await;
    }
}

async fn wait_exit(exit: Option<watch::Receiver<Option<ExitReason>>>) -> ExitReason {
    let Some(mut rx) = exit else {
        return std::future::pending().await;
    };
    let reason = match rx.wait_for(Option::is_some).await {
        Ok(r) => r.clone(),
        Err(_) => None,
    };
    reason.unwrap_or(ExitReason::Vanished)
}

/// Makes the VM's disk at least `gib` large (sparse); never shrinks, a disk keeps its data.
pub fn grow_disk(path: &std::path::Path, gib: u64) -> std::io::Result<()> {
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

/// Re-attaches to a QEMU left running by an earlier daemon, if there is one.
pub async fn try_adopt(ctx: &Ctx, id: &VmId) -> Option<Engine> {
    let dir = RunDir::new(ctx.layout.vm_run_dir(id));
    dir.read_pid()?;
    let log = dir.default_console_log();
    match Engine::adopt(dir, log).await {
        Ok(vm) => Some(vm),
        Err(e) => {
            tracing::info!(vm = %id, error = %e, "not adopting");
            None
        }
    }
}
