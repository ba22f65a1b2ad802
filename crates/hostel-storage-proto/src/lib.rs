//! The control protocol of the host's storage process (`hostel storage-backend`): JSON
//! lines over a Unix stream socket, one request per line, one response line each. The
//! daemon links this crate without the pool or the vhost-user datapath (as
//! `hostel-switch-proto` is for the switch).
//!
//! | request | response |
//! |---|---|
//! | `{"op":"status"}` | `{"ok":true,"status":{PoolStatus}}` (`pool` null without devices) |
//! | `{"op":"device_add","path":"/dev/sdb"}` | `{"ok":true,"status":…}` (the first add creates the pool) |
//! | `{"op":"volume_create","name":"v1","size":1048576,"copies":2}` | `{"ok":true,"volume":{VolumeStatus}}` |
//! | `{"op":"volume_delete","name":"v1"}` | `{"ok":true}` (also when it does not exist) |
//! | `{"op":"volume_resize","name":"v1","size":…}` | `{"ok":true,"volume":…}` |
//! | `{"op":"volume_status","name":"v1"}` | `{"ok":true,"volume":…}` |
//! | `{"op":"snapshot_create"|"snapshot_restore"|"snapshot_delete","volume":"v1","snapshot":"s"}` | `{"ok":true,"volume":…}` |
//! | `{"op":"clone","volume":"v1","snapshot":"s","new":"v2"}` | `{"ok":true,"volume":…}` |
//! | `{"op":"serve","volume":"v1","socket":"/…/v1.sock","queues":2}` | `{"ok":true}` (idempotent) |
//! | `{"op":"unserve","volume":"v1"}` | `{"ok":true}` (idempotent) |
//! | `{"op":"backup_export","volume":"v1","snapshot":"s","base":null,"path":"/…"}` | `{"ok":true}` |
//! | `{"op":"backup_restore","path":"/…","name":"v2"}` | `{"ok":true,"volume":…}` |
//!
//! Failures answer `{"ok":false,"error":"…","kind":"…"}` and change nothing; `kind` sorts
//! them for the daemon (`not_found`, `exists`, `invalid`, `no_space`, `no_pool`, `other`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The longest request line the storage process reads; a longer one ends the connection.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    DeviceAdd {
        path: PathBuf,
    },
    VolumeCreate {
        name: String,
        size: u64,
        copies: u8,
    },
    VolumeDelete {
        name: String,
    },
    VolumeResize {
        name: String,
        size: u64,
    },
    VolumeStatus {
        name: String,
    },
    SnapshotCreate {
        volume: String,
        snapshot: String,
    },
    SnapshotRestore {
        volume: String,
        snapshot: String,
    },
    SnapshotDelete {
        volume: String,
        snapshot: String,
    },
    Clone {
        volume: String,
        snapshot: String,
        new: String,
    },
    Serve {
        volume: String,
        socket: PathBuf,
        queues: u16,
    },
    Unserve {
        volume: String,
    },
    BackupExport {
        volume: String,
        snapshot: String,
        base: Option<String>,
        path: PathBuf,
    },
    BackupRestore {
        path: PathBuf,
        name: String,
    },
}

/// Why a request failed, for the daemon to map (a missing volume is a 404, no space a 507).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    Exists,
    Invalid,
    NoSpace,
    NoPool,
    Other,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PoolStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeStatus>,
}

impl Response {
    pub fn ok() -> Self {
        Response {
            ok: true,
            ..Default::default()
        }
    }

    pub fn err(kind: ErrorKind, error: impl std::fmt::Display) -> Self {
        Response {
            ok: false,
            error: Some(error.to_string()),
            kind: Some(kind),
            ..Default::default()
        }
    }
}

/// The whole storage process: its pool (if it has one) and what it serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub pool: Option<PoolInfo>,
    /// Volumes with a vhost-user socket, by name.
    pub served: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    pub uuid: String,
    pub generation: u64,
    pub needs_scrub: bool,
    pub devices: Vec<DeviceStatus>,
    pub volumes: Vec<VolumeStatus>,
    pub remirror: RemirrorProgress,
}

impl PoolInfo {
    /// True when some volume has clusters with fewer healthy copies than it wants.
    pub fn degraded(&self) -> bool {
        self.volumes.iter().any(|v| v.degraded_clusters > 0)
            || self.devices.iter().any(|d| d.failed || d.path.is_none())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub uuid: String,
    /// Where it was opened; `None` for a device the metadata lists but nobody passed.
    pub path: Option<String>,
    pub failed: bool,
    pub bytes: u64,
    pub free_bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeStatus {
    pub name: String,
    pub size: u64,
    pub allocated: u64,
    pub copies: u8,
    pub degraded_clusters: u64,
    pub snapshots: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemirrorProgress {
    pub running: bool,
    pub to_do: u64,
    pub done: u64,
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        let r = Request::Serve {
            volume: "v1".into(),
            socket: "/s".into(),
            queues: 2,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"op":"unserve","volume":"v","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_everything"}"#).is_err());
    }
}
