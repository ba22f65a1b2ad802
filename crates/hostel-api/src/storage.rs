//! The host's storage pool (operator) and the tenants' volumes on it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::client::{Client, Result};

/// `POST /v1/storage/devices` (operator): the first device creates the pool.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDevice {
    /// Absolute path of a block device or file (its contents are destroyed).
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    pub path: String,
    /// `adding` (interrupted add, settled at the next start) or `ready`.
    pub state: String,
    /// As the pool reports it; absent when the storage process does not answer.
    pub uuid: Option<String>,
    pub failed: bool,
    pub bytes: u64,
    pub free_bytes: u64,
}

/// `POST /v1/volumes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    pub name: String,
    /// A non-zero multiple of 512.
    pub size_bytes: u64,
    /// Copies on distinct devices (1 or 2; default 2 when the pool has two devices).
    #[serde(default)]
    pub copies: Option<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeView {
    pub name: String,
    pub size_bytes: u64,
    pub copies: u8,
    /// The VM it is attached to.
    pub vm: Option<String>,
    /// `creating`, `ready` or `deleting`.
    pub state: String,
    /// Bytes the pool holds for it (written clusters, snapshots included); absent when the
    /// storage process does not answer.
    pub allocated_bytes: Option<u64>,
    /// Some of its data has fewer copies than it wants (a device failed; re-mirroring).
    pub degraded: bool,
    pub degraded_clusters: u64,
    pub snapshots: Vec<String>,
}

/// `POST /v1/volumes/{name}/attach`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachVolume {
    pub vm: String,
}

/// `POST /v1/volumes/{name}/resize`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeVolume {
    pub size_bytes: u64,
}

/// `POST /v1/volumes/{name}/snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    pub name: String,
}

fn q(tenant: Option<&str>) -> String {
    tenant.map(|t| format!("?tenant={t}")).unwrap_or_default()
}

impl Client {
    pub fn add_storage_device(&self, body: &AddDevice) -> Result<DeviceView> {
        self.send("POST", "/v1/storage/devices", body)
    }
    pub fn list_storage_devices(&self) -> Result<Vec<DeviceView>> {
        self.get("/v1/storage/devices")
    }
    /// The devices left.
    pub fn remove_storage_device(&self, path: &str) -> Result<Vec<DeviceView>> {
        self.send(
            "POST",
            "/v1/storage/devices/remove",
            &AddDevice {
                path: path.to_string(),
            },
        )
    }
    pub fn create_volume(&self, tenant: Option<&str>, body: &CreateVolume) -> Result<VolumeView> {
        self.send("POST", &format!("/v1/volumes{}", q(tenant)), body)
    }
    pub fn list_volumes(&self, tenant: Option<&str>) -> Result<Vec<VolumeView>> {
        self.get(&format!("/v1/volumes{}", q(tenant)))
    }
    pub fn show_volume(&self, tenant: Option<&str>, name: &str) -> Result<VolumeView> {
        self.get(&format!("/v1/volumes/{name}{}", q(tenant)))
    }
    pub fn delete_volume(&self, tenant: Option<&str>, name: &str) -> Result<()> {
        self.delete(&format!("/v1/volumes/{name}{}", q(tenant)))
    }
    pub fn attach_volume(&self, tenant: Option<&str>, name: &str, vm: &str) -> Result<VolumeView> {
        let body = AttachVolume { vm: vm.to_string() };
        self.send(
            "POST",
            &format!("/v1/volumes/{name}/attach{}", q(tenant)),
            &body,
        )
    }
    pub fn detach_volume(&self, tenant: Option<&str>, name: &str) -> Result<VolumeView> {
        self.send(
            "POST",
            &format!("/v1/volumes/{name}/detach{}", q(tenant)),
            &serde_json::json!({}),
        )
    }
    pub fn resize_volume(&self, tenant: Option<&str>, name: &str, size: u64) -> Result<VolumeView> {
        let body = ResizeVolume { size_bytes: size };
        self.send(
            "POST",
            &format!("/v1/volumes/{name}/resize{}", q(tenant)),
            &body,
        )
    }
    pub fn create_snapshot(
        &self,
        tenant: Option<&str>,
        name: &str,
        snap: &str,
    ) -> Result<VolumeView> {
        let body = CreateSnapshot {
            name: snap.to_string(),
        };
        self.send(
            "POST",
            &format!("/v1/volumes/{name}/snapshots{}", q(tenant)),
            &body,
        )
    }
    pub fn restore_snapshot(
        &self,
        tenant: Option<&str>,
        name: &str,
        snap: &str,
    ) -> Result<VolumeView> {
        self.send(
            "POST",
            &format!("/v1/volumes/{name}/snapshots/{snap}/restore{}", q(tenant)),
            &serde_json::json!({}),
        )
    }
    pub fn delete_snapshot(&self, tenant: Option<&str>, name: &str, snap: &str) -> Result<()> {
        self.delete(&format!("/v1/volumes/{name}/snapshots/{snap}{}", q(tenant)))
    }
    pub fn create_vm_snapshot(
        &self,
        tenant: Option<&str>,
        vm: &str,
        snap: &str,
    ) -> Result<Vec<VolumeView>> {
        let body = CreateSnapshot {
            name: snap.to_string(),
        };
        self.send(
            "POST",
            &format!("/v1/vms/{vm}/snapshots{}", q(tenant)),
            &body,
        )
    }
    pub fn restore_vm_snapshot(
        &self,
        tenant: Option<&str>,
        vm: &str,
        snap: &str,
    ) -> Result<Vec<VolumeView>> {
        self.send(
            "POST",
            &format!("/v1/vms/{vm}/snapshots/{snap}/restore{}", q(tenant)),
            &serde_json::json!({}),
        )
    }
    pub fn delete_vm_snapshot(&self, tenant: Option<&str>, vm: &str, snap: &str) -> Result<()> {
        self.delete(&format!("/v1/vms/{vm}/snapshots/{snap}{}", q(tenant)))
    }
}

