//! What can go wrong in the pool. Request errors (a guest's out-of-range offset) fail that
//! request only; nothing in here is a panic.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("device {path}: {source}")]
    DeviceIo {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("device {path} is too small: {len} bytes, at least {min} needed")]
    DeviceTooSmall { path: String, len: u64, min: u64 },
    #[error("device {path} has no valid hostel superblock")]
    NoSuperblock { path: String },
    #[error("device {path} belongs to pool {found}, not {expected}")]
    ForeignDevice {
        path: String,
        found: uuid::Uuid,
        expected: uuid::Uuid,
    },
    #[error("device {path} is listed twice (device {uuid})")]
    DuplicateDevice { path: String, uuid: uuid::Uuid },
    #[error("no valid metadata commit on any device of pool {pool}")]
    NoMetadata { pool: uuid::Uuid },
    #[error("metadata of {need} bytes does not fit the {have}-byte metadata slot")]
    MetadataFull { need: usize, have: u64 },
    #[error("metadata is inconsistent: {0}")]
    CorruptMetadata(String),
    #[error("metadata commit failed on every device")]
    CommitFailed,
    #[error("pool needs at least one device")]
    NoDevices,
    #[error("out of space: no free cluster on {wanted} distinct healthy device(s)")]
    OutOfSpace { wanted: usize },
    #[error("volume {0:?} not found")]
    NoSuchVolume(String),
    #[error("volume {0:?} already exists")]
    VolumeExists(String),
    #[error("snapshot {snapshot:?} of volume {volume:?} not found")]
    NoSuchSnapshot { volume: String, snapshot: String },
    #[error("snapshot {snapshot:?} of volume {volume:?} already exists")]
    SnapshotExists { volume: String, snapshot: String },
    #[error("name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
    #[error("size {size}: {why}")]
    BadSize { size: u64, why: &'static str },
    #[error("copies {copies}: must be 1 or 2 and at most the pool's {devices} device(s)")]
    BadCopies { copies: u8, devices: usize },
    #[error("request at offset {offset} of {len} bytes is outside the volume's {size} bytes")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("cluster {cluster} of volume {volume:?}: no copy is readable with a valid checksum")]
    Unreadable { volume: String, cluster: u64 },
    #[error("backup refused: {0}")]
    BadBackup(String),
    #[error("backup I/O: {0}")]
    BackupIo(#[source] io::Error),
    #[error("incremental backup extends snapshot {id}, which no volume of this pool has (restore its base first)")]
    NoBaseSnapshot { id: uuid::Uuid },
    #[error("volume {0:?}: every copy of the write failed")]
    WriteFailed(String),
}

pub type Result<T> = std::result::Result<T, PoolError>;
