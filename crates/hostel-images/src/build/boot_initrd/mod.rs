//! hostel's own initramfs for the images it builds, booted instead of the distribution's.
//!
//! The distribution's initramfs (initramfs-tools) starts udev, replays every device event,
//! waits for udev to settle and runs its hook scripts before it mounts the root, and then the
//! real root's udev does the same again. Under TCG, where each process costs tens of
//! milliseconds and all code is translated on first use, that is seconds of every boot spent
//! finding one disk whose name hostel already knows. This initramfs is one static busybox,
//! the image's own modules for the disk (in dependency order) and a shell script that loads
//! them, mounts the root and switches to it: a handful of processes, nothing to decompress.
//! The distribution's initramfs stays in the image for anyone booting it without hostel.

use crate::error::{ImageError, Result};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

/// The file next to the image's disk.
pub const FILE: &str = "initrd-hostel.img";

/// What the root disk needs on hostel's direct-boot machine (microvm: virtio over MMIO).
/// Whatever else the guest uses (its NICs, say) its own udev loads from the root.
pub const ROOT_MODULES: &[&str] = &["virtio_mmio", "virtio_blk"];

/// The host's statically linked busybox (Debian's busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

const INIT: &str = include_str!("init.sh");

/// Writes the initramfs for the kernel whose modules are in `modules_dir`
/// (`<tree>/lib/modules/<version>`, with `modules.dep` from depmod) to `out`.
pub fn write(modules_dir: &Path, busybox: &Path, out: &Path) -> Result<()> {
    let dep_path = modules_dir.join("modules.dep");
    let deps = fs::read_to_string(&dep_path).map_err(ImageError::io(&dep_path))?;
    let builtin_path = modules_dir.join("modules.builtin");
    // A kernel with everything built in has no modules.builtin entries to skip, or no file.
    let builtin = fs::read_to_string(&builtin_path).unwrap_or_default();
    let order = load_order(&deps, &builtin, ROOT_MODULES).map_err(|e| ImageError::Unsupported {
        path: dep_path.clone(),
        reason: e.to_string(),
    })?;
    let busybox_bytes = fs::read(busybox).map_err(ImageError::io(busybox))?;
    if !is_static_elf(&busybox_bytes) {
        return Err(ImageError::Unsupported {
            path: busybox.to_path_buf(),
            reason: "busybox is not a statically linked x86-64 program (install busybox-static)"
                .into(),
        });
    }

    let mut archive = Archive::default();
    for dir in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        archive.dir(dir);
    }
    // The kernel opens /dev/console for init before anything is mounted.
    archive.char_device("dev/console", 0o600, 5, 1);
    archive.file("bin/busybox", 0o755, &busybox_bytes);
    archive.symlink("bin/sh", "busybox");
    archive.file("init", 0o755, INIT.as_bytes());
    let mut list = String::new();
    for module in &order {
        let src = modules_dir.join(&module.path);
        let bytes = fs::read(&src).map_err(ImageError::io(&src))?;
        archive.file(&format!("lib/modules/{}.ko", module.name), 0o644, &bytes);
        list.push_str(&module.name);
        list.push('\n');
    }
    archive.file("modules", 0o644, list.as_bytes());
    let bytes = archive.finish().map_err(ImageError::io(out))?;
    // `out` is in the build's staging directory, which only a finished build renames into
    // the store: a half-written initramfs is never booted.
    fs::write(out, bytes).map_err(ImageError::io(out))
}

/// A module to load: its name (as `insmod` reports it) and its path under the modules dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub path: String,
}

/// Why the root modules cannot be loaded in order by hostel's initramfs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleOrderError {
    #[error("modules depend on each other in a cycle: {0}")]
    Cycle(String),
    #[error("module {0} is neither in modules.dep nor built in")]
    Unknown(String),
    #[error("module {0} is compressed: this initramfs loads plain .ko files only")]
    Compressed(String),
}

