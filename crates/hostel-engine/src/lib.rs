//! hostel's VM engine: a validated [`VmSpec`] becomes a QEMU process that hostel controls over
//! QMP. KVM where the host has hardware virtualization, TCG elsewhere.
//!
//! Module map:
//! - [`spec`]: the VM specification and its validation (what a VM is made of).
//! - [`accel`]: KVM/TCG detection and choice.
//! - [`preflight`]: host-side checks before launch (QEMU version, kernel, disks, memory).
//! - [`tap`]: opening TAP devices to hand to QEMU.
//! - [`qemu_args`]: the QEMU command line for a spec.
//! - [`qmp`]: the QMP client.
//! - [`agent`]: the guest agent's client (QGA over the VM's virtio-serial port).
//! - [`live_disk`]: growing a running VM's disk (a root disk, a pre-booted VM's seed).
//! - [`run_dir`]: where a VM's sockets, pid file and logs live.
//! - [`scan`]: finding (and killing) the QEMUs of a run root by command line, pid file or not.
//! - [`vm`]: launching, adopting, controlling and watching a VM.
//! - [`exit`]: why a VM ended.
//! - [`tsc`]: the host TSC rate TCG guests are told instead of calibrating.

pub mod accel;
pub mod agent;
pub mod error;
pub mod exit;
pub mod live_disk;
pub mod preflight;
pub mod qemu_args;
pub mod qmp;
pub mod run_dir;
pub mod scan;
pub mod spec;
pub mod tap;
pub mod tsc;
pub mod vm;

pub use accel::{Accel, AccelDecision};
pub use error::EngineError;
pub use exit::ExitReason;
pub use qmp::RunState;
pub use run_dir::RunDir;
pub use scan::{find_qemus, kill_found, FoundQemu, QemuIdentity};
pub use spec::{
    AccelChoice, Boot, DiskFormat, DiskSpec, MacAddr, NicBackend, NicSpec, VmSpec, VmSpecInput,
};
pub use vm::{LaunchOptions, Vm};
