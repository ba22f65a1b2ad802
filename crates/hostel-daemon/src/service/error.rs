//! The one error the services return.

use crate::adapters::engine::EngineOpError;
use crate::adapters::SyncError;
use hostel_images::ImageError;
use hostel_state::StoreError;
use std::path::PathBuf;

/// Why a domain operation failed. The variants are kinds of failure, not HTTP statuses:
/// `http/error.rs` maps each to its response.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store refused the change (not found, conflict, quota, invalid) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change is in the store, but the switch did not take it (the watchdog retries).
    #[error(transparent)]
    Switch(#[from] SyncError),
    /// A VM lifecycle call (start, stop, restart, delete, admission) failed.
    #[error(transparent)]
    Vm(#[from] crate::supervisor::VmOpError),
    /// The operator's own token is the daemon's to manage, not the API's to revoke.
    #[error(
        "the operator's token is the daemon's own (operator.token): delete that file and \
         restart the daemon to replace it"
    )]
    OperatorToken,
    /// A request field the operation cannot take; nothing was changed.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Something the request names that the store does not keep (an image).
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// The operation conflicts with what exists (an image in use, being built, built in).
    #[error("{message}")]
    Conflict {
        field: Option<&'static str>,
        message: String,
    },
    /// The operator turned off what the call needs for this tenant; `setting` names it.
    #[error("{message}")]
    Forbidden {
        setting: &'static str,
        message: String,
    },
    /// The request carries more than a limit allows; `field` names the limit.
    #[error("{message}")]
    TooLarge {
        field: &'static str,
        message: String,
    },
    /// The image library failed for a reason that is not the request's (a tool missing,
    /// a command that failed, I/O in the image store).
    #[error(transparent)]
    Image(ImageError),
    /// The engine could not make a VM's disks or wake a standby.
    #[error(transparent)]
    Engine(EngineOpError),
    /// An image build ran and failed; the text is the build's own report.
    #[error("{0}")]
    BuildFailed(String),
    #[error("the OS image store is not available")]
    NoImageStore,
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The guest agent did not answer, misbehaved, or refused (`service/agent.rs`).
    #[error(transparent)]
    Agent(#[from] hostel_engine::agent::AgentError),
    /// The storage process could not be reached, or failed for a reason not the request's.
    #[error(transparent)]
    Storage(crate::adapters::storage_link::StorageLinkError),
    /// The pool's store records could not be read.
    #[error(transparent)]
    StorageSync(#[from] crate::adapters::storage::StorageSyncError),
    /// The host could not prepare, run or remove a VPS's container.
    #[error(transparent)]
    Vps(#[from] hostel_vps::VpsError),
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A create that failed after its record existed: everything it made is undone, and
    /// the failure is in the audit log already (committed with the record's removal), so
    /// the caller must not log it again.
    #[error(transparent)]
    Undone(Box<DaemonError>),
}

impl DaemonError {
    pub fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    pub fn conflict(field: Option<&'static str>, message: impl Into<String>) -> Self {
        Self::Conflict {
            field,
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// An image library error, sorted by whose fault it is. `files` maps host paths of the
/// request to the fields that named them, so a bad file is invalid input naming its field.
pub fn image_error(e: ImageError, files: &[(&'static str, &std::path::Path)]) -> DaemonError {
    let field_of = |p: &std::path::Path| files.iter().find(|(_, f)| *f == p).map(|(n, _)| *n);
    let message = e.to_string();
    match &e {
        ImageError::InvalidName(_) | ImageError::UnknownRecipe(..) => {
            DaemonError::invalid("name", message)
        }
        ImageError::NotFound(n) => DaemonError::NotFound {
            kind: "image",
            name: n.clone(),
        },
        ImageError::Exists { .. } => DaemonError::conflict(Some("name"), message),
        ImageError::Busy { .. } => DaemonError::conflict(None, message),
        ImageError::InvalidSeed(m) => DaemonError::invalid("user_data", m),
        ImageError::Io { path, .. }
        | ImageError::Unsupported { path, .. }
        | ImageError::Corrupt { path, .. }
        | ImageError::Truncated { path, .. } => match field_of(path) {
            Some(field) => DaemonError::invalid(field, message),
            None if files.is_empty() => DaemonError::Image(e),
            // Checks run on the store's copy of the file: still the file's fault.
            None if !matches!(e, ImageError::Io { .. }) => {
                DaemonError::invalid(files[0].0, message)
            }
            None => DaemonError::Image(e),
        },
        ImageError::InvalidRecipe(_) if !files.is_empty() => {
            DaemonError::invalid("kernel", message)
        }
        ImageError::DiskTooSmall { .. } => DaemonError::invalid("disk_gib", message),
        _ => DaemonError::Image(e),
    }
}

/// The engine's refusals of the request's own data (a seed that cannot be written) are
/// invalid input; the rest are the engine's.
impl From<EngineOpError> for DaemonError {
    fn from(e: EngineOpError) -> Self {
        match e {
            EngineOpError::Image(e) => image_error(e, &[]),
            other => DaemonError::Engine(other),
        }
    }
}
