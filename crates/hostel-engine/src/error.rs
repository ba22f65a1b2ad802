use crate::accel::KvmUnavailable;
use crate::qmp::QmpError;
use crate::spec::SpecError;
use std::path::PathBuf;

/// Everything that can stop a VM from being made or controlled. Each variant names the
/// thing at fault, so the message alone tells the user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Kvm(#[from] KvmUnavailable),
    #[error("QEMU not found: {0} (install qemu-system-x86 or set HOSTEL_QEMU)")]
    QemuMissing(String),
    #[error("QEMU at {path} is too old: version {found}, hostel needs {needed} or newer")]
    QemuTooOld {
        path: PathBuf,
        found: String,
        needed: String,
    },
    #[error("QEMU at {path} is not usable: {reason}")]
    QemuUnusable { path: PathBuf, reason: String },
    #[error("{what} {path}: {reason}")]
    BadFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the host cannot hold this VM: {0}")]
    HostTooSmall(String),
    #[error("cannot open TAP device {name:?}: {reason}")]
    Tap { name: String, reason: String },
    #[error("disk {0} is in use by another VM")]
    DiskInUse(PathBuf),
    #[error("run directory {path}: {source}")]
    RunDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start QEMU: {0}")]
    Spawn(std::io::Error),
    #[error("QEMU refused the VM: {0}")]
    QemuFailed(String),
    #[error("no VM is running in {0}")]
    NotRunning(PathBuf),
    #[error("QMP: {0}")]
    Qmp(#[from] QmpError),
}
