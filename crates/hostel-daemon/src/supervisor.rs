//! Owns the VM actors: creates them, routes commands to them, and at start-up re-adopts the
//! QEMU processes an earlier daemon left running (a daemon restart never touches a guest).

use crate::actor::{self, Actor, Command};
use crate::admission::{self, HostSize};
use crate::error::{ApiError, ApiResult};
use crate::Ctx;
use hostel_state::{
    DesiredState, NewAuditEntry, ObservedState, ObservedStatus, Timestamp, Vm, VmId,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub struct Supervisor {
    ctx: Arc<Ctx>,
    actors: Mutex<HashMap<VmId, mpsc::Sender<Command>>>,
    /// Serializes admission decisions, so two starts cannot both take the last GiB.
    admission: tokio::sync::Mutex<()>,
    pub host: HostSize,
}

impl Supervisor {
    pub fn new(ctx: Arc<Ctx>) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            actors: Mutex::default(),
            admission: tokio::sync::Mutex::new(()),
            host: HostSize::probe(),
        })
    }

    fn actor(&self, id: &VmId, adopted: Option<hostel_engine::Vm>) -> mpsc::Sender<Command> {
        let mut actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = actors.get(id).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(Actor::new(*id, self.ctx.clone(), adopted).run(rx));
        actors.insert(*id, tx.clone());
        tx
    }

    async fn ask(&self, id: &VmId, make: impl FnOnce(actor::Reply) -> Command) -> ApiResult<()> {
        let (reply, rx) = oneshot::channel();
        self.actor(id, None)
            .send(make(reply))
            .await
            .map_err(|_| ApiError::internal("VM supervisor is gone"))?;
        rx.await
            .map_err(|_| ApiError::internal("VM supervisor dropped the request"))?
            .map_err(ApiError::engine)
    }

    /// Re-attaches to every VM that still runs; records the ones that died while no daemon
    /// was watching and applies their restart policy.
    pub async fn recover(self: &Arc<Self>) {
        let vms = match self.ctx.db(|store| store.list_all_vms()).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot list VMs for recovery");
                return;
            }
        };
        let (mut adopted, mut lost) = (0, 0);
        for vm in vms {
            if let Some(engine) = actor::try_adopt(&self.ctx, &vm.id).await {
                let status = ObservedStatus {
                    state: ObservedState::Running,
                    pid: Some(engine.pid() as u32),
                    since: vm.observed.since,
                    last_exit: vm.observed.last_exit.clone(),
                    restart_count: vm.observed.restart_count,
                };
                if status != vm.observed {
                    self.record_observed(vm.id, status).await;
                }
                self.actor(&vm.id, Some(engine));
                adopted += 1;
                continue;
            }
            let was_up = matches!(
                vm.observed.state,
                ObservedState::Running | ObservedState::Starting | ObservedState::Stopping
            );
            if was_up {
                lost += 1;
                let status = ObservedStatus {
                    state: ObservedState::Crashed,
                    pid: None,
                    since: Timestamp::now(),
                    last_exit: Some("QEMU exited while the daemon was down".into()),
                    restart_count: vm.observed.restart_count,
                };
                self.record_observed(vm.id, status).await;
            }
            if vm.desired == DesiredState::Running {
                let policy_restarts =
                    !matches!(vm.spec.restart_policy(), hostel_state::RestartPolicy::Never);
                // Restart what died unwatched if its policy says so, and finish starts
                // that a crash interrupted; a VM that had already crashed stays down.
                let interrupted = vm.observed.state == ObservedState::Creating;
                if (was_up && policy_restarts) || interrupted {
                    let _ = self.ask(&vm.id, Command::Start).await;
                }
            }
        }
        tracing::info!(adopted, lost, "recovered VMs");
    }

    /// Best effort, as recovery goes on with the next VM either way.
    async fn record_observed(&self, id: VmId, status: ObservedStatus) {
        let _ = self
            .ctx
            .db(move |store| store.set_vm_observed(&id, &status))
            .await;
    }

    /// Admits the VM on this host, marks it wanted-running (committing `audit` with that
    /// change) and starts it.
    pub async fn start(&self, vm: &Vm, audit: Option<NewAuditEntry>) -> ApiResult<()> {
        self.admit(vm, audit).await?;
        self.ask(&vm.id, Command::Start).await
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
    pub async fn admit(&self, vm: &Vm, audit: Option<NewAuditEntry>) -> ApiResult<()> {
        {
            let _guard = self.admission.lock().await;
            let (host, id, vcpus, memory_mib) =
                (self.host, vm.id, vm.spec.vcpus(), vm.spec.memory_mib());
            self.ctx
                .db(move |store| {
                    let settings = admission::load_settings(store);
                    let committed = admission::committed(store, Some(&id))?;
                    admission::admit(host, &settings, committed, vcpus, memory_mib)
                        .map_err(ApiError::capacity)?;
                    match &audit {
                        Some(entry) => {
                            store.set_vm_desired_audited(&id, DesiredState::Running, entry)?
                        }
                        None => store.set_vm_desired(&id, DesiredState::Running, None)?,
                    };
                    Ok::<_, ApiError>(())
                })
                .await?;
        }
        Ok(())
    }

    pub async fn stop(
        &self,
        vm: &Vm,
        force: bool,
        grace: Duration,
        audit: Option<NewAuditEntry>,
    ) -> ApiResult<()> {
        self.want_stopped(vm.id, audit).await?;
        self.ask(&vm.id, |reply| Command::Stop {
            force,
            grace,
            reply,
        })
        .await
    }

    /// Stops the VM for good and forgets its actor; the caller deletes the record.
    pub async fn remove(&self, vm: &Vm) -> ApiResult<()> {
        self.want_stopped(vm.id, None).await?;
        self.ask(&vm.id, Command::Remove).await?;
        self.actors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&vm.id);
        Ok(())
    }

    async fn want_stopped(&self, id: VmId, audit: Option<NewAuditEntry>) -> ApiResult<()> {
        self.ctx
            .db(move |store| match &audit {
                Some(entry) => store.set_vm_desired_audited(&id, DesiredState::Stopped, entry),
                None => store.set_vm_desired(&id, DesiredState::Stopped, None),
            })
            .await?;
        Ok(())
    }
}
