//! A Debian base image: debootstrap minbase, the recipe's packages installed with apt in a
//! chroot, hostel's guest configuration, then the tree packed into a sparse ext4 image with
//! the kernel and initramfs extracted next to it for direct boot.

use super::boot_initrd;
use super::chroot::{self, shell_quote, valid_package, APT_GET};
use super::guest_files::guest_files;
use super::BuildOptions;
use crate::cmd;
use crate::error::{ImageError, Result};
use crate::manifest::{DiskInfo, DiskLayout, ImageBoot, Manifest, Origin, MANIFEST_VERSION};
use crate::progress::{Phase, Reporter};
use crate::recipe::DebianRecipe;
use crate::store::{remove_tree, Image, ImageStore};
use hostel_engine::DiskFormat;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Lines debootstrap prints per package (retrieve, validate, extract, unpack, configure) times
/// minbase's ~90 packages: the denominator of its progress.
const DEBOOTSTRAP_EXPECTED_LINES: f64 = 420.0;

pub(super) fn build(
    store: &ImageStore,
    recipe: &DebianRecipe,
    key: &str,
    opts: &BuildOptions,
    report: &Reporter<'_>,
) -> Result<Image> {
    if let Some(bad) = recipe.packages.iter().find(|p| !valid_package(p)) {
        return Err(ImageError::InvalidRecipe(format!(
            "{bad:?} is not a Debian package name"
        )));
    }
    let staging = store.staging(&recipe.name)?;
    let root = staging.dir().join("root");

    report.start(Phase::Bootstrap, format!("debootstrap {}", recipe.suite));
    bootstrap(recipe, &root, opts, report)?;

    report.start(Phase::Packages, "installing packages");
    write_guest_files(recipe, &root)?;
    let script = install_script(recipe);
    chroot::run(&root, "", &script, report, &opts.cancel)?;
    check_cancel(opts, &recipe.name)?;

    report.start(Phase::Configure, "extracting kernel and initramfs");
    let kernel_version = extract_boot_files(&root, staging.dir())?;
    boot_initrd::write(
        &root.join("lib/modules").join(&kernel_version),
        Path::new(boot_initrd::BUSYBOX),
        &staging.dir().join(boot_initrd::FILE),
    )?;

    report.start(Phase::Filesystem, "making the ext4 image");
    let raw = staging.dir().join("rootfs.raw");
    make_ext4(&root, &raw, recipe.disk_size_bytes)?;
    remove_tree(&root)?;
    check_cancel(opts, &recipe.name)?;

    report.start(Phase::Commit, "committing");
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        name: recipe.name.clone(),
        key: key.to_string(),
        origin: Origin::Built {
            distribution: "debian".into(),
            suite: recipe.suite.clone(),
            packages: recipe.packages.clone(),
        },
        disk: DiskInfo {
            file: "rootfs.raw".into(),
            format: DiskFormat::Raw,
            virtual_size: recipe.disk_size_bytes,
            layout: DiskLayout::Ext4,
        },
        boot: ImageBoot::Kernel {
            kernel: "vmlinuz".into(),
            initrd: "initrd.img".into(),
            cmdline: recipe.cmdline.clone(),
            kernel_version,
            hostel_initrd: Some(boot_initrd::FILE.into()),
        },
        created_unix: super::now_unix(),
    };
    staging.commit(&manifest, opts.replace)
}

fn check_cancel(opts: &BuildOptions, name: &str) -> Result<()> {
    if opts.cancel.is_cancelled() {
        return Err(ImageError::Cancelled {
            name: name.to_string(),
        });
    }
    Ok(())
}

fn bootstrap(
    recipe: &DebianRecipe,
    root: &Path,
    opts: &BuildOptions,
    report: &Reporter<'_>,
) -> Result<()> {
    let mut cmd = Command::new("unshare");
    // debootstrap mounts proc and sys in the target itself; the private namespace makes sure
    // they go away even if it is killed halfway.
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "--kill-child",
    ])
    .args(["debootstrap", "--variant=minbase", "--components=main"])
    .arg(&recipe.suite)
    .arg(root)
    .arg(&recipe.mirror)
    .env("LC_ALL", "C.UTF-8");
    let mut lines = 0.0;
    cmd::stream(&mut cmd, &opts.cancel, |line| {
        report.log_line(line);
        if let Some(msg) = line.strip_prefix("I: ") {
            lines += 1.0;
            report.report(
                Phase::Bootstrap,
                (lines / DEBOOTSTRAP_EXPECTED_LINES).min(0.99),
                msg,
            );
        }
    })
}

fn write_file(root: &Path, guest_path: &str, content: &str) -> Result<()> {
    let path = root.join(guest_path.trim_start_matches('/'));
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(ImageError::io(dir))?;
    }
    // A symlink here (resolv.conf, say) must not redirect the write outside the root.
    let _ = fs::remove_file(&path);
    fs::write(&path, content).map_err(ImageError::io(&path))
}

