//! The seed disk: a vfat filesystem labelled CIDATA (cloud-init matches the label case-
//! insensitively), made with mkfs.vfat and filled with mcopy, so no mount and no root needed.

use super::SeedFiles;
use crate::cmd;
use crate::error::{ImageError, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Smallest seed; FAT12 needs a few clusters of overhead even for tiny files.
const MIN_SIZE_KIB: u64 = 1024;

pub(super) fn write_vfat(files: &SeedFiles, path: &Path) -> Result<()> {
    let mut entries: Vec<(&str, &str)> = vec![
        ("meta-data", &files.meta_data),
        ("user-data", &files.user_data),
    ];
    if let Some(n) = &files.network_config {
        entries.push(("network-config", n));
    }
    let content: u64 = entries.iter().map(|(_, c)| c.len() as u64).sum();
    let size_kib = (MIN_SIZE_KIB + content * 2 / 1024).next_multiple_of(64);

    let tmp = sibling(path, ".tmp");
    let staging = sibling(path, ".d");
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        fs::create_dir_all(&staging).map_err(ImageError::io(&staging))?;
        cmd::output(
            Command::new("mkfs.vfat")
                .args(["-n", "CIDATA", "-C"])
                .arg(&tmp)
                .arg(size_kib.to_string()),
        )?;
        for (name, text) in &entries {
            let f = staging.join(name);
            fs::write(&f, text).map_err(ImageError::io(&f))?;
            cmd::output(
                Command::new("mcopy")
                    .env("MTOOLS_SKIP_CHECK", "1")
                    .arg("-o")
                    .arg("-i")
                    .arg(&tmp)
                    .arg(&f)
                    .arg(format!("::{name}")),
            )?;
        }
        fs::rename(&tmp, path).map_err(ImageError::io(path))
    })();
    let _ = fs::remove_dir_all(&staging);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
