//! The operator's signature directory, reloaded without a restart: a generation swap. Scanners
//! take the current `Arc<Engine>` and keep it for their scan; a reload compiles a new engine
//! off to the side and swaps the pointer, so a scan in progress finishes on the generation it
//! started with and the next one sees the new signatures.

use crate::engine::Engine;
use crate::sigs::LoadReport;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// What identifies a directory's contents cheaply: (name, length, mtime) of every file.
type Fingerprint = Vec<(String, u64, Option<SystemTime>)>;

pub struct SigDb {
    dir: PathBuf,
    current: RwLock<Arc<Engine>>,
    fingerprint: RwLock<Fingerprint>,
    generation: std::sync::atomic::AtomicU64,
}

impl SigDb {
    pub fn open(dir: &Path) -> Result<SigDb, std::io::Error> {
        let fp = fingerprint(dir)?;
        let engine = Engine::load(Some(dir), None)?;
        Ok(SigDb {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(engine)),
            fingerprint: RwLock::new(fp),
            generation: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// The engine of the current generation.
    pub fn current(&self) -> Arc<Engine> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reloads when a file was added, removed or changed; returns the new generation's report.
    pub fn reload_if_changed(&self) -> Result<Option<LoadReport>, std::io::Error> {
        let fp = fingerprint(&self.dir)?;
        let same = match self.fingerprint.read() {
            Ok(g) => *g == fp,
            Err(p) => *p.into_inner() == fp,
        };
        if same {
            return Ok(None);
        }
        self.reload_with(fp).map(Some)
    }

    /// Reloads unconditionally.
    pub fn reload(&self) -> Result<LoadReport, std::io::Error> {
        let fp = fingerprint(&self.dir)?;
        self.reload_with(fp)
    }

    fn reload_with(&self, fp: Fingerprint) -> Result<LoadReport, std::io::Error> {
        let engine = Arc::new(Engine::load(Some(&self.dir), None)?);
        let report = engine.report.clone();
        match self.current.write() {
            Ok(mut g) => *g = engine,
            Err(p) => *p.into_inner() = engine,
        }
        match self.fingerprint.write() {
            Ok(mut g) => *g = fp,
            Err(p) => *p.into_inner() = fp,
        }
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        tracing::info!(
            generation,
            hash = report.hash,
            body = report.body,
            refused = report.refused.len(),
            "signatures reloaded"
        );
        Ok(report)
    }
}

fn fingerprint(dir: &Path) -> Result<Fingerprint, std::io::Error> {
    let mut fp: Fingerprint = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file().then(|| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    m.len(),
                    m.modified().ok(),
                )
            })
        })
        .collect();
    fp.sort();
    Ok(fp)
}
