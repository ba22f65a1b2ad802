//! The runtime adapter: runc from Debian, with its state in a root directory of its own
//! (`--root`), so hostel's containers are never confused with anyone else's and survive the
//! daemon (runc keeps its state on disk; a container's processes are not the daemon's
//! children).

use crate::{cmd, VpsError};
use serde::Deserialize;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const RUNC: &str = "runc";

/// Where runc keeps state.
#[derive(Debug, Clone)]
pub struct Runc {
    pub root: PathBuf,
}

/// What runc says about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuncState {
    /// created, running, paused, stopped.
    pub status: String,
    pub pid: u32,
}

#[derive(Deserialize)]
struct RawState {
    status: String,
    #[serde(default)]
    pid: u32,
}

/// Longest exec output kept (each of stdout and stderr).
pub const MAX_EXEC_OUTPUT: usize = 1 << 20;

/// What `exec` returned.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Runc {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn root_arg(&self) -> String {
        self.root.to_string_lossy().into_owned()
    }

    /// `runc create` + `runc start`: PID 1 runs with stdio on `log` (stdin /dev/null).
    /// runc returns once the container exists; its processes are not our children.
    pub fn create_and_start(&self, id: &str, bundle: &Path, log: &Path) -> Result<(), VpsError> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(VpsError::io("open", log))?;
        let err = out.try_clone().map_err(VpsError::io("dup", log))?;
        let root = self.root_arg();
        let b = bundle.to_string_lossy();
        let status = Command::new(RUNC)
            .args(["--root", &root, "create", "--bundle", &b, id])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .map_err(|e| VpsError::Command {
                program: RUNC,
                action: format!("create {id}"),
                detail: e.to_string(),
            })?;
        if !status.success() {
            let tail = tail_of(log);
            return Err(VpsError::Command {
                program: RUNC,
                action: format!("create {id}"),
                detail: format!("{status}: {tail}"),
            });
        }
        cmd::run(RUNC, &["--root", &root, "start", id]).map(drop)
    }

    /// The container's state, or `None` if runc has none.
    pub fn state(&self, id: &str) -> Result<Option<RuncState>, VpsError> {
        let root = self.root_arg();
        let out = Command::new(RUNC)
            .args(["--root", &root, "state", id])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| VpsError::Command {
                program: RUNC,
                action: format!("state {id}"),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr);
            if msg.contains("does not exist") {
                return Ok(None);
            }
            return Err(VpsError::Command {
                program: RUNC,
                action: format!("state {id}"),
                detail: msg.trim().chars().take(2048).collect(),
            });
        }
        let raw: RawState = serde_json::from_slice(&out.stdout).map_err(|e| VpsError::State {
            id: id.to_string(),
            detail: e.to_string(),
        })?;
        Ok(Some(RuncState {
            status: raw.status,
            pid: raw.pid,
        }))
    }

    /// Asks PID 1 to stop (SIGTERM; systemd reads SIGRTMIN+3 as halt, so that goes too),
    /// waits until `grace` ends, then kills everything and removes the container (runc
    /// removes its cgroups).
    pub fn stop(&self, id: &str, grace: Duration) -> Result<(), VpsError> {
        let root = self.root_arg();
        if let Some(st) = self.state(id)? {
            if st.status == "running" {
                let _ = cmd::run(RUNC, &["--root", &root, "kill", id, "SIGTERM"]);
                let _ = cmd::run(RUNC, &["--root", &root, "kill", id, "SIGRTMIN+3"]);
                let deadline = Instant::now() + grace;
                while Instant::now() < deadline {
                    match self.state(id)? {
                        Some(s) if s.status == "running" => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        _ => break,
                    }
                }
            }
            self.delete(id)?;
        }
        Ok(())
    }

    /// Kills every process of the container and removes it; none is fine.
    pub fn delete(&self, id: &str) -> Result<(), VpsError> {
        let root = self.root_arg();
        match cmd::run(RUNC, &["--root", &root, "delete", "--force", id]) {
            Ok(_) => Ok(()),
            Err(VpsError::Command { detail, .. }) if detail.contains("does not exist") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs `args` in the container as root, stdin empty, output kept up to
    /// [`MAX_EXEC_OUTPUT`] each (the rest is read and dropped, so a chatty command cannot
    /// fill the daemon's memory), and at most `timeout` long (then it is killed).
    pub fn exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, VpsError> {
        use std::io::Read;
        let root = self.root_arg();
        let mut child = Command::new(RUNC)
            .args(["--root", &root, "exec", id])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| VpsError::Command {
                program: RUNC,
                action: format!("exec {id}"),
                detail: e.to_string(),
            })?;
        let pipe_err = |what: &str| VpsError::Command {
            program: RUNC,
            action: format!("exec {id}"),
            detail: format!("no {what} pipe"),
        };
        let mut so = child.stdout.take().ok_or_else(|| pipe_err("stdout"))?;
        let mut se = child.stderr.take().ok_or_else(|| pipe_err("stderr"))?;
        let read_bounded = move |r: &mut dyn Read| {
            let mut kept = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = MAX_EXEC_OUTPUT.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
            kept
        };
        // Readers on their own threads, collected with a deadline: a process the command
        // left behind may hold the pipes open forever, and must not hold this call.
        let (tx_out, rx_out) = std::sync::mpsc::channel();
        let (tx_err, rx_err) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx_out.send(read_bounded(&mut so)));
        std::thread::spawn(move || tx_err.send(read_bounded(&mut se)));
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    return Err(VpsError::Command {
                        program: RUNC,
                        action: format!("exec {id}"),
                        detail: e.to_string(),
                    })
                }
            }
        };
        let linger = Duration::from_secs(1);
        let stdout = rx_out.recv_timeout(linger).unwrap_or_default();
        let stderr = rx_err.recv_timeout(linger).unwrap_or_default();
        Ok(ExecOutput {
            code: status.and_then(|s| s.code()),
            stdout,
            stderr,
        })
    }
}

/// The last line or so of a log, for an error message.
fn tail_of(log: &Path) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let start = text.len().saturating_sub(1024);
    String::from_utf8_lossy(&text[start..]).trim().to_string()
}
