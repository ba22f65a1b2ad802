//! System containers for VPSs: the OCI bundle (`spec`), the runtime adapter (`runc`), and
//! what the host prepares around a container and keeps across its restarts — a user and a
//! network namespace of its own (`ns`), a root filesystem whose writable layer has a size
//! limit (`rootfs`), and a TAP NIC the switch serves (`nic`). `Vps` (`vps.rs`) puts them
//! together in the order that works and undoes them in the reverse one.
//!
//! Everything here blocks (it runs `runc`, `mount`, `mkfs`): callers on an async runtime
//! run it on a blocking thread. Nothing here forks a child that runs Rust code: `runc` and
//! the helper processes are separate programs, so the caller's threads do not matter.

pub mod cmd;
pub mod error;
pub mod image;
pub mod nic;
pub mod ns;
pub mod rootfs;
pub mod runc;
pub mod seccomp;
pub mod spec;
pub mod vps;

pub use error::VpsError;
pub use spec::{NicSpec, Resources, VpsSpec};
pub use vps::{Vps, VpsPaths, VpsStatus};

/// The size of each VPS's UID and GID range: root inside is `uid_base` outside, and the
/// whole 16-bit id space of a distribution fits.
pub const ID_RANGE: u32 = 65536;
/// The first host id handed to VPSs; far above any host account or `subuid` range a
/// distribution allocates by default.
pub const FIRST_ID: u32 = 1 << 24;
/// How many ranges fit below 2^32 - 1 (the last id is reserved as "no id").
pub const MAX_SLOTS: u32 = (u32::MAX - FIRST_ID) / ID_RANGE;

/// The host's first id of slot `slot`, if the slot exists.
pub fn uid_base(slot: u32) -> Option<u32> {
    (slot < MAX_SLOTS).then(|| FIRST_ID + slot * ID_RANGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_never_overlap_and_stay_below_the_top() {
        assert_eq!(uid_base(0), Some(FIRST_ID));
        assert_eq!(uid_base(1), Some(FIRST_ID + ID_RANGE));
        let last = uid_base(MAX_SLOTS - 1).unwrap();
        assert!(u64::from(last) + u64::from(ID_RANGE) <= u64::from(u32::MAX));
        assert_eq!(uid_base(MAX_SLOTS), None);
    }
}
