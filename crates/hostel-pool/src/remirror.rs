//! Re-mirroring in the background: after a device fails (or goes missing), every extent with
//! fewer healthy copies than it wants gets a new copy on another healthy device, while the
//! pool keeps serving. The pool lock is taken per extent, never across a whole pass.
//!
//! Progress is a [`RemirrorStatus`] the daemon can show; the worker sleeps on a condition
//! variable that a device failure or an added device wakes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use tracing::{info, warn};

use crate::error::Result;
use crate::meta::ExtentId;
use crate::pool::Pool;

/// Extents re-mirrored between two metadata commits (each a small delta).
const COMMIT_EVERY: u64 = 64;

/// Where re-mirroring stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemirrorStatus {
    /// A pass is running.
    pub running: bool,
    /// Passes finished since the pool was opened.
    pub passes: u64,
    /// Extents short of copies when the current (or last) pass started.
    pub to_do: u64,
    /// Extents of that pass looked at so far.
    pub done: u64,
    /// Extents given their missing copies (all passes).
    pub remirrored: u64,
    /// Extents still short of copies after the last pass: no healthy device without a copy
    /// had space (add a device), or no copy was readable.
    pub short: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Shared {
    status: Mutex<(RemirrorStatus, bool)>,
    cv: Condvar,
}

impl Shared {
    /// Asks the worker for a pass.
    pub fn wake(&self) {
        self.lock().1 = true;
        self.cv.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (RemirrorStatus, bool)> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut RemirrorStatus)) {
        f(&mut self.lock().0);
        self.cv.notify_all();
    }
}

impl Pool {
    pub fn remirror_status(&self) -> RemirrorStatus {
        self.remirror.lock().0.clone()
    }

    /// Waits until `f` holds for the status or `timeout` passes; the status then.
    pub fn wait_remirror(
        &self,
        timeout: std::time::Duration,
        f: impl Fn(&RemirrorStatus) -> bool,
    ) -> RemirrorStatus {
        let g = self.remirror.lock();
        let (g, _) = self
            .remirror
            .cv
            .wait_timeout_while(g, timeout, |s| !f(&s.0))
            .unwrap_or_else(PoisonError::into_inner);
        g.0.clone()
    }

    /// Extents with fewer healthy copies than they want.
    fn short_extents(&self) -> Vec<ExtentId> {
        let g = self.lock();
        g.meta
            .extents
            .iter()
            .filter(|(_, e)| {
                let live = e
                    .copies
                    .iter()
                    .filter(|&&(d, _)| g.healthy(d).is_some())
                    .count();
                live < e.want as usize
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// One pass: every extent short of copies gets them where a healthy device has room.
    /// Returns how many are still short.
    pub fn remirror_pass(&self) -> Result<u64> {
        let ids = self.short_extents();
        self.remirror.update(|s| {
            s.running = true;
            s.to_do = ids.len() as u64;
            s.done = 0;
        });
        if !ids.is_empty() {
            info!(extents = ids.len(), "re-mirroring");
        }
        let mut since_commit = 0;
        for id in &ids {
            let mut g = self.lock();
            // Freed or re-mirrored by a scrub since the list was made: nothing to do.
            let gained = if g.meta.extents.contains_key(id) {
                match g.read_extent("(re-mirror)", *id, *id) {
                    Ok(full) => g.remirror(*id, &full),
                    Err(e) => {
                        warn!(extent = id, error = %e, "re-mirror: no readable copy");
                        false
                    }
                }
            } else {
                false
            };
            if gained {
                since_commit += 1;
                if since_commit >= COMMIT_EVERY {
                    g.commit()?;
                    since_commit = 0;
                }
            }
            drop(g);
            self.remirror.update(|s| {
                s.done += 1;
                s.remirrored += u64::from(gained);
            });
        }
        self.lock().commit()?;
        let short = self.short_extents().len() as u64;
        self.remirror.update(|s| {
            s.running = false;
            s.passes += 1;
            s.short = short;
            s.last_error = None;
        });
        Ok(short)
    }
}

/// The background worker; stopped (and joined) on drop.
pub struct RemirrorWorker {
    stop: Arc<AtomicBool>,
    pool: Arc<Pool>,
    thread: Option<JoinHandle<()>>,
}

impl RemirrorWorker {
    /// Starts re-mirroring `pool` in the background whenever a device fails or is added.
    pub fn spawn(pool: Arc<Pool>) -> std::io::Result<RemirrorWorker> {
        let stop = Arc::new(AtomicBool::new(false));
        let (p, st) = (Arc::clone(&pool), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("pool-remirror".into())
            .spawn(move || loop {
                {
                    let g = p.remirror.lock();
                    let mut g = p
                        .remirror
                        .cv
                        .wait_while(g, |s| !s.1 && !st.load(Ordering::SeqCst))
                        .unwrap_or_else(PoisonError::into_inner);
                    g.1 = false;
                }
                if st.load(Ordering::SeqCst) {
                    return;
                }
                if let Err(e) = p.remirror_pass() {
                    warn!(error = %e, "re-mirror pass failed");
                    p.remirror.update(|s| {
                        s.running = false;
                        s.last_error = Some(e.to_string());
                    });
                }
            })?;
        Ok(RemirrorWorker {
            stop,
            pool,
            thread: Some(thread),
        })
    }
}

impl Drop for RemirrorWorker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.pool.remirror.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
