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

/// The header of a pull's answer carrying the file's size in the guest (bytes).
pub const FILE_SIZE_HEADER: &str = "x-hostel-file-size";
/// The header of a pull's answer carrying the SHA-256 the guest's own `sha256sum` computed
/// before the file was read (absent when the guest has no `sha256sum`). The daemon compares
/// it with its own over the bytes it read and cuts the stream short on a mismatch.
pub const FILE_SHA256_HEADER: &str = "x-hostel-guest-sha256";

/// Where a pushed file goes and what it becomes (`PUT /v1/vms/{name}/files`, the body is
/// the file's content, `application/octet-stream`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilePush {
    /// The absolute path in the guest; its directory must exist.
    pub path: String,
    /// Octal permission bits (`0644`, `755`); the agent's default (0644 less its umask)
    /// otherwise.
    pub mode: Option<String>,
    /// The owner's numeric user id (root's otherwise).
    pub uid: Option<u32>,
    /// The owner's numeric group id.
    pub gid: Option<u32>,
}

/// The file a pull reads (`GET /v1/vms/{name}/files`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilePull {
    /// The absolute path in the guest of a regular file.
    pub path: String,
}

/// A finished push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileTransferView {
    pub path: String,
    pub size: u64,
    /// SHA-256 (hex) of the bytes the daemon wrote.
    pub sha256: String,
    /// SHA-256 (hex) the guest's own `sha256sum` computed over the file it holds, which
    /// equals `sha256` (the push fails otherwise); `None` when the guest has no `sha256sum`.
    pub guest_sha256: Option<String>,
    pub mode: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// What the operator lets a tenant do through its VMs' guest agents
/// (`/v1/tenants/{tenant}/agent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantAgentView {
    /// `vm exec` allowed.
    pub exec: bool,
    /// `vm file push|pull` allowed.
    pub files: bool,
    /// The largest file a push or pull moves, bytes.
    pub max_file_bytes: u64,
}

/// A change to a tenant's agent settings: the fields given replace, the others stay.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTenantAgent {
    pub exec: Option<bool>,
    pub files: Option<bool>,
    /// 1 to 64 GiB.
    pub max_file_bytes: Option<u64>,
}
