//! hostel-storage: the vhost-user-blk backend serving storage pool volumes
//! ([`hostel_pool`]) to VMs, one socket per VM disk.
//!
//! - [`request`]: virtio-blk requests parsed from descriptor chains (pure, bounded, fuzzed).
//! - [`backend`]: the `VhostUserBackend` of one disk: config space, one thread per queue,
//!   requests carried out against the pool with a bounded buffer.
//! - [`server`]: a disk's socket, its accept loop and the vetting relay every connection
//!   goes through.
//!
//! QEMU side: `-object memory-backend-memfd,id=mem,size=…,share=on` (sealed, as QEMU's memfd
//! backend is by default) `-chardev socket,id=d0,path=SOCK,reconnect=1
//! -device vhost-user-blk-pci,chardev=d0,num-queues=N`.

pub mod backend;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod request;
pub mod server;

pub use backend::{BlkBackend, Disk};
pub use server::{DiskServer, ServeError};
