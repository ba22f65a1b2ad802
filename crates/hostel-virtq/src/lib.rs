//! hostel-virtq: the device side of split virtqueues over guest memory shared through
//! vhost-user, and a guest-side driver to test devices with.
//!
//! - [`MemMap`]: guest memory as a handful of (guest address, length, host address) regions,
//!   resolved once per batch, optionally with a [`DirtyLog`] the device's writes mark.
//! - [`Ring`]: one queue's descriptor table, avail and used rings at host addresses.
//! - [`SegList`], [`Seg`]: a descriptor chain gathered with bounded work ([`MAX_CHAIN_DESCS`]
//!   descriptors read, [`MAX_SEGS`] segments) into host-address segments.
//! - [`DirtyLog`]: the bitmap of guest pages written by the device (`VHOST_F_LOG_ALL`).
//! - [`driver`]: the guest side of a split ring, for tests and benchmarks.
//!
//! # Soundness
//! Everything a guest wrote is untrusted. The host address of a guest buffer exists only
//! inside a [`Seg`], which borrows the [`MemMap`] it was resolved from (its lifetime
//! parameter) and so cannot outlive the mapping; its fields are private and the only way to
//! build one from a raw address is the `unsafe` [`Seg::new`]. Safe code therefore cannot
//! forge a host address, and every read or write of guest memory goes through a method that
//! stays inside its segment.
//!
//! The guest may change its memory at any time, including while the device copies from
//! it: that only changes the bytes read, never where they are read from, because every
//! address and length is read from guest memory once and then checked.

pub mod chain;
pub mod driver;
pub mod error;
pub mod log;
pub mod memory;
pub mod ring;
pub mod testing;

pub use chain::{Seg, SegList, MAX_CHAIN_DESCS, MAX_SEGS};
pub use error::{Error, LogError};
pub use log::DirtyLog;
pub use memory::MemMap;
pub use ring::Ring;
