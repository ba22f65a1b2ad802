//! Standbys: VMs of an OS image booted before anyone orders them, so that a create is not a
//! boot. Under TCG a Debian guest needs most of a minute of its vCPU to get from the kernel
//! to the point where cloud-init looks for its seed; none of that depends on who the VM is
//! for. A standby boots that far with an empty (0-byte) seed disk and waits there (the
//! image's `hostel-wait-for-seed` unit, asked for by `hostel.seed=` on its command line).
//! A create of the same shape takes it: the daemon gives it the VM's id, writes the seed,
//! grows the seed disk under the running guest, and cloud-init configures the instance as
//! on a cold boot: host name, keys, network, new SSH host keys. Nothing of one customer's
//! VM was ever in another's: each standby is booted once, for one VM.
//!
//! A standby's id is chosen at boot; its NIC's MAC is the one the store derives first for
//! that id, so the switch port and the guest agree once the record exists. Until then the
//! NIC sits alone in a network of its own with no address. Its disks live in
//! `standby/<id>/` and move to the VM's disk directory when taken. Standbys are not kept
//! across daemon restarts: leftovers are stopped and deleted at start-up, and new ones are
//! booted.

use crate::adapters::networking::{self, port_id};
use crate::adapters::switch_link::{gateway_mac, SwitchPaths};
use crate::images::{GIB, OS_DEFAULT_MEMORY_MIB, ROOT_DISK, SEED_DISK};
use crate::Ctx;
use hostel_engine::{LaunchOptions, NicBackend, NicSpec, RunDir, Vm as Engine};
use hostel_state::{first_choice_mac, VmId};
use hostel_switch_proto::{NetworkConfig, PortConfig};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// What a standby's guest prints when it has booted as far as it can without its seed.
pub const READY_MARKER: &str = "hostel-standby: waiting for the seed";
/// The seed is the VM's second disk; its kernel name is what `hostel.seed=` names.
const SEED_DEVICE: &str = "vdb";
/// After a standby fails to boot, how long before the next try (an image being rebuilt,
/// a switch restarting): a retry, not a synchronisation.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// How often the pool looks for standbys that ended on their own, when nothing wakes it.
const HEALTH_CHECK: Duration = Duration::from_secs(10);
/// The most standbys of one image an operator may ask for.
pub const MAX_PER_IMAGE: usize = 8;

/// The operator's wish: keep `count` standbys of `image` (`--standby IMAGE[=COUNT]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyWanted {
    pub image: String,
    pub count: usize,
}

/// Why a `--standby` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StandbyWantedError {
    #[error("{text:?}: {count:?} is not a count of standbys")]
    Count { text: String, count: String },
    #[error("{0:?}: no image named (IMAGE or IMAGE=COUNT)")]
    NoImage(String),
    #[error("{text:?}: the count must be 1 to {MAX_PER_IMAGE}, not {count}")]
    OutOfRange { text: String, count: usize },
}

impl FromStr for StandbyWanted {
    type Err = StandbyWantedError;

    fn from_str(s: &str) -> Result<Self, StandbyWantedError> {
        let (image, count) = match s.split_once('=') {
            None => (s, 1),
            Some((image, n)) => {
                let n: usize = n.parse().map_err(|_| StandbyWantedError::Count {
                    text: s.to_string(),
                    count: n.to_string(),
                })?;
                (image, n)
            }
        };
        if image.is_empty() {
            return Err(StandbyWantedError::NoImage(s.to_string()));
        }
        if !(1..=MAX_PER_IMAGE).contains(&count) {
            return Err(StandbyWantedError::OutOfRange {
                text: s.to_string(),
                count,
            });
        }
        Ok(Self {
            image: image.to_string(),
            count,
        })
    }
}

/// What a standby was booted as; a create takes it only for exactly this (a disk may be
/// larger: it is grown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

/// A booted standby, owned by the pool until a create takes it.
pub struct Standby {
    pub id: VmId,
    pub shape: Shape,
    pub engine: Engine,
    ready: AtomicBool,
}

impl Standby {
    /// Whether the guest has reached the seed wait (seen once, remembered).
    fn is_ready(&self) -> bool {
        if self.ready.load(Ordering::Relaxed) {
            return true;
        }
        let seen = std::fs::read(self.engine.console_log())
            .map(|log| {
                log.windows(READY_MARKER.len())
                    .any(|w| w == READY_MARKER.as_bytes())
            })
            .unwrap_or(false);
        if seen {
            self.ready.store(true, Ordering::Relaxed);
        }
        seen
    }
}

