//! The guest agent as a tenant sees it: exec and what the guest reports about itself.
//!
//! Agent calls do not go through the VM's actor: its queue runs one operation at a time,
//! and a guest that holds its agent silent must never delay a stop, a delete or the
//! console. Instead each VM has one lock of its own here (QEMU's end of the channel takes
//! one client at a time), held for one short session, never across a wait for the HTTP
//! client, and every session ends at its deadline (`hostel_engine::agent`).
//!
//! Exec: qemu-ga buffers a command's whole output in the guest and hands it over in one
//! reply once the command ends (at most 16 MiB per stream in QEMU 7.2). For output of any
//! size in bounded daemon memory the command runs under `sh` with its output redirected to
//! two files in the guest's `/tmp` (mode 0600), which are read back in 1 MiB chunks once it
//! has ended and removed. Output therefore arrives when the command has finished, not
//! while it runs.

use super::{blocking, DaemonError};
use crate::layout::Layout;
use base64::Engine as _;
use hostel_api::{
    ExecEvent, ExecVm, GuestInterfaceView, GuestView, DEFAULT_EXEC_TIMEOUT_SECS,
    MAX_EXEC_ARGV_BYTES, MAX_EXEC_TIMEOUT_SECS,
};
use hostel_engine::agent::{random_id, Agent, ExecRequest, Session};
use hostel_state::{
    AgentSettings, EntityKind, ObservedState, Store, StoreError, TenantId, Vm, VmId, VmName,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedMutexGuard};
use tokio::time::Instant;

/// One agent command's deadline (a reply within it or the call fails).
pub(super) const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// How long a call waits for another call on the same VM's channel.
const LOCK_WAIT: Duration = Duration::from_secs(15);
/// Output chunk read from the guest per call: its base64 stays far under the agent
/// client's line cap, and the HTTP stream holds a few of them at most.
const CHUNK: usize = 1 << 20;
/// Chunks queued for a slow HTTP client before reading from the guest waits.
pub const EXEC_QUEUE: usize = 4;

/// The per-VM channel locks.
#[derive(Default)]
pub struct AgentChannels {
    locks: Mutex<HashMap<VmId, Arc<tokio::sync::Mutex<()>>>>,
}

impl AgentChannels {
    fn lock_of(&self, vm: VmId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Locks of VMs nobody is calling are dropped, so deleted VMs leave nothing behind.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(vm).or_default().clone()
    }
}

/// A VM's agent channel, to open sessions on one at a time.
#[derive(Clone)]
pub(super) struct Channel {
    agent: Agent,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Channel {
    pub(super) async fn session(&self) -> Result<(OwnedMutexGuard<()>, Session), DaemonError> {
        let guard = tokio::time::timeout(LOCK_WAIT, self.lock.clone().lock_owned())
            .await
            .map_err(|_| {
                DaemonError::conflict(
                    None,
                    "the VM's guest agent channel is busy with another call; try again",
                )
            })?;
        let session = self.agent.session().await?;
        Ok((guard, session))
    }
}

/// What a call does through the agent, for the operator's per-tenant switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AgentUse {
    /// What the guest reports about itself: always allowed.
    Info,
    Exec,
    Files,
}

pub struct GuestAgent<'a> {
    pub(super) store: &'a Arc<dyn Store>,
    pub(super) layout: &'a Layout,
    pub(super) channels: &'a AgentChannels,
}

impl<'a> GuestAgent<'a> {
    pub fn new(store: &'a Arc<dyn Store>, layout: &'a Layout, channels: &'a AgentChannels) -> Self {
        Self {
            store,
            layout,
            channels,
        }
    }

