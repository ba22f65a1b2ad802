//! The periodic sweep: between start-ups, what no API call or exit event tells the daemon.
//!
//! Each VM's actor already notices its QEMU's exit (waitpid or pidfd) and drives the VM
//! toward what is wanted. What no actor watches is a QEMU of the state directory that no
//! record owns (an undo that could not kill it, a QEMU started by hand into a run
//! directory, one whose record was removed behind the daemon's back): the sweep finds those
//! by command line, as the start-up reconciler does, and kills them.
//!
//! Cheap when nothing differs: one walk of `/proc` and one read of the VM ids per interval,
//! nothing written. It never races a create: a QEMU counts as unowned only when two sweeps
//! in a row saw it (same pid and start time) with neither a record nor a standby owning it,
//! and a create writes its record (or a standby is in the pool) before its QEMU exists, and
//! a delete or undo kills its QEMU before its record goes.

use crate::Ctx;
use hostel_engine::{find_qemus, kill_found, FoundQemu, QemuIdentity};
use hostel_state::VmId;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// How often the sweep runs unless `HOSTEL_RECONCILE_SECS` says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// The environment variable that sets the interval in seconds (`0`: no sweep).
pub const INTERVAL_ENV: &str = "HOSTEL_RECONCILE_SECS";
/// How long a killed QEMU may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The interval `HOSTEL_RECONCILE_SECS` asks for: `None` for `0` (no sweep), the default when
/// it is unset or not a number (with a warning: a typo must not turn the sweep off).
pub fn interval_from_env() -> Option<Duration> {
    match std::env::var(INTERVAL_ENV) {
        Err(_) => Some(DEFAULT_INTERVAL),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(0) => None,
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => {
                tracing::warn!(value = %v, default = ?DEFAULT_INTERVAL, "{INTERVAL_ENV} is not a number of seconds; using the default");
                Some(DEFAULT_INTERVAL)
            }
        },
    }
}

/// A QEMU as seen by one sweep: pids wrap, start times do not.
type Sighting = (i32, u64);

/// Sweeps every `every` until the daemon exits.
pub async fn run(ctx: Arc<Ctx>, every: Duration) {
    let qemu = match QemuIdentity::default_qemu() {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(error = %e, "cannot identify the QEMU binary; no periodic sweep");
            return;
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and the start-up reconciler has just done this.
    tick.tick().await;
    let mut suspects = HashSet::new();
    loop {
        tick.tick().await;
        suspects = sweep(&ctx, &qemu, &suspects).await;
    }
}

/// One sweep; returns the unowned QEMUs seen for the first time, for the next one.
async fn sweep(ctx: &Ctx, qemu: &QemuIdentity, suspects: &HashSet<Sighting>) -> HashSet<Sighting> {
    let (root, q) = (ctx.layout.root().join("run"), qemu.clone());
    // The scan first, the records after: a QEMU found has its record by then (see above).
    let found = tokio::task::spawn_blocking(move || find_qemus(&root, &q))
        .await
        .unwrap_or_default();
    if found.is_empty() {
        return HashSet::new();
    }
    let ids = match ctx.db(|store| store.list_all_vms()).await {
        Ok(vms) => vms.into_iter().map(|v| v.id).collect::<HashSet<VmId>>(),
        Err(e) => {
            tracing::warn!(error = %e, "periodic sweep: cannot list VMs");
            return suspects.clone();
        }
    };
    let owned = |q: &FoundQemu| {
        q.name
            .parse::<VmId>()
            .is_ok_and(|id| ids.contains(&id) || ctx.standby.owns(&id))
    };
    let mut next = HashSet::new();
    for q in found.into_iter().filter(|q| !owned(q)) {
        let seen = (q.pid, q.started);
        if !suspects.contains(&seen) {
            next.insert(seen);
            continue;
        }
        tracing::warn!(pid = q.pid, dir = %q.name, "periodic sweep: killing a QEMU no VM record owns");
        kill_found(&q, qemu, KILL_WAIT).await;
        let _ = std::fs::remove_dir_all(q.run_dir.path());
    }
    next
}
