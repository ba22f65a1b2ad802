//! Error types of the control plane. The datapath never returns errors: it drops and counts
//! (see [`crate::stats::DropReason`]).

use std::path::PathBuf;

pub use hostel_switch_proto::error::{ConfigError, LimitError};

/// Errors from running the switch process or its sockets.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("binding vhost-user socket {path}: {source}")]
    VhostListen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("binding control socket {path}: {source}")]
    ControlListen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening TAP {name:?}: {source}")]
    Tap {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening external interface {name:?}: {source}")]
    External {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading config file {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config file {path}: {source}")]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("spawning thread {name}: {source}")]
    Thread {
        name: String,
        #[source]
        source: std::io::Error,
    },
}
