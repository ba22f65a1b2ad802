//! OS images through the daemon: import refuses garbage naming the field; `debian-12` gets
//! into the daemon's store (imported from the image tests' cache when there is one, built
//! through the API otherwise); a VM created from it with an SSH key, user-data and a NIC boots
//! to its login prompt with cloud-init having applied all three; an image in use cannot be
//! deleted.

use hostel_api::{
    BuildImage, Client, ClientError, CreateNetwork, CreateTenant, CreateToken, CreateVm, ImageView,
    ImportImage, NicRequest, Size,
};
use hostel_testkit::daemon::TestDaemon;
use hostel_testkit::{guest_assets, is_root, which, workspace_root, LineWatcher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Boot to the login prompt with cloud-init under TCG on a loaded 2-core machine.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(480);
/// A cold debian-12 build (debootstrap + apt) when no cached image exists.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

fn skip_reason() -> Option<&'static str> {
    if !is_root() {
        Some("OS images need root (debootstrap, chroot, TAP-less VMs with qcow2 disks)")
    } else if !which("debootstrap")
        || !which("qemu-system-x86_64")
        || !which("qemu-img")
        || !which("mkfs.vfat")
    {
        Some("debootstrap, qemu-system-x86_64, qemu-img or dosfstools missing")
    } else {
        None
    }
}

fn daemon(tag: &str) -> (TestDaemon, tempfile::TempDir) {
    daemon_with_env(tag, &[])
}

fn daemon_with_env(tag: &str, env: &[(&str, &str)]) -> (TestDaemon, tempfile::TempDir) {
    // The busybox assets are optional here: an empty directory leaves only OS images.
    let empty = tempfile::tempdir().unwrap();
    let guest_dir = guest_assets()
        .and_then(|a| a.initrd.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| empty.path().to_path_buf());
    let hostel = Path::new(env!("CARGO_BIN_EXE_hostel"));
    let d = TestDaemon::start_with_env(hostel, &guest_dir, tag, env);
    (d, empty)
}

/// Tenant `acme` and its client.
fn tenant(d: &TestDaemon, op: &Client) -> Client {
    op.create_tenant(&CreateTenant {
        name: "acme".into(),
        quota: None,
    })
    .unwrap();
    Client::new(
        &d.url,
        Some(
            op.create_token("acme", &CreateToken::default())
                .unwrap()
                .secret,
        ),
    )
}

/// Tenant `acme`, its client, and its network `lan` (10.9.0.0/24, no uplink).
fn tenant_with_lan(d: &TestDaemon, op: &Client) -> Client {
    let t = tenant(d, op);
    t.create_network(
        None,
        &CreateNetwork {
            name: "lan".into(),
            subnet: "10.9.0.0/24".into(),
            gateway: None,
            uplink: false,
            subnet6: None,
        },
    )
    .unwrap();
    t
}

/// A new ed25519 public key with `comment`, its key pair kept in `dir`.
fn public_key(dir: &Path, comment: &str) -> String {
    hostel_testkit::ssh_keypair(dir, comment).1
}

/// `disks/<tenant>/<vm-id>` in the daemon's state directory (one tenant).
fn vm_disk_dir(d: &TestDaemon, vm_id: &str) -> PathBuf {
    d.state_path()
        .join("disks")
        .read_dir()
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
        .join(vm_id)
}

