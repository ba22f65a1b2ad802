//! The QEMU guest agent's protocol (QGA: JSON commands and replies, one per line) over a
//! VM's `org.qemu.guest_agent.0` port, QEMU's end of which is `run/<vm>/qga.sock`.
//!
//! Hand-written: no maintained Rust crate speaks QGA, and the protocol is a few lines of
//! JSON. Everything that comes back is the guest's and so hostile: a reply line is capped
//! ([`MAX_LINE`]), the bytes skipped while resynchronising are capped ([`MAX_SKIP`]), every
//! step runs against one deadline, and a session is used for one call and dropped, so a late
//! or out-of-order reply to an abandoned call is discarded by the next session's
//! `guest-sync-delimited` (which asks the agent to reset its parser, then skips everything up
//! to the 0xFF byte and the reply carrying a fresh random id).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

/// The longest reply line accepted: a `guest-exec-status` carrying qemu-ga's whole captured
/// output (16 MiB per stream in QEMU 7.2, base64: about 22 MiB each) is refused rather than
/// held; callers read big outputs in chunks instead.
pub const MAX_LINE: usize = 8 << 20;
/// The most bytes skipped while resynchronising before the channel counts as flooded.
pub const MAX_SKIP: usize = 1 << 20;
/// How long a guest has to answer `guest-sync-delimited`. An idle agent answers within
/// milliseconds even under TCG; a guest with no agent never does, and this is how quickly
/// such a VM answers every agent call.
pub const SYNC_DEADLINE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no guest agent answers in this VM (no reply to guest-sync within {0:?})")]
    NoAgent(Duration),
    #[error("cannot reach the guest agent's channel {path}: {source}")]
    Channel {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest agent did not answer {command} within {deadline:?}")]
    Timeout {
        command: &'static str,
        deadline: Duration,
    },
    #[error("the guest agent sent a line over {max} bytes")]
    LineTooLong { max: usize },
    #[error("the guest agent flooded its channel (over {max} bytes before a sync reply)")]
    Flood { max: usize },
    #[error("the guest agent's reply to {command} is malformed: {source}")]
    Malformed {
        command: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the guest agent's reply to {command} carries bad base64: {source}")]
    BadBase64 {
        command: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("the guest agent refused {command}: {class}: {desc}")]
    Refused {
        command: &'static str,
        class: String,
        desc: String,
    },
    #[error("the guest agent closed its channel")]
    Closed,
}

/// One VM's agent, by its channel's path.
#[derive(Debug, Clone)]
pub struct Agent {
    path: PathBuf,
    sync_deadline: Duration,
}

/// A connected, synchronised channel, good for the calls of one operation.
pub struct Session {
    stream: UnixStream,
    buf: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecStatus {
    pub exited: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// What `guest-exec` runs.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest<'a> {
    pub path: &'a str,
    pub args: &'a [String],
    pub env: &'a [String],
    pub input: Option<&'a [u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OsInfo {
    #[serde(rename = "pretty-name")]
    pub pretty_name: Option<String>,
    #[serde(rename = "kernel-release")]
    pub kernel_release: Option<String>,
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GuestInterface {
    pub name: String,
    #[serde(rename = "hardware-address")]
    pub hardware_address: Option<String>,
    #[serde(rename = "ip-addresses", default)]
    pub ip_addresses: Vec<GuestIp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GuestIp {
    #[serde(rename = "ip-address-type")]
    pub kind: String,
    #[serde(rename = "ip-address")]
    pub address: String,
    pub prefix: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeStatus {
    Thawed,
    Frozen,
}

/// One `guest-file-read` chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChunk {
    pub data: Vec<u8>,
    pub eof: bool,
}

impl Agent {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            sync_deadline: SYNC_DEADLINE,
        }
    }

    /// The same agent with a shorter (tests) or longer sync deadline.
    pub fn with_sync_deadline(mut self, d: Duration) -> Self {
        self.sync_deadline = d;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connects and resynchronises: afterwards the next line the agent sends answers the
    /// next command.
    pub async fn session(&self) -> Result<Session, AgentError> {
        let deadline = Instant::now() + self.sync_deadline;
        let no_agent = AgentError::NoAgent(self.sync_deadline);
        let stream = match tokio::time::timeout_at(deadline, UnixStream::connect(&self.path)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(AgentError::Channel {
                    path: self.path.clone(),
                    source,
                })
            }
            Err(_) => return Err(no_agent),
        };
        let mut s = Session {
            stream,
            buf: Vec::new(),
        };
        let id = random_id();
        // 0xFF first: an agent in the middle of a half-written command from an abandoned
        // session drops it and reads ours fresh.
        let mut cmd = vec![0xFF];
        cmd.extend_from_slice(
            json!({"execute": "guest-sync-delimited", "arguments": {"id": id}})
                .to_string()
                .as_bytes(),
        );
        cmd.push(b'\n');
        match tokio::time::timeout_at(deadline, s.sync(&cmd, id)).await {
            Ok(Ok(())) => Ok(s),
            Ok(Err(AgentError::Closed)) | Err(_) => Err(no_agent),
            Ok(Err(e)) => Err(e),
        }
    }
}

/// 48 random bits: sync ids, and names the daemon picks in the guest.
pub fn random_id() -> u64 {
    let mut b = [0u8; 6];
    // Unpredictable enough that a guest cannot pre-answer a sync; a clock fallback if
    // getrandom fails is still fresh per session.
    // SAFETY: getrandom writes at most b.len() bytes into the buffer it is given.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_nanos() as u64 & 0xFFFF_FFFF_FFFF;
    }
    b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x))
}

