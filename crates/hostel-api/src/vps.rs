//! VPS (system container) routes' own types. A VPS is created with the same body as a VM
//! ([`crate::CreateVm`]: name, image, vcpus, memory, disk, networks, keys) and shown as one
//! ([`crate::VmView`]), so tools that read VMs read VPSs; only `exec` differs: runc runs the
//! command in the container, no agent is involved.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A command to run in a VPS as its root.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecVps {
    /// The program and its arguments (not empty).
    pub command: Vec<String>,
    /// Seconds until the command is killed (default 60, at most 3600).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// What an exec returned; output is kept up to 1 MiB per stream (lossy UTF-8).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecVpsResult {
    /// The exit status; absent when the command was killed at its timeout or by a signal.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}
