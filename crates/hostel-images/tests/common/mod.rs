//! What the image tests share: the cached image store, building with progress checks,
//! booting an image with a seed inside a test network namespace, and ([`files`]) disk files
//! for import tests.
#![allow(dead_code)]

pub mod files;

use hostel_engine::{LaunchOptions, NicSpec, Vm};
use hostel_images::{BuildOutcome, Catalog, ImageStore, Progress, SeedConfig};
use hostel_testkit::{is_root, which, NetNs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Boot to the login prompt with cloud-init under TCG on a loaded 2-core machine.
/// Measured 163 s to the login prompt with the host's load average at 7 on 2 cores.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(480);

/// The store reused across test runs (a cold debian-12 build takes minutes):
/// `$HOSTEL_IMAGE_CACHE`, else `target/images-cache`.
pub fn cached_store() -> Option<ImageStore> {
    let why = if !is_root() {
        Some("building images needs root (debootstrap, chroot)")
    } else if !["debootstrap", "qemu-system-x86_64", "qemu-img", "mkfs.vfat"]
        .iter()
        .all(|t| which(t))
    {
        Some("debootstrap, qemu-system-x86_64, qemu-img or dosfstools missing")
    } else {
        None
    };
    if let Some(why) = why {
        if std::env::var_os("HOSTEL_REQUIRE_GUEST").is_some() {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let dir = std::env::var_os("HOSTEL_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| hostel_testkit::workspace_root().join("target/images-cache"));
    Some(ImageStore::open(dir).expect("open image store"))
}

/// Builds `name` through the catalog, checking the progress reports make sense.
pub fn build(store: &ImageStore, name: &str) -> BuildOutcome {
    let seen: Mutex<Vec<Progress>> = Mutex::new(Vec::new());
    let sink = |p: &Progress| {
        eprintln!(
            "build {}: [{:3}%] {:?} {}",
            p.image, p.percent, p.phase, p.message
        );
        seen.lock().unwrap().push(p.clone());
    };
    let out = Catalog::builtin()
        // The cache is the tests' own: a changed recipe replaces the stored image.
        .build(
            store,
            name,
            &hostel_images::BuildOptions {
                replace: true,
                ..Default::default()
            },
            &sink,
        )
        .unwrap_or_else(|e| panic!("build {name}: {e}"));
    let seen = seen.into_inner().unwrap();
    let mine: Vec<u8> = seen
        .iter()
        .filter(|p| p.image == name)
        .map(|p| p.percent)
        .collect();
    assert!(
        mine.windows(2).all(|w| w[0] <= w[1]),
        "progress went back: {mine:?}"
    );
    assert_eq!(mine.last(), Some(&100));
    out
}

/// A throwaway SSH key pair: (private key path, public key line).
pub fn ssh_keypair(dir: &Path) -> (PathBuf, String) {
    hostel_testkit::ssh_keypair(dir, "hostel-test")
}

/// A guest booted from an image with a seed.
pub struct Guest {
    pub vm: Vm,
    pub started: Instant,
}

/// Clones `image` into a disk of `disk_bytes`, writes the seed and boots the guest with a NIC
/// on `tap` (if any). Call from inside the namespace thread that owns the TAP.
pub async fn boot(
    store: &ImageStore,
    image: &str,
    seed: &SeedConfig,
    dir: &Path,
    nic: Option<NicSpec>,
    disk_bytes: u64,
) -> Guest {
    let img = store.get(image).unwrap();
    let disk = img
        .create_vm_disk(&dir.join("root.qcow2"), Some(disk_bytes))
        .unwrap();
    let seed_path = dir.join("seed.img");
    seed.write_disk(&seed_path).unwrap();
    let mut input = img.boot_input(&disk, Some(&seed_path)).unwrap();
    input.name = Some(seed.hostname.clone());
    input.vcpus = Some(2);
    input.memory_mib = Some(1024);
    input.nics = nic.into_iter().collect();
    let spec = input.validate().unwrap();
    let vm = Vm::launch(&spec, &LaunchOptions::new(dir.join("run")))
        .await
        .unwrap();
    let started = Instant::now();
    vm.start().await.unwrap();
    Guest { vm, started }
}

impl Guest {
    /// The console so far (QEMU's log of the serial port).
    pub fn transcript(&self) -> String {
        let bytes = std::fs::read(self.vm.console_log()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).replace('\r', "")
    }

    /// Keeps the console log for timing analysis in the target directory.
    pub fn save_transcript(&self, name: &str) {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-console.log"));
        let _ = std::fs::write(&path, self.transcript());
        eprintln!("console log kept in {}", path.display());
    }

    /// Waits until the console shows `needle` and returns the line it is on. Polls the log
    /// rather than reading lines: a getty's `login:` prompt has no newline after it.
    pub fn expect(&mut self, needle: &str) -> String {
        loop {
            let text = self.transcript();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                eprintln!("console: {needle:?} after {:.1?}", self.started.elapsed());
                return line.to_string();
            }
            if self.started.elapsed() > GUEST_TIMEOUT {
                panic!(
                    "no {needle:?} on the console after {:.0?}:\n{text}",
                    self.started.elapsed()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// A namespace with a TAP `tap` at 10.0.0.1/24 for the guest's NIC.
pub fn network(tag: &str) -> (NetNs, String) {
    let ns = NetNs::new(tag);
    let tap = format!("hi{}", std::process::id() % 100_000);
    ns.exec(&format!(
        "ip tuntap add dev {tap} mode tap && ip addr add 10.0.0.1/24 dev {tap} && ip link set {tap} up"
    ));
    (ns, tap)
}

/// Runs `cmd` again and again until it succeeds or `timeout` passes; returns the last output.
pub fn retry(cmd: &mut dyn FnMut() -> Command, timeout: Duration) -> (bool, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = cmd().output().expect("spawn");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() || Instant::now() > deadline {
            return (out.status.success(), text);
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// A runtime for the namespace thread: the engine is async, the thread is std.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