impl Session {
    async fn sync(&mut self, cmd: &[u8], id: u64) -> Result<(), AgentError> {
        self.stream
            .write_all(cmd)
            .await
            .map_err(|_| AgentError::Closed)?;
        // Skip to the delimiter, then to the reply carrying our id; anything else (garbage,
        // stale replies) is dropped, up to MAX_SKIP bytes.
        let mut skipped = 0usize;
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == 0xFF) {
                skipped += pos;
                self.buf.drain(..=pos);
                break;
            }
            skipped += self.buf.len();
            self.buf.clear();
            if skipped > MAX_SKIP {
                return Err(AgentError::Flood { max: MAX_SKIP });
            }
            self.fill().await?;
        }
        loop {
            let line = self.line(MAX_SKIP).await?;
            skipped += line.len();
            if skipped > MAX_SKIP {
                return Err(AgentError::Flood { max: MAX_SKIP });
            }
            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                if v.get("return").and_then(Value::as_u64) == Some(id) {
                    return Ok(());
                }
            }
        }
    }

    async fn fill(&mut self) -> Result<(), AgentError> {
        // Read straight into the heap buffer: a stack array here would live in every
        // future that awaits a reply (exec's is deep) and overflow a worker's stack.
        self.buf.reserve(64 * 1024);
        // At most 64 KiB per read, so the buffer ends within that of the line cap.
        let n = (&mut self.stream)
            .take(64 * 1024)
            .read_buf(&mut self.buf)
            .await
            .map_err(|_| AgentError::Closed)?;
        if n == 0 {
            return Err(AgentError::Closed);
        }
        Ok(())
    }

    /// The next non-empty line (0xFF delimiters dropped), at most `max` bytes.
    async fn line(&mut self, max: usize) -> Result<Vec<u8>, AgentError> {
        let mut searched = 0;
        loop {
            if let Some(pos) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + pos;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.retain(|&b| b != 0xFF && b != b'\n' && b != b'\r');
                if line.iter().all(u8::is_ascii_whitespace) {
                    searched = 0;
                    continue;
                }
                return Ok(line);
            }
            searched = self.buf.len();
            if self.buf.len() > max {
                return Err(AgentError::LineTooLong { max });
            }
            self.fill().await?;
        }
    }

    /// One command and its reply's `return` value, within `deadline`.
    pub async fn call(
        &mut self,
        command: &'static str,
        arguments: Option<Value>,
        deadline: Duration,
    ) -> Result<Value, AgentError> {
        let timeout = AgentError::Timeout { command, deadline };
        match tokio::time::timeout(deadline, self.call_inner(command, arguments)).await {
            Ok(r) => r,
            Err(_) => Err(timeout),
        }
    }

    async fn call_inner(
        &mut self,
        command: &'static str,
        arguments: Option<Value>,
    ) -> Result<Value, AgentError> {
        let mut msg = match arguments {
            Some(a) => json!({"execute": command, "arguments": a}),
            None => json!({"execute": command}),
        }
        .to_string()
        .into_bytes();
        msg.push(b'\n');
        self.stream
            .write_all(&msg)
            .await
            .map_err(|_| AgentError::Closed)?;
        let line = self.line(MAX_LINE).await?;
        #[derive(Deserialize)]
        struct Reply {
            #[serde(rename = "return")]
            ret: Option<Value>,
            error: Option<ReplyError>,
        }
        #[derive(Deserialize)]
        struct ReplyError {
            #[serde(default)]
            class: String,
            #[serde(default)]
            desc: String,
        }
        let reply: Reply = serde_json::from_slice(&line)
            .map_err(|source| AgentError::Malformed { command, source })?;
        match (reply.ret, reply.error) {
            (_, Some(e)) => Err(AgentError::Refused {
                command,
                class: truncate(e.class, 200),
                desc: truncate(e.desc, 1000),
            }),
            (Some(v), None) => Ok(v),
            (None, None) => Err(AgentError::Malformed {
                command,
                source: serde::de::Error::custom("neither return nor error"),
            }),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(
        command: &'static str,
        v: Value,
    ) -> Result<T, AgentError> {
        serde_json::from_value(v).map_err(|source| AgentError::Malformed { command, source })
    }

    pub async fn ping(&mut self, d: Duration) -> Result<(), AgentError> {
        self.call("guest-ping", None, d).await.map(|_| ())
    }

    /// The agent's version.
    pub async fn info(&mut self, d: Duration) -> Result<String, AgentError> {
        #[derive(Deserialize)]
        struct Info {
            version: String,
        }
        let v = self.call("guest-info", None, d).await?;
        Ok(truncate(Self::parse::<Info>("guest-info", v)?.version, 100))
    }

    pub async fn host_name(&mut self, d: Duration) -> Result<String, AgentError> {
        #[derive(Deserialize)]
        struct H {
            #[serde(rename = "host-name")]
            host_name: String,
        }
        let v = self.call("guest-get-host-name", None, d).await?;
        Ok(truncate(
            Self::parse::<H>("guest-get-host-name", v)?.host_name,
            255,
        ))
    }

    pub async fn os_info(&mut self, d: Duration) -> Result<OsInfo, AgentError> {
        let v = self.call("guest-get-osinfo", None, d).await?;
        let mut o: OsInfo = Self::parse("guest-get-osinfo", v)?;
        o.pretty_name = o.pretty_name.map(|s| truncate(s, 200));
        o.kernel_release = o.kernel_release.map(|s| truncate(s, 200));
        o.id = o.id.map(|s| truncate(s, 64));
        Ok(o)
    }

    /// The guest's interfaces (at most 64, 64 addresses each: the rest is the guest's noise).
    pub async fn interfaces(&mut self, d: Duration) -> Result<Vec<GuestInterface>, AgentError> {
        let v = self.call("guest-network-get-interfaces", None, d).await?;
        let mut ifs: Vec<GuestInterface> = Self::parse("guest-network-get-interfaces", v)?;
        ifs.truncate(64);
        for i in &mut ifs {
            i.ip_addresses.truncate(64);
        }
        Ok(ifs)
    }

    /// Starts a process; its pid in the guest.
    pub async fn exec(&mut self, req: &ExecRequest<'_>, d: Duration) -> Result<i64, AgentError> {
        #[derive(Deserialize)]
        struct Pid {
            pid: i64,
        }
        let mut args = json!({
            "path": req.path,
            "arg": req.args,
            "capture-output": true,
        });
        // qemu-ga replaces the whole environment with `env` when it is given.
        if !req.env.is_empty() {
            args["env"] = json!(req.env);
        }
        if let Some(input) = req.input {
            args["input-data"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(input));
        }
        let v = self.call("guest-exec", Some(args), d).await?;
        Ok(Self::parse::<Pid>("guest-exec", v)?.pid)
    }

    pub async fn exec_status(&mut self, pid: i64, d: Duration) -> Result<ExecStatus, AgentError> {
        const C: &str = "guest-exec-status";
        #[derive(Deserialize)]
        struct S {
            exited: bool,
            exitcode: Option<i32>,
            signal: Option<i32>,
            #[serde(rename = "out-data")]
            out: Option<String>,
            #[serde(rename = "err-data")]
            err: Option<String>,
            #[serde(rename = "out-truncated", default)]
            out_truncated: bool,
            #[serde(rename = "err-truncated", default)]
            err_truncated: bool,
        }
        let v = self.call(C, Some(json!({ "pid": pid })), d).await?;
        let s: S = Self::parse(C, v)?;
        Ok(ExecStatus {
            exited: s.exited,
            exit_code: s.exitcode,
            signal: s.signal,
            stdout: decode(C, s.out)?,
            stderr: decode(C, s.err)?,
            stdout_truncated: s.out_truncated,
            stderr_truncated: s.err_truncated,
        })
    }

    pub async fn file_open(
        &mut self,
        path: &str,
        mode: &str,
        d: Duration,
    ) -> Result<i64, AgentError> {
        let v = self
            .call(
                "guest-file-open",
                Some(json!({"path": path, "mode": mode})),
                d,
            )
            .await?;
        Self::parse("guest-file-open", v)
    }

    /// At most `count` bytes (callers keep this well under [`MAX_LINE`]'s base64).
    pub async fn file_read(
        &mut self,
        handle: i64,
        count: usize,
        d: Duration,
    ) -> Result<FileChunk, AgentError> {
        const C: &str = "guest-file-read";
        #[derive(Deserialize)]
        struct R {
            #[serde(rename = "buf-b64")]
            buf: String,
            eof: bool,
        }
        let v = self
            .call(C, Some(json!({"handle": handle, "count": count})), d)
            .await?;
        let r: R = Self::parse(C, v)?;
        let data = decode(C, Some(r.buf))?;
        if data.len() > count {
            return Err(AgentError::Malformed {
                command: C,
                source: serde::de::Error::custom("more bytes than asked for"),
            });
        }
        Ok(FileChunk { data, eof: r.eof })
    }

    pub async fn file_write(
        &mut self,
        handle: i64,
        data: &[u8],
        d: Duration,
    ) -> Result<(), AgentError> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        self.call(
            "guest-file-write",
            Some(json!({"handle": handle, "buf-b64": b64})),
            d,
        )
        .await
        .map(|_| ())
    }

    pub async fn file_close(&mut self, handle: i64, d: Duration) -> Result<(), AgentError> {
        self.call("guest-file-close", Some(json!({ "handle": handle })), d)
            .await
            .map(|_| ())
    }

    /// Freezes the guest's filesystems; how many were frozen.
    pub async fn fsfreeze_freeze(&mut self, d: Duration) -> Result<u64, AgentError> {
        let v = self.call("guest-fsfreeze-freeze", None, d).await?;
        Self::parse("guest-fsfreeze-freeze", v)
    }

    pub async fn fsfreeze_thaw(&mut self, d: Duration) -> Result<u64, AgentError> {
        let v = self.call("guest-fsfreeze-thaw", None, d).await?;
        Self::parse("guest-fsfreeze-thaw", v)
    }

    pub async fn fsfreeze_status(&mut self, d: Duration) -> Result<FreezeStatus, AgentError> {
        let v = self.call("guest-fsfreeze-status", None, d).await?;
        match Self::parse::<String>("guest-fsfreeze-status", v)?.as_str() {
            "thawed" => Ok(FreezeStatus::Thawed),
            "frozen" => Ok(FreezeStatus::Frozen),
            _ => Err(AgentError::Malformed {
                command: "guest-fsfreeze-status",
                source: serde::de::Error::custom("unknown freeze status"),
            }),
        }
    }

    /// Asks the guest to power down. The agent sends no reply on success, so the command is
    /// only written.
    pub async fn shutdown(mut self) -> Result<(), AgentError> {
        let msg = b"{\"execute\":\"guest-shutdown\",\"arguments\":{\"mode\":\"powerdown\"}}\n";
        self.stream
            .write_all(msg)
            .await
            .map_err(|_| AgentError::Closed)
    }
}

fn decode(command: &'static str, s: Option<String>) -> Result<Vec<u8>, AgentError> {
    match s {
        None => Ok(Vec::new()),
        Some(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|source| AgentError::BadBase64 { command, source }),
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;

#[path = "agent_fuzzing.rs"]
pub mod fuzzing;
