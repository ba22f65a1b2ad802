//! The reconciler: drives what runs toward what the store says is wanted.
//!
//! The store holds each VM's desired state and the pending operation's intent (stop, kill,
//! delete, with a stop's deadline), written before any of it is done. At start-up
//! ([`at_startup`]) the daemon finds every QEMU of its state directory by command line
//! (paused or not, pid file or not), kills those without a record, and for each VM takes the
//! step [`plan::plan`] decides: adopt and continue a QEMU paused between launch and `cont`,
//! finish a stop or delete that was asked for, finish a start that was cut, undo a create
//! that was cut before its disks existed, record a guest that powered off unwatched as
//! stopped. Then every VM's actor ([`crate::actor`]) keeps doing so continuously: it reacts to
//! commands, to its QEMU's exit (restart policy) and to a stop's deadline. Disk and run
//! directories that belong to no record are removed. Between start-ups, [`sweep`] kills
//! every QEMU of the state directory that no record owns, every 30 s by default.

pub mod plan;
pub mod sweep;

use crate::actor::{Command, QMP_TIMEOUT};
use crate::images::{ImageBoot, ROOT_DISK, SEED_DISK};
use crate::supervisor::Supervisor;
use crate::Ctx;
use hostel_engine::{
    find_qemus, kill_found, FoundQemu, QemuIdentity, RunDir, RunState, Vm as Engine,
};
use hostel_state::{
    Actor, AuditResult, NewAuditEntry, ObservedState, ObservedStatus, StoreError, Timestamp, Vm,
    VmId,
};
use plan::{AfterAdopt, Evidence, Found, Step};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a killed QEMU may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// The grace period of a stop found without one (a VM running that is wanted stopped).
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// What Linux prints last when it powers the machine off.
const POWER_OFF_LINE: &str = "reboot: Power down";

/// Brings every VM to what is wanted after a daemon start; see the module docs.
pub async fn at_startup(ctx: &Arc<Ctx>, supervisor: &Arc<Supervisor>) {
    let vms = match ctx.db(|store| store.list_all_vms()).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "cannot list VMs for recovery");
            return;
        }
    };
    let records: HashMap<VmId, &Vm> = vms.iter().map(|v| (v.id, v)).collect();
    let run_root = ctx.layout.root().join("run");
    let (qemu, mut found, orphans) = match QemuIdentity::default_qemu() {
        Ok(qemu) => {
            let (found, orphans) = find_ours(&run_root, &records, &qemu).await;
            (Some(qemu), found, orphans)
        }
        Err(e) => {
            // No QEMU binary: no process can be one we launched, so none is adopted or killed.
            tracing::error!(error = %e, "cannot identify the QEMU binary; no QEMU is adopted");
            (None, HashMap::new(), 0)
        }
    };
    let mut adopted = 0;
    let default_deadline = Timestamp::from_unix_millis(
        Timestamp::now().unix_millis() + DEFAULT_GRACE.as_millis() as i64,
    );
    for vm in &vms {
        let (engine, state) = match found.remove(&vm.id).zip(qemu.as_ref()) {
            Some((q, qemu)) => adopt(vm, &q, qemu).await,
            None => (None, Found::Nothing),
        };
        let ev = evidence(ctx, vm);
        let step = plan::plan(vm, state, ev, default_deadline);
        tracing::info!(vm = %vm.id, ?state, ?step, "reconciling");
        if engine.is_some() {
            adopted += 1;
        }
        apply(ctx, supervisor, vm, engine, step).await;
    }
    sweep_dirs(ctx, &records.keys().copied().collect()).await;
    tracing::info!(adopted, orphans, "reconciled VMs");
}