    /// The running VM `name` of `tenant`, its channel and the tenant's agent settings;
    /// another tenant's VM is not found, a use the operator turned off for the tenant is
    /// forbidden naming the setting, a VM that is not running is a conflict naming its state.
    pub(super) async fn channel(
        &self,
        tenant: TenantId,
        name: &str,
        usage: AgentUse,
    ) -> Result<(Vm, Channel, AgentSettings), DaemonError> {
        let n = name.to_owned();
        let (vm, settings) = blocking(self.store, move |store| {
            let missing = || StoreError::NotFound {
                kind: EntityKind::Vm,
                name: n.clone(),
            };
            let vname = VmName::new(&n).map_err(|_| missing())?;
            Ok::<_, StoreError>((
                store.get_vm_by_name(&tenant, &vname)?,
                store.get_agent(&tenant)?,
            ))
        })
        .await?;
        let off = |setting: &'static str, what: &str| DaemonError::Forbidden {
            setting,
            message: format!(
                "{what} is turned off for this tenant by the operator (tenant agent setting \
                 `{setting}`)"
            ),
        };
        match usage {
            AgentUse::Exec if !settings.exec => return Err(off("exec", "exec in VMs")),
            AgentUse::Files if !settings.files => {
                return Err(off("files", "file transfer to and from VMs"))
            }
            _ => {}
        }
        if vm.observed.state != ObservedState::Running {
            return Err(DaemonError::conflict(
                None,
                format!(
                    "VM {name:?} is {}: the guest agent needs a running VM",
                    vm.observed.state
                ),
            ));
        }
        let channel = self.channel_of(&vm, None);
        Ok((vm, channel, settings))
    }

    /// The channel of a VM the caller found already; `sync` shortens the wait for an agent
    /// to answer at all (a VM without one costs a snapshot that much).
    pub(super) fn channel_of(&self, vm: &Vm, sync: Option<Duration>) -> Channel {
        let run = hostel_engine::RunDir::new(self.layout.vm_run_dir(&vm.id));
        let mut agent = Agent::new(run.agent_socket());
        if let Some(d) = sync {
            agent = agent.with_sync_deadline(d);
        }
        Channel {
            agent,
            lock: self.channels.lock_of(vm.id),
        }
    }

    /// What the guest reports: host name, OS, interfaces and addresses.
    pub async fn guest(&self, tenant: TenantId, name: &str) -> Result<GuestView, DaemonError> {
        let (_, ch, _) = self.channel(tenant, name, AgentUse::Info).await?;
        let (_guard, mut s) = ch.session().await?;
        let agent_version = s.info(CALL_DEADLINE).await?;
        let host_name = s.host_name(CALL_DEADLINE).await?;
        // Older agents lack guest-get-osinfo: the rest still stands. Any other failure (an
        // agent that went silent) ends the call, rather than waiting out the next deadline.
        let os = match s.os_info(CALL_DEADLINE).await {
            Ok(o) => Some(o),
            Err(hostel_engine::agent::AgentError::Refused { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let interfaces = s
            .interfaces(CALL_DEADLINE)
            .await?
            .into_iter()
            .map(|i| GuestInterfaceView {
                name: i.name,
                mac: i.hardware_address,
                addresses: i
                    .ip_addresses
                    .iter()
                    .map(|a| format!("{}/{}", a.address, a.prefix))
                    .collect(),
            })
            .collect();
        Ok(GuestView {
            agent_version,
            host_name,
            os: os.as_ref().and_then(|o| o.pretty_name.clone()),
            kernel: os.and_then(|o| o.kernel_release),
            interfaces,
        })
    }

    /// Checks `req`, starts the command in the guest and returns the run to stream.
    pub async fn exec_start(
        &self,
        tenant: TenantId,
        name: &str,
        req: &ExecVm,
    ) -> Result<ExecRun, DaemonError> {
        let checked = check_exec(req)?;
        let (_, ch, _) = self.channel(tenant, name, AgentUse::Exec).await?;
        let tag = format!("{:012x}", random_id());
        let out = format!("/tmp/.hostel-exec-{tag}.out");
        let err = format!("/tmp/.hostel-exec-{tag}.err");
        // The shell `exec`s the command, so the pid qemu-ga reports is the command's.
        let mut args = vec![
            "-c".to_owned(),
            r#"umask 077; o=$1; e=$2; d=$3; shift 3; exec >"$o" 2>"$e" || exit 126; umask 022; if [ -n "$d" ]; then cd "$d" || exit 127; fi; exec "$@""#.to_owned(),
            "hostel-exec".to_owned(),
            out.clone(),
            err.clone(),
            req.cwd.clone().unwrap_or_default(),
        ];
        args.extend(req.command.iter().cloned());
        // qemu-ga runs the command with exactly the environment given, if any: a caller's
        // KEY=VALUE must not also take PATH away.
        let mut env = req.env.clone();
        if !env.is_empty() && !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        let (guard, mut s) = ch.session().await?;
        let pid = s
            .exec(
                &ExecRequest {
                    path: "/bin/sh",
                    args: &args,
                    env: &env,
                    input: checked.stdin.as_deref(),
                },
                CALL_DEADLINE,
            )
            .await?;
        drop((s, guard));
        Ok(ExecRun {
            ch,
            pid,
            out,
            err,
            timeout: checked.timeout,
            started: Instant::now(),
        })
    }
}

struct CheckedExec {
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

fn check_exec(req: &ExecVm) -> Result<CheckedExec, DaemonError> {
    if req.command.first().is_none_or(|c| c.is_empty()) {
        return Err(DaemonError::invalid(
            "command",
            "empty: name the program to run",
        ));
    }
    let total: usize = req
        .command
        .iter()
        .chain(&req.env)
        .map(|a| a.len() + 1)
        .sum();
    if total > MAX_EXEC_ARGV_BYTES {
        return Err(DaemonError::invalid(
            "command",
            format!("command line and environment over {MAX_EXEC_ARGV_BYTES} bytes"),
        ));
    }
    if req.command.iter().any(|a| a.contains('\0')) {
        return Err(DaemonError::invalid("command", "an argument contains NUL"));
    }
    for e in &req.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() && !e.contains('\0') => {}
            _ => {
                return Err(DaemonError::invalid(
                    "env",
                    format!("{e:?} is not KEY=VALUE"),
                ))
            }
        }
    }
    if let Some(cwd) = &req.cwd {
        if cwd.is_empty() || cwd.contains('\0') || cwd.len() > 4096 {
            return Err(DaemonError::invalid(
                "cwd",
                "must be a non-empty path without NUL",
            ));
        }
    }
    let secs = req.timeout_secs.unwrap_or(DEFAULT_EXEC_TIMEOUT_SECS);
    if !(1..=MAX_EXEC_TIMEOUT_SECS).contains(&secs) {
        return Err(DaemonError::invalid(
            "timeout_secs",
            format!("must be 1 to {MAX_EXEC_TIMEOUT_SECS}"),
        ));
    }
    let stdin = match &req.stdin_b64 {
        None => None,
        Some(b) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| DaemonError::invalid("stdin_b64", e))?,
        ),
    };
    Ok(CheckedExec {
        stdin,
        timeout: Duration::from_secs(secs),
    })
}

