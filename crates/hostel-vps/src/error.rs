//! What can go wrong while preparing, running or removing a VPS.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VpsError {
    /// A helper program (runc, mount, mkfs, ip) could not be run or failed.
    #[error("{program} {action}: {detail}")]
    Command {
        program: &'static str,
        action: String,
        detail: String,
    },
    /// A file or directory operation on the host failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A system call on the host failed.
    #[error("{call}: {source}")]
    Sys {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The spec asked for something this host cannot give (a field out of range).
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// runc's answer could not be understood.
    #[error("runc state of {id}: {detail}")]
    State { id: String, detail: String },
}

impl VpsError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| VpsError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn sys(call: &'static str) -> Self {
        VpsError::Sys {
            call,
            source: std::io::Error::last_os_error(),
        }
    }
}
