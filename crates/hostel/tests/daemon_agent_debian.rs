//! The guest agent against the real qemu-guest-agent in ONE Debian 12 guest (built through
//! the API: minutes under TCG; skipped without root or debootstrap): exec's output, exit
//! status and stdin through the CLI, 100 MB of output with the daemon's memory bounded,
//! the addresses the guest reports equal to the tenant network's, another tenant's 404;
//! file push and pull (`agent_debian/files.rs`), and a hostile process on the guest's
//! agent port (`agent_debian/hostile.rs`), and a VM snapshot with the guest's filesystems
//! frozen, cut between freeze and thaw too (`agent_debian/snapshot.rs`), all on the same
//! guest.

#[path = "agent_debian/files.rs"]
mod files;
#[path = "agent_debian/hostile.rs"]
mod hostile;
#[path = "agent_debian/snapshot.rs"]
mod snapshot;

use base64::Engine as _;
use hostel_api::{
    BuildImage, Client, ClientError, CreateNetwork, CreateTenant, CreateToken, CreateVm, ExecEvent,
    ExecVm, NicRequest, Size,
};
use hostel_testkit::daemon::TestDaemon;
use hostel_testkit::{guest_assets, is_root, which};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOSTEL: &str = env!("CARGO_BIN_EXE_hostel");
const BUILD_TIMEOUT: Duration = Duration::from_secs(2400);
/// Boot to a running agent under TCG on a loaded 2-core machine.
const AGENT_TIMEOUT: Duration = Duration::from_secs(600);

fn skip_reason() -> Option<&'static str> {
    if !is_root() {
        Some("OS images need root (debootstrap, chroot)")
    } else if !which("debootstrap") || !which("qemu-img") || !which("mkfs.vfat") {
        Some("debootstrap, qemu-img or dosfstools missing")
    } else {
        None
    }
}

fn client_for(d: &TestDaemon, op: &Client, name: &str) -> (Client, String) {
    op.create_tenant(&CreateTenant {
        name: name.into(),
        quota: None,
    })
    .unwrap();
    let secret = op
        .create_token(name, &CreateToken::default())
        .unwrap()
        .secret;
    (Client::new(&d.url, Some(secret.clone())), secret)
}