/// A command started in the guest: wait for it, then stream its output and exit status.
pub struct ExecRun {
    ch: Channel,
    pid: i64,
    out: String,
    err: String,
    timeout: Duration,
    started: Instant,
}

impl ExecRun {
    /// Runs to the end, sending events into `tx`; a closed `tx` (the client left) stops
    /// the streaming but still removes the guest's files.
    pub async fn run(self, tx: mpsc::Sender<ExecEvent>) {
        let end = match self.wait().await {
            Ok(st) => {
                let mut streamed = self.stream(&self.out, true, &tx).await;
                if streamed.is_ok() {
                    streamed = self.stream(&self.err, false, &tx).await;
                }
                match streamed {
                    Ok(()) => ExecEvent::Exit {
                        code: st.0,
                        signal: st.1,
                    },
                    Err(e) => ExecEvent::Error(e.to_string()),
                }
            }
            Err(e) => ExecEvent::Error(e.to_string()),
        };
        let _ = tx.send(end).await;
        self.cleanup().await;
    }

    async fn wait(&self) -> Result<(Option<i32>, Option<i32>), DaemonError> {
        let deadline = self.started + self.timeout;
        let mut poll = Duration::from_millis(20);
        loop {
            {
                let (_g, mut s) = self.ch.session().await?;
                let st = s.exec_status(self.pid, CALL_DEADLINE).await?;
                if st.exited {
                    return Ok((st.exit_code, st.signal));
                }
            }
            if Instant::now() >= deadline {
                self.kill().await;
                return Err(DaemonError::conflict(
                    Some("timeout_secs"),
                    format!(
                        "the command ran over its {} s timeout and was killed",
                        self.timeout.as_secs()
                    ),
                ));
            }
            // Polling the agent is the only way to learn of the exit (qemu-ga sends no
            // events): quick for short commands, backing off for long ones.
            tokio::time::sleep(poll.min(deadline.saturating_duration_since(Instant::now()))).await;
            poll = (poll * 2).min(Duration::from_millis(500));
        }
    }

