//! A tenant's backups: a volume's snapshot exported (full, or incremental on a base
//! snapshot) to a file in the tenant's own directory (`state-dir/storage/backups/<tenant
//! id>/NAME.backup`), and restored into a new volume. The storage process writes and reads
//! the files (it holds the pool); a JSON sidecar records what the backup is (volume,
//! snapshot, base, size), written once the backup is whole, so a cut export lists nothing.

use super::volumes::{running_storage, storage_error, VolumeView};
use super::DaemonError;
use crate::Ctx;
use hostel_state::{NewAuditEntry, NewVolume, TenantId, VolumeName, VolumeState};
use hostel_storage_proto::Request;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a backup holds (the sidecar's contents).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupMeta {
    pub name: String,
    pub volume: String,
    pub snapshot: String,
    pub base: Option<String>,
    /// The volume's size when it was taken: what a restore provisions.
    pub size_bytes: u64,
    pub copies: u8,
    /// Bytes of the backup file.
    #[serde(default)]
    pub file_bytes: u64,
}

fn dir(ctx: &Ctx, tenant: &TenantId) -> PathBuf {
    ctx.storage.dir().join("backups").join(tenant.to_string())
}

fn paths(ctx: &Ctx, tenant: &TenantId, name: &VolumeName) -> (PathBuf, PathBuf) {
    let d = dir(ctx, tenant);
    (
        d.join(format!("{name}.backup")),
        d.join(format!("{name}.json")),
    )
}

fn read_meta(path: &std::path::Path) -> Option<BackupMeta> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

pub async fn export(
    ctx: &Ctx,
    tenant: TenantId,
    volume: VolumeName,
    snapshot: VolumeName,
    base: Option<VolumeName>,
    name: VolumeName,
    audit: NewAuditEntry,
) -> Result<BackupMeta, DaemonError> {
    let v = super::volumes::find(ctx, tenant, volume).await?;
    let (file, side) = paths(ctx, &tenant, &name);
    if side.exists() || file.exists() {
        return Err(DaemonError::conflict(
            Some("name"),
            format!("backup {name} exists"),
        ));
    }
    let d = dir(ctx, &tenant);
    std::fs::create_dir_all(&d).map_err(|e| DaemonError::io(&d, e))?;
    running_storage(ctx).await?;
    ctx.storage
        .request(&Request::BackupExport {
            volume: v.pool_name(),
            snapshot: snapshot.to_string(),
            base: base.as_ref().map(|b| b.to_string()),
            path: file.clone(),
        })
        .await
        .map_err(|e| storage_error(e, "snapshot"))?;
    let meta = BackupMeta {
        name: name.to_string(),
        volume: v.name.to_string(),
        snapshot: snapshot.to_string(),
        base: base.map(|b| b.to_string()),
        size_bytes: v.size_bytes,
        copies: v.copies,
        file_bytes: std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0),
    };
    let tmp = side.with_extension("json.tmp");
    let json = serde_json::to_vec(&meta).map_err(|e| DaemonError::io(&tmp, e.into()))?;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &side)
    };
    write().map_err(|e| DaemonError::io(&side, e))?;
    ctx.db(move |s| s.append_audit(&audit)).await?;
    Ok(meta)
}

pub fn list(ctx: &Ctx, tenant: TenantId) -> Vec<BackupMeta> {
    let Ok(entries) = std::fs::read_dir(dir(ctx, &tenant)) else {
        return Vec::new();
    };
    let mut out: Vec<BackupMeta> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| read_meta(&e.path()))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub async fn delete(
    ctx: &Ctx,
    tenant: TenantId,
    name: VolumeName,
    audit: NewAuditEntry,
) -> Result<(), DaemonError> {
    let (file, side) = paths(ctx, &tenant, &name);
    if !side.exists() {
        return Err(DaemonError::NotFound {
            kind: "backup",
            name: name.to_string(),
        });
    }
    // The sidecar first: a cut leaves a file nobody lists, never a listing without a file.
    std::fs::remove_file(&side).map_err(|e| DaemonError::io(&side, e))?;
    let _ = std::fs::remove_file(&file);
    ctx.db(move |s| s.append_audit(&audit)).await?;
    Ok(())
}

/// Restores backup `name` into a new volume `into`: recorded (`creating`, within quota)
/// first, like a create, then made by the pool from the file; refused backups (corrupt,
/// an incremental whose base snapshot the pool no longer has) leave nothing.
pub async fn restore(
    ctx: &Ctx,
    tenant: TenantId,
    name: VolumeName,
    into: VolumeName,
    audit: NewAuditEntry,
) -> Result<VolumeView, DaemonError> {
    let (file, side) = paths(ctx, &tenant, &name);
    let meta = read_meta(&side).ok_or_else(|| DaemonError::NotFound {
        kind: "backup",
        name: name.to_string(),
    })?;
    running_storage(ctx).await?;
    let new = NewVolume {
        name: into,
        size_bytes: meta.size_bytes,
        copies: meta.copies,
    };
    let vol = ctx
        .db(move |s| s.create_volume(&tenant, &new, &audit))
        .await?;
    let made = ctx
        .storage
        .request(&Request::BackupRestore {
            path: file,
            name: vol.pool_name(),
        })
        .await;
    match made {
        Ok(r) => {
            let id = vol.id;
            let vol = ctx
                .db(move |s| s.set_volume_state(&id, VolumeState::Ready))
                .await?;
            Ok(VolumeView {
                volume: vol,
                vm_name: None,
                pool: r.volume,
            })
        }
        Err(e) => {
            let id = vol.id;
            ctx.db(move |s| s.finish_volume_delete(&id)).await?;
            Err(storage_error(e, "backup"))
        }
    }
}