/// Our QEMUs under `run_root`, one per VM with a record; those without a record, and all but
/// one of a VM's, are killed. Returns them and how many had no record.
async fn find_ours(
    run_root: &std::path::Path,
    records: &HashMap<VmId, &Vm>,
    qemu: &QemuIdentity,
) -> (HashMap<VmId, FoundQemu>, usize) {
    let mut by_vm: HashMap<VmId, Vec<FoundQemu>> = HashMap::new();
    let mut orphans = 0;
    for q in find_qemus(run_root, qemu) {
        let id = q.name.parse::<VmId>().ok();
        match id.filter(|id| records.contains_key(id)) {
            Some(id) => by_vm.entry(id).or_default().push(q),
            None => {
                tracing::warn!(pid = q.pid, dir = %q.name, "killing a QEMU no VM record owns");
                kill_found(&q, qemu, KILL_WAIT).await;
                let _ = std::fs::remove_dir_all(q.run_dir.path());
                orphans += 1;
            }
        }
    }
    let mut found = HashMap::new();
    for (id, candidates) in by_vm {
        let (keep, extra) = choose(candidates);
        for q in extra {
            tracing::warn!(vm = %id, pid = q.pid, "killing a second QEMU of one VM");
            kill_found(&q, qemu, KILL_WAIT).await;
        }
        found.insert(id, keep);
    }
    (found, orphans)
}

/// Of the QEMUs found for one VM, the one to keep and the ones to kill. Two cannot both be
/// right: the one its pid file names wins (QEMU writes it once it runs); without one, the
/// last started (start times, unlike pids, do not wrap).
fn choose(mut candidates: Vec<FoundQemu>) -> (FoundQemu, Vec<FoundQemu>) {
    candidates.sort_by_key(|q| q.started);
    let pidfile = candidates.first().and_then(|q| q.run_dir.read_pid());
    let keep = candidates
        .iter()
        .position(|q| Some(q.pid) == pidfile)
        .unwrap_or(candidates.len() - 1);
    let kept = candidates.remove(keep);
    (kept, candidates)
}

/// Attaches to a QEMU found running; one that cannot be controlled is killed.
async fn adopt(vm: &Vm, q: &FoundQemu, qemu: &QemuIdentity) -> (Option<Engine>, Found) {
    let log = q.run_dir.default_console_log();
    let engine = match Engine::adopt_pid(q.run_dir.clone(), q.pid, log).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(vm = %vm.id, pid = q.pid, error = %e, "killing a QEMU that cannot be controlled");
            kill_found(q, qemu, KILL_WAIT).await;
            q.run_dir.remove_runtime_files();
            return (None, Found::Nothing);
        }
    };
    match tokio::time::timeout(QMP_TIMEOUT, engine.status()).await {
        Ok(Ok(RunState::Running)) => (Some(engine), Found::Running),
        Ok(Ok(RunState::Paused | RunState::Prelaunch)) => (Some(engine), Found::Paused),
        other => {
            // Shut down, panicked, or not answering: not a guest worth keeping.
            tracing::warn!(vm = %vm.id, status = ?other, "killing an adopted QEMU that does not run its guest");
            engine.kill();
            engine.wait_timeout(KILL_WAIT).await;
            (None, Found::Nothing)
        }
    }
}

fn evidence(ctx: &Ctx, vm: &Vm) -> Evidence {
    let run = RunDir::new(ctx.layout.vm_run_dir(&vm.id));
    Evidence {
        powered_off: console_ends_powered_off(&run),
        disks_complete: disks_complete(ctx, vm),
    }
}

/// Whether the last line the guest printed is Linux's power-off line. The console log spans
/// boots, so only its end counts.
fn console_ends_powered_off(run: &RunDir) -> bool {
    use std::io::Read;
    let Ok(Some(mut f)) = run.console_tail(4096) else {
        return false;
    };
    let mut tail = Vec::new();
    let _ = f.read_to_end(&mut tail);
    String::from_utf8_lossy(&tail)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .is_some_and(|l| l.contains(POWER_OFF_LINE))
}

/// Whether the files a create makes for the VM's image are all there.
fn disks_complete(ctx: &Ctx, vm: &Vm) -> bool {
    let dir = ctx.layout.vm_disk_dir(&vm.tenant, &vm.id);
    match ctx.images.get(vm.spec.image()).map(|i| i.boot) {
        Some(ImageBoot::Kernel { .. }) => ctx.layout.vm_root_disk(&vm.tenant, &vm.id).is_file(),
        Some(ImageBoot::Os(_)) => dir.join(ROOT_DISK).is_file() && dir.join(SEED_DISK).is_file(),
        // An image this host no longer has: the directory is all there is to go by.
        None => dir.is_dir(),
    }
}

