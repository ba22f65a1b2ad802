//! Owns the VM actors: creates them, routes commands to them, and bounds every wait on them.
//! At start-up the reconciler ([`crate::reconcile`]) hands it what it found running.
//!
//! Every operation first writes what is wanted (desired state and the pending operation's
//! intent, one transaction), then asks the VM's actor to do it: a daemon killed at any point
//! after the write finishes the operation at its next start.

use crate::actor::{Actor, Command, LifecycleError, Reply};
use crate::admission::{self, HostSize};
use crate::Ctx;
use hostel_state::{
    DesiredState, IntentOp, NewAuditEntry, ObservedState, ObservedStatus, StoreError, Timestamp,
    Vm, VmId, VmIntent,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// The longest grace period a stop may ask for: a tenant cannot hold its VM (and everyone
/// waiting on it) in a stop for longer.
pub const MAX_STOP_GRACE: Duration = Duration::from_secs(300);
/// How long a start may take, from the actor's queue to a running guest (a launch is bounded
/// by QEMU's 30 s start-up timeout; NICs and the switch add a little).
const START_BOUND: Duration = Duration::from_secs(90);
/// After a stop's grace period: QEMU's clean quit, then the kill and its exit.
const STOP_SLACK: Duration = Duration::from_secs(30);

pub struct Supervisor {
    ctx: Arc<Ctx>,
    actors: Mutex<Actors>,
    /// Serializes admission decisions, so two starts cannot both take the last GiB.
    admission: tokio::sync::Mutex<()>,
    /// Bumped by an actor each time it has finished a delete: what a second delete of the
    /// same VM waits on ([`Supervisor::wait_gone`]).
    removed: watch::Sender<u64>,
    pub host: HostSize,
}

#[derive(Default)]
struct Actors {
    running: HashMap<VmId, mpsc::Sender<Command>>,
    /// VMs being deleted or deleted: no actor is ever made for them again (ids are random and
    /// never reused, so the set only grows by the deletes of this daemon's life).
    deleted: HashSet<VmId>,
}

impl Supervisor {
    pub fn new(ctx: Arc<Ctx>) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            actors: Mutex::default(),
            admission: tokio::sync::Mutex::new(()),
            removed: watch::Sender::new(0),
            host: HostSize::probe(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Actors> {
        self.actors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The VM's actor, made if it has none; `None` once the VM is being deleted.
    pub(crate) fn actor(
        &self,
        id: &VmId,
        adopted: Option<hostel_engine::Vm>,
    ) -> Option<mpsc::Sender<Command>> {
        let mut actors = self.lock();
        if actors.deleted.contains(id) {
            return None;
        }
        if let Some(tx) = actors.running.get(id).filter(|tx| !tx.is_closed()) {
            return Some(tx.clone());
        }
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(Actor::new(*id, self.ctx.clone(), adopted, self.removed.clone()).run(rx));
        actors.running.insert(*id, tx.clone());
        Some(tx)
    }

    /// Sends a command and waits for its reply, at most `bound`. A VM deleted meanwhile is
    /// not found (404), as it would be a moment later.
    async fn ask(
        &self,
        vm: &Vm,
        bound: Duration,
        make: impl FnOnce(Reply) -> Command,
    ) -> Result<(), VmOpError> {
        let gone = || VmOpError::gone(vm.name.as_str());
        let (reply, rx) = oneshot::channel();
        let tx = self.actor(&vm.id, None).ok_or_else(gone)?;
        if tx.send(make(reply)).await.is_err() {
            return Err(self.lost(vm).await);
        }
        match tokio::time::timeout(bound, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(LifecycleError::Deleted))) => Err(gone()),
            Ok(Ok(Err(e @ LifecycleError::StoppedMeanwhile))) => Err(VmOpError::Conflict(e)),
            Ok(Ok(Err(e))) => Err(VmOpError::Lifecycle(e)),
            Ok(Err(_)) => Err(self.lost(vm).await),
            Err(_) => Err(VmOpError::TimedOut {
                name: vm.name.to_string(),
                secs: bound.as_secs(),
            }),
        }
    }

    /// Pauses (`true`) or continues (`false`) a running VM's vCPUs; a VM without a QEMU
    /// is left alone.
    pub async fn freeze(&self, vm: &Vm, pause: bool) -> Result<(), VmOpError> {
        let bound = crate::actor::QMP_TIMEOUT + Duration::from_secs(5);
        self.ask(vm, bound, |reply| Command::Freeze(pause, reply))
            .await
    }

    /// The actor went away without an answer: only a delete does that (or a shutdown).
    async fn lost(&self, vm: &Vm) -> VmOpError {
        let id = vm.id;
        let exists = self.ctx.db(move |store| store.get_vm(&id)).await;
        if self.lock().deleted.contains(&vm.id)
            || matches!(exists, Err(StoreError::NotFound { .. }))
        {
            VmOpError::gone(vm.name.as_str())
        } else {
            VmOpError::SupervisorEnded
        }
    }

    /// Hands a VM's actor a QEMU found running at start-up.
    pub(crate) fn adopt(&self, id: &VmId, engine: hostel_engine::Vm) {
        self.actor(id, Some(engine));
    }

    /// Sends a command without waiting (the reconciler's own steps at start-up).
    pub(crate) async fn tell(&self, id: &VmId, cmd: Command) {
        if let Some(tx) = self.actor(id, None) {
            let _ = tx.send(cmd).await;
        }
    }

    /// Best effort, as recovery goes on with the next VM either way.
    pub(crate) async fn record_observed(&self, id: VmId, status: ObservedStatus) {
        let _ = self
            .ctx
            .db(move |store| store.set_vm_observed(&id, &status))
            .await;
    }

    /// Admits the VM on this host, marks it wanted-running (committing `audit` with that
    /// change) and starts it.
    pub async fn start(&self, vm: &Vm, audit: Option<NewAuditEntry>) -> Result<(), VmOpError> {
        self.admit(vm, audit).await?;
        // A start may wait behind a stop under way (at most its grace period).
        self.ask(
            vm,
            MAX_STOP_GRACE + STOP_SLACK + START_BOUND,
            Command::Start,
        )
        .await
    }

    /// A created VM that is not to be started: its disks are made, so it is stopped (not
    /// `creating`, which the reconciler undoes at start-up).
    pub async fn created(&self, vm: &Vm) -> Result<(), VmOpError> {
        let status = ObservedStatus {
            state: ObservedState::Stopped,
            pid: None,
            since: Timestamp::now(),
            last_exit: None,
            restart_count: 0,
        };
        let id = vm.id;
        self.ctx
            .db(move |store| store.set_vm_observed(&id, &status))
            .await?;
        Ok(())
    }

    /// Hands an admitted VM ([`Supervisor::admit`]) a QEMU that already runs it (a standby
    /// taken by a create): from here on its actor owns the process as if it had launched it.
    pub async fn attach(&self, vm: &Vm, engine: hostel_engine::Vm) {
        let status = ObservedStatus {
            state: ObservedState::Running,
            pid: Some(engine.pid() as u32),
            since: Timestamp::now(),
            last_exit: None,
            restart_count: 0,
        };
        self.record_observed(vm.id, status).await;
        self.actor(&vm.id, Some(engine));
    }

    /// Checks the host can hold the VM and marks it wanted-running, serialized with every
    /// other admission.
    pub async fn admit(&self, vm: &Vm, audit: Option<NewAuditEntry>) -> Result<(), VmOpError> {
        self.admit_with(vm, audit, None).await
    }

    /// [`Supervisor::admit`], with a stop of `grace` put on record in the same write (a
    /// restart: wanted running, once the stop pending is done).
    async fn admit_with(
        &self,
        vm: &Vm,
        audit: Option<NewAuditEntry>,
        stop_first: Option<Duration>,
    ) -> Result<(), VmOpError> {
        if self.lock().deleted.contains(&vm.id) {
            return Err(VmOpError::gone(vm.name.as_str()));
        }
        let _guard = self.admission.lock().await;
        let (host, id, vcpus, memory_mib) =
            (self.host, vm.id, vm.spec.vcpus(), vm.spec.memory_mib());
        let name = vm.name.to_string();
        self.ctx
            .db(move |store| {
                let rec = store.get_vm(&id)?;
                if rec.intent.is_some_and(|i| i.op == IntentOp::Delete) {
                    return Err(VmOpError::gone(&name));
                }
                let settings = admission::load_settings(store);
                let committed = admission::committed(store, Some(&id))?;
                admission::admit(host, &settings, committed, vcpus, memory_mib)
                    .map_err(VmOpError::Capacity)?;
                match (stop_first, &audit) {
                    (Some(grace), _) => {
                        // A kill pending stays a kill.
                        let intent = match rec.intent {
                            Some(i) if i.op == IntentOp::Kill => i,
                            _ => VmIntent {
                                op: IntentOp::Stop,
                                deadline: deadline_after(grace),
                            },
                        };
                        store.set_vm_intent(
                            &id,
                            DesiredState::Running,
                            Some(&intent),
                            audit.as_ref(),
                        )?
                    }
                    (None, Some(entry)) => {
                        store.set_vm_desired_audited(&id, DesiredState::Running, entry)?
                    }
                    (None, None) => store.set_vm_desired(&id, DesiredState::Running, None)?,
                };
                Ok::<_, VmOpError>(())
            })
            .await
    }

    /// Stops the VM: the power button and `grace` for the guest to power off (capped at
    /// [`MAX_STOP_GRACE`]), then a clean quit, then a kill; `force` kills at once and takes
    /// over a graceful stop under way.
    pub async fn stop(
        &self,
        vm: &Vm,
        force: bool,
        grace: Duration,
        audit: Option<NewAuditEntry>,
    ) -> Result<(), VmOpError> {
        let grace = grace.min(MAX_STOP_GRACE);
        let op = if force {
            IntentOp::Kill
        } else {
            IntentOp::Stop
        };
        self.want(vm, DesiredState::Stopped, op, grace, audit)
            .await?;
        let deadline = Instant::now() + grace;
        self.ask(vm, grace + STOP_SLACK, |reply| Command::Stop {
            force,
            deadline,
            reply: Some(reply),
        })
        .await
    }

    /// Restarts the VM: a stop of `grace` (see [`Supervisor::stop`]), then a start. Wanted
    /// running and the stop go on record first, in one write with `audit` (after the same
    /// admission as a start), so a restart cut anywhere is finished at the next start: a QEMU
    /// still running is stopped and started again, one already gone is started.
    pub async fn restart(
        &self,
        vm: &Vm,
        grace: Duration,
        audit: NewAuditEntry,
    ) -> Result<(), VmOpError> {
        let grace = grace.min(MAX_STOP_GRACE);
        self.admit_with(vm, Some(audit), Some(grace)).await?;
        let deadline = Instant::now() + grace;
        self.ask(vm, grace + STOP_SLACK, |reply| Command::Stop {
            force: false,
            deadline,
            reply: Some(reply),
        })
        .await?;
        crate::failpoint::hit("restart.before-start").await;
        self.ask(vm, START_BOUND, Command::Start).await
    }

    /// Deletes the VM: on record first, with `audit` (so a cut delete is finished at the
    /// next start, and logged once), then its QEMU is killed (overriding a stop under way)
    /// and its disks, run directory, record and switch ports go.
    pub async fn delete(&self, vm: &Vm, audit: NewAuditEntry) -> Result<(), VmOpError> {
        let stopped = DesiredState::Stopped;
        self.want(vm, stopped, IntentOp::Delete, Duration::ZERO, Some(audit))
            .await?;
        let (reply, rx) = oneshot::channel();
        let tx = self.actor(&vm.id, None);
        self.lock().deleted.insert(vm.id);
        match tx {
            Some(tx) if tx.send(Command::Remove(Some(reply))).await.is_ok() => {}
            // Another delete is under way: it finishes; this one waits for the record to go.
            _ => return self.wait_gone(vm).await,
        }
        let result = match tokio::time::timeout(STOP_SLACK, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(VmOpError::DeleteFailed(e)),
            Ok(Err(_)) => self.wait_gone(vm).await,
            Err(_) => Err(VmOpError::StillDeleting(vm.name.to_string())),
        };
        self.lock().running.remove(&vm.id);
        result
    }

    /// Kills the VM's QEMU for good and ends its actor, leaving the record to the caller: a
    /// create's undo, which removes the record itself (with its own audit entry).
    pub async fn remove(&self, vm: &Vm) -> Result<(), VmOpError> {
        let (reply, rx) = oneshot::channel();
        let tx = self.actor(&vm.id, None);
        self.lock().deleted.insert(vm.id);
        if let Some(tx) = tx {
            let stop = Command::Stop {
                force: true,
                deadline: Instant::now(),
                reply: Some(reply),
            };
            if tx.send(stop).await.is_ok() {
                let _ = tokio::time::timeout(STOP_SLACK, rx).await;
            }
        }
        // Its last sender gone, the actor ends (its QEMU is dead).
        self.lock().running.remove(&vm.id);
        Ok(())
    }

    /// Waits (bounded) until another delete of the VM has removed its record: woken by each
    /// delete an actor finishes, not by polling the store.
    async fn wait_gone(&self, vm: &Vm) -> Result<(), VmOpError> {
        let deadline = tokio::time::Instant::now() + STOP_SLACK;
        let mut removed = self.removed.subscribe();
        loop {
            // Marked seen before the look, so a delete finishing after it still wakes us.
            removed.mark_unchanged();
            let id = vm.id;
            match self.ctx.db(move |store| store.get_vm(&id)).await {
                Err(StoreError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            match tokio::time::timeout_at(deadline, removed.changed()).await {
                Ok(Ok(())) => {}
                // The deadline, or no actor left to finish it (the daemon is shutting down).
                Ok(Err(_)) | Err(_) => return Err(VmOpError::StillDeleting(vm.name.to_string())),
            }
        }
    }

    /// Writes what is wanted before anything is done. A VM being deleted is not found.
    async fn want(
        &self,
        vm: &Vm,
        desired: DesiredState,
        op: IntentOp,
        grace: Duration,
        audit: Option<NewAuditEntry>,
    ) -> Result<(), VmOpError> {
        if self.lock().deleted.contains(&vm.id) {
            return Err(VmOpError::gone(vm.name.as_str()));
        }
        let id = vm.id;
        let name = vm.name.to_string();
        let deadline = deadline_after(grace);
        self.ctx
            .db(move |store| {
                let rec = store.get_vm(&id)?;
                let pending = rec.intent.map(|i| i.op);
                if pending == Some(IntentOp::Delete) {
                    return Err(VmOpError::gone(&name));
                }
                // A kill stays a kill when a graceful stop follows it.
                let intent = match (pending, op) {
                    (Some(IntentOp::Kill), IntentOp::Stop) => rec.intent,
                    _ => Some(VmIntent { op, deadline }),
                };
                store.set_vm_intent(&id, desired, intent.as_ref(), audit.as_ref())?;
                Ok(())
            })
            .await
    }
}

/// The wall-clock time `grace` from now, as a stop's deadline is kept on record.
fn deadline_after(grace: Duration) -> Timestamp {
    Timestamp::from_unix_millis(
        Timestamp::now()
            .unix_millis()
            .saturating_add(grace.as_millis() as i64),
    )
}

/// Why a VM lifecycle call (start, stop, restart, delete, admission) failed: the
/// supervisor's own error, free of HTTP, converted into [`crate::service::DaemonError`].
#[derive(Debug, thiserror::Error)]
pub enum VmOpError {
    /// The VM is not there, or is being deleted.
    #[error("VM {0:?} not found")]
    Gone(String),
    /// The operation lost a race with a stop (a start asked while one was pending).
    #[error(transparent)]
    Conflict(LifecycleError),
    /// The VM's actor could not do it (its QEMU would not launch, stop, ...).
    #[error(transparent)]
    Lifecycle(LifecycleError),
    /// The VM's actor failed to delete it.
    #[error("{0}")]
    DeleteFailed(LifecycleError),
    /// The host has no room for the VM (admission).
    #[error(transparent)]
    Capacity(#[from] crate::admission::CapacityError),
    #[error(
        "VM {name:?} did not finish the operation within {secs} s; it goes on in the background"
    )]
    TimedOut { name: String, secs: u64 },
    #[error("VM {0:?} is still being deleted; it goes on in the background")]
    StillDeleting(String),
    /// The actor went away without an answer while the VM still exists.
    #[error("the VM's supervisor ended (is the daemon shutting down?)")]
    SupervisorEnded,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl VmOpError {
    fn gone(name: &str) -> Self {
        Self::Gone(name.to_string())
    }
}
