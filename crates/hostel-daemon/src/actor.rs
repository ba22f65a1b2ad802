//! One task per VM: the only code that touches that VM's QEMU. Commands from the API, the
//! VM's own exit and the deadline of a stop under way arrive on one loop, so a stop and a
//! crash can never race each other, and a graceful stop never blocks the loop: a force stop
//! or a delete arriving during its grace period takes over at once.

use crate::launch::{launch, LaunchError};
use crate::reconcile;
use crate::Ctx;
use hostel_engine::{ExitReason, RunState, Vm as Engine};
use hostel_state::{
    DesiredState, IntentOp, ObservedState, ObservedStatus, RestartPolicy, Timestamp, VmId,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

pub use crate::launch::grow_disk;

/// Why a lifecycle command did not do what it asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LifecycleError {
    /// The VM was deleted (or is being deleted) meanwhile.
    #[error("the VM was deleted")]
    Deleted,
    /// The launch failed (shared: every start waiting on it hears the same error).
    #[error(transparent)]
    Start(Arc<LaunchError>),
    #[error("a stop asked for after this start won; the VM stays stopped")]
    StoppedMeanwhile,
    #[error("deleting the VM: {0}")]
    Delete(#[source] Arc<reconcile::DeleteError>),
    /// QEMU's monitor refused or did not answer a pause or continue.
    #[error("QEMU monitor: {0}")]
    Monitor(String),
}

pub type Reply = oneshot::Sender<Result<(), LifecycleError>>;

pub enum Command {
    Start(Reply),
    /// Power button, then a clean quit at `deadline`, then a kill; at once with `force`.
    Stop {
        force: bool,
        deadline: Instant,
        reply: Option<Reply>,
    },
    /// Kills QEMU, removes the VM's disks, run directory and record, and ends the actor.
    Remove(Option<Reply>),
    /// Pauses (`true`: QMP `stop`) or continues (`false`: `cont`) the guest's vCPUs, for a
    /// crash-consistent snapshot of its disks. Nothing to do without a QEMU. A daemon cut
    /// between the two finds the QEMU paused at its next start and continues it
    /// (`reconcile::plan`: paused but wanted running).
    Freeze(bool, Reply),
}

/// A crash sooner than this after start counts towards the restart backoff.
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long QEMU has to quit cleanly after the grace period before it is killed.
const QUIT_GRACE: Duration = Duration::from_secs(5);
/// A monitor command that takes longer than this is treated as a wedged QEMU.
pub(crate) const QMP_TIMEOUT: Duration = Duration::from_secs(5);

/// A stop under way: what happens at `deadline`, and who waits for it.
struct Stopping {
    deadline: Instant,
    quit_sent: bool,
    waiters: Vec<Reply>,
}

pub struct Actor {
    id: VmId,
    ctx: Arc<Ctx>,
    vm: Option<Engine>,
    started: Instant,
    crash_streak: u32,
    stopping: Option<Stopping>,
    /// Starts asked for during a stop: served once the stop is done.
    queued_starts: Vec<Reply>,
    /// `Some` once a delete is asked for: it ends the actor.
    removing: Option<Vec<Reply>>,
    /// When a VM that keeps crashing is restarted (its backoff); commands are served meanwhile.
    restart_at: Option<Instant>,
    /// Bumped once its delete is finished, for whoever waits on it outside the actor.
    removed: watch::Sender<u64>,
}

impl Actor {
    pub fn new(
        id: VmId,
        ctx: Arc<Ctx>,
        adopted: Option<Engine>,
        removed: watch::Sender<u64>,
    ) -> Self {
        Self {
            id,
            ctx,
            vm: adopted,
            started: Instant::now(),
            crash_streak: 0,
            stopping: None,
            queued_starts: Vec::new(),
            removing: None,
            restart_at: None,
            removed,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            if self.removing.is_some() && self.vm.is_none() {
                self.finish_remove().await;
                return;
            }
            let exit = self.vm.as_ref().map(Engine::exit_watch);
            let deadline = self.stopping.as_ref().map(|s| s.deadline);
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    // The supervisor is gone (daemon shutting down): QEMU keeps running.
                    None => return,
                },
                reason = wait_exit(exit) => self.on_exit(reason).await,
                () = sleep_until(deadline) => self.escalate().await,
                () = sleep_until(self.restart_at) => self.restart_after_backoff().await,
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Start(reply) => {
                if self.removing.is_some() {
                    let _ = reply.send(Err(LifecycleError::Deleted));
                } else if self.stopping.is_some() {
                    self.queued_starts.push(reply);
                } else {
                    // An explicit start does not wait out a crash backoff.
                    self.restart_at = None;
                    let _ = reply.send(self.start().await);
                }
            }
            Command::Stop {
                force,
                deadline,
                reply,
            } => {
                if let Some(r) = self.removing.as_mut() {
                    r.extend(reply);
                    return;
                }
                self.stop(force, deadline, reply).await;
            }
            Command::Freeze(pause, reply) => {
                let r = match self.vm.as_ref() {
                    None => Ok(()),
                    Some(vm) => {
                        let op = async {
                            if pause {
                                vm.pause().await
                            } else {
                                vm.resume().await
                            }
                        };
                        match tokio::time::timeout(QMP_TIMEOUT, op).await {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(LifecycleError::Monitor(e.to_string())),
                            Err(_) => Err(LifecycleError::Monitor(format!(
                                "no answer within {QMP_TIMEOUT:?}"
                            ))),
                        }
                    }
                };
                let _ = reply.send(r);
            }
            Command::Remove(reply) => {
                let waiters = self.removing.get_or_insert_with(Vec::new);
                waiters.extend(reply);
                // Whoever waited for a stop or a start hears the VM is gone.
                for r in self.queued_starts.drain(..) {
                    let _ = r.send(Err(LifecycleError::Deleted));
                }
                if let Some(vm) = self.vm.as_ref() {
                    vm.kill();
                }
            }
        }
    }

    /// Records a state; the last exit reason stays until a newer one replaces it, so a
    /// restarted VM still says why it was restarted.
    async fn observe(&self, state: ObservedState, last_exit: Option<String>) {
        let (id, pid) = (self.id, self.vm.as_ref().map(|v| v.pid() as u32));
        let written = self
            .ctx
            .db(move |store| {
                let previous = store.get_vm(&id).ok().map(|v| v.observed);
                let status = ObservedStatus {
                    state,
                    pid,
                    since: Timestamp::now(),
                    last_exit: last_exit
                        .or_else(|| previous.as_ref().and_then(|p| p.last_exit.clone())),
                    restart_count: previous.map_or(0, |p| p.restart_count),
                };
                store.set_vm_observed(&id, &status)
            })
            .await;
        if let Err(e) = written {
            tracing::error!(vm = %self.id, error = %e, "recording VM state");
        }
    }

    /// Best effort: the actor's own record of what runs is what matters next.
    async fn set_desired(&self, desired: DesiredState) {
        let id = self.id;
        let _ = self
            .ctx
            .db(move |store| store.set_vm_desired(&id, desired, None))
            .await;
    }

    async fn start(&mut self) -> Result<(), LifecycleError> {
        if self.vm.is_some() {
            return Ok(());
        }
        self.observe(ObservedState::Starting, None).await;
        match launch(&self.ctx, self.id).await {
            Ok(vm) => {
                self.vm = Some(vm);
                self.started = Instant::now();
                self.observe(ObservedState::Running, None).await;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(vm = %self.id, error = %e, "start failed");
                self.set_desired(DesiredState::Stopped).await;
                self.observe(ObservedState::Failed, Some(e.to_string()))
                    .await;
                Err(LifecycleError::Start(Arc::new(e)))
            }
        }
    }

    /// Begins (or hurries) a stop; it completes when QEMU's exit arrives.
    async fn stop(&mut self, force: bool, deadline: Instant, reply: Option<Reply>) {
        let Some(vm) = self.vm.as_ref() else {
            self.clear_stop_intent().await;
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return;
        };
        if let Some(s) = self.stopping.as_mut() {
            s.waiters.extend(reply);
            if force {
                vm.kill();
            } else {
                // A second graceful stop may only shorten the wait.
                s.deadline = s.deadline.min(deadline);
            }
            return;
        }
        self.observe(ObservedState::Stopping, None).await;
        // A guest that is not running (paused, or never continued) cannot answer the power
        // button: only a kill stops it.
        let pressed = !force
            && matches!(
                tokio::time::timeout(QMP_TIMEOUT, vm.status()).await,
                Ok(Ok(RunState::Running))
            )
            && matches!(
                tokio::time::timeout(QMP_TIMEOUT, vm.powerdown()).await,
                Ok(Ok(()))
            );
        if !pressed {
            vm.kill();
        }
        self.stopping = Some(Stopping {
            deadline,
            quit_sent: false,
            waiters: reply.into_iter().collect(),
        });
    }

    /// The grace period is over: a clean quit, and if even that is ignored, a kill.
    async fn escalate(&mut self) {
        let (Some(vm), Some(s)) = (self.vm.as_ref(), self.stopping.as_mut()) else {
            return;
        };
        if s.quit_sent {
            vm.kill();
            // Nothing more to escalate to; the exit arrives.
            s.deadline = Instant::now() + Duration::from_secs(3600);
            return;
        }
        tracing::info!(vm = %self.id, "guest ignored power-off; quitting QEMU");
        s.quit_sent = true;
        s.deadline = Instant::now() + QUIT_GRACE;
        let _ = tokio::time::timeout(QMP_TIMEOUT, vm.qmp().execute("quit", None)).await;
    }

    async fn clear_stop_intent(&self) {
        let id = self.id;
        let _ = self
            .ctx
            .db(move |store| {
                store.clear_vm_intent(&id, IntentOp::Stop)?;
                store.clear_vm_intent(&id, IntentOp::Kill)
            })
            .await;
    }

    /// QEMU ended: a stop or delete asked for is done; otherwise it ended on its own, so
    /// record why and apply the restart policy.
    async fn on_exit(&mut self, reason: ExitReason) {
        self.vm = None;
        if self.removing.is_some() {
            return; // the loop finishes the delete
        }
        if let Some(s) = self.stopping.take() {
            self.observe(ObservedState::Stopped, Some(reason.to_string()))
                .await;
            self.clear_stop_intent().await;
            for r in s.waiters {
                let _ = r.send(Ok(()));
            }
            self.serve_queued_starts().await;
            return;
        }
        self.exited_on_its_own(reason).await;
    }

    /// Starts asked for during a stop: served if the VM is still wanted running (a later stop
    /// or delete wins over them).
    async fn serve_queued_starts(&mut self) {
        if self.queued_starts.is_empty() {
            return;
        }
        let id = self.id;
        let wanted = self
            .ctx
            .db(move |store| store.get_vm(&id))
            .await
            .is_ok_and(|v| v.desired == DesiredState::Running && v.intent.is_none());
        let result = if wanted {
            self.start().await
        } else {
            Err(LifecycleError::StoppedMeanwhile)
        };
        for r in self.queued_starts.drain(..) {
            let _ = r.send(result.clone());
        }
    }

    async fn exited_on_its_own(&mut self, reason: ExitReason) {
        let clean = reason.is_clean();
        tracing::info!(vm = %self.id, %reason, "VM exited");
        let id = self.id;
        let Ok(rec) = self.ctx.db(move |store| store.get_vm(&id)).await else {
            return;
        };
        let restart = rec.desired == DesiredState::Running
            && match rec.spec.restart_policy() {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !clean,
                RestartPolicy::Never => false,
            };
        let state = if clean {
            ObservedState::Stopped
        } else {
            ObservedState::Crashed
        };
        if clean && !restart && rec.desired == DesiredState::Running {
            // The guest powered itself off: that is its owner's request to stop. A crash is
            // not, so it leaves the tenant's wish as it was.
            self.set_desired(DesiredState::Stopped).await;
        }
        let mut status = ObservedStatus {
            state,
            pid: None,
            since: Timestamp::now(),
            last_exit: Some(reason.to_string()),
            restart_count: rec.observed.restart_count,
        };
        if restart {
            status.restart_count += 1;
        }
        let _ = self
            .ctx
            .db(move |store| store.set_vm_observed(&id, &status))
            .await;
        if !restart {
            return;
        }
        if self.started.elapsed() < CRASH_LOOP_WINDOW {
            self.crash_streak += 1;
        } else {
            self.crash_streak = 0;
        }
        if self.crash_streak > 1 {
            let delay = Duration::from_secs(1 << self.crash_streak.min(5)).min(MAX_BACKOFF);
            tracing::warn!(vm = %self.id, ?delay, "VM keeps exiting; backing off before restart");
            self.restart_at = Some(Instant::now() + delay);
            return;
        }
        let _ = self.start().await;
    }

    /// The backoff is over: restart, unless a stop or delete came meanwhile.
    async fn restart_after_backoff(&mut self) {
        self.restart_at = None;
        let id = self.id;
        let wanted = self
            .ctx
            .db(move |store| store.get_vm(&id))
            .await
            .is_ok_and(|v| v.desired == DesiredState::Running && v.intent.is_none());
        if wanted && self.removing.is_none() {
            let _ = self.start().await;
        }
    }

    /// QEMU is gone: the disks, run directory and record go, then whoever asked hears.
    async fn finish_remove(&mut self) {
        let result = reconcile::finish_delete(&self.ctx, self.id)
            .await
            .map_err(|e| LifecycleError::Delete(Arc::new(e)));
        self.removed.send_modify(|n| *n = n.wrapping_add(1));
        for s in self.stopping.take().into_iter().flat_map(|s| s.waiters) {
            let _ = s.send(Err(LifecycleError::Deleted));
        }
        for r in self.removing.take().unwrap_or_default() {
            let _ = r.send(result.clone());
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

async fn wait_exit(exit: Option<watch::Receiver<Option<ExitReason>>>) -> ExitReason {
    let Some(mut rx) = exit else {
        return std::future::pending().await;
    };
    let reason = match rx.wait_for(Option::is_some).await {
        Ok(r) => r.clone(),
        Err(_) => None,
    };
    reason.unwrap_or(ExitReason::Vanished)
}