fn api_err(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, Option<String>, String) {
    match r {
        Err(ClientError::Api {
            status,
            field,
            message,
            ..
        }) => (status, field, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn import_refuses_garbage_and_bad_requests_naming_the_field() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let (d, _g) = daemon("imgbad");
    let op = Client::new(&d.url, Some(d.operator_token.clone()));
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.img");
    std::fs::write(&garbage, vec![0x5a_u8; 3 << 20]).unwrap();
    let import = |name: &str, path: &Path| {
        op.import_image(&ImportImage {
            name: name.into(),
            path: path.to_string_lossy().into_owned(),
            ..Default::default()
        })
    };

    let (status, field, msg) = api_err(import("junk", &garbage));
    assert_eq!((status, field.as_deref()), (400, Some("path")), "{msg}");
    assert!(
        msg.contains("garbage.img"),
        "error must name the file: {msg}"
    );
    let (status, field, msg) = api_err(import("junk", &dir.path().join("missing.img")));
    assert_eq!((status, field.as_deref()), (400, Some("path")), "{msg}");
    let (status, field, msg) = api_err(import("junk", Path::new("relative.img")));
    assert_eq!((status, field.as_deref()), (400, Some("path")), "{msg}");
    let (status, field, msg) = api_err(import("Bad/Name", &garbage));
    assert_eq!((status, field.as_deref()), (400, Some("name")), "{msg}");
    // Nothing was registered by any of them.
    let names: Vec<String> = op
        .list_images()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert!(!names.contains(&"junk".to_string()), "{names:?}");
    assert_eq!(api_err(op.show_image("junk")).0, 404);

    let (status, field, msg) = api_err(op.build_image(&BuildImage {
        name: "windows-95".into(),
    }));
    assert_eq!((status, field.as_deref()), (400, Some("name")), "{msg}");
    assert_eq!(api_err(op.delete_image("junk")).0, 404);

    // Tenants may look, not change.
    let t = tenant(&d, &op);
    t.list_images().unwrap();
    assert_eq!(
        api_err(t.import_image(&ImportImage {
            name: "x".into(),
            path: garbage.to_string_lossy().into_owned(),
            ..Default::default()
        }))
        .0,
        404
    );
    // An OS-only field on busybox, an unknown service: refused, naming the field.
    if names.contains(&"busybox".to_string()) {
        let (status, field, _) = api_err(t.vms(None).create(&CreateVm {
            name: "b".into(),
            ssh_keys: vec!["ssh-ed25519 AAAA x".into()],
            start: Some(false),
            ..Default::default()
        }));
        assert_eq!((status, field.as_deref()), (400, Some("ssh_keys")));
    }
    let (status, field, _) = api_err(t.vms(None).create(&CreateVm {
        name: "s".into(),
        service: Some("mainframe".into()),
        ..Default::default()
    }));
    assert_eq!((status, field.as_deref()), (400, Some("service")));
    assert!(t.vms(None).list().unwrap().is_empty());
}

/// Gets `debian-12` into the daemon's store: an import of the image tests' cached build when
/// there is one (seconds), else a build through the API (minutes), following its progress.
fn provide_debian(op: &Client) -> ImageView {
    let cache = std::env::var_os("HOSTEL_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/images-cache"))
        .join("images/debian-12");
    if let Ok(text) = std::fs::read_to_string(cache.join("manifest.json")) {
        let m: serde_json::Value = serde_json::from_str(&text).unwrap();
        let boot = &m["boot"];
        let file = |k: &str| cache.join(boot[k].as_str().unwrap()).display().to_string();
        eprintln!("importing the cached debian-12 from {}", cache.display());
        return op
            .import_image(&ImportImage {
                name: "debian-12".into(),
                path: cache
                    .join(m["disk"]["file"].as_str().unwrap())
                    .display()
                    .to_string(),
                kernel: Some(file("kernel")),
                initrd: Some(file("initrd")),
                cmdline: boot["cmdline"].as_str().map(str::to_string),
            })
            .expect("import debian-12");
    }
    eprintln!("no cached debian-12; building through the API");
    let t = Instant::now();
    let mut v = op
        .build_image(&BuildImage {
            name: "debian-12".into(),
        })
        .unwrap();
    let mut percents = Vec::new();
    while v.state == "building" {
        assert!(t.elapsed() < BUILD_TIMEOUT, "build takes too long: {v:?}");
        percents.push(v.percent.unwrap_or(0));
        std::thread::sleep(Duration::from_secs(2));
        v = op.show_image("debian-12").unwrap();
        eprintln!(
            "debian-12: [{:>3}%] {} {}",
            v.percent.unwrap_or(100),
            v.phase.as_deref().unwrap_or("-"),
            v.message.as_deref().unwrap_or("")
        );
    }
    assert_eq!(v.state, "ready", "build failed: {v:?}");
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]),
        "progress went back: {percents:?}"
    );
    v
}

