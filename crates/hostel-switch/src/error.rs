//! Error types of the control plane. The datapath never returns errors: it drops and counts
//! (see [`crate::stats::DropReason`]).

use std::path::PathBuf;

/// A configuration the switch refuses.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("network {id:?}: {reason}")]
    Network { id: String, reason: String },
    #[error("port {id:?}: {reason}")]
    Port { id: String, reason: String },
    #[error("network {0:?} already exists")]
    DuplicateNetwork(String),
    #[error("port {0:?} already exists")]
    DuplicatePort(String),
    #[error("network {0:?} not found")]
    UnknownNetwork(String),
    #[error("port {0:?} not found")]
    UnknownPort(String),
    #[error("network {0:?} still has ports")]
    NetworkInUse(String),
    #[error("port {id:?}: {source}")]
    Limits {
        id: String,
        #[source]
        source: LimitError,
    },
    #[error("address {addr} is already used by port {port:?} in network {network:?}")]
    AddressInUse {
        addr: String,
        port: String,
        network: String,
    },
}

/// A port's rate limits the switch refuses; names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("limits.{class}.{field} must be at least 1 (omit it for no limit)")]
    Zero {
        class: &'static str,
        field: &'static str,
    },
    #[error("limits.{class}.{field} must be at most {max}")]
    TooLarge {
        class: &'static str,
        field: &'static str,
        max: u64,
    },
    #[error("limits.{class}.{field} is given without {needs}")]
    BurstWithoutRate {
        class: &'static str,
        field: &'static str,
        needs: &'static str,
    },
}

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
    #[error("opening uplink TAP {name:?}: {source}")]
    Tap {
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