    async fn stream(
        &self,
        path: &str,
        stdout: bool,
        tx: &mpsc::Sender<ExecEvent>,
    ) -> Result<(), DaemonError> {
        let handle = {
            let (_g, mut s) = self.ch.session().await?;
            s.file_open(path, "r", CALL_DEADLINE).await?
        };
        let result = async {
            loop {
                // The lock is held for one chunk's read, never while the client is slow.
                let chunk = {
                    let (_g, mut s) = self.ch.session().await?;
                    s.file_read(handle, CHUNK, CALL_DEADLINE).await?
                };
                if !chunk.data.is_empty() {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(&chunk.data);
                    let ev = if stdout {
                        ExecEvent::Stdout(b64)
                    } else {
                        ExecEvent::Stderr(b64)
                    };
                    if tx.send(ev).await.is_err() {
                        return Ok(());
                    }
                }
                if chunk.eof || chunk.data.is_empty() {
                    return Ok::<(), DaemonError>(());
                }
            }
        }
        .await;
        if let Ok((_g, mut s)) = self.ch.session().await {
            let _ = s.file_close(handle, CALL_DEADLINE).await;
        }
        result
    }

    async fn kill(&self) {
        self.guest_sh(&["kill", "-KILL", &self.pid.to_string()])
            .await;
    }

    async fn cleanup(&self) {
        self.guest_sh(&["rm", "-f", &self.out, &self.err]).await;
    }

    /// Best effort: a failure leaves a file in the guest's /tmp or a process the guest's
    /// own reboot ends, and is logged.
    async fn guest_sh(&self, argv: &[&str]) {
        let args: Vec<String> = argv[1..].iter().map(|s| s.to_string()).collect();
        let r: Result<i64, DaemonError> = async {
            let (_g, mut s) = self.ch.session().await?;
            Ok(s.exec(
                &ExecRequest {
                    path: argv[0],
                    args: &args,
                    ..Default::default()
                },
                CALL_DEADLINE,
            )
            .await?)
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, command = argv[0], "guest agent clean-up failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_exec_requests_name_their_field() {
        let field = |r: ExecVm| match check_exec(&r) {
            Err(DaemonError::Invalid { field, .. }) => field,
            other => panic!("{:?}", other.map(|_| ())),
        };
        assert_eq!(field(ExecVm::default()), "command");
        assert_eq!(
            field(ExecVm {
                command: vec!["".into()],
                ..Default::default()
            }),
            "command"
        );
        let ok = || ExecVm {
            command: vec!["true".into()],
            ..Default::default()
        };
        assert_eq!(
            field(ExecVm {
                env: vec!["NOEQUALS".into()],
                ..ok()
            }),
            "env"
        );
        assert_eq!(
            field(ExecVm {
                timeout_secs: Some(0),
                ..ok()
            }),
            "timeout_secs"
        );
        assert_eq!(
            field(ExecVm {
                stdin_b64: Some("!!".into()),
                ..ok()
            }),
            "stdin_b64"
        );
        assert_eq!(
            field(ExecVm {
                command: vec!["x".repeat(MAX_EXEC_ARGV_BYTES)],
                ..ok()
            }),
            "command"
        );
        assert!(check_exec(&ok()).is_ok());
    }
}
