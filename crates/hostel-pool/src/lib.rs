//! hostel's storage pool: the host's devices (block devices, or files on small hosts and in
//! tests) pooled into thin-provisioned, mirrored, checksummed volumes with copy-on-write
//! snapshots and clones.
//!
//! - `format.rs`: the on-disk layout (superblock, metadata slots, data clusters).
//! - `meta.rs`: the metadata (devices, extents, volume maps) and its invariants.
//! - `pool.rs`: creating and opening a pool, devices, the metadata commit.
//! - `log.rs`: the metadata log (change records between whole-state checkpoints).
//! - `io.rs`: the data path (verified reads, thin and copy-on-write writes, discard, scrub).
//! - `remirror.rs`: re-mirroring in the background after a device fails, with progress.
//! - `volume.rs`: volumes, snapshots, clones, restores.
//! - `device.rs`: the device trait and its file/block-device implementation (O_DIRECT).
//! - `uring.rs`: device I/O batches through a per-thread io_uring.
//! - `backup.rs`: full and incremental backups of snapshots, and their restore.
//! - `alloc.rs`: per-device free-cluster bitmaps.

mod alloc;
mod backup;
pub mod device;
mod error;
pub mod format;
mod io;
mod log;
mod meta;
mod pool;
mod remirror;
mod uring;
mod volume;

pub use backup::BackupInfo;
pub use device::{BlockDevice, FileDevice};
pub use error::{PoolError, Result};
pub use format::{BLOCK_SIZE, CLUSTER_SIZE};
pub use io::ScrubReport;
pub use pool::{CommitStats, CreateOptions, DeviceInfo, Pool};
pub use remirror::{RemirrorStatus, RemirrorWorker};
pub use volume::{check_name, VolumeInfo, MAX_VOLUME_BYTES};
