//! Importing a user's disk file. The file is copied into the store first and every check runs
//! on the copy, so it cannot change between check and use. Only raw and qcow2 are accepted;
//! qcow2 must pass `qemu-img check` and must not reference other files (a backing file or
//! external data file in an uploaded qcow2 would let a tenant read host files); raw must
//! start with an ext4 superblock or an MBR/GPT partition table and be long enough for it.

mod probe;

pub use probe::{probe_raw, RawContent};

use crate::cmd;
use crate::error::{ImageError, Result};
use crate::manifest::{DiskInfo, DiskLayout, ImageBoot, Manifest, Origin, MANIFEST_VERSION};
use crate::store::{Image, ImageStore};
use hostel_engine::DiskFormat;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub replace: bool,
    /// A kernel and initramfs for direct boot of a bare-filesystem image (copied in).
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Guest cmdline for direct boot; defaults to `root=/dev/vda rw`.
    pub cmdline: Option<String>,
}

/// What `qemu-img` and the signature checks learned about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub format: DiskFormat,
    pub virtual_size: u64,
    pub layout: DiskLayout,
}

impl ImageStore {
    /// Imports `file` (raw or qcow2) as image `name`.
    pub fn import(&self, name: &str, file: &Path, opts: &ImportOptions) -> Result<Image> {
        let _lock = self.lock(name)?;
        if self.contains(name) && !opts.replace {
            return Err(ImageError::Exists {
                name: name.to_string(),
            });
        }
        let meta = fs::metadata(file).map_err(ImageError::io(file))?;
        if !meta.is_file() {
            return Err(ImageError::Unsupported {
                path: file.to_path_buf(),
                reason: "not a regular file".into(),
            });
        }
        let staging = self.staging(name)?;
        let incoming = staging.dir().join("incoming");
        cmd::output(
            Command::new("cp")
                .arg("--sparse=always")
                .arg("--")
                .arg(file)
                .arg(&incoming),
        )?;
        let found = inspect(&incoming).map_err(|e| rename_path(e, &incoming, file))?;
        let disk_file = match found.format {
            DiskFormat::Raw => "rootfs.raw",
            DiskFormat::Qcow2 => "rootfs.qcow2",
        };
        let dest = staging.dir().join(disk_file);
        fs::rename(&incoming, &dest).map_err(ImageError::io(&dest))?;

        let boot = match (&opts.kernel, &opts.initrd) {
            (Some(k), Some(i)) => {
                for (src, to) in [(k, "vmlinuz"), (i, "initrd.img")] {
                    fs::copy(src, staging.dir().join(to)).map_err(ImageError::io(src))?;
                }
                ImageBoot::Kernel {
                    kernel: "vmlinuz".into(),
                    initrd: "initrd.img".into(),
                    cmdline: opts
                        .cmdline
                        .clone()
                        .unwrap_or_else(|| "root=/dev/vda rw".into()),
                    kernel_version: String::new(),
                    hostel_initrd: None,
                }
            }
            (None, None) => ImageBoot::Disk,
            _ => {
                return Err(ImageError::InvalidRecipe(
                    "a kernel and an initrd go together".into(),
                ))
            }
        };
        let created_unix = crate::build::now_unix();
        let key = crate::recipe::sha256_hex(
            format!("import\n{}\n{}\n{created_unix}", file.display(), meta.len()).as_bytes(),
        );
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            name: name.to_string(),
            key,
            origin: Origin::Imported {
                source: file.display().to_string(),
            },
            disk: DiskInfo {
                file: disk_file.into(),
                format: found.format,
                virtual_size: found.virtual_size,
                layout: found.layout,
            },
            boot,
            created_unix,
        };
        let image = staging.commit(&manifest, opts.replace)?;
        tracing::info!(image = %name, source = %file.display(), format = ?found.format, "image imported");
        Ok(image)
    }
}

/// Inspects a disk file: format via `qemu-img info`, integrity via `qemu-img check` (qcow2)
/// or the content's own size fields (raw).
pub fn inspect(path: &Path) -> Result<Inspection> {
    let corrupt = |reason: String| ImageError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let info = cmd::output(
        Command::new("qemu-img")
            .args(["info", "--output=json", "--"])
            .arg(path),
    )
    .map_err(|e| match e {
        ImageError::CommandFailed { output, .. } if output.contains("too short") => {
            ImageError::Truncated {
                path: path.to_path_buf(),
                reason: output,
            }
        }
        ImageError::CommandFailed { output, .. } => corrupt(output),
        other => other,
    })?;
    let info: Value =
        serde_json::from_str(&info).map_err(|e| corrupt(format!("qemu-img info: {e}")))?;
    let format = info["format"].as_str().unwrap_or("");
    let virtual_size = info["virtual-size"].as_u64().unwrap_or(0);
    let file_len = fs::metadata(path).map_err(ImageError::io(path))?.len();
    match format {
        "raw" => {
            let layout = probe_raw(path, file_len)?.layout();
            Ok(Inspection {
                format: DiskFormat::Raw,
                virtual_size: file_len,
                layout,
            })
        }
        "qcow2" => {
            if let Some(b) = info.get("backing-filename").and_then(Value::as_str) {
                return Err(ImageError::Unsupported {
                    path: path.to_path_buf(),
                    reason: format!(
                        "it has a backing file ({b}); import a standalone image (qemu-img convert)"
                    ),
                });
            }
            if info["format-specific"]["data"]["data-file"].is_string() {
                return Err(ImageError::Unsupported {
                    path: path.to_path_buf(),
                    reason: "it uses an external data file".into(),
                });
            }
            check_qcow2(path, file_len)?;
            Ok(Inspection {
                format: DiskFormat::Qcow2,
                virtual_size,
                layout: qcow2_layout(path, virtual_size)?,
            })
        }
        other => Err(ImageError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("format {other:?} (only raw and qcow2 are accepted)"),
        }),
    }
}