/// Peak resident memory of a process (VmHWM), KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Runs `argv` in the guest through the API; its stdout, the exit status asserted 0.
fn exec_out(c: &Client, argv: &[&str]) -> String {
    let r = c
        .vms(None)
        .exec(
            "deb",
            &ExecVm {
                command: argv.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for line in std::io::BufRead::lines(std::io::BufReader::new(r)) {
        match serde_json::from_str::<ExecEvent>(&line.unwrap()).unwrap() {
            ExecEvent::Stdout(d) => out.extend(b64.decode(d).unwrap()),
            ExecEvent::Stderr(d) => err.extend(b64.decode(d).unwrap()),
            ExecEvent::Exit { code, signal } => {
                assert_eq!(
                    (code, signal),
                    (Some(0), None),
                    "{argv:?}: {}",
                    String::from_utf8_lossy(&err)
                );
                return String::from_utf8_lossy(&out).into_owned();
            }
            ExecEvent::Error(e) => panic!("{argv:?}: {e}"),
        }
    }
    panic!("{argv:?}: the stream ended without an exit status")
}

fn cli(d: &TestDaemon, token: &str) -> Command {
    let mut c = Command::new(HOSTEL);
    c.args(["--url", &d.url, "--token", token])
        .env("HOSTEL_CONFIG", "/nonexistent");
    c
}

#[test]
fn exec_and_guest_info_through_qemu_guest_agent() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let empty = tempfile::tempdir().unwrap();
    let guest_dir = guest_assets()
        .and_then(|a| a.initrd.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| empty.path().to_path_buf());
    let d = TestDaemon::start(Path::new(HOSTEL), &guest_dir, "agentdeb");
    let op = Client::new(&d.url, Some(d.operator_token.clone()));

    // Built, not imported from a cache: the image must carry qemu-guest-agent.
    let t = Instant::now();
    let mut v = op
        .build_image(&BuildImage {
            name: "debian-12".into(),
        })
        .unwrap();
    while v.state == "building" {
        assert!(t.elapsed() < BUILD_TIMEOUT, "build takes too long: {v:?}");
        std::thread::sleep(Duration::from_secs(5));
        v = op.show_image("debian-12").unwrap();
    }
    assert_eq!(v.state, "ready", "build failed: {v:?}");
    eprintln!("debian-12 built in {:.0?}", t.elapsed());

    let (acme, acme_token) = client_for(&d, &op, "acme");
    let (umbrella, _) = client_for(&d, &op, "umbrella");
    acme.create_network(
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
    let vm = acme
        .vms(None)
        .create(&CreateVm {
            name: "deb".into(),
            image: Some("debian-12".into()),
            vcpus: Some(2),
            memory: Some(Size::Mib(1024)),
            disk_gib: Some(3),
            networks: vec![NicRequest {
                network: "lan".into(),
                ip: None,
            }],
            ..Default::default()
        })
        .unwrap();
    let assigned = vm.nics[0].ipv4.clone().unwrap();

    // The agent starts with the guest; until then the VM answers 503.
    let t = Instant::now();
    let guest = loop {
        match acme.vms(None).guest("deb") {
            Ok(g)
                if g.interfaces
                    .iter()
                    .any(|i| !i.addresses.is_empty() && i.name != "lo") =>
            {
                break g
            }
            Ok(_) | Err(ClientError::Api { status: 503, .. }) => {}
            Err(e) => panic!("guest info: {e}"),
        }
        assert!(
            t.elapsed() < AGENT_TIMEOUT,
            "no agent after {AGENT_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    eprintln!("agent answered after {:.0?}: {guest:?}", t.elapsed());
    assert_eq!(guest.host_name, "deb");
    assert!(
        guest.os.as_deref().unwrap_or("").contains("Debian"),
        "{guest:?}"
    );
    let eth = guest
        .interfaces
        .iter()
        .find(|i| i.mac.as_deref() == Some(vm.nics[0].mac.as_str()))
        .expect("the guest reports the VM's NIC");
    // cloud-init may not have applied the address the moment the agent starts.
    let t = Instant::now();
    let mut addrs = eth.addresses.clone();
    while !addrs.contains(&format!("{assigned}/24")) {
        assert!(
            t.elapsed() < AGENT_TIMEOUT,
            "{addrs:?} never had {assigned}/24"
        );
        std::thread::sleep(Duration::from_secs(2));
        let g = acme.vms(None).guest("deb").unwrap();
        addrs = g
            .interfaces
            .into_iter()
            .find(|i| i.mac.as_deref() == Some(vm.nics[0].mac.as_str()))
            .map(|i| i.addresses)
            .unwrap_or_default();
    }

    // Another tenant cannot reach it.
    match umbrella.vms(None).exec(
        "deb",
        &ExecVm {
            command: vec!["true".into()],
            ..Default::default()
        },
    ) {
        Err(ClientError::Api { status: 404, .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("another tenant's exec ran"),
    }

    let out = cli(&d, &acme_token)
        .args(["vm", "exec", "deb", "--", "uname", "-a"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("Linux deb "), "{stdout}");

    let out = cli(&d, &acme_token)
        .args([
            "vm",
            "exec",
            "deb",
            "--",
            "sh",
            "-c",
            "echo oops >&2; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    let mut child = cli(&d, &acme_token)
        .args([
            "vm", "exec", "deb", "-i", "--env", "X=y", "--cwd", "/etc", "--",
        ])
        .args(["sh", "-c", "tr a-z A-Z; echo $X; pwd"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HELLO STDIN\ny\n/etc\n"
    );

    // 100 MB of output arrives whole while the daemon's peak memory grows by far less.
    let pid = d.child.id();
    let before = peak_rss_kib(pid);
    let mut child = cli(&d, &acme_token)
        .args(["vm", "exec", "deb", "--timeout", "1200", "--"])
        .args(["head", "-c", "100000000", "/dev/urandom"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut r = child.stdout.take().unwrap();
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(total, 100_000_000);
    let grown = peak_rss_kib(pid).saturating_sub(before);
    eprintln!("100 MB exec: daemon peak RSS grew {grown} KiB");
    assert!(grown < 64 * 1024, "daemon peak RSS grew {grown} KiB");

    files::push_pull(&d, &op, &acme, &acme_token);
    // Last: it stops the guest.
    hostile::hostile_guest(&acme, guest_assets().is_some());
    snapshot::frozen_snapshot(d, &op, &acme);
}
