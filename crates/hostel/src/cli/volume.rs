//! `hostel storage device ...` (operator: the host's pool) and `hostel volume ...` (a
//! tenant's volumes, their attachment and snapshots).

use super::output::{self, Format, Table};
use super::Ctx;
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use hostel_api::{AddDevice, CreateVolume, DeviceView, VolumeView};

#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// The pool's devices (operator).
    #[command(subcommand)]
    Device(DeviceCommand),
}

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Add a block device or file to the pool (its contents are destroyed); the first
    /// creates the pool.
    Add { path: String },
    /// List the pool's devices, their size, free space and health.
    List,
    /// Remove a device the pool never took (the pool cannot move data off one yet).
    Remove { path: String },
}

#[derive(Args, Debug)]
pub struct VolumeArgs {
    /// Operator only: the tenant whose volumes to act on.
    #[arg(long, global = true)]
    tenant: Option<String>,
    #[command(subcommand)]
    cmd: VolumeCommand,
}

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a thin volume in the host's pool.
    Create {
        name: String,
        /// Size: bytes, or with a K, M, G or T suffix.
        #[arg(long)]
        size: String,
        /// Copies on distinct devices (1 or 2; default 2 when the pool has two devices).
        #[arg(long)]
        copies: Option<u8>,
    },
    List,
    Show {
        name: String,
    },
    /// Attach to a stopped VM (its next start has the disk).
    Attach {
        name: String,
        #[arg(long)]
        vm: String,
    },
    /// Detach from its (stopped) VM.
    Detach {
        name: String,
    },
    /// Grow the volume.
    Resize {
        name: String,
        #[arg(long)]
        size: String,
    },
    Delete {
        name: String,
    },
    /// Snapshots: create, list, restore (VM stopped), delete.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Export a snapshot to a backup (full, or since --base, another snapshot).
    Backup {
        volume: String,
        #[arg(long)]
        snapshot: String,
        /// The backup's name.
        #[arg(long)]
        name: String,
        #[arg(long)]
        base: Option<String>,
    },
    /// Restore a backup into a new volume.
    Restore {
        backup: String,
        /// The new volume's name.
        #[arg(long)]
        name: String,
    },
    /// List the tenant's backups.
    Backups,
    /// Delete a backup.
    BackupDelete {
        backup: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    Create { volume: String, name: String },
    List { volume: String },
    Restore { volume: String, name: String },
    Delete { volume: String, name: String },
}

