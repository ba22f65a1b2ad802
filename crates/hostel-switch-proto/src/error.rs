//! Errors for configurations the switch refuses; they name the offending object and field.

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
    #[error("external.{field}: {reason}")]
    External { field: String, reason: String },
    #[error("policy {id:?}: {reason}")]
    Policy { id: String, reason: String },
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