/// How many standbys of an image are waiting, and how many are still booting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    pub image: String,
    pub wanted: usize,
    pub ready: usize,
    pub booting: usize,
}

#[derive(Default)]
struct Entries {
    idle: Vec<Standby>,
    /// Ids whose switch port must exist: the idle ones and the one being booted.
    ports: Vec<VmId>,
    /// The image of the standby being booted right now, if any.
    booting: Option<String>,
}

pub struct StandbyPool {
    wanted: Vec<StandbyWanted>,
    entries: Mutex<Entries>,
    wake: Notify,
}

impl StandbyPool {
    pub fn new(wanted: Vec<StandbyWanted>) -> Self {
        Self {
            wanted,
            entries: Mutex::default(),
            wake: Notify::new(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `id` is a standby of the pool (booting or waiting): its QEMU has no record.
    pub fn owns(&self, id: &VmId) -> bool {
        self.entries().ports.contains(id)
    }

    pub fn is_configured(&self) -> bool {
        !self.wanted.is_empty()
    }

    /// Takes a standby of exactly `shape` (of a larger disk, if none is exact), a ready one
    /// first. Its port leaves the switch's tables at the next sync: the VM's NIC replaces it.
    pub fn take(&self, shape: &Shape) -> Option<Standby> {
        let mut e = self.entries();
        let fits = |s: &Standby| {
            s.shape.image == shape.image
                && s.shape.vcpus == shape.vcpus
                && s.shape.memory_mib == shape.memory_mib
                && s.shape.disk_gib <= shape.disk_gib
                && s.engine.exited().is_none()
        };
        let i = e
            .idle
            .iter()
            .position(|s| fits(s) && s.is_ready())
            .or_else(|| e.idle.iter().position(fits))?;
        let sb = e.idle.remove(i);
        e.ports.retain(|id| *id != sb.id);
        drop(e);
        self.wake.notify_one();
        Some(sb)
    }

    /// Gives back a standby a create took but could not use before touching it (the
    /// record was refused: a quota, a name in use).
    pub fn put_back(&self, sb: Standby) {
        let mut e = self.entries();
        e.ports.push(sb.id);
        e.idle.push(sb);
    }

    pub fn status(&self) -> Vec<PoolStatus> {
        let e = self.entries();
        self.wanted
            .iter()
            .map(|w| {
                let mine = e.idle.iter().filter(|s| s.shape.image == w.image);
                let (all, ready) =
                    mine.fold((0, 0), |(n, r), s| (n + 1, r + usize::from(s.is_ready())));
                PoolStatus {
                    image: w.image.clone(),
                    wanted: w.count,
                    ready,
                    booting: all - ready + usize::from(e.booting.as_deref() == Some(&w.image)),
                }
            })
            .collect()
    }

    /// The standbys' switch networks and ports: each NIC alone, without addresses.
    pub fn switch_entries(&self, link: &SwitchPaths) -> (Vec<NetworkConfig>, Vec<PortConfig>) {
        let ids = self.entries().ports.clone();
        let mut nets = Vec::new();
        let mut ports = Vec::new();
        for id in ids {
            let net = format!("standby-{id}");
            let mac = first_choice_mac(&id, 0);
            nets.push(NetworkConfig {
                gateway_mac: gateway_mac(&net),
                id: net.clone(),
                subnet4: None,
                gateway4: None,
                subnet6: None,
                gateway6: None,
                uplink: None,
                dns: Vec::new(),
                mtu: 0,
            });
            let port = port_id(&id, 0);
            ports.push(PortConfig {
                socket: link.port_socket(&port),
                id: port,
                network: net,
                mac,
                ipv4: None,
                ipv6: Vec::new(),
                limits: Default::default(),
                kind: Default::default(),
            });
        }
        (nets, ports)
    }

    /// Keeps the pool full, one boot at a time (boots compete for the host's CPUs with the
    /// VMs that run). Runs for the daemon's life.
    pub async fn run(self: Arc<Self>, ctx: Arc<Ctx>) {
        if !self.is_configured() {
            return;
        }
        loop {
            self.reap(&ctx);
            let missing = {
                let e = self.entries();
                self.wanted
                    .iter()
                    .find(|w| e.idle.iter().filter(|s| s.shape.image == w.image).count() < w.count)
                    .cloned()
            };
            let Some(want) = missing else {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(HEALTH_CHECK) => {}
                }
                continue;
            };
            if let Err(e) = self.boot_one(&ctx, &want.image).await {
                tracing::warn!(image = %want.image, error = %e, "standby not booted; retrying later");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_AFTER) => {}
                    _ = self.wake.notified() => {}
                }
            }
        }
    }