/// `10G` → 10 GiB in bytes.
pub(super) fn parse_size(s: &str) -> Result<u64> {
    let (num, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => bail!("size {s:?}: the suffix is K, M, G or T"),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("size {s:?}: a number with an optional K, M, G or T"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| anyhow::anyhow!("size {s:?} is too large"))
}

pub fn storage_main(ctx: &Ctx, cmd: StorageCommand) -> Result<()> {
    let c = &ctx.client;
    let devices = match cmd {
        StorageCommand::Device(DeviceCommand::Add { path }) => {
            vec![c.add_storage_device(&AddDevice { path })?]
        }
        StorageCommand::Device(DeviceCommand::List) => c.list_storage_devices()?,
        StorageCommand::Device(DeviceCommand::Remove { path }) => c.remove_storage_device(&path)?,
    };
    print_devices(ctx.format, &devices)
}

fn print_devices(format: Format, devs: &[DeviceView]) -> Result<()> {
    if format == Format::Json {
        return output::json(devs);
    }
    let mut t = Table::new(&["path", "state", "bytes", "free", "health"]);
    for d in devs {
        t.row(vec![
            d.path.clone(),
            d.state.clone(),
            d.bytes.to_string(),
            d.free_bytes.to_string(),
            if d.failed { "failed" } else { "ok" }.to_string(),
        ]);
    }
    t.print();
    Ok(())
}

pub fn main(ctx: &Ctx, args: VolumeArgs) -> Result<()> {
    let tenant = args.tenant.as_deref();
    let c = &ctx.client;
    match args.cmd {
        VolumeCommand::Create { name, size, copies } => {
            let body = CreateVolume {
                name,
                size_bytes: parse_size(&size)?,
                copies,
            };
            print(ctx.format, &c.create_volume(tenant, &body)?)
        }
        VolumeCommand::List => {
            let vols = c.list_volumes(tenant)?;
            if ctx.format == Format::Json {
                return output::json(&vols);
            }
            let mut t = Table::new(&["name", "size", "allocated", "copies", "vm", "state"]);
            for v in &vols {
                t.row(vec![
                    v.name.clone(),
                    v.size_bytes.to_string(),
                    output::opt(v.allocated_bytes),
                    v.copies.to_string(),
                    output::opt(v.vm.clone()),
                    if v.degraded {
                        format!("{} (degraded)", v.state)
                    } else {
                        v.state.clone()
                    },
                ]);
            }
            t.print();
            Ok(())
        }
        VolumeCommand::Show { name } => print(ctx.format, &c.show_volume(tenant, &name)?),
        VolumeCommand::Attach { name, vm } => {
            print(ctx.format, &c.attach_volume(tenant, &name, &vm)?)
        }
        VolumeCommand::Detach { name } => print(ctx.format, &c.detach_volume(tenant, &name)?),
        VolumeCommand::Resize { name, size } => print(
            ctx.format,
            &c.resize_volume(tenant, &name, parse_size(&size)?)?,
        ),
        VolumeCommand::Delete { name } => {
            c.delete_volume(tenant, &name)?;
            Ok(())
        }
        VolumeCommand::Backup {
            volume,
            snapshot,
            name,
            base,
        } => {
            let b = c.create_backup(
                tenant,
                &volume,
                &hostel_api::CreateBackup {
                    name,
                    snapshot,
                    base,
                },
            )?;
            print_backups(ctx.format, &[b])
        }
        VolumeCommand::Restore { backup, name } => {
            print(ctx.format, &c.restore_backup(tenant, &backup, &name)?)
        }
        VolumeCommand::Backups => print_backups(ctx.format, &c.list_backups(tenant)?),
        VolumeCommand::BackupDelete { backup } => {
            c.delete_backup(tenant, &backup)?;
            Ok(())
        }
        VolumeCommand::Snapshot(s) => match s {
            SnapshotCommand::Create { volume, name } => {
                print(ctx.format, &c.create_snapshot(tenant, &volume, &name)?)
            }
            SnapshotCommand::List { volume } => {
                let v = c.show_volume(tenant, &volume)?;
                if ctx.format == Format::Json {
                    return output::json(&v.snapshots);
                }
                for s in &v.snapshots {
                    println!("{s}");
                }
                Ok(())
            }
            SnapshotCommand::Restore { volume, name } => {
                print(ctx.format, &c.restore_snapshot(tenant, &volume, &name)?)
            }
            SnapshotCommand::Delete { volume, name } => {
                c.delete_snapshot(tenant, &volume, &name)?;
                Ok(())
            }
        },
    }
}

fn print(format: Format, v: &VolumeView) -> Result<()> {
    if format == Format::Json {
        return output::json(v);
    }
    output::print_fields(&[
        ("name", v.name.clone()),
        ("size_bytes", v.size_bytes.to_string()),
        ("allocated_bytes", output::opt(v.allocated_bytes)),
        ("copies", v.copies.to_string()),
        ("vm", output::opt(v.vm.clone())),
        ("state", v.state.clone()),
        (
            "health",
            if v.degraded {
                format!(
                    "degraded ({} clusters short of copies)",
                    v.degraded_clusters
                )
            } else {
                "ok".to_string()
            },
        ),
        ("snapshots", v.snapshots.join(", ")),
    ]);
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum VmSnapshotCommand {
    /// Pause the VM, snapshot each of its volumes, continue it.
    Create {
        vm: String,
        name: String,
    },
    /// Snapshots every volume of the VM has.
    List {
        vm: String,
    },
    /// Restore every volume of the (stopped) VM to the snapshot.
    Restore {
        vm: String,
        name: String,
    },
    Delete {
        vm: String,
        name: String,
    },
}

pub fn vm_snapshot(ctx: &Ctx, tenant: Option<&str>, cmd: VmSnapshotCommand) -> Result<()> {
    let c = &ctx.client;
    let vols = match cmd {
        VmSnapshotCommand::Create { vm, name } => c.create_vm_snapshot(tenant, &vm, &name)?,
        VmSnapshotCommand::Restore { vm, name } => c.restore_vm_snapshot(tenant, &vm, &name)?,
        VmSnapshotCommand::Delete { vm, name } => {
            c.delete_vm_snapshot(tenant, &vm, &name)?;
            return Ok(());
        }
        VmSnapshotCommand::List { vm } => {
            let vols: Vec<VolumeView> = c
                .list_volumes(tenant)?
                .into_iter()
                .filter(|v| v.vm.as_deref() == Some(vm.as_str()))
                .collect();
            let mut common: Vec<String> = vols
                .first()
                .map(|v| v.snapshots.clone())
                .unwrap_or_default();
            common.retain(|s| vols.iter().all(|v| v.snapshots.contains(s)));
            if ctx.format == Format::Json {
                return output::json(&common);
            }
            for s in &common {
                println!("{s}");
            }
            return Ok(());
        }
    };
    if ctx.format == Format::Json {
        return output::json(&vols);
    }
    for v in &vols {
        println!("{}: {}", v.name, v.snapshots.join(", "));
    }
    Ok(())
}

fn print_backups(format: Format, bs: &[hostel_api::BackupView]) -> Result<()> {
    if format == Format::Json {
        return output::json(bs);
    }
    let mut t = Table::new(&["name", "volume", "snapshot", "base", "size", "file bytes"]);
    for b in bs {
        t.row(vec![
            b.name.clone(),
            b.volume.clone(),
            b.snapshot.clone(),
            output::opt(b.base.clone()),
            b.size_bytes.to_string(),
            b.file_bytes.to_string(),
        ]);
    }
    t.print();
    Ok(())
}
