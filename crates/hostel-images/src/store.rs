//! The image store on disk:
//!
//! ```text
//! <store>/images/<name>/{rootfs.raw, vmlinuz, initrd.img, manifest.json}   complete images
//! <store>/tmp/<name>.<pid>.<n>/                                             builds and imports in progress
//! <store>/locks/<name>.lock                                                 one writer per name
//! ```
//!
//! Images appear only by `rename(2)` of a finished staging directory, so a crash or failed
//! build never leaves a half image under `images/`. Images are immutable once committed:
//! VM disks are qcow2 overlays that name the image's file as their backing file.

use crate::error::{ImageError, Result};
use crate::manifest::{ImageBoot, Manifest, MANIFEST_FILE, MANIFEST_VERSION};
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// A committed image: its directory and manifest.
#[derive(Debug, Clone)]
pub struct Image {
    dir: PathBuf,
    manifest: Manifest,
}

impl Image {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The disk file (raw or qcow2, see the manifest).
    pub fn disk_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.disk.file)
    }
    /// Kernel, initrd and guest cmdline hostel boots the image with, when it carries a
    /// kernel: the initrd is hostel's own when the image has one.
    pub fn kernel_boot(&self) -> Option<(PathBuf, PathBuf, &str)> {
        match &self.manifest.boot {
            ImageBoot::Kernel {
                kernel,
                initrd,
                cmdline,
                hostel_initrd,
                ..
            } => {
                let initrd = hostel_initrd.as_ref().unwrap_or(initrd);
                Some((self.dir.join(kernel), self.dir.join(initrd), cmdline))
            }
            ImageBoot::Disk => None,
        }
    }

    /// The image's own (distribution's) initramfs, for booting it the way any QEMU user
    /// would; hostel itself boots [`Image::kernel_boot`]'s.
    pub fn distribution_initrd(&self) -> Option<PathBuf> {
        match &self.manifest.boot {
            ImageBoot::Kernel { initrd, .. } => Some(self.dir.join(initrd)),
            ImageBoot::Disk => None,
        }
    }
}

/// Checks an image name: it becomes a directory name and appears in URLs and CLI output.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidName(name.to_string()))
    }
}

impl ImageStore {
    /// Opens (creating if needed) a store rooted at `root`, and removes staging directories
    /// left by processes that no longer exist.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let store = ImageStore { root: root.into() };
        for dir in [store.images_dir(), store.tmp_dir(), store.locks_dir()] {
            fs::create_dir_all(&dir).map_err(ImageError::io(&dir))?;
        }
        store.sweep_stale_staging();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// The full tool output of the last build of `name` (kept after failures, for debugging).
    pub fn build_log_path(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.log"))
    }

    pub(crate) fn open_build_log(&self, name: &str) -> Option<fs::File> {
        let path = self.build_log_path(name);
        let _ = fs::create_dir_all(path.parent()?);
        fs::File::create(&path)
            .inspect_err(|e| tracing::warn!(path = %path.display(), error = %e, "no build log"))
            .ok()
    }

    fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }
    pub fn image_dir(&self, name: &str) -> PathBuf {
        self.images_dir().join(name)
    }

    /// All complete images, sorted by name. Unreadable manifests are skipped with a warning
    /// so one damaged image does not hide the others.
    pub fn list(&self) -> Result<Vec<Image>> {
        let dir = self.images_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
            let entry = entry.map_err(ImageError::io(&dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            match self.get(&name) {
                Ok(img) => out.push(img),
                Err(e) => tracing::warn!(image = %name, error = %e, "skipping unreadable image"),
            }
        }
        out.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Result<Image> {
        validate_name(name)?;
        let dir = self.image_dir(name);
        let path = dir.join(MANIFEST_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound(name.to_string()))
            }
            Err(e) => return Err(ImageError::Io { path, source: e }),
        };
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| ImageError::BadManifest {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if manifest.version != MANIFEST_VERSION || manifest.name != name {
            return Err(ImageError::BadManifest {
                path,
                reason: format!(
                    "version {} / name {:?} does not match this store (version {MANIFEST_VERSION}, name {name:?})",
                    manifest.version, manifest.name
                ),
            });
        }
        Ok(Image { dir, manifest })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_ok()
    }

    /// Removes an image. The caller (the daemon) must know no VM disk still uses it as a
    /// backing file: the store does not track VM disks.
    pub fn delete(&self, name: &str) -> Result<()> {
        let _lock = self.lock(name)?;
        let img = self.get(name)?;
        // Move aside first so the image disappears atomically, then delete at leisure.
        let trash = self.staging_path(&format!("{name}.deleted"));
        fs::rename(img.dir(), &trash).map_err(ImageError::io(img.dir()))?;
        remove_tree(&trash)?;
        tracing::info!(image = %name, "image deleted");
        Ok(())
    }

    /// Takes the per-name writer lock (blocking while another build/import of the same name
    /// runs). Released on drop.
    pub(crate) fn lock(&self, name: &str) -> Result<NameLock> {
        validate_name(name)?;
        let path = self.locks_dir().join(format!("{name}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io(&path))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(ImageError::Io {
                path,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(NameLock { _file: file })
    }

    fn staging_path(&self, tag: &str) -> PathBuf {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.tmp_dir()
            .join(format!("{tag}.{}.{n}", std::process::id()))
    }

    /// A fresh staging directory for `name`, removed on drop unless committed.
    pub(crate) fn staging(&self, name: &str) -> Result<Staging> {
        let dir = self.staging_path(name);
        fs::create_dir_all(&dir).map_err(ImageError::io(&dir))?;
        Ok(Staging {
            dir,
            store: self.clone(),
            name: name.to_string(),
            committed: false,
        })
    }

    fn sweep_stale_staging(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.rsplit('.').nth(1).and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                tracing::info!(dir = %entry.path().display(), "removing stale staging directory");
                if let Err(e) = remove_tree(&entry.path()) {
                    tracing::warn!(error = %e, "could not remove stale staging directory");
                }
            }
        }
    }
}

pub(crate) struct NameLock {
    _file: fs::File,
}

/// A directory an image is assembled in before it is committed into `images/`.
pub(crate) struct Staging {
    dir: PathBuf,
    store: ImageStore,
    name: String,
    committed: bool,
}

impl Staging {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the manifest and renames the directory into place. With `replace`, an existing
    /// image of the same name is swapped out atomically (`RENAME_EXCHANGE`) and removed.
    pub fn commit(mut self, manifest: &Manifest, replace: bool) -> Result<Image> {
        let path = self.dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(manifest).map_err(|e| ImageError::BadManifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fs::write(&path, text).map_err(ImageError::io(&path))?;
        sync_dir(&self.dir);
        let target = self.store.image_dir(&self.name);
        if target.exists() {
            if !replace {
                return Err(ImageError::Exists {
                    name: self.name.clone(),
                });
            }
            exchange(&self.dir, &target)?;
            // self.dir now holds the old image; Drop removes it.
        } else {
            fs::rename(&self.dir, &target).map_err(ImageError::io(&target))?;
            self.committed = true;
        }
        sync_dir(&self.store.images_dir());
        self.store.get(&self.name)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = remove_tree(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove staging directory");
            }
        }
    }
}

fn exchange(a: &Path, b: &Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())
        .map_err(|_| ImageError::InvalidName(a.display().to_string()))?;
    let cb = CString::new(b.as_os_str().as_bytes())
        .map_err(|_| ImageError::InvalidName(b.display().to_string()))?;
    // SAFETY: both are valid NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(ImageError::Io {
            path: b.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Removes a directory tree, refusing if anything is mounted inside it: a leftover bind mount
/// of /dev or /proc in a build root must never turn into deleting the host's.
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let canon = dir.canonicalize().map_err(ImageError::io(dir))?;
    if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
        for line in mounts.lines() {
            if let Some(mp) = line.split(' ').nth(4) {
                if Path::new(mp).starts_with(&canon) {
                    return Err(ImageError::Busy {
                        name: dir.display().to_string(),
                        why: format!("{mp} is still mounted inside it"),
                    });
                }
            }
        }
    }
    fs::remove_dir_all(&canon).map_err(ImageError::io(&canon))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_restricted_to_safe_directory_names() {
        for ok in ["debian-12", "debian-12-web", "a", "x.y_z"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "a/b", "-x", "Debian", "a..b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
