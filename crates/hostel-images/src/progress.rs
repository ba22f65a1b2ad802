//! Build progress: a build is a sequence of phases, each given a share of 0-100% by how long
//! it usually takes, so a client can draw one bar across the whole build.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Checking tools, taking the lock, looking for a cached result.
    Prepare,
    /// debootstrap of the minimal system (base images).
    Bootstrap,
    /// Copying the parent image (derived images).
    Copy,
    /// apt-get in the chroot (download and install).
    Packages,
    /// Writing guest configuration, cleaning caches, extracting kernel and initramfs.
    Configure,
    /// Making the ext4 filesystem image.
    Filesystem,
    /// Renaming the finished image into the store.
    Commit,
    /// Finished (including a cache hit).
    Done,
}

impl Phase {
    /// Where each phase starts and ends on the overall 0-100 scale (measured proportions of a
    /// cold debian-12 build: debootstrap ~20%, apt ~60%).
    fn span(self) -> (u8, u8) {
        match self {
            Phase::Prepare => (0, 1),
            Phase::Bootstrap => (1, 25),
            Phase::Copy => (1, 25),
            Phase::Packages => (25, 85),
            Phase::Configure => (85, 90),
            Phase::Filesystem => (90, 98),
            Phase::Commit => (98, 100),
            Phase::Done => (100, 100),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub image: String,
    pub phase: Phase,
    /// Overall completion, 0-100, never decreasing within one build.
    pub percent: u8,
    pub message: String,
}

/// Receives progress reports; called from the building thread, so keep it quick (send to a
/// channel, update a record).
pub type ProgressFn<'a> = &'a (dyn Fn(&Progress) + Send + Sync);

/// A no-op progress receiver.
pub fn ignore_progress(_: &Progress) {}

/// Set to stop a build between steps (and kill the running tool at the next line of output).
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Turns phase-local fractions into overall percentages for one image's build.
pub(crate) struct Reporter<'a> {
    image: String,
    sink: ProgressFn<'a>,
    last: std::cell::Cell<u8>,
    log: std::cell::RefCell<Option<std::fs::File>>,
}

impl<'a> Reporter<'a> {
    pub fn new(image: &str, sink: ProgressFn<'a>) -> Self {
        Reporter {
            image: image.to_string(),
            sink,
            last: std::cell::Cell::new(0),
            log: std::cell::RefCell::new(None),
        }
    }

    /// Also keep the build tools' full output in `log` (the report carries only a tail).
    pub fn with_log(self, log: Option<std::fs::File>) -> Self {
        *self.log.borrow_mut() = log;
        self
    }

    pub fn log_line(&self, line: &str) {
        use std::io::Write;
        if let Some(f) = self.log.borrow_mut().as_mut() {
            let _ = writeln!(f, "{line}");
        }
    }

    /// Reports `fraction` (0.0-1.0) of `phase` done.
    pub fn report(&self, phase: Phase, fraction: f64, message: impl Into<String>) {
        let (lo, hi) = phase.span();
        let pct = f64::from(lo) + f64::from(hi - lo) * fraction.clamp(0.0, 1.0);
        let pct = (pct as u8).max(self.last.get()).min(100);
        self.last.set(pct);
        let p = Progress {
            image: self.image.clone(),
            phase,
            percent: pct,
            message: message.into(),
        };
        tracing::debug!(image = %p.image, phase = ?p.phase, percent = p.percent, "{}", p.message);
        (self.sink)(&p);
    }

    pub fn start(&self, phase: Phase, message: impl Into<String>) {
        self.report(phase, 0.0, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn percent_is_monotonic_and_reaches_100() {
        let seen = Mutex::new(Vec::new());
        let sink = |p: &Progress| seen.lock().unwrap().push(p.percent);
        let r = Reporter::new("x", &sink);
        r.report(Phase::Packages, 0.5, "");
        r.report(Phase::Bootstrap, 0.1, ""); // an earlier phase must not move the bar back
        r.report(Phase::Done, 1.0, "");
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen, vec![55, 55, 100]);
    }
}
