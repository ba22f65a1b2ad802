//! Fakes of what the services drive outside the daemon, for their unit tests. Real
//! engines and switches need QEMU and a switch process; the end-to-end tests in
//! `crates/hostel/tests/` run those.

use crate::actor::LifecycleError;
use crate::adapters::engine::{DiskPlan, EngineAdapter, EngineOpError, StandbyDisk, StandbyHandle};
use crate::adapters::switch_link::LinkError;
use crate::adapters::{SwitchAdapter, SyncError};
use crate::launch::LaunchError;
use crate::standby::Shape;
use crate::supervisor::VmOpError;
use hostel_state::{NewAuditEntry, Vm, VmId};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A switch that records how often it was synced and can be told to refuse.
#[derive(Default)]
pub struct FakeSwitch {
    pub syncs: AtomicU32,
    pub refuse: AtomicBool,
}

impl FakeSwitch {
    pub fn syncs(&self) -> u32 {
        self.syncs.load(Ordering::SeqCst)
    }
}

impl SwitchAdapter for FakeSwitch {
    async fn sync(&self) -> Result<(), SyncError> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.refuse.load(Ordering::SeqCst) {
            return Err(LinkError::Refused("fake switch told to refuse".into()).into());
        }
        Ok(())
    }
}

/// A standby the fake engine hands out: an id and a shape, no QEMU.
#[derive(Debug)]
pub struct FakeStandby {
    pub id: VmId,
    pub shape: Shape,
}

impl StandbyHandle for FakeStandby {
    fn id(&self) -> VmId {
        self.id
    }
    fn shape(&self) -> &Shape {
        &self.shape
    }
}

/// An engine that makes disks as empty files, records every call by name, and fails a
/// start when told to (as a QEMU that will not launch).
#[derive(Default)]
pub struct FakeEngine {
    pub fail_start: AtomicBool,
    calls: Mutex<Vec<&'static str>>,
    pub standbys: Mutex<Vec<FakeStandby>>,
    /// Standbys handed back or discarded, by id.
    pub put_back: Mutex<Vec<VmId>>,
    pub discarded: Mutex<Vec<VmId>>,
}

impl FakeEngine {
    pub fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: &'static str) {
        self.calls.lock().unwrap().push(call);
    }
}

fn touch(path: &std::path::Path) -> Result<(), EngineOpError> {
    let disk = |source| EngineOpError::Disk {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(disk)?;
    }
    std::fs::File::create(path).map_err(disk)?;
    Ok(())
}

impl EngineAdapter for FakeEngine {
    type Standby = FakeStandby;

    async fn make_disks(&self, plan: DiskPlan) -> Result<(), EngineOpError> {
        self.record("make_disks");
        match plan {
            DiskPlan::Data { path, .. } => touch(&path),
            DiskPlan::Os { dir, .. } => touch(&dir.join(crate::images::ROOT_DISK)),
        }
    }

    async fn admit(&self, _vm: &Vm, _audit: Option<NewAuditEntry>) -> Result<(), VmOpError> {
        self.record("admit");
        Ok(())
    }

    async fn start(&self, _vm: &Vm, _audit: Option<NewAuditEntry>) -> Result<(), VmOpError> {
        self.record("start");
        if self.fail_start.load(Ordering::SeqCst) {
            let launch = LaunchError::ImageMissing("fake-engine-told-to-fail".into());
            return Err(VmOpError::Lifecycle(LifecycleError::Start(Arc::new(
                launch,
            ))));
        }
        Ok(())
    }

    async fn created(&self, _vm: &Vm) -> Result<(), VmOpError> {
        self.record("created");
        Ok(())
    }

    async fn stop(
        &self,
        _vm: &Vm,
        _force: bool,
        _grace: Duration,
        _audit: NewAuditEntry,
    ) -> Result<(), VmOpError> {
        self.record("stop");
        Ok(())
    }

    async fn restart(
        &self,
        _vm: &Vm,
        _grace: Duration,
        _audit: NewAuditEntry,
    ) -> Result<(), VmOpError> {
        self.record("restart");
        Ok(())
    }

    async fn delete(&self, _vm: &Vm, _audit: NewAuditEntry) -> Result<(), VmOpError> {
        self.record("delete");
        Ok(())
    }

    async fn remove(&self, _vm: &Vm) {
        self.record("remove");
    }

    fn take_standby(&self, shape: &Shape) -> Option<FakeStandby> {
        self.record("take_standby");
        let mut idle = self.standbys.lock().unwrap();
        let i = idle.iter().position(|s| s.shape == *shape)?;
        Some(idle.remove(i))
    }

    fn put_back_standby(&self, sb: FakeStandby) {
        self.record("put_back_standby");
        self.put_back.lock().unwrap().push(sb.id);
    }

    async fn discard_standby(&self, sb: FakeStandby) {
        self.record("discard_standby");
        self.discarded.lock().unwrap().push(sb.id);
    }

    async fn grow_standby_disk(
        &self,
        _sb: &FakeStandby,
        disk: StandbyDisk,
        _bytes: u64,
    ) -> Result<(), EngineOpError> {
        self.record(match disk {
            StandbyDisk::Root => "grow_standby_root",
            StandbyDisk::Seed => "hand_over_seed",
        });
        Ok(())
    }

    async fn attach(&self, _vm: &Vm, _sb: FakeStandby) {
        self.record("attach");
    }
}