fn write_guest_files(recipe: &DebianRecipe, root: &Path) -> Result<()> {
    for (path, content) in guest_files() {
        write_file(root, path, content)?;
    }
    let mut modules = String::from("# hostel: drivers to find the root disk (MODULES=list)\n");
    for m in &recipe.initramfs_modules {
        modules.push_str(m);
        modules.push('\n');
    }
    write_file(root, "/etc/initramfs-tools/modules", &modules)?;
    let mut sources = format!(
        "deb {m} {s} main\ndeb {m} {s}-updates main\n",
        m = recipe.mirror,
        s = recipe.suite
    );
    if let Some(sec) = &recipe.security_mirror {
        sources.push_str(&format!("deb {sec} {}-security main\n", recipe.suite));
    }
    write_file(root, "/etc/apt/sources.list", &sources)
}

fn install_script(recipe: &DebianRecipe) -> String {
    let packages: Vec<String> = recipe.packages.iter().map(|p| shell_quote(p)).collect();
    let check_modules: Vec<String> = recipe
        .initramfs_modules
        .iter()
        .map(|m| shell_quote(m))
        .collect();
    format!(
        r#"{APT_GET} update
{APT_GET} install {packages}
kver=$(ls /lib/modules | head -n1)
# The initramfs must carry the disk drivers (or the kernel must have them built in).
for m in {modules}; do
  lsinitramfs /boot/initrd.img-$kver | grep -q "/$m.ko" \
    || grep -q "/$m.ko" /lib/modules/$kver/modules.builtin \
    || {{ echo "initramfs lacks module $m" >&2; exit 1; }}
done
if [ -x /sbin/resolvconf ]; then ln -sf ../run/resolvconf/resolv.conf /etc/resolv.conf; fi
# Per-VM identity is created on first boot, never shared through the image.
rm -f /etc/ssh/ssh_host_*
# cloud-init enforces key-only SSH (ssh_pwauth: false) by editing sshd_config and, when that
# changes the file, restarting sshd in the middle of the first logins (seconds of the one vCPU
# under TCG): the image says it already. The drop-in in sshd_config.d says it too.
sed -i 's/^#\?PasswordAuthentication .*/PasswordAuthentication no/' /etc/ssh/sshd_config
grep -qx 'PasswordAuthentication no' /etc/ssh/sshd_config \
  || {{ echo "sshd_config has no PasswordAuthentication line to set" >&2; exit 1; }}
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
# Guests cannot reach a mirror; timers that try only cost boot time. Under TCG every unit
# that starts at boot takes the one vCPU from cloud-init and sshd: none of these has anything
# to do in a hostel VM (no LVM snapshots to reap, no EFI or ERST for pstore, no device-mapper
# or GPU before udev asks for one), so they are disabled (masked where a unit wants them).
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
         dpkg-db-backup.timer e2scrub_reap.service systemd-pstore.service; do
  systemctl disable "$u" 2>/dev/null || true
done
systemctl mask modprobe@dm_mod.service modprobe@drm.service modprobe@efi_pstore.service
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/*.log /var/log/apt/*
"#,
        packages = packages.join(" "),
        modules = check_modules.join(" "),
    )
}

/// Copies `/boot/vmlinuz-*` and `/boot/initrd.img-*` out of the tree; returns the version.
fn extract_boot_files(root: &Path, out: &Path) -> Result<String> {
    let boot = root.join("boot");
    let mut versions = Vec::new();
    for entry in fs::read_dir(&boot).map_err(ImageError::io(&boot))? {
        let entry = entry.map_err(ImageError::io(&boot))?;
        if let Some(v) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("vmlinuz-"))
        {
            versions.push(v.to_string());
        }
    }
    versions.sort();
    let version = versions.pop().ok_or_else(|| ImageError::Unsupported {
        path: boot.clone(),
        reason: "no kernel (vmlinuz-*) was installed".into(),
    })?;
    for (from, to) in [
        (format!("vmlinuz-{version}"), "vmlinuz"),
        (format!("initrd.img-{version}"), "initrd.img"),
    ] {
        let src = boot.join(&from);
        fs::copy(&src, out.join(to)).map_err(ImageError::io(&src))?;
    }
    Ok(version)
}

/// Packs `tree` into a sparse ext4 image of `size` bytes (`mkfs.ext4 -d`: no mount needed).
pub(crate) fn make_ext4(tree: &Path, raw: &Path, size: u64) -> Result<()> {
    let f = fs::File::create(raw).map_err(ImageError::io(raw))?;
    f.set_len(size).map_err(ImageError::io(raw))?;
    drop(f);
    cmd::output(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "rootfs", "-m", "1", "-d"])
            .arg(tree)
            .arg(raw),
    )?;
    Ok(())
}
