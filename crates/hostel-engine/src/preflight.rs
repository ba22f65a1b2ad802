//! Host-side checks made before QEMU starts, so bad input fails with one clear message and
//! nothing is left half-made. QEMU would catch most of these too, but with messages a
//! customer cannot act on, and only after we had created its run directory and sockets.

use crate::error::EngineError;
use crate::spec::{Boot, DiskFormat, DiskSpec, VmSpec};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Oldest QEMU with everything the engine asks for (`microvm,memory-backend=`, `-action`,
/// chardev `fd=` listeners, modern virtio-mmio).
pub const MIN_QEMU: (u32, u32) = (7, 2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

/// Finds the QEMU binary: an explicit path, `$HOSTEL_QEMU`, or `qemu-system-x86_64` on PATH.
pub fn find_qemu(explicit: Option<&Path>) -> Result<PathBuf, EngineError> {
    let wanted = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("HOSTEL_QEMU").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"));
    if wanted.components().count() > 1 {
        return if wanted.is_file() {
            Ok(wanted)
        } else {
            Err(EngineError::QemuMissing(wanted.display().to_string()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(&wanted))
        .find(|p| p.is_file())
        .ok_or_else(|| EngineError::QemuMissing(wanted.display().to_string()))
}

pub fn parse_qemu_version(output: &str) -> Option<QemuVersion> {
    let rest = output.split("version ").nth(1)?;
    let ver = rest.split_whitespace().next()?;
    let mut nums = ver.split('.').map(|n| n.parse::<u32>().ok());
    Some(QemuVersion {
        major: nums.next()??,
        minor: nums.next()??,
        micro: nums.next().flatten().unwrap_or(0),
    })
}

pub fn check_qemu(qemu: &Path) -> Result<QemuVersion, EngineError> {
    let out = Command::new(qemu)
        .arg("--version")
        .output()
        .map_err(|e| EngineError::QemuMissing(format!("{}: {e}", qemu.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_qemu_version(&text).ok_or_else(|| EngineError::QemuUnusable {
        path: qemu.to_path_buf(),
        reason: format!("cannot read its version from {:?}", text.trim()),
    })?;
    if (version.major, version.minor) < MIN_QEMU {
        return Err(EngineError::QemuTooOld {
            path: qemu.to_path_buf(),
            found: format!("{}.{}.{}", version.major, version.minor, version.micro),
            needed: format!("{}.{}", MIN_QEMU.0, MIN_QEMU.1),
        });
    }
    Ok(version)
}

/// What kind of kernel image a file is; the engine boots either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// x86 boot protocol image (`HdrS` at 0x202).
    BzImage,
    /// Uncompressed ELF `vmlinux` (booted through its PVH entry note).
    Elf,
}

pub fn kernel_kind(path: &Path) -> Result<KernelKind, EngineError> {
    let bad = |reason: String| EngineError::BadFile {
        what: "kernel",
        path: path.to_path_buf(),
        reason,
    };
    let mut head = [0u8; 0x206];
    let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    if !f.metadata().map_err(|e| bad(e.to_string()))?.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let n = read_up_to(&mut f, &mut head).map_err(|e| bad(e.to_string()))?;
    if n >= 4 && head[..4] == *b"\x7fELF" {
        return Ok(KernelKind::Elf);
    }
    if n >= 0x206 && head[0x202..0x206] == *b"HdrS" {
        return Ok(KernelKind::BzImage);
    }
    Err(bad(
        "not a Linux kernel (neither a bzImage nor an ELF vmlinux)".into(),
    ))
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn check_readable_file(what: &'static str, path: &Path) -> Result<(), EngineError> {
    let meta = std::fs::metadata(path).map_err(|e| EngineError::BadFile {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !meta.is_file() && !is_block_device(&meta) {
        return Err(EngineError::BadFile {
            what,
            path: path.to_path_buf(),
            reason: "not a file or block device".into(),
        });
    }
    Ok(())
}

fn is_block_device(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_block_device()
}

/// Reads the disk's header to learn (or confirm) its format. A raw disk can hold any bytes,
/// so only "says qcow2 but isn't" and "is qcow2 but said raw" are caught; the latter matters
/// because handing a qcow2 file to a guest as raw lets the guest rewrite its metadata.
pub fn disk_format(disk: &DiskSpec) -> Result<DiskFormat, EngineError> {
    check_readable_file("disk", &disk.path)?;
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(&disk.path)
        .and_then(|mut f| read_up_to(&mut f, &mut magic))
        .map_err(|e| EngineError::BadFile {
            what: "disk",
            path: disk.path.clone(),
            reason: e.to_string(),
        })?;
    let detected = if n == 4 && magic == *b"QFI\xfb" {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    };
    match disk.format {
        Some(declared) if declared != detected => Err(EngineError::BadFile {
            what: "disk",
            path: disk.path.clone(),
            reason: format!(
                "declared {} but the file is {}",
                declared.as_qemu(),
                detected.as_qemu()
            ),
        }),
        _ => Ok(detected),
    }
}

/// MemTotal of the host in MiB.
pub fn host_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Checks everything in the spec that refers to the host, returning the facts launch needs.
pub fn check_spec(spec: &VmSpec) -> Result<Vec<DiskFormat>, EngineError> {
    if let Some(host) = host_memory_mib() {
        if spec.memory_mib() > host {
            return Err(EngineError::HostTooSmall(format!(
                "memory: {} MiB requested but the host has {} MiB",
                spec.memory_mib(),
                host
            )));
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    // Overcommitting vCPUs is normal, but far beyond the host only makes a VM that never boots.
    if spec.vcpus() > cpus.saturating_mul(8) {
        return Err(EngineError::HostTooSmall(format!(
            "vcpus: {} requested but the host has {} CPUs",
            spec.vcpus(),
            cpus
        )));
    }
    if let Boot::Kernel { kernel, initrd, .. } = spec.boot() {
        kernel_kind(kernel)?;
        if let Some(initrd) = initrd {
            check_readable_file("initrd", initrd)?;
        }
    }
    spec.disks().iter().map(disk_format).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_version_lines() {
        let v = parse_qemu_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)\n").unwrap();
        assert_eq!((v.major, v.minor, v.micro), (7, 2, 22));
        let v = parse_qemu_version("QEMU emulator version 10.0.2\n").unwrap();
        assert_eq!((v.major, v.minor), (10, 0));
        assert!(parse_qemu_version("garbage").is_none());
    }

    #[test]
    fn kernel_kind_rejects_text_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notakernel");
        std::fs::write(&p, "hello").unwrap();
        assert!(matches!(kernel_kind(&p), Err(EngineError::BadFile { .. })));
        let p2 = dir.path().join("elf");
        std::fs::write(&p2, b"\x7fELF....").unwrap();
        assert_eq!(kernel_kind(&p2).unwrap(), KernelKind::Elf);
    }

    #[test]
    fn disk_format_detects_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        std::fs::write(&p, b"QFI\xfbrest").unwrap();
        let mut d: DiskSpec = p.to_str().unwrap().parse().unwrap();
        assert_eq!(disk_format(&d).unwrap(), DiskFormat::Qcow2);
        d.format = Some(DiskFormat::Raw);
        assert!(disk_format(&d).is_err());
    }
}
