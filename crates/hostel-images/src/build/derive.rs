//! A derived image: a sparse copy of the parent's filesystem, loop-mounted in a private mount
//! namespace, packages installed in a chroot of it, checked with e2fsck. The kernel and
//! initramfs are the parent's (hard links: images are immutable).

use super::chroot::{self, shell_quote, valid_package, APT_GET};
use super::BuildOptions;
use crate::cmd;
use crate::error::{ImageError, Result};
use crate::manifest::{DiskLayout, ImageBoot, Manifest, Origin, MANIFEST_VERSION};
use crate::progress::{Phase, Reporter};
use crate::recipe::DerivedRecipe;
use crate::store::{Image, ImageStore};
use std::fs;
use std::path::Path;
use std::process::Command;

pub(super) fn build(
    store: &ImageStore,
    recipe: &DerivedRecipe,
    parent: &Image,
    key: &str,
    opts: &BuildOptions,
    report: &Reporter<'_>,
) -> Result<Image> {
    if let Some(bad) = recipe.packages.iter().find(|p| !valid_package(p)) {
        return Err(ImageError::InvalidRecipe(format!(
            "{bad:?} is not a Debian package name"
        )));
    }
    let pm = parent.manifest();
    if pm.disk.layout != DiskLayout::Ext4 || pm.disk.format != hostel_engine::DiskFormat::Raw {
        return Err(ImageError::Unsupported {
            path: parent.disk_path(),
            reason: "only raw ext4 images (built ones) can be derived from".into(),
        });
    }
    let staging = store.staging(&recipe.name)?;
    report.start(Phase::Copy, format!("copying {}", parent.name()));
    let raw = staging.dir().join(&pm.disk.file);
    cmd::output(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(parent.disk_path())
            .arg(&raw),
    )?;
    if let ImageBoot::Kernel {
        kernel,
        initrd,
        hostel_initrd,
        ..
    } = &pm.boot
    {
        for f in [Some(kernel), Some(initrd), hostel_initrd.as_ref()]
            .into_iter()
            .flatten()
        {
            link_or_copy(&parent.dir().join(f), &staging.dir().join(f))?;
        }
    }

    report.start(Phase::Packages, "installing packages");
    let mnt = staging.dir().join("mnt");
    fs::create_dir_all(&mnt).map_err(ImageError::io(&mnt))?;
    // Runs in the namespace before the chroot: the loop device is freed (autoclear) when
    // the namespace's last process exits and the mount goes away with it.
    let prelude = format!(
        "mount -o loop {} \"$ROOT\"",
        shell_quote(&raw.to_string_lossy())
    );
    let packages: Vec<String> = recipe.packages.iter().map(|p| shell_quote(p)).collect();
    let script = format!(
        "{APT_GET} update\n{APT_GET} install {}\napt-get clean\nrm -rf /var/lib/apt/lists/* /var/log/apt/*\n",
        packages.join(" ")
    );
    chroot::run(&mnt, &prelude, &script, report, &opts.cancel)?;
    fs::remove_dir(&mnt).map_err(ImageError::io(&mnt))?;

    report.start(Phase::Filesystem, "checking the filesystem");
    // -p repairs only what is safe; anything else fails the build.
    cmd::output(Command::new("e2fsck").args(["-f", "-p"]).arg(&raw))?;

    report.start(Phase::Commit, "committing");
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        name: recipe.name.clone(),
        key: key.to_string(),
        origin: Origin::Derived {
            parent: parent.name().to_string(),
            parent_key: pm.key.clone(),
            packages: recipe.packages.clone(),
        },
        disk: pm.disk.clone(),
        boot: pm.boot.clone(),
        created_unix: super::now_unix(),
    };
    staging.commit(&manifest, opts.replace)
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map_err(ImageError::io(from))?;
    Ok(())
}
