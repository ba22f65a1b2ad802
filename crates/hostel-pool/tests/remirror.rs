//! A device that starts failing under write load with REAL kernel I/O errors, re-mirrored in
//! the background onto a new device while the pool keeps serving.
//!
//! The failing device is a loop device whose backing file sits on a small tmpfs: once the
//! tmpfs is filled, the loop driver fails every write that needs new space in the backing
//! file (the kernel logs "critical space allocation error" and `fdatasync` on the loop device
//! returns the error). Needs root, `losetup` and `mount`; skipped with the reason otherwise.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hostel_pool::{BlockDevice, FileDevice, Pool, RemirrorWorker};

const MIB: u64 = 1 << 20;

/// Why the failing device could not be set up (the test is then skipped, saying why).
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("mount -t tmpfs failed ({0})")]
    Mount(std::process::ExitStatus),
    #[error("losetup failed: {0}")]
    Losetup(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SetupError {
    move |source| SetupError::Io { what, source }
}

/// A tmpfs with a loop device over a sparse file in it; detached and unmounted on drop.
struct LoopOnTmpfs {
    mnt: PathBuf,
    dev: PathBuf,
}

impl LoopOnTmpfs {
    fn new(dir: &Path, fs_bytes: u64, dev_bytes: u64) -> Result<LoopOnTmpfs, SetupError> {
        let mnt = dir.join("fs");
        std::fs::create_dir(&mnt).map_err(io("creating the mount point"))?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={fs_bytes}")])
            .arg("tmpfs")
            .arg(&mnt)
            .status()
            .map_err(io("running mount"))?;
        if !ok.success() {
            return Err(SetupError::Mount(ok));
        }
        let back = mnt.join("backing");
        let f = std::fs::File::create(&back).map_err(io("creating the backing file"))?;
        f.set_len(dev_bytes)
            .map_err(io("sizing the backing file"))?;
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&back)
            .output()
            .map_err(io("running losetup"))?;
        if !out.status.success() {
            let _ = Command::new("umount").arg(&mnt).status();
            return Err(SetupError::Losetup(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(LoopOnTmpfs { mnt, dev })
    }

    /// Takes every byte left on the tmpfs.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.mnt.join("filler")).unwrap();
        let chunk = vec![1u8; MIB as usize];
        while f.write_all(&chunk).is_ok() {}
        let small = vec![1u8; 4096];
        while f.write_all(&small).is_ok() {}
    }
}

impl Drop for LoopOnTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn a_device_failing_under_writes_is_remirrored_in_the_background() {
    if !is_root() {
        eprintln!("skipped: needs root for a loop device and a tmpfs mount");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 16 MiB of tmpfs under a 48 MiB loop device: room for the first half of the volume.
    let lo = match LoopOnTmpfs::new(dir.path(), 16 * MIB, 48 * MIB) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let files = make_files(dir.path(), &["a", "spare"], 48 * MIB);
    let devs: Vec<Box<dyn BlockDevice>> = vec![
        Box::new(FileDevice::open(&files[0]).unwrap()),
        Box::new(FileDevice::open(&lo.dev).unwrap()),
    ];
    let pool = Arc::new(Pool::create(devs, opts()).unwrap());
    let worker = RemirrorWorker::spawn(Arc::clone(&pool)).unwrap();
    let size = 16 * MIB;
    pool.create_volume("v", size, 2).unwrap();
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(31);
    rng.fill(&mut model[..4 * MIB as usize]);
    pool.write("v", 0, &model[..4 * MIB as usize]).unwrap();
    pool.flush().unwrap();
    assert!(pool.devices().iter().all(|d| !d.failed));

    // The loop device's backing store is full from here on. Writes into new clusters (and
    // the metadata log) need new space in it: the kernel fails them. The pool must not.
    lo.fill();
    for i in 0..96u64 {
        let off = 4 * MIB + rng.below((size - 4 * MIB) / 4096) * 4096;
        let mut d = vec![0u8; 4096];
        rng.fill(&mut d);
        pool.write("v", off, &d)
            .unwrap_or_else(|e| panic!("write {i} saw the device's error: {e}"));
        model[off as usize..off as usize + 4096].copy_from_slice(&d);
        if i % 16 == 15 {
            pool.flush()
                .unwrap_or_else(|e| panic!("flush {i} saw the device's error: {e}"));
        }
    }
    let devs = pool.devices();
    assert!(
        devs[1].failed,
        "the loop device never failed: the kernel returned no error"
    );
    let degraded = pool.volume("v").unwrap().degraded_clusters;
    assert!(degraded > 0);
    assert!(read_all(&pool, "v") == model, "degraded reads differ");
    // Nowhere to put the second copies yet: the pass that the failure started finds none.
    let st = pool.wait_remirror(Duration::from_secs(30), |s| s.passes >= 1 && !s.running);
    assert!(st.short > 0, "{st:?}");

    // A new device: the worker re-mirrors onto it while writes go on.
    pool.add_device(Box::new(FileDevice::open(&files[1]).unwrap()), opts())
        .unwrap();
    let mut served = 0;
    loop {
        let st = pool.remirror_status();
        if !st.running && st.short == 0 && st.passes >= 2 {
            break;
        }
        assert!(served < 100_000, "re-mirror never finished: {st:?}");
        let off = rng.below(size / 4096) * 4096;
        let mut d = vec![0u8; 4096];
        rng.fill(&mut d);
        pool.write("v", off, &d).unwrap();
        model[off as usize..off as usize + 4096].copy_from_slice(&d);
        served += 1;
    }
    pool.flush().unwrap();
    let st = pool.remirror_status();
    assert_eq!(st.done, st.to_do, "{st:?}");
    assert!(
        st.remirrored >= degraded,
        "{st:?} vs {degraded} degraded clusters"
    );
    assert_eq!(pool.volume("v").unwrap().degraded_clusters, 0);
    assert!(read_all(&pool, "v") == model);
    drop(worker);
    let pool = Arc::into_inner(pool).unwrap();
    pool.close().unwrap();

    // The failed device is not needed any more: the other two hold every copy.
    let pool = Pool::open(open_files(&files)).unwrap();
    let info = pool.volume("v").unwrap();
    assert_eq!(info.degraded_clusters, 0);
    assert!(
        read_all(&pool, "v") == model,
        "contents after reopen differ"
    );
    drop(lo);
}