async fn apply(
    ctx: &Arc<Ctx>,
    supervisor: &Arc<Supervisor>,
    vm: &Vm,
    engine: Option<Engine>,
    step: Step,
) {
    match step {
        Step::Delete | Step::UndoCreate => {
            if let Some(e) = engine {
                e.kill();
                e.wait_timeout(KILL_WAIT).await;
            }
            let done = if step == Step::Delete {
                finish_delete(ctx, vm.id).await
            } else {
                undo_create(ctx, vm).await
            };
            if let Err(e) = done {
                tracing::error!(vm = %vm.id, error = %e, "finishing a delete");
            }
        }
        Step::Adopt(after) => {
            let Some(engine) = engine else { return };
            let pid = engine.pid() as u32;
            if after == AfterAdopt::Continue {
                if let Err(e) = engine.start().await {
                    tracing::warn!(vm = %vm.id, error = %e, "cont of an adopted paused QEMU");
                }
            }
            let state = match after {
                AfterAdopt::Stop { .. } => ObservedState::Stopping,
                _ => ObservedState::Running,
            };
            supervisor
                .record_observed(
                    vm.id,
                    ObservedStatus {
                        state,
                        pid: Some(pid),
                        since: vm.observed.since,
                        last_exit: vm.observed.last_exit.clone(),
                        restart_count: vm.observed.restart_count,
                    },
                )
                .await;
            supervisor.adopt(&vm.id, engine);
            if let AfterAdopt::Stop {
                force,
                deadline,
                restart,
            } = after
            {
                let left = deadline.unix_millis() - Timestamp::now().unix_millis();
                let deadline = Instant::now() + Duration::from_millis(left.max(0) as u64);
                supervisor
                    .tell(
                        &vm.id,
                        Command::Stop {
                            force,
                            deadline,
                            reply: None,
                        },
                    )
                    .await;
                if restart {
                    // Queued behind the stop; served once it is done, if still wanted.
                    let (reply, _) = tokio::sync::oneshot::channel();
                    supervisor.tell(&vm.id, Command::Start(reply)).await;
                }
            }
        }
        Step::Record {
            state,
            last_exit,
            desired,
            clear_intent,
            start,
        } => {
            let id = vm.id;
            let status = ObservedStatus {
                state,
                pid: None,
                since: Timestamp::now(),
                last_exit: last_exit
                    .map(str::to_owned)
                    .or(vm.observed.last_exit.clone()),
                // A restart by policy counts, as when the crash is seen live.
                restart_count: vm.observed.restart_count
                    + u32::from(start && state == ObservedState::Crashed),
            };
            let written = ctx
                .db(move |store| {
                    store.set_vm_observed(&id, &status)?;
                    if let Some(d) = desired {
                        store.set_vm_desired(&id, d, None)?;
                    }
                    if clear_intent {
                        let rec = store.get_vm(&id)?;
                        if let Some(i) = rec.intent {
                            store.clear_vm_intent(&id, i.op)?;
                        }
                    }
                    Ok::<_, StoreError>(())
                })
                .await;
            if let Err(e) = written {
                tracing::error!(vm = %vm.id, error = %e, "recording a reconciled state");
            }
            if start {
                // Not waited for: start-up goes on; the actor records the outcome.
                let (reply, _) = tokio::sync::oneshot::channel();
                supervisor.tell(&vm.id, Command::Start(reply)).await;
            }
        }
        Step::Nothing => {}
    }
}

