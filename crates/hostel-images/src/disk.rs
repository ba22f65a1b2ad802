//! VM disks: copy-on-write qcow2 overlays of an image, and the engine spec that boots one.
//! An overlay costs nothing until the guest writes, and can be bigger than the image: the
//! guest's cloud-init (resize_rootfs) or systemd (x-systemd.growfs) grows the ext4 root
//! filesystem to the disk on first boot.

use crate::cmd;
use crate::error::{ImageError, Result};
use crate::manifest::DiskLayout;
use crate::store::Image;
use hostel_engine::{DiskFormat, DiskSpec, VmSpecInput};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

impl Image {
    /// Creates `dest`, a qcow2 disk backed by this image, of `size_bytes` (rounded up to
    /// MiB; `None` keeps the image's size). Refuses to overwrite an existing file: it would be
    /// some VM's data.
    pub fn create_vm_disk(&self, dest: &Path, size_bytes: Option<u64>) -> Result<PathBuf> {
        let minimum = self.manifest().disk.virtual_size;
        let size = size_bytes.unwrap_or(minimum).next_multiple_of(MIB);
        if size < minimum {
            return Err(ImageError::DiskTooSmall {
                requested: size,
                minimum,
            });
        }
        if dest.exists() {
            return Err(ImageError::Io {
                path: dest.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "refusing to overwrite an existing disk",
                ),
            });
        }
        // An absolute backing path: the overlay must not depend on the daemon's cwd.
        let backing = self
            .disk_path()
            .canonicalize()
            .map_err(ImageError::io(self.disk_path()))?;
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let _ = fs::remove_file(&tmp);
        let created = cmd::output(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg("-b")
                .arg(&backing)
                .args(["-F", self.manifest().disk.format.as_qemu()])
                .arg(&tmp)
                .arg(size.to_string()),
        )
        .and_then(|_| fs::rename(&tmp, dest).map_err(ImageError::io(dest)));
        if created.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        created?;
        tracing::info!(image = %self.name(), disk = %dest.display(), size, "VM disk created");
        Ok(dest.to_path_buf())
    }

    /// An engine spec input that boots this image: direct kernel boot with the root disk
    /// first (/dev/vda) and the seed second (/dev/vdb, read-only) for built images; firmware
    /// boot for imported whole-disk images. Name, CPUs, memory and NICs are the caller's.
    pub fn boot_input(&self, root_disk: &Path, seed: Option<&Path>) -> Result<VmSpecInput> {
        let mut disks = vec![DiskSpec {
            path: root_disk.to_path_buf(),
            format: Some(DiskFormat::Qcow2),
            readonly: false,
        }];
        if let Some(seed) = seed {
            disks.push(DiskSpec {
                path: seed.to_path_buf(),
                format: Some(DiskFormat::Raw),
                readonly: true,
            });
        }
        let mut input = VmSpecInput {
            disks,
            ..Default::default()
        };
        match self.kernel_boot() {
            Some((kernel, initrd, cmdline)) => {
                input.kernel = Some(kernel);
                input.initrd = Some(initrd);
                input.cmdline = Some(cmdline.to_string());
            }
            None if self.manifest().disk.layout == DiskLayout::Ext4 => {
                return Err(ImageError::Unsupported {
                    path: self.disk_path(),
                    reason:
                        "a bare filesystem without a kernel cannot boot (import it with a kernel)"
                            .into(),
                })
            }
            None => input.boot_from_disk = true,
        }
        Ok(input)
    }
}
