//! One VPS on the host: what it needs prepared (namespaces, disk, root, bundle, TAP), its
//! container, and its removal. Every step is idempotent, so a daemon killed half-way
//! through a create, start or delete repeats the step at its next start and finishes.

use crate::nic;
use crate::ns::NsPaths;
use crate::rootfs::RootfsPaths;
use crate::runc::{ExecOutput, Runc};
use crate::spec::{self, DiskThrottle};
use crate::{VpsError, VpsSpec};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The I/O throttle on each VPS's own disk: a disk filler gets this much and its
/// neighbours keep the rest of the host's device.
pub const DISK_BYTES_PER_SEC: u64 = 200 << 20;
pub const DISK_IOPS: u64 = 20_000;

/// A VPS's files on the host.
#[derive(Debug, Clone)]
pub struct VpsPaths {
    pub dir: PathBuf,
    pub ns: NsPaths,
    pub fs: RootfsPaths,
    /// The OCI bundle (`config.json`).
    pub bundle: PathBuf,
    /// PID 1's stdout and stderr.
    pub log: PathBuf,
}

impl VpsPaths {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            ns: NsPaths::new(&dir),
            fs: RootfsPaths::new(&dir),
            bundle: dir.join("bundle"),
            log: dir.join("console.log"),
            dir,
        }
    }
}

/// What runc says the VPS is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VpsStatus {
    Running {
        pid: u32,
    },
    /// No container, or one whose PID 1 has ended.
    Stopped,
}

pub struct Vps {
    pub spec: VpsSpec,
    pub paths: VpsPaths,
    pub runc: Runc,
}

impl Vps {
    /// `base` holds one directory per VPS; `runc` is hostel's runc state root.
    pub fn new(spec: VpsSpec, base: &Path, runc: Runc) -> Result<Self, VpsError> {
        spec.validate()?;
        let paths = VpsPaths::new(base.join(&spec.id));
        Ok(Self { spec, paths, runc })
    }

    /// Namespaces, disk, root filesystem, bundle and (host-side) TAP.
    pub fn prepare(&self, image_root: &Path) -> Result<(), VpsError> {
        let p = &self.paths;
        fs::create_dir_all(&p.dir).map_err(VpsError::io("create", &p.dir))?;
        fs::create_dir_all(&p.bundle).map_err(VpsError::io("create", &p.bundle))?;
        p.ns.create(self.spec.uid_base)?;
        p.fs.create_disk(self.spec.disk_gib, self.spec.uid_base)?;
        let (major, minor) = p.fs.mount(image_root, &p.ns.user, self.spec.uid_base)?;
        let mut spec = self.spec.clone();
        spec.resources.disk = Some(DiskThrottle {
            major,
            minor,
            bytes_per_sec: DISK_BYTES_PER_SEC,
            iops: DISK_IOPS,
        });
        let config = spec::config(&spec, &p.fs.root, &p.ns.user, &p.ns.net);
        let path = p.bundle.join("config.json");
        let tmp = p.bundle.join("config.json.new");
        let text = serde_json::to_vec_pretty(&config).map_err(|e| VpsError::Invalid {
            field: "config",
            reason: e.to_string(),
        })?;
        fs::write(&tmp, text).map_err(VpsError::io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(VpsError::io("rename", &tmp))?;
        if let Some(n) = &self.spec.nic {
            if !self.nic_plugged() {
                nic::create_tap(n)?;
            }
        }
        Ok(())
    }

    /// The NIC is inside the VPS's namespace already.
    pub fn nic_plugged(&self) -> bool {
        match &self.spec.nic {
            Some(n) => {
                !nic::in_host(&n.tap)
                    && self.paths.ns.exist()
                    && self
                        .paths
                        .ns
                        .run_in_net("ip", &["link", "show", "dev", "eth0"])
                        .is_ok()
            }
            None => true,
        }
    }

    /// Moves the TAP into the VPS (after the switch attached it) and configures it.
    pub fn plug(&self) -> Result<(), VpsError> {
        match &self.spec.nic {
            Some(n) => nic::plug(&self.paths.ns, n),
            None => Ok(()),
        }
    }

    /// Starts the container unless it runs (a stopped one left behind is removed first).
    pub fn start(&self) -> Result<u32, VpsError> {
        if let VpsStatus::Running { pid } = self.status()? {
            return Ok(pid);
        }
        self.runc.delete(&self.spec.id)?;
        self.runc
            .create_and_start(&self.spec.id, &self.paths.bundle, &self.paths.log)?;
        match self.status()? {
            VpsStatus::Running { pid } => Ok(pid),
            VpsStatus::Stopped => Err(VpsError::State {
                id: self.spec.id.clone(),
                detail: "PID 1 ended at once".into(),
            }),
        }
    }

    pub fn status(&self) -> Result<VpsStatus, VpsError> {
        status(&self.runc, &self.spec.id)
    }

    /// Stops the container (its namespaces, disk and NIC stay for the next start).
    pub fn stop(&self, grace: Duration) -> Result<(), VpsError> {
        self.runc.stop(&self.spec.id, grace)
    }

    pub fn exec(&self, args: &[String], timeout: Duration) -> Result<ExecOutput, VpsError> {
        self.runc.exec(&self.spec.id, args, timeout)
    }

    /// Removes everything: processes, cgroups, mounts, disk, namespaces (the NIC goes with
    /// the network namespace), the directory.
    pub fn destroy(&self) -> Result<(), VpsError> {
        destroy(
            &self.runc,
            &self.spec.id,
            &self.paths,
            self.spec.nic.as_ref().map(|n| n.tap.as_str()),
        )
    }
}

/// What runc says about container `id`.
pub fn status(runc: &Runc, id: &str) -> Result<VpsStatus, VpsError> {
    Ok(match runc.state(id)? {
        Some(s) if s.status == "running" || s.status == "paused" => {
            VpsStatus::Running { pid: s.pid }
        }
        _ => VpsStatus::Stopped,
    })
}

/// Removes a VPS knowing only its id, directory and TAP name (a record may be gone).
pub fn destroy(runc: &Runc, id: &str, paths: &VpsPaths, tap: Option<&str>) -> Result<(), VpsError> {
    runc.delete(id)?;
    paths.fs.destroy()?;
    paths.ns.remove()?;
    if let Some(t) = tap {
        nic::remove_tap(t)?;
    }
    match fs::remove_dir_all(&paths.dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VpsError::io("remove", &paths.dir)(e)),
    }
}
