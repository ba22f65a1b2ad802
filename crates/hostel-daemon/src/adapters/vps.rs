//! VPSs on this host, as the services see them: the store's record of a VPS turned into a
//! `hostel_vps::VpsSpec`, and the container's lifecycle (prepare, plug the NIC, start,
//! stop, exec, destroy) run on tokio's blocking pool — runc, mount and mkfs block, and no
//! Rust code ever runs in a forked child of the daemon (runc and the namespace holder are
//! programs of their own).

use crate::layout::Layout;
use hostel_state::{Network, VmId, VmNic, VpsRecord};
use hostel_vps::runc::{ExecOutput, Runc};
use hostel_vps::spec::{Resources, DEFAULT_PIDS};
use hostel_vps::vps::{self as vps_mod, VpsPaths};
use hostel_vps::{image, nic, NicSpec, Vps, VpsError, VpsSpec, VpsStatus};
use std::path::PathBuf;
use std::time::Duration;

/// Images a VPS can be made of on this host.
pub const VPS_IMAGES: &[&str] = &["busybox"];

/// How long PID 1 gets to stop before everything in the VPS is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where hostel keeps its VPSs: one directory each, runc's state, image roots.
#[derive(Debug, Clone)]
pub struct VpsHost {
    base: PathBuf,
    runc: Runc,
    images: PathBuf,
}

/// A VPS's runc id and directory name: its record's id.
pub fn container_id(id: &VmId) -> String {
    id.to_string()
}

/// The host-side name of a VPS NIC's TAP.
pub fn tap_name(id: &VmId) -> String {
    nic::tap_name(&id.as_uuid().simple().to_string())
}

impl VpsHost {
    pub fn new(layout: &Layout) -> Self {
        Self {
            base: layout.root().join("vps"),
            runc: Runc::new(layout.root().join("runc")),
            images: layout.root().join("vps-images"),
        }
    }

    pub fn paths(&self, id: &VmId) -> VpsPaths {
        VpsPaths::new(self.base.join(container_id(id)))
    }

    /// The root directory of image `name` (built on first use).
    fn image_root(&self, name: &str) -> Result<PathBuf, VpsError> {
        match name {
            "busybox" => {
                let dir = self.images.join("busybox");
                std::fs::create_dir_all(&self.images).map_err(|source| VpsError::Io {
                    action: "create",
                    path: self.images.clone(),
                    source,
                })?;
                image::build_busybox(&dir)?;
                Ok(dir)
            }
            other => Err(VpsError::Invalid {
                field: "image",
                reason: format!("{other:?} is not a VPS image on this host (have: {VPS_IMAGES:?})"),
            }),
        }
    }

    /// The container a record describes. `nic` is its first NIC and that NIC's network.
    pub fn vps(&self, rec: &VpsRecord, nic: Option<&(VmNic, Network)>) -> Result<Vps, VpsError> {
        let uid_base = hostel_vps::uid_base(rec.slot).ok_or(VpsError::Invalid {
            field: "id_slot",
            reason: format!("{} is beyond the host's id space", rec.slot),
        })?;
        let spec = VpsSpec {
            id: container_id(&rec.vm.id),
            hostname: rec.vm.name.to_string(),
            uid_base,
            resources: Resources {
                vcpus: rec.vm.spec.vcpus(),
                memory_mib: rec.vm.spec.memory_mib(),
                pids: DEFAULT_PIDS,
                disk: None,
            },
            disk_gib: rec.vm.spec.disk_gib(),
            args: init_of(rec.vm.spec.image(), rec.vm.spec.cmdline()),
            nic: nic.map(|(n, net)| NicSpec {
                tap: tap_name(&rec.vm.id),
                mac: n.mac,
                ipv4: n.ipv4,
                prefix_len: net.subnet4.prefix(),
                gateway4: net.gateway4,
            }),
        };
        Vps::new(spec, &self.base, self.runc.clone())
    }