/// The modules to load, dependencies first, for `wanted`; built-in ones are left out.
/// `modules.dep` lines read `kernel/a/x.ko: kernel/b/y.ko kernel/c/z.ko`.
pub fn load_order(
    modules_dep: &str,
    modules_builtin: &str,
    wanted: &[&str],
) -> std::result::Result<Vec<Module>, ModuleOrderError> {
    let mut table: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in modules_dep.lines() {
        let Some((path, deps)) = line.split_once(':') else {
            continue;
        };
        let deps = deps.split_whitespace().map(str::to_string).collect();
        table.insert(module_name(path), (path.trim().to_string(), deps));
    }
    let builtin: Vec<String> = modules_builtin.lines().map(module_name).collect();

    let mut order = Vec::new();
    for name in wanted {
        let name = normalize(name);
        if builtin.contains(&name) {
            continue;
        }
        visit(&name, &table, &mut order, &mut Vec::new())?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    table: &HashMap<String, (String, Vec<String>)>,
    order: &mut Vec<Module>,
    path: &mut Vec<String>,
) -> std::result::Result<(), ModuleOrderError> {
    if order.iter().any(|m| m.name == name) {
        return Ok(());
    }
    if path.iter().any(|p| p == name) {
        return Err(ModuleOrderError::Cycle(format!(
            "{} -> {name}",
            path.join(" -> ")
        )));
    }
    let (file, deps) = table
        .get(name)
        .ok_or_else(|| ModuleOrderError::Unknown(name.to_string()))?;
    if !file.ends_with(".ko") {
        return Err(ModuleOrderError::Compressed(file.clone()));
    }
    path.push(name.to_string());
    for dep in deps {
        visit(&module_name(dep), table, order, path)?;
    }
    path.pop();
    order.push(Module {
        name: name.to_string(),
        path: file.clone(),
    });
    Ok(())
}

/// `kernel/drivers/block/virtio-blk.ko.xz` -> `virtio_blk`: the kernel treats '-' and '_'
/// in module names alike.
fn module_name(path: &str) -> String {
    let file = path.trim().rsplit('/').next().unwrap_or_default();
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// An x86-64 ELF executable without a program interpreter (so without a dynamic loader).
fn is_static_elf(b: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // ELF magic, 64-bit, little-endian, machine x86-64 (62).
    if b.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) || u16_at(18) != Some(62) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    let entry = usize::from(phentsize);
    if entry < 4 {
        return false;
    }
    (0..usize::from(phnum)).all(|i| {
        let at = phoff.saturating_add(i.saturating_mul(entry));
        // The whole entry must be there, not just its type.
        b.len() >= at.saturating_add(entry) && u32_at(at).is_some_and(|t| t != PT_INTERP)
    })
}

/// A newc cpio archive (what the kernel unpacks as an initramfs), built in memory:
/// an initramfs is a few MiB.
#[derive(Default)]
struct Archive {
    entries: Vec<(cpio::NewcBuilder, Vec<u8>)>,
}

impl Archive {
    fn builder(&self, name: &str, mode: u32) -> cpio::NewcBuilder {
        let ino = u32::try_from(self.entries.len() + 1).unwrap_or(u32::MAX);
        cpio::NewcBuilder::new(name).ino(ino).mode(mode).nlink(1)
    }

    fn dir(&mut self, name: &str) {
        let b = self.builder(name, libc::S_IFDIR | 0o755);
        self.entries.push((b, Vec::new()));
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        let b = self.builder(name, libc::S_IFREG | perm);
        self.entries.push((b, data.to_vec()));
    }

    fn symlink(&mut self, name: &str, target: &str) {
        let b = self.builder(name, libc::S_IFLNK | 0o777);
        self.entries.push((b, target.as_bytes().to_vec()));
    }

    fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        let b = self
            .builder(name, libc::S_IFCHR | perm)
            .rdev_major(major)
            .rdev_minor(minor);
        self.entries.push((b, Vec::new()));
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        for (builder, data) in self.entries {
            let len = u32::try_from(data.len())
                .map_err(|_| std::io::Error::other("file over 4 GiB in an initramfs"))?;
            let mut w = builder.write(&mut out, len);
            w.write_all(&data)?;
            w.finish()?;
        }
        cpio::newc::trailer(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