/// Why a delete could not be finished (it stays on record and is tried again).
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("removing {path}: {source}")]
    Remove {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Removes a VM being deleted (its QEMU already gone): disks, run directory, then the
/// record (audited when the delete was asked for), then its switch ports. Each step is
/// idempotent, and the record goes last, so a kill at any point leaves the delete on record
/// for the next start to finish.
pub async fn finish_delete(ctx: &Ctx, id: VmId) -> Result<(), DeleteError> {
    remove(ctx, id, |store, id| store.finish_vm_delete(id)).await
}

/// Undoes a create cut before it was acknowledged (QEMU already gone): like a delete, with
/// the create's failure in the audit log next to its record's entry.
async fn undo_create(ctx: &Ctx, vm: &Vm) -> Result<(), DeleteError> {
    let entry = NewAuditEntry::ok(
        Actor::System,
        Some(vm.tenant),
        "vm.create",
        vm.name.as_str(),
    )
    .with_result(AuditResult::Error(
        "cut by a daemon crash before it was answered (undone at the next start)".into(),
    ));
    remove(ctx, vm.id, move |store, id| {
        store.delete_vm(id, None, &entry)
    })
    .await
}

async fn remove(
    ctx: &Ctx,
    id: VmId,
    delete: impl FnOnce(&dyn hostel_state::Store, &VmId) -> Result<Vm, StoreError> + Send + 'static,
) -> Result<(), DeleteError> {
    let layout = ctx.layout.clone();
    crate::failpoint::hit("delete.before-finish").await;
    let gone = ctx
        .db(move |store| {
            let vm = match store.get_vm(&id) {
                Ok(vm) => vm,
                Err(StoreError::NotFound { .. }) => return Ok(true),
                Err(e) => return Err(e.into()),
            };
            for dir in [layout.vm_disk_dir(&vm.tenant, &id), layout.vm_run_dir(&id)] {
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(DeleteError::Remove {
                            path: dir,
                            source: e,
                        });
                    }
                    _ => {}
                }
            }
            match delete(store, &id) {
                Ok(_) | Err(StoreError::NotFound { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
    if gone {
        return Ok(());
    }
    // The switch drops its ports; if it is down, its watchdog pushes the tables later.
    if let Err(e) = crate::adapters::networking::sync(ctx).await {
        tracing::warn!(vm = %id, error = %e, "switch not updated after a delete");
    }
    Ok(())
}

/// Disk and run directories of VMs that have no record: what a delete or create cut by a
/// kill left behind (the QEMUs in them were killed already).
async fn sweep_dirs(ctx: &Ctx, records: &HashSet<VmId>) {
    let (records, layout) = (records.clone(), ctx.layout.clone());
    let _ = tokio::task::spawn_blocking(move || {
        let is_known = |name: &std::ffi::OsStr| {
            name.to_str()
                .and_then(|n| n.parse::<VmId>().ok())
                .is_some_and(|id| records.contains(&id))
        };
        let mut stale = Vec::new();
        let disks = layout.root().join("disks");
        for tenant in std::fs::read_dir(&disks).into_iter().flatten().flatten() {
            for vm in std::fs::read_dir(tenant.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if !is_known(&vm.file_name()) {
                    stale.push(vm.path());
                }
            }
        }
        let run = layout.root().join("run");
        for vm in std::fs::read_dir(&run).into_iter().flatten().flatten() {
            if !is_known(&vm.file_name()) {
                stale.push(vm.path());
            }
        }
        for dir in stale {
            tracing::info!(dir = %dir.display(), "removing a directory no VM record owns");
            let _ = std::fs::remove_dir_all(dir);
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(pid: i32, started: u64, run: &std::path::Path) -> FoundQemu {
        FoundQemu {
            pid,
            name: "vm".into(),
            run_dir: RunDir::new(run),
            started,
        }
    }

    /// The pid file names the QEMU to keep, whatever the pids' order (a wrapped pid is lower).
    #[test]
    fn choose_keeps_the_pid_file_s_qemu_then_the_last_started() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (found(900, 10, dir.path()), found(100, 20, dir.path()));
        let (keep, extra) = choose(vec![a.clone(), b.clone()]);
        assert_eq!((keep.pid, extra), (100, vec![a.clone()]));
        std::fs::write(dir.path().join("qemu.pid"), "900\n").unwrap();
        let (keep, extra) = choose(vec![b.clone(), a.clone()]);
        assert_eq!((keep.pid, extra), (900, vec![b]));
        let (keep, extra) = choose(vec![a]);
        assert_eq!((keep.pid, extra.len()), (900, 0));
    }
}