    /// Forgets standbys whose QEMU has ended (killed, crashed) and deletes their files; the
    /// loop then boots replacements.
    fn reap(&self, ctx: &Ctx) {
        let dead: Vec<Standby> = {
            let mut e = self.entries();
            let (dead, alive) = std::mem::take(&mut e.idle)
                .into_iter()
                .partition(|s| s.engine.exited().is_some());
            e.idle = alive;
            for s in &dead {
                e.ports.retain(|id| *id != s.id);
            }
            dead
        };
        for sb in dead {
            tracing::warn!(vm = %sb.id, reason = ?sb.engine.exited(), "standby ended on its own");
            let _ = std::fs::remove_dir_all(ctx.layout.standby_disk_dir(&sb.id));
            let _ = std::fs::remove_dir_all(ctx.layout.vm_run_dir(&sb.id));
        }
    }

    /// Asks the pool to look again (an image was built or imported).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    async fn boot_one(&self, ctx: &Ctx, image_name: &str) -> Result<(), BootError> {
        let image = ctx
            .images
            .get(image_name)
            .and_then(|i| i.os().cloned())
            .ok_or_else(|| BootError::NoImage(image_name.to_string()))?;
        let shape = Shape {
            image: image_name.to_string(),
            vcpus: 1,
            memory_mib: OS_DEFAULT_MEMORY_MIB,
            disk_gib: image.manifest().disk.virtual_size.div_ceil(GIB),
        };
        let id = VmId::new_random();
        let dir = ctx.layout.standby_disk_dir(&id);
        let (d, img, size) = (dir.clone(), image.clone(), shape.disk_gib * GIB);
        tokio::task::spawn_blocking(move || make_disks(&d, &img, size)).await??;
        {
            let mut e = self.entries();
            e.ports.push(id);
            e.booting = Some(image_name.to_string());
        }
        let booted = self.launch(ctx, &id, &image, &shape, &dir).await;
        let mut e = self.entries();
        e.booting = None;
        match booted {
            Ok(engine) => {
                tracing::info!(vm = %id, image = image_name, "standby booting");
                e.idle.push(Standby {
                    id,
                    shape,
                    engine,
                    ready: AtomicBool::new(false),
                });
                Ok(())
            }
            Err(err) => {
                e.ports.retain(|p| *p != id);
                drop(e);
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_dir_all(ctx.layout.vm_run_dir(&id));
                Err(err)
            }
        }
    }

    async fn launch(
        &self,
        ctx: &Ctx,
        id: &VmId,
        image: &hostel_images::Image,
        shape: &Shape,
        dir: &Path,
    ) -> Result<Engine, BootError> {
        let mut input = image.boot_input(&dir.join(ROOT_DISK), Some(&dir.join(SEED_DISK)))?;
        let Some(cmdline) = input.cmdline.as_mut() else {
            return Err(BootError::NotDirectBoot);
        };
        cmdline.push_str(&format!(" hostel.seed={SEED_DEVICE}"));
        input.name = Some(format!("standby-{id}"));
        input.vcpus = Some(shape.vcpus);
        input.memory_mib = Some(shape.memory_mib);
        let mac = first_choice_mac(id, 0);
        input.nics = vec![NicSpec {
            backend: NicBackend::VhostUser(ctx.switch.port_socket(&port_id(id, 0))),
            mac: Some(mac),
        }];
        networking::sync(ctx).await?;
        let spec = input.validate()?;
        let opts = LaunchOptions::new(ctx.layout.vm_run_dir(id));
        let vm = Engine::launch(&spec, &opts).await?;
        vm.start().await?;
        Ok(vm)
    }

    /// Discards the standbys of `image` (it was rebuilt or is being deleted: their overlays
    /// name its file) and lets the pool boot new ones.
    pub async fn forget_image(&self, ctx: &Ctx, image: &str) {
        let gone: Vec<Standby> = {
            let mut e = self.entries();
            let (gone, keep) = std::mem::take(&mut e.idle)
                .into_iter()
                .partition(|s| s.shape.image == image);
            e.idle = keep;
            for s in &gone {
                e.ports.retain(|id| *id != s.id);
            }
            gone
        };
        for sb in gone {
            discard(ctx, sb).await;
        }
        self.poke();
    }

    /// Stops every idle standby (daemon shutdown): they are rebooted at the next start.
    pub async fn shutdown(&self, ctx: &Ctx) {
        let idle = std::mem::take(&mut self.entries().idle);
        for sb in idle {
            discard(ctx, sb).await;
        }
    }
}

