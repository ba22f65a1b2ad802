//! What the operator lets a tenant do through its VMs' guest agents: run commands (`vm
//! exec`) and move files (`vm file push|pull`), and how large a file may be.

use serde::{Deserialize, Serialize};

/// The default largest file a push or pull moves (bytes).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 30;
/// The largest limit the operator may set: a transfer runs through the agent's base64
/// channel at tens of MB/s, and one running for hours holds the VM's channel.
pub const MAX_FILE_BYTES_LIMIT: u64 = 64 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSettings {
    /// `vm exec` allowed.
    pub exec: bool,
    /// `vm file push|pull` allowed.
    pub files: bool,
    /// The largest file a push or pull moves.
    pub max_file_bytes: u64,
}

impl Default for AgentSettings {
    /// A tenant the operator never restricted: everything on, the default size limit.
    fn default() -> Self {
        Self {
            exec: true,
            files: true,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}
