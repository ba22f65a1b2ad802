//! The guest agent's API types: `POST /v1/vms/{name}/exec` and `GET /v1/vms/{name}/guest`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The longest command line (all arguments together) an exec takes.
pub const MAX_EXEC_ARGV_BYTES: usize = 16 * 1024;
/// An exec's default and largest run time.
pub const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 300;
pub const MAX_EXEC_TIMEOUT_SECS: u64 = 24 * 3600;

/// A command to run in the guest through its agent. No terminal: the agent's channel
/// carries no interactive session, so there is no `--tty`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecVm {
    /// The program and its arguments (not empty; the program is looked up in the guest's PATH).
    pub command: Vec<String>,
    /// Extra environment, each `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// The directory to run in (the agent's own otherwise, `/` under systemd).
    pub cwd: Option<String>,
    /// Standard input, base64 (bounded by the request body's limit, 64 KiB).
    pub stdin_b64: Option<String>,
    /// Seconds until the command is killed (default 300, at most 86400).
    pub timeout_secs: Option<u64>,
}

/// One line of an exec's answer (`application/x-ndjson`): output chunks in order, then
/// one `exit` or `error` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecEvent {
    /// A chunk of the command's standard output, base64.
    Stdout(String),
    /// A chunk of its standard error, base64.
    Stderr(String),
    /// The command ended: its exit code, or the signal that killed it.
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The exec failed after it started (the agent stopped answering, the timeout).
    Error(String),
}

/// What the guest's agent reports about the guest.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GuestView {
    pub agent_version: String,
    pub host_name: String,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub interfaces: Vec<GuestInterfaceView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GuestInterfaceView {
    pub name: String,
    pub mac: Option<String>,
    /// `address/prefix`, IPv4 and IPv6.
    pub addresses: Vec<String>,
}