    /// Makes everything the container needs (idempotent), leaving the NIC's TAP in the
    /// host's namespace for the switch to attach; also says whether the NIC is in the VPS
    /// already (then the switch attached it before).
    pub async fn prepare(&self, v: Vps, image: String) -> Result<(Vps, bool), VpsError> {
        let host = self.clone();
        blocking(move || {
            let root = host.image_root(&image)?;
            v.prepare(&root)?;
            let plugged = v.nic_plugged();
            Ok((v, plugged))
        })
        .await
    }

    /// Moves the NIC into the VPS and starts the container; its PID 1.
    pub async fn plug_and_start(&self, v: Vps) -> Result<u32, VpsError> {
        blocking(move || {
            v.plug()?;
            v.start()
        })
        .await
    }

    pub async fn status(&self, id: &VmId) -> Result<VpsStatus, VpsError> {
        let (runc, id) = (self.runc.clone(), container_id(id));
        blocking(move || vps_mod::status(&runc, &id)).await
    }

    pub async fn stop(&self, id: &VmId) -> Result<(), VpsError> {
        let (runc, id) = (self.runc.clone(), container_id(id));
        blocking(move || runc.stop(&id, STOP_GRACE)).await
    }

    pub async fn exec(
        &self,
        id: &VmId,
        args: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, VpsError> {
        let (runc, id) = (self.runc.clone(), container_id(id));
        blocking(move || runc.exec(&id, &args, timeout)).await
    }

    /// Removes every trace of VPS `id` (processes, cgroups, mounts, disk, namespaces, TAP,
    /// directory); a record is not needed, so an interrupted create or delete is finished.
    pub async fn destroy(&self, id: &VmId) -> Result<(), VpsError> {
        let (runc, cid, paths, tap) = (
            self.runc.clone(),
            container_id(id),
            self.paths(id),
            tap_name(id),
        );
        blocking(move || vps_mod::destroy(&runc, &cid, &paths, Some(&tap))).await
    }

    /// VPS directories on the host (to find those no record owns).
    pub fn dirs(&self) -> Vec<VmId> {
        let Ok(rd) = std::fs::read_dir(&self.base) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }
}

/// PID 1: a busybox VPS runs its command line (`cmdline`, run by `sh -c`) or sleeps as a
/// placeholder init that reaps nothing but keeps the container up for `exec`.
fn init_of(image: &str, cmdline: Option<&str>) -> Vec<String> {
    let _ = image;
    match cmdline {
        Some(c) if !c.trim().is_empty() => vec!["/bin/sh".into(), "-c".into(), c.to_string()],
        _ => vec![
            "/bin/sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM; while :; do sleep 3600 & wait; done".into(),
        ],
    }
}

/// The switch may be given VPS `id`'s TAP port: the TAP is in the host's namespace (new,
/// or not yet moved), or it was moved after the switch now running attached it (recorded
/// at plug time in the VPS's directory). A moved TAP offered to a fresh switch would make
/// the switch refuse the whole table, so it is left out until the VPS is re-plugged.
pub fn port_attachable(host: &VpsHost, id: &VmId, switch_key: Option<&str>) -> bool {
    if nic::in_host(&tap_name(id)) {
        return true;
    }
    let recorded = std::fs::read_to_string(host.paths(id).dir.join("switch")).ok();
    matches!((recorded.as_deref(), switch_key), (Some(r), Some(k)) if r == k)
}

/// Records which switch attached the VPS's TAP before it was moved.
pub fn record_switch(host: &VpsHost, id: &VmId, switch_key: &str) {
    let p = host.paths(id).dir.join("switch");
    if let Err(e) = std::fs::write(&p, switch_key) {
        tracing::warn!(path = %p.display(), error = %e, "recording the VPS's switch");
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VpsError> + Send + 'static,
) -> Result<T, VpsError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(VpsError::Sys {
            call: "blocking task",
            source: std::io::Error::other(e.to_string()),
        }),
    }
}