/// What a (checked) qcow2 file holds, from the guest-visible first sectors: a bare ext4
/// filesystem needs a kernel to boot, a partitioned disk boots its own loader. Content that is
/// neither stays `Unknown` (a data disk, another filesystem) rather than being refused.
fn qcow2_layout(path: &Path, virtual_size: u64) -> Result<DiskLayout> {
    let mut head_path = path.as_os_str().to_owned();
    head_path.push(".head");
    let head_path = PathBuf::from(head_path);
    let _ = fs::remove_file(&head_path);
    let mut if_arg = std::ffi::OsString::from("if=");
    if_arg.push(path);
    let mut of_arg = std::ffi::OsString::from("of=");
    of_arg.push(&head_path);
    let read = cmd::output(
        Command::new("qemu-img")
            .args(["dd", "-f", "qcow2", "-O", "raw"])
            .arg(format!("bs={}", probe::HEAD))
            .arg("count=1")
            .arg(if_arg)
            .arg(of_arg),
    )
    .and_then(|_| fs::read(&head_path).map_err(ImageError::io(&head_path)));
    let _ = fs::remove_file(&head_path);
    let head = read.map_err(|e| match e {
        ImageError::CommandFailed { output, .. } => ImageError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("its first sectors cannot be read: {output}"),
        },
        other => other,
    })?;
    let Some(content) = probe::identify(&head) else {
        return Ok(DiskLayout::Unknown);
    };
    probe::check_fits(path, content, virtual_size, "the qcow2 disk has")?;
    Ok(content.layout())
}

/// `qemu-img check`: exit 0 clean, 3 only leaked clusters (harmless), 2 corruption, 1 the
/// check itself failed (typically unreadable metadata past the end of a truncated file).
fn check_qcow2(path: &Path, file_len: u64) -> Result<()> {
    let out = Command::new("qemu-img")
        .args(["check", "-f", "qcow2", "--output=json", "--"])
        .arg(path)
        .output()
        .map_err(|e| ImageError::ToolMissing {
            program: "qemu-img".into(),
            hint: "apt-get install qemu-utils",
            source: e,
        })?;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let end = report["image-end-offset"].as_u64().unwrap_or(0);
    let code = out.status.code().unwrap_or(-1);
    // One line per bad cluster can be thousands of lines: the first few say enough.
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    if end > file_len {
        return Err(ImageError::Truncated {
            path: path.to_path_buf(),
            reason: format!("qcow2 data ends at byte {end} but the file has {file_len}"),
        });
    }
    match code {
        0 | 3 => Ok(()),
        2 => Err(ImageError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "qemu-img check found {} corruption(s) {stderr}",
                report["corruptions"].as_u64().unwrap_or(0)
            ),
        }),
        _ => {
            let reason = if stderr.is_empty() {
                format!("qemu-img check could not complete (exit {code})")
            } else {
                stderr
            };
            let truncated = reason.contains("end of file") || reason.contains("beyond");
            if truncated {
                Err(ImageError::Truncated {
                    path: path.to_path_buf(),
                    reason,
                })
            } else {
                Err(ImageError::Corrupt {
                    path: path.to_path_buf(),
                    reason,
                })
            }
        }
    }
}

/// Errors name the user's file, not the staging copy (also inside the tools' messages).
fn rename_path(e: ImageError, staged: &Path, user_file: &Path) -> ImageError {
    let p = user_file.to_path_buf();
    let fix = |reason: String| {
        reason.replace(
            &staged.display().to_string(),
            &user_file.display().to_string(),
        )
    };
    match e {
        ImageError::Corrupt { reason, .. } => ImageError::Corrupt {
            path: p,
            reason: fix(reason),
        },
        ImageError::Truncated { reason, .. } => ImageError::Truncated {
            path: p,
            reason: fix(reason),
        },
        ImageError::Unsupported { reason, .. } => ImageError::Unsupported {
            path: p,
            reason: fix(reason),
        },
        other => other,
    }
}