/// Why a standby could not be booted (the pool retries later).
#[derive(Debug, thiserror::Error)]
enum BootError {
    #[error("no OS image {0:?} in the store")]
    NoImage(String),
    #[error("standbys need an image hostel boots directly (kernel and initrd)")]
    NotDirectBoot,
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] hostel_images::ImageError),
    #[error(transparent)]
    Spec(#[from] hostel_engine::spec::SpecError),
    #[error(transparent)]
    Switch(#[from] networking::SyncError),
    #[error(transparent)]
    Engine(#[from] hostel_engine::EngineError),
    #[error("disk task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The root overlay at its size and an empty seed, which the claim fills.
fn make_disks(dir: &Path, image: &hostel_images::Image, size: u64) -> Result<(), BootError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BootError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    image.create_vm_disk(&dir.join(ROOT_DISK), Some(size))?;
    let seed = dir.join(SEED_DISK);
    std::fs::File::create(&seed).map_err(io(&seed))?;
    Ok(())
}

/// Kills a standby's QEMU and deletes its disks and run directory.
pub async fn discard(ctx: &Ctx, sb: Standby) {
    sb.engine.kill();
    sb.engine.wait().await;
    let _ = std::fs::remove_dir_all(ctx.layout.standby_disk_dir(&sb.id));
    let _ = std::fs::remove_dir_all(ctx.layout.vm_run_dir(&sb.id));
}

/// At start-up: stops the standbys an earlier daemon left and deletes them. One whose id a
/// VM record has (the daemon died while a create took it) is that VM's: its disks move to
/// the VM's directory and its QEMU is left for the supervisor to adopt.
pub async fn clean_stale(ctx: &Ctx) {
    let root = ctx.layout.standby_root();
    let Ok(dir) = std::fs::read_dir(&root) else {
        return;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<VmId>().ok())
        else {
            let _ = std::fs::remove_dir_all(&path);
            continue;
        };
        if let Ok(vm) = ctx.db(move |store| store.get_vm(&id)).await {
            let dest = ctx.layout.vm_disk_dir(&vm.tenant, &id);
            if !dest.exists() {
                if let Some(parent) = dest.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let _ = std::fs::rename(&path, &dest);
            }
            continue;
        }
        let run = RunDir::new(ctx.layout.vm_run_dir(&id));
        if run.read_pid().is_some() {
            let log = run.default_console_log();
            if let Ok(vm) = Engine::adopt(run, log).await {
                vm.kill();
                vm.wait().await;
            }
        }
        tracing::info!(vm = %id, "removing a standby left by an earlier daemon");
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_dir_all(ctx.layout.vm_run_dir(&id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_parses_image_and_count_and_names_what_is_wrong() {
        assert_eq!(
            "debian-12".parse::<StandbyWanted>(),
            Ok(StandbyWanted {
                image: "debian-12".into(),
                count: 1
            })
        );
        assert_eq!(
            "debian-12-web=3".parse::<StandbyWanted>().map(|w| w.count),
            Ok(3)
        );
        let e = "debian-12=x".parse::<StandbyWanted>().unwrap_err();
        assert!(e.to_string().contains("\"x\" is not a count"), "{e}");
        let e = "debian-12=0".parse::<StandbyWanted>().unwrap_err();
        assert!(e.to_string().contains("1 to 8"), "{e}");
        assert_eq!(
            "=2".parse::<StandbyWanted>(),
            Err(StandbyWantedError::NoImage("=2".into()))
        );
    }
}
