//! Malware and attack signatures on the storage pool (issue 18): the scanning engine.
//!
//! - [`sigs`]: ClamAV `.hdb`/`.hsb`/`.ndb` and YARA sources; refusals by name with the reason.
//! - [`matcher`]: body signatures, an Aho-Corasick prefilter over literal anchors, bounded
//!   verification.
//! - [`engine`]: the compiled set; whole-file scans and the streaming matcher.
//! - [`db`]: the operator's directory, reloaded by a generation swap.
//! - [`fs`]: the file-level tier, ext4 read in userspace from any [`fs::BlockSource`].
//! - [`compare`]: Debian's `clamscan` and `yara` as references (tests, `make bench-scan`).
//! - [`inline`]: the inline tier's bounded queue, per-tenant budgets, dirty ranges.

pub mod compare;
pub mod db;
pub mod engine;
pub mod fs;
pub mod fuzzing;
pub mod hashes;
pub mod inline;
pub mod matcher;
pub mod sigs;
mod verify;
pub mod yara;

pub use engine::{Engine, FileLimits, FileScan, Finding, SigKind, StreamMatcher};