/// Waits on a VM's console (the testkit's one console wait) for `needle`, already seen or
/// still to come, until `LOGIN_TIMEOUT` after `since`; `prompt`: it ends no line (a getty's
/// `login:`). Panics with the transcript at the deadline.
fn console_wait(console: &mut LineWatcher, needle: &str, prompt: bool, since: Instant) -> String {
    let left = LOGIN_TIMEOUT.saturating_sub(since.elapsed());
    let seen = console.seen.iter().find(|l| l.contains(needle)).cloned();
    let found = match seen {
        Some(line) => Some(line),
        None if prompt => console.wait_for_prompt(needle, left),
        None => console.wait_for(needle, left),
    };
    match found {
        Some(line) => {
            eprintln!("console: {needle:?} after {:.1?}", since.elapsed());
            line
        }
        None => panic!(
            "no {needle:?} on the console after {LOGIN_TIMEOUT:?}:\n{}",
            console.transcript()
        ),
    }
}

#[test]
fn debian_vm_boots_from_an_os_image_with_its_seed() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let (d, _g) = daemon("imgboot");
    let op = Client::new(&d.url, Some(d.operator_token.clone()));
    let image = provide_debian(&op);
    assert_eq!(image.state, "ready");
    assert_eq!(image.size_bytes, Some(2 << 30));
    let listed = op.list_images().unwrap();
    assert!(listed
        .iter()
        .any(|i| i.name == "debian-12" && i.state == "ready"));

    let t = tenant_with_lan(&d, &op);
    let key_dir = tempfile::tempdir().unwrap();
    let public = public_key(key_dir.path(), "hostel-images-test");

    // Too small a disk for the image: refused, and nothing is left behind.
    let body = CreateVm {
        name: "deb".into(),
        image: Some("debian-12".into()),
        vcpus: Some(2),
        memory: Some(Size::Mib(1024)),
        ssh_keys: vec![public],
        user_data: Some(
            "#!/bin/sh\necho HOSTEL-MARK host=$(hostname) \
             keys=$(cat /home/*/.ssh/authorized_keys | grep -c hostel-images-test) \
             $(ip -4 -o addr show eth0 | grep -o 'inet [0-9./]*')\n"
                .into(),
        ),
        networks: vec![NicRequest {
            network: "lan".into(),
            ip: None,
        }],
        ..Default::default()
    };
    let (status, field, _) = api_err(t.vms(None).create(&CreateVm {
        disk_gib: Some(1),
        ..body.clone()
    }));
    assert_eq!((status, field.as_deref()), (400, Some("disk_gib")));
    assert!(t.vms(None).list().unwrap().is_empty());

    let started = Instant::now();
    let vm = t
        .vms(None)
        .create(&CreateVm {
            disk_gib: Some(3),
            ..body
        })
        .unwrap();
    assert_eq!(vm.image, "debian-12");
    assert_eq!(vm.nics[0].ipv4.as_deref(), Some("10.9.0.2"));
    let disk_dir = vm_disk_dir(&d, &vm.id);
    assert!(disk_dir.join("root.qcow2").is_file() && disk_dir.join("seed.img").is_file());

    let mut console = LineWatcher::new(t.vms(None).console_follow("deb").unwrap());
    console_wait(&mut console, "deb login:", true, started);
    let mark = console_wait(&mut console, "HOSTEL-MARK host=", false, started);
    assert!(mark.contains("host=deb"), "{mark}");
    assert!(mark.contains("keys=1"), "SSH key not installed: {mark}");
    assert!(
        mark.contains("inet 10.9.0.2/24"),
        "static address not applied: {mark}"
    );

    // The image is in use: it stays.
    let (status, _, msg) = api_err(op.delete_image("debian-12"));
    assert_eq!(status, 409, "{msg}");
    assert!(msg.contains("deb"), "{msg}");
    t.vms(None).delete("deb").unwrap();
    assert!(!disk_dir.exists());
    op.delete_image("debian-12").unwrap();
    assert_eq!(api_err(op.show_image("debian-12")).0, 404);
}

