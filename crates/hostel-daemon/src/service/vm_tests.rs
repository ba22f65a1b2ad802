//! The VM services against a real store in a temporary directory, a fake engine and a fake
//! switch: what a create leaves when its launch fails, what a refusal leaves, not-found,
//! resize validation, and a standby claim.

use super::fakes::{FakeEngine, FakeStandby, FakeSwitch};
use super::standby::{claim, Claim};
use super::vms::Vms;
use super::DaemonError;
use crate::error::ApiError;
use crate::images::{ImageRegistry, ROOT_DISK, SEED_DISK};
use crate::layout::Layout;
use crate::standby::Shape;
use crate::supervisor::VmOpError;
use hostel_api::{CreateVm, ResizeVm, Size};
use hostel_state::{
    Actor, AuditEntry, AuditQuery, AuditResult, DesiredState, NetworkName, NewAuditEntry,
    NewNetwork, NewNic, NewVm, Quota, SqliteStore, Store, StoreError, TenantId, TenantName, Usage,
    VmId, VmName, VmSpecRecord,
};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    layout: Layout,
    images: ImageRegistry,
    engine: Arc<FakeEngine>,
    switch: Arc<FakeSwitch>,
    tenant: TenantId,
}

fn quota(max_vms: u32) -> Quota {
    Quota {
        max_vcpus: 8,
        max_memory_mib: 8192,
        max_disk_gib: 20,
        max_vms,
        max_networks: 2,
        max_uplinks: 0,
        max_public_addresses: 0,
    }
}

fn fixture(max_vms: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // The busybox image is registered when its kernel and initrd are there; the fake
    // engine never boots them.
    let guest = dir.path().join("guest");
    std::fs::create_dir_all(&guest).unwrap();
    std::fs::write(guest.join("vmlinux"), b"").unwrap();
    std::fs::write(guest.join("initrd.img"), b"").unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let entry = NewAuditEntry::ok(Actor::System, None, "tenant.create", "acme");
    let tenant = store
        .create_tenant(&TenantName::new("acme").unwrap(), quota(max_vms), &entry)
        .unwrap()
        .id;
    Fixture {
        layout: Layout::new(dir.path()),
        images: ImageRegistry::discover(Some(guest), dir.path().join("images")),
        _dir: dir,
        store,
        engine: Arc::default(),
        switch: Arc::default(),
        tenant,
    }
}

