//! Filesystems frozen by the guest for a VM snapshot (issue 22): a snapshot of a running VM
//! asks its guest agent to freeze every filesystem (`guest-fsfreeze-freeze`: flushed and
//! held still), takes the snapshot, and thaws. qemu-ga never thaws by itself, so the freeze
//! is recorded in the store as an intent (setting `agent.frozen.<vm id>`) *before* it is
//! asked for, and removed only once a thaw answered: a daemon killed in between finds the
//! intent at its next start and thaws the guest then ([`thaw_interrupted`]). A guest without
//! an agent (or one that does not answer in time) gets a crash-consistent snapshot, and the
//! audit entry says which it was.

use super::agent::{AgentChannels, GuestAgent};
use super::DaemonError;
use crate::layout::Layout;
use hostel_state::{ObservedState, SettingKey, Store, Vm, VmId};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How long an agent may take to answer at all before the snapshot goes on without it.
const PROBE: Duration = Duration::from_secs(2);
/// Freezing flushes every filesystem: bounded, as everything a guest does is.
const FREEZE_DEADLINE: Duration = Duration::from_secs(20);
const THAW_DEADLINE: Duration = Duration::from_secs(10);
/// At start-up: how long to keep trying to thaw a guest whose agent is not answering yet.
const RECOVERY_WINDOW: Duration = Duration::from_secs(120);
const PREFIX: &str = "agent.frozen.";

/// What a snapshot of a VM's disks is consistent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consistency {
    /// The guest froze this many filesystems for it.
    Filesystem { frozen: u64 },
    /// As if the power had gone at that instant: no agent answered, or the VM is stopped.
    Crash { why: String },
}

impl Consistency {
    pub fn is_frozen(&self) -> bool {
        matches!(self, Consistency::Filesystem { .. })
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consistency::Filesystem { frozen } => {
                write!(f, "filesystem-consistent: {frozen} filesystems frozen")
            }
            Consistency::Crash { why } => write!(f, "crash-consistent: {why}"),
        }
    }
}

fn intent_key(vm: &VmId) -> Result<SettingKey, DaemonError> {
    Ok(SettingKey::new(format!("{PREFIX}{vm}"))?)
}

impl GuestAgent<'_> {
    /// Freezes the running VM's filesystems for a snapshot; never fails the snapshot: what
    /// could not be frozen makes it crash-consistent instead.
    pub async fn freeze_for_snapshot(&self, vm: &Vm) -> Consistency {
        if vm.observed.state != ObservedState::Running {
            return Consistency::Crash {
                why: format!("the VM is {}", vm.observed.state),
            };
        }
        let key = match intent_key(&vm.id) {
            Ok(k) => k,
            Err(e) => return Consistency::Crash { why: e.to_string() },
        };
        // The intent first: a cut after the guest froze must still find it.
        let k = key.clone();
        if let Err(e) = self
            .db(move |store| Ok::<_, DaemonError>(store.set_setting(&k, "freeze")?))
            .await
        {
            return Consistency::Crash {
                why: format!("the freeze could not be recorded: {e}"),
            };
        }
        let ch = self.channel_of(vm, Some(PROBE));
        let frozen = match ch.session().await {
            Ok((_guard, mut s)) => s
                .fsfreeze_freeze(FREEZE_DEADLINE)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        crate::failpoint::hit("vm-snapshot-frozen").await;
        match frozen {
            Ok(n) => Consistency::Filesystem { frozen: n },
            Err(why) => {
                // It may have frozen all the same (an answer that came too late): thaw to be
                // sure; the intent stays if that fails too, for the next start.
                let _ = self.thaw(vm).await;
                Consistency::Crash {
                    why: format!("no guest agent froze the filesystems ({why})"),
                }
            }
        }
    }

    /// Thaws the VM's filesystems and drops the freeze intent once the guest answered.
    pub async fn thaw(&self, vm: &Vm) -> Result<u64, DaemonError> {
        let ch = self.channel_of(vm, Some(PROBE));
        let (_guard, mut s) = ch.session().await?;
        let n = s.fsfreeze_thaw(THAW_DEADLINE).await?;
        drop(_guard);
        let key = intent_key(&vm.id)?;
        self.db(move |store| Ok::<_, DaemonError>(store.delete_setting(&key).map(|_| ())?))
            .await?;
        Ok(n)
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, DaemonError> + Send + 'static,
    ) -> Result<T, DaemonError> {
        super::blocking(self.store, f).await
    }
}

/// At start-up: every freeze a killed daemon left behind is thawed. A VM that is gone or not
/// running has nothing frozen (a stopped guest's freeze ended with it); a running one is
/// retried until its agent answers or [`RECOVERY_WINDOW`] ends (the intent then stays, for
/// the next start).
pub async fn thaw_interrupted(store: Arc<dyn Store>, layout: Layout, channels: Arc<AgentChannels>) {
    let agent = GuestAgent::new(&store, &layout, &channels);
    let intents = match agent
        .db(|store| Ok::<_, DaemonError>(store.list_settings()?))
        .await
    {
        Ok(all) => all
            .into_iter()
            .filter(|(k, _)| k.as_str().starts_with(PREFIX))
            .collect::<Vec<_>>(),
        Err(e) => {
            tracing::error!(error = %e, "reading the guest freeze intents");
            return;
        }
    };
    for (key, _) in intents {
        let id = key.as_str().trim_start_matches(PREFIX).to_string();
        let vm = match id.parse::<VmId>() {
            Ok(vm_id) => agent
                .db(move |s| Ok::<_, DaemonError>(s.get_vm(&vm_id)?))
                .await
                .ok(),
            Err(_) => None,
        };
        let running = vm
            .as_ref()
            .is_some_and(|v| v.observed.state == ObservedState::Running);
        let Some(vm) = vm.filter(|_| running) else {
            let k = key.clone();
            let _ = agent
                .db(move |s| Ok::<_, DaemonError>(s.delete_setting(&k).map(|_| ())?))
                .await;
            continue;
        };
        let deadline = tokio::time::Instant::now() + RECOVERY_WINDOW;
        loop {
            match agent.thaw(&vm).await {
                Ok(n) => {
                    tracing::warn!(vm = %vm.name, thawed = n, "thawed a guest a cut snapshot left frozen");
                    break;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(vm = %vm.name, error = %e, "guest agent not answering yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::error!(vm = %vm.name, error = %e, "could not thaw the guest; retried at the next start");
                    break;
                }
            }
        }
    }
}