/// A daemon keeping one `debian-12` standby: a create of the default shape takes it, so the
/// VM's boot happened before the order; the guest still becomes the customer's VM (its
/// id as cloud-init's instance id, its host name, key and address) and the pool refills.
#[test]
fn a_create_takes_a_standby_that_becomes_the_customers_vm() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let (d, _g) = daemon_with_env("standby", &[("HOSTEL_STANDBY", "debian-12")]);
    let op = Client::new(&d.url, Some(d.operator_token.clone()));
    assert_eq!(op.host().unwrap().standby[0].ready, 0);
    provide_debian(&op);
    let booted = Instant::now();
    let standby = wait_standby(&op, |s| s.ready == 1, booted);
    assert_eq!((standby.wanted, standby.booting), (1, 0));

    let t = tenant_with_lan(&d, &op);
    let key_dir = tempfile::tempdir().unwrap();
    let public = public_key(key_dir.path(), "standby-test");
    let started = Instant::now();
    let vm = t
        .vms(None)
        .create(&CreateVm {
            name: "shop".into(),
            image: Some("debian-12".into()),
            ssh_keys: vec![public],
            user_data: Some(
                "#!/bin/sh\necho HOSTEL-MARK host=$(hostname) \
                 id=$(cat /var/lib/cloud/data/instance-id) \
                 keys=$(cat /home/*/.ssh/authorized_keys | grep -c standby-test) \
                 rootbytes=$(df -B1 --output=size / | tail -n1 | tr -d ' ') \
                 $(ip -4 -o addr show eth0 | grep -o 'inet [0-9./]*')\n"
                    .into(),
            ),
            networks: vec![NicRequest {
                network: "lan".into(),
                ip: None,
            }],
            disk_gib: Some(3),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(vm.state, "running", "{vm:?}");
    let disk_dir = vm_disk_dir(&d, &vm.id);
    assert!(disk_dir.join("root.qcow2").is_file() && disk_dir.join("seed.img").is_file());

    let mut console = LineWatcher::new(t.vms(None).console_follow("shop").unwrap());
    // The console is the standby's: it waited for its seed, then got it.
    console_wait(&mut console, READY, false, started);
    console_wait(
        &mut console,
        "hostel-standby: seed received",
        false,
        started,
    );
    let mark = console_wait(&mut console, "HOSTEL-MARK host=", false, started);
    assert!(mark.contains("host=shop"), "{mark}");
    assert!(mark.contains(&format!("id={}", vm.id)), "{mark}");
    assert!(mark.contains("keys=1"), "SSH key not installed: {mark}");
    assert!(mark.contains("inet 10.9.0.2/24"), "address: {mark}");
    // The root filesystem grew to the 3 GiB ordered (the standby was booted with 2).
    let root: u64 = mark
        .split("rootbytes=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        root > (5 << 30) / 2,
        "root filesystem not grown to 3 GiB: {mark}"
    );
    eprintln!(
        "created from a standby: cloud-init done after {:.1?}",
        started.elapsed()
    );
    // The pool boots the next standby.
    let next = wait_standby(&op, |s| s.booting + s.ready == 1, started);
    assert_eq!(next.wanted, 1);
    t.vms(None).delete("shop").unwrap();
    assert!(!disk_dir.exists());
}

const READY: &str = "hostel-standby: waiting for the seed";

/// Polls the host view until the debian-12 standby pool satisfies `ok`.
fn wait_standby(
    op: &Client,
    ok: impl Fn(&hostel_api::StandbyView) -> bool,
    since: Instant,
) -> hostel_api::StandbyView {
    loop {
        let host = op.host().unwrap();
        let s = host
            .standby
            .iter()
            .find(|s| s.image == "debian-12")
            .cloned()
            .expect("a debian-12 standby pool");
        if ok(&s) {
            eprintln!("standby {s:?} after {:.1?}", since.elapsed());
            return s;
        }
        assert!(
            since.elapsed() < LOGIN_TIMEOUT,
            "standby never got there: {s:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
