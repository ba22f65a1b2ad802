//! The pool's metadata: every device, every allocated extent and every volume's map, kept in
//! memory and committed as one checksummed, generation-numbered record (see `commit.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::format::BLOCKS_PER_CLUSTER;

/// Index into `Meta::devices`; stable for the pool's life (a removed device leaves a hole).
pub type DevIndex = u16;
pub type ExtentId = u64;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    pub devices: Vec<DevMeta>,
    pub next_extent: ExtentId,
    pub extents: BTreeMap<ExtentId, Extent>,
    pub volumes: BTreeMap<String, Volume>,
    /// True while a process has the pool open: a commit found with it set means that process
    /// did not close the pool (a crash), so writes after its last flush may be torn.
    pub open: bool,
    /// Set by such a crash until a scrub has settled every block (see `Pool::scrub`).
    pub needs_scrub: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevMeta {
    pub uuid: [u8; 16],
    pub clusters: u64,
    /// An I/O error was seen: no copy on it is read or written again until it is replaced.
    pub failed: bool,
}

/// One logical cluster's storage: a copy on each of up to two devices.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Extent {
    pub copies: Vec<(DevIndex, u64)>,
    /// Copies wanted (the volume's setting when allocated): more than `copies` holds after an
    /// allocation on a degraded pool, until a scrub re-mirrors it.
    pub want: u8,
    /// Volume and snapshot maps pointing here; shared extents are copied before a write.
    pub refs: u32,
    /// CRC-32C of each 4 KiB block, as last written.
    pub crc: [u32; BLOCKS_PER_CLUSTER],
    /// `refs` at the last commit (0: allocated since). An extent is written in place only if
    /// it is unshared now *and* was in the committed metadata, so a crash can never bring back
    /// a sharer that sees another volume's unflushed write.
    #[serde(skip)]
    pub committed_refs: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Volume {
    pub size: u64,
    pub copies: u8,
    /// Logical cluster → extent; absent clusters read as zeros.
    pub map: BTreeMap<u64, ExtentId>,
    pub snapshots: BTreeMap<String, Snapshot>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// Names this point in time across pools: an incremental backup says which snapshot it
    /// extends, and a restore finds it by this id (names may be reused).
    pub id: [u8; 16],
    pub size: u64,
    pub map: BTreeMap<u64, ExtentId>,
}
