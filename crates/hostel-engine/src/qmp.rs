//! A small typed QMP client. One task reads the socket and routes each line: command replies
//! to their waiting caller (by `id`), events to subscribers. QMP is line-delimited JSON.

use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot, watch};

#[derive(Debug, Clone, thiserror::Error)]
pub enum QmpError {
    #[error("connection closed")]
    Closed,
    #[error("no greeting within {0:?}")]
    GreetingTimeout(Duration),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{class}: {desc}")]
    Command { class: String, desc: String },
    #[error("i/o: {0}")]
    Io(String),
}

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

/// The `SHUTDOWN` event's payload: why QEMU is about to stop the machine.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShutdownEvent {
    /// True when the guest asked for it (power-off, panic).
    pub guest: bool,
    /// QEMU's ShutdownCause, e.g. `guest-shutdown`, `host-qmp-quit`, `host-signal`, `guest-panic`.
    pub reason: String,
}

/// `query-status`'s run state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Prelaunch,
    Shutdown,
    GuestPanicked,
    InternalError,
    Other(String),
}

impl RunState {
    fn from_qmp(s: &str) -> Self {
        match s {
            "running" => Self::Running,
            "paused" => Self::Paused,
            "prelaunch" => Self::Prelaunch,
            "shutdown" => Self::Shutdown,
            "guest-panicked" => Self::GuestPanicked,
            "internal-error" => Self::InternalError,
            other => Self::Other(other.to_string()),
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, QmpError>>>>>;

pub struct Qmp {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    events: broadcast::Sender<QmpEvent>,
    last_shutdown: Arc<Mutex<Option<ShutdownEvent>>>,
    closed: watch::Receiver<bool>,
}

impl Qmp {
    /// Completes the QMP handshake on a connected socket and starts the reader task.
    pub async fn handshake(stream: UnixStream, timeout: Duration) -> Result<Self, QmpError> {
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = tokio::time::timeout(timeout, lines.next_line())
            .await
            .map_err(|_| QmpError::GreetingTimeout(timeout))?
            .map_err(|e| QmpError::Io(e.to_string()))?
            .ok_or(QmpError::Closed)?;
        let greeting: Value =
            serde_json::from_str(&greeting).map_err(|e| QmpError::Protocol(e.to_string()))?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "unexpected greeting {greeting}"
            )));
        }
        let (events, _) = broadcast::channel(64);
        let (closed_tx, closed) = watch::channel(false);
        let qmp = Qmp {
            writer: tokio::sync::Mutex::new(write),
            pending: Arc::default(),
            next_id: AtomicU64::new(1),
            events,
            last_shutdown: Arc::default(),
            closed,
        };
        tokio::spawn(read_loop(
            lines,
            qmp.pending.clone(),
            qmp.events.clone(),
            qmp.last_shutdown.clone(),
            closed_tx,
        ));
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        if *self.closed.borrow() {
            lock(&self.pending).remove(&id);
            return Err(QmpError::Closed);
        }
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        let written = self.writer.lock().await.write_all(line.as_bytes()).await;
        if let Err(e) = written {
            lock(&self.pending).remove(&id);
            return Err(QmpError::Io(e.to_string()));
        }
        rx.await.unwrap_or(Err(QmpError::Closed))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.subscribe()
    }

    /// The last SHUTDOWN event seen on this connection, if any.
    pub fn last_shutdown(&self) -> Option<ShutdownEvent> {
        lock(&self.last_shutdown).clone()
    }

    /// Resolves when QEMU closes the connection (it exited, or it dropped us).
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    pub async fn query_status(&self) -> Result<RunState, QmpError> {
        let v = self.execute("query-status", None).await?;
        let s = v
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| QmpError::Protocol(format!("query-status returned {v}")))?;
        Ok(RunState::from_qmp(s))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-update of a plain map; the data
    // is still structurally valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn read_loop(
    mut lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    pending: Pending,
    events: broadcast::Sender<QmpEvent>,
    last_shutdown: Arc<Mutex<Option<ShutdownEvent>>>,
    closed: watch::Sender<bool>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!(%line, "unparseable QMP line");
            continue;
        };
        if let Some(name) = msg.get("event").and_then(Value::as_str) {
            let data = msg.get("data").cloned().unwrap_or(Value::Null);
            if name == "SHUTDOWN" {
                if let Ok(ev) = serde_json::from_value::<ShutdownEvent>(data.clone()) {
                    *lock(&last_shutdown) = Some(ev);
                }
            }
            let _ = events.send(QmpEvent {
                name: name.to_string(),
                data,
            });
            continue;
        }
        let Some(id) = msg.get("id").and_then(Value::as_u64) else {
            continue;
        };
        let Some(tx) = lock(&pending).remove(&id) else {
            continue;
        };
        let result = if let Some(ret) = msg.get("return") {
            Ok(ret.clone())
        } else if let Some(err) = msg.get("error") {
            Err(QmpError::Command {
                class: err["class"].as_str().unwrap_or("Error").to_string(),
                desc: err["desc"].as_str().unwrap_or("").to_string(),
            })
        } else {
            Err(QmpError::Protocol(format!(
                "reply without return or error: {line}"
            )))
        };
        let _ = tx.send(result);
    }
    let _ = closed.send(true);
    for (_, tx) in lock(&pending).drain() {
        let _ = tx.send(Err(QmpError::Closed));
    }
}
