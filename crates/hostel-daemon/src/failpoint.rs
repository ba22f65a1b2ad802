//! Named points where a test can hold the daemon, to kill it exactly there: the crash tests
//! of the reconciler cut a start between QEMU's launch and `cont`, or a delete before its
//! record goes. Set `HOSTEL_FAILPOINTS=name[=MILLIS],...` (no value: hold for good); unset,
//! every point is one lookup in an empty list.
//!
//! Only with the `failpoints` feature (test builds): in a daemon built without it the
//! variable is ignored (with a warning), so a stray one cannot hang a create or a delete.

#[cfg(feature = "failpoints")]
mod enabled {
    use std::sync::OnceLock;
    use std::time::Duration;

    fn points() -> &'static [(String, Option<Duration>)] {
        static POINTS: OnceLock<Vec<(String, Option<Duration>)>> = OnceLock::new();
        POINTS.get_or_init(|| {
            std::env::var("HOSTEL_FAILPOINTS")
                .unwrap_or_default()
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| match p.split_once('=') {
                    Some((name, ms)) => (
                        name.trim().to_string(),
                        ms.trim().parse().ok().map(Duration::from_millis),
                    ),
                    None => (p.trim().to_string(), None),
                })
                .collect()
        })
    }

    /// Holds the caller at `name` if the environment asks for it.
    pub async fn hit(name: &str) {
        let Some((_, hold)) = points().iter().find(|(n, _)| n == name) else {
            return;
        };
        tracing::warn!(failpoint = name, ?hold, "holding at a failpoint");
        match hold {
            Some(d) => tokio::time::sleep(*d).await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(feature = "failpoints")]
pub use enabled::hit;

/// Built without failpoints: nothing to hold at.
#[cfg(not(feature = "failpoints"))]
pub async fn hit(_name: &str) {}

/// Says at start-up whether `HOSTEL_FAILPOINTS` will be honoured.
pub fn announce() {
    if std::env::var_os("HOSTEL_FAILPOINTS").is_none() {
        return;
    }
    if cfg!(feature = "failpoints") {
        tracing::warn!("HOSTEL_FAILPOINTS is set: this daemon holds at the failpoints it names");
    } else {
        tracing::warn!("HOSTEL_FAILPOINTS is ignored: this daemon was built without failpoints");
    }
}