impl Fixture {
    fn vms(&self) -> Vms<'_, FakeEngine, FakeSwitch> {
        Vms::new(
            &self.store,
            &self.layout,
            &self.images,
            &self.engine,
            &self.switch,
        )
    }

    fn entry(&self, action: &str, target: &str) -> NewAuditEntry {
        NewAuditEntry::ok(Actor::System, Some(self.tenant), action, target)
    }

    fn audit(&self) -> Vec<AuditEntry> {
        let q = AuditQuery {
            limit: 100,
            tenant: Some(self.tenant),
            before_seq: None,
        };
        self.store.list_audit(&q).unwrap()
    }

    fn vm_count(&self) -> usize {
        self.store.list_vms(&self.tenant).unwrap().len()
    }

    /// Whatever is under the tenant's disk directory (VM directories, disks).
    fn disk_dirs(&self) -> Vec<std::path::PathBuf> {
        let root = self
            .layout
            .root()
            .join("disks")
            .join(self.tenant.to_string());
        match std::fs::read_dir(root) {
            Ok(d) => d.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn request(name: &str) -> CreateVm {
    CreateVm {
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_create_whose_launch_fails_leaves_no_record_disks_or_usage_and_audits_its_undo() {
    let f = fixture(2);
    f.engine.fail_start.store(true, Ordering::SeqCst);
    let err = f
        .vms()
        .create(f.tenant, &request("web"), f.entry("vm.create", "web"))
        .await
        .unwrap_err();
    let DaemonError::Undone(inner) = &err else {
        panic!("a failure after the record is undone: {err:?}")
    };
    assert!(
        matches!(**inner, DaemonError::Vm(VmOpError::Lifecycle(_))),
        "{inner:?}"
    );
    assert_eq!(
        f.engine.calls(),
        ["make_disks", "start", "remove"],
        "disks made, the launch tried, its QEMU removed"
    );
    assert_eq!(f.vm_count(), 0, "no record");
    assert!(f.disk_dirs().is_empty(), "no disks: {:?}", f.disk_dirs());
    assert_eq!(f.store.tenant_usage(&f.tenant).unwrap(), Usage::default());
    // The record's entry committed with it, the failure with its removal: the log tells
    // both changes, and no other.
    let mut audit = f.audit();
    audit.sort_by_key(|e| e.seq);
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(audit
        .iter()
        .all(|e| e.action == "vm.create" && e.target == "web"));
    assert_eq!(audit[0].result, AuditResult::Ok);
    match &audit[1].result {
        AuditResult::Error(m) => {
            assert!(
                m.contains("fake-engine-told-to-fail") && m.contains("(undone)"),
                "{m}"
            )
        }
        r => panic!("the second entry records the failure: {r:?}"),
    }
    assert_eq!(f.switch.syncs(), 1, "the undo drops the VM's ports");
    // The handler must not log it a second time.
    let api = ApiError::from(err);
    assert!(api.recorded);
    assert_eq!(api.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_quota_refusal_changes_nothing_and_never_calls_the_engine() {
    let f = fixture(1);
    let vm = f
        .vms()
        .create(f.tenant, &request("one"), f.entry("vm.create", "one"))
        .await
        .unwrap();
    assert_eq!(f.engine.calls(), ["make_disks", "start"]);
    assert!(f.layout.vm_root_disk(&f.tenant, &vm.id).is_file());
    let err = f
        .vms()
        .create(f.tenant, &request("two"), f.entry("vm.create", "two"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DaemonError::Store(StoreError::QuotaExceeded(_))),
        "{err:?}"
    );
    assert_eq!(
        f.engine.calls(),
        ["make_disks", "start"],
        "the refused create never reached the engine"
    );
    assert_eq!(f.vm_count(), 1);
    assert_eq!(f.disk_dirs().len(), 1, "only the first VM's disks");
    assert_eq!(
        f.audit().len(),
        1,
        "the refusal committed no entry of its own"
    );
    assert_eq!(f.store.tenant_usage(&f.tenant).unwrap().vms, 1);
}

#[tokio::test]
async fn delete_of_a_missing_or_foreign_vm_is_not_found_and_touches_nothing() {
    let f = fixture(2);
    f.vms()
        .create(f.tenant, &request("web"), f.entry("vm.create", "web"))
        .await
        .unwrap();
    let other = f
        .store
        .create_tenant(
            &TenantName::new("other").unwrap(),
            quota(1),
            &NewAuditEntry::ok(Actor::System, None, "tenant.create", "other"),
        )
        .unwrap()
        .id;
    let before = f.engine.calls();
    for (tenant, name) in [(f.tenant, "nope"), (f.tenant, "Not_A_Name"), (other, "web")] {
        let err = f
            .vms()
            .delete(tenant, name, f.entry("vm.delete", name))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DaemonError::Store(StoreError::NotFound { .. })),
            "{name}: {err:?}"
        );
        assert_eq!(
            ApiError::from(err).status,
            axum::http::StatusCode::NOT_FOUND
        );
    }
    assert_eq!(f.engine.calls(), before, "the engine was never asked");
    assert_eq!(f.vm_count(), 1);
}

#[tokio::test]
async fn resize_refuses_the_memory_create_refuses_and_changes_nothing() {
    let f = fixture(2);
    let mut req = request("web");
    req.start = Some(false);
    let vm = f
        .vms()
        .create(f.tenant, &req, f.entry("vm.create", "web"))
        .await
        .unwrap();
    assert_eq!(f.engine.calls(), ["make_disks", "created"]);
    assert_eq!(f.switch.syncs(), 1, "a VM created stopped gets its ports");

    let tiny = ResizeVm {
        memory: Some(Size::Mib(1)),
        ..Default::default()
    };
    let err = f
        .vms()
        .resize(f.tenant, "web", &tiny, f.entry("vm.resize", "web"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DaemonError::Invalid { field, .. } if field == "memory"),
        "{err:?}"
    );
    let now = f.store.get_vm(&vm.id).unwrap();
    assert_eq!(now.spec, vm.spec, "the refused resize changed nothing");

    // Create refuses the same shape, before any record.
    let mut small = request("small");
    small.memory = Some(Size::Mib(1));
    let err = f
        .vms()
        .create(f.tenant, &small, f.entry("vm.create", "small"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DaemonError::Invalid { field, .. } if field == "memory"),
        "{err:?}"
    );
    assert_eq!(f.vm_count(), 1);

    let shrink = ResizeVm {
        disk_gib: Some(0),
        ..Default::default()
    };
    let err = f
        .vms()
        .resize(f.tenant, "web", &shrink, f.entry("vm.resize", "web"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DaemonError::Invalid { field, .. } if field == "disk_gib"),
        "{err:?}"
    );

    let more = ResizeVm {
        memory: Some(Size::Mib(256)),
        ..Default::default()
    };
    let resized = f
        .vms()
        .resize(f.tenant, "web", &more, f.entry("vm.resize", "web"))
        .await
        .unwrap();
    assert_eq!(resized.spec.memory_mib(), 256);
    assert_eq!(
        f.audit().len(),
        2,
        "the create and the one resize that happened"
    );
    assert_eq!(
        f.engine.calls(),
        ["make_disks", "created"],
        "a resize is the store's"
    );
}

/// Records a VM with `standby`'s id (as a create that took it does), with `nics` NICs.
fn record_for_standby(f: &Fixture, id: VmId, nics: usize) -> hostel_state::Vm {
    let net = f
        .store
        .create_network(
            &f.tenant,
            &NewNetwork::ipv4(
                NetworkName::new("lan").unwrap(),
                "10.0.0.0/24".parse().unwrap(),
            ),
            &f.entry("network.create", "lan"),
        )
        .unwrap();
    let new = NewVm {
        id: Some(id),
        name: VmName::new("web").unwrap(),
        spec: VmSpecRecord::new(1, 512, 2, "debian").unwrap(),
        desired: DesiredState::Stopped,
    };
    let nics: Vec<_> = (0..nics)
        .map(|_| NewNic {
            network: net.id,
            ipv4: None,
        })
        .collect();
    f.store
        .create_vm_with_nics_within_quota(&f.tenant, &new, &nics, &f.entry("vm.create", "web"))
        .unwrap()
        .0
}

fn standby_disks(f: &Fixture, id: &VmId) -> std::path::PathBuf {
    let dir = f.layout.standby_disk_dir(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(ROOT_DISK), b"").unwrap();
    std::fs::write(dir.join(SEED_DISK), b"").unwrap();
    dir
}

fn fake_standby(id: VmId) -> FakeStandby {
    FakeStandby {
        id,
        shape: Shape {
            image: "debian".into(),
            vcpus: 1,
            memory_mib: 512,
            disk_gib: 2,
        },
    }
}

fn seed_tools_missing() -> bool {
    let missing = ["mkfs.vfat", "mcopy"].iter().any(|tool| {
        !std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|dir: std::path::PathBuf| dir.join(tool).is_file())
    });
    if missing {
        eprintln!("skipped: writing a seed needs mkfs.vfat and mcopy (dosfstools, mtools)");
    }
    missing
}

#[tokio::test]
async fn a_standby_claim_hands_the_vm_its_seed_disks_and_qemu() {
    if seed_tools_missing() {
        return;
    }
    let f = fixture(2);
    let id = VmId::new_random();
    let vm = record_for_standby(&f, id, 1);
    let standby_dir = standby_disks(&f, &id);
    let taken = claim(&f.vms(), &vm, &request("web"), None, fake_standby(id))
        .await
        .unwrap();
    assert_eq!(taken, Claim::Taken);
    assert_eq!(
        f.engine.calls(),
        ["admit", "hand_over_seed", "attach"],
        "admitted before the guest gets its seed, then the VM owns the QEMU"
    );
    assert_eq!(f.switch.syncs(), 1, "the NIC moves to the VM's network");
    let disks = f.layout.vm_disk_dir(&f.tenant, &id);
    let seed = std::fs::metadata(disks.join(SEED_DISK)).unwrap();
    assert!(seed.len() > 0, "the seed was written in place");
    assert!(disks.join(ROOT_DISK).is_file());
    assert!(!standby_dir.exists(), "the standby's disks became the VM's");
    assert!(f.engine.discarded.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_standby_that_cannot_serve_the_vm_is_declined_or_discarded() {
    let f = fixture(2);
    // No NIC: the standby's first NIC has nowhere to go; the create boots cold.
    let id = VmId::new_random();
    let vm = record_for_standby(&f, id, 0);
    standby_disks(&f, &id);
    let declined = claim(&f.vms(), &vm, &request("web"), None, fake_standby(id))
        .await
        .unwrap();
    assert_eq!(declined, Claim::Declined);
    assert_eq!(f.engine.calls(), ["discard_standby"]);
    assert_eq!(*f.engine.discarded.lock().unwrap(), [id]);
    assert_eq!(f.switch.syncs(), 0);
}

#[tokio::test]
async fn a_standby_whose_seed_cannot_be_written_is_discarded_and_never_attached() {
    if seed_tools_missing() {
        return;
    }
    let f = fixture(2);
    let id = VmId::new_random();
    let vm = record_for_standby(&f, id, 1);
    // Its seed file is gone: the write in place fails.
    let dir = standby_disks(&f, &id);
    std::fs::remove_file(dir.join(SEED_DISK)).unwrap();
    let err = claim(&f.vms(), &vm, &request("web"), None, fake_standby(id))
        .await
        .unwrap_err();
    assert!(matches!(err, DaemonError::Io { .. }), "{err:?}");
    assert_eq!(
        f.engine.calls(),
        ["discard_standby"],
        "never admitted or attached"
    );
    assert!(!Path::new(&f.layout.vm_disk_dir(&f.tenant, &id)).exists());
}