/// `POST /v1/volumes/{name}/backups`: a snapshot exported to a backup (full, or only what
/// changed since `base`, another snapshot of the same volume).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBackup {
    /// The backup's name (unique in the tenant).
    pub name: String,
    pub snapshot: String,
    #[serde(default)]
    pub base: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupView {
    pub name: String,
    pub volume: String,
    pub snapshot: String,
    pub base: Option<String>,
    /// The volume's size when backed up: what a restore provisions.
    pub size_bytes: u64,
    pub file_bytes: u64,
}

/// `POST /v1/backups/{name}/restore`: into a new volume.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBackup {
    pub volume: String,
}

impl Client {
    pub fn create_backup(
        &self,
        tenant: Option<&str>,
        volume: &str,
        body: &CreateBackup,
    ) -> Result<BackupView> {
        self.send(
            "POST",
            &format!("/v1/volumes/{volume}/backups{}", q(tenant)),
            body,
        )
    }
    pub fn list_backups(&self, tenant: Option<&str>) -> Result<Vec<BackupView>> {
        self.get(&format!("/v1/backups{}", q(tenant)))
    }
    pub fn delete_backup(&self, tenant: Option<&str>, name: &str) -> Result<()> {
        self.delete(&format!("/v1/backups/{name}{}", q(tenant)))
    }
    pub fn restore_backup(
        &self,
        tenant: Option<&str>,
        name: &str,
        volume: &str,
    ) -> Result<VolumeView> {
        let body = RestoreBackup {
            volume: volume.to_string(),
        };
        self.send(
            "POST",
            &format!("/v1/backups/{name}/restore{}", q(tenant)),
            &body,
        )
    }
}

/// `PUT /v1/tenants/{tenant}/storage_quota` (operator): the tenant's volume limits.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageQuotaBody {
    /// Sum of the sizes of its volumes.
    pub max_volume_bytes: u64,
    /// Bytes its volumes (and their snapshots) hold in the pool: creates and snapshots are
    /// refused once reached.
    pub max_volume_allocated_bytes: u64,
}

impl Client {
    pub fn storage_quota(&self, tenant: &str) -> Result<StorageQuotaBody> {
        self.get(&format!("/v1/tenants/{tenant}/storage_quota"))
    }
    pub fn set_storage_quota(
        &self,
        tenant: &str,
        body: &StorageQuotaBody,
    ) -> Result<StorageQuotaBody> {
        self.send("PUT", &format!("/v1/tenants/{tenant}/storage_quota"), body)
    }
}
