//! VPSs through the daemon, with real containers (runc) and a real busybox VM on the
//! daemon-managed switch: a VPS created through the API runs and `exec` works; it and a VM of
//! its tenant ping each other through the switch; a forged source from the VPS is dropped;
//! another tenant's VPS (same subnet) cannot reach it and cannot see it (404); quotas count
//! VPSs with VMs; `kill -9` of the daemon leaves the VPS running and the next daemon
//! re-adopts it; a delete leaves no process, cgroup, mount or TAP.
//! Skipped where the host lacks root, runc, busybox-static or the guest assets.

use hostel_api::{
    Client, CreateNetwork, CreateTenant, CreateToken, CreateVm, ExecVps, NicRequest, QuotaBody,
};
use hostel_testkit::daemon::TestDaemon;
use hostel_testkit::{guest_assets, is_root, run_arg, LineWatcher, BOOT_TIMEOUT};
use std::path::Path;

fn tenant(d: &TestDaemon, name: &str) -> (Client, String) {
    let op = Client::new(&d.url, Some(d.operator_token.clone()));
    op.create_tenant(&CreateTenant {
        name: name.into(),
        quota: None,
    })
    .unwrap();
    let tok = op.create_token(name, &CreateToken::default()).unwrap();
    let c = Client::new(&d.url, Some(tok.secret.clone()));
    c.create_network(
        None,
        &CreateNetwork {
            name: "lan".into(),
            subnet: "10.19.0.0/24".into(),
            gateway: None,
            uplink: false,
            subnet6: None,
        },
    )
    .unwrap();
    (c, tok.secret)
}

/// `hostel --url URL ARGS…` with `token`, no ambient configuration: exit code and stdout.
fn cli(url: &str, token: &str, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hostel"))
        .env_remove("HOSTEL_URL")
        .env_remove("HOSTEL_REMOTE")
        .env("HOSTEL_CONFIG", "/nonexistent/hostel-config.toml")
        .env("HOSTEL_TOKEN", token)
        .args(["--url", url])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn vps(name: &str, ip: &str) -> CreateVm {
    CreateVm {
        name: name.into(),
        image: Some("busybox".into()),
        memory: Some(hostel_api::Size::Mib(64)),
        disk_gib: Some(1),
        networks: vec![NicRequest {
            network: "lan".into(),
            ip: Some(ip.into()),
        }],
        ..Default::default()
    }
}

/// `sh -c script` in the VPS: exit code and stdout+stderr.
fn sh(c: &Client, name: &str, script: &str) -> (Option<i32>, String) {
    let out = c
        .vpss(None)
        .vps_exec(
            name,
            &ExecVps {
                command: vec!["/bin/sh".into(), "-c".into(), script.into()],
                timeout_secs: Some(60),
            },
        )
        .unwrap();
    (out.exit_code, format!("{}{}", out.stdout, out.stderr))
}

fn skip() -> Option<&'static str> {
    if !is_root() {
        return Some("needs root");
    }
    if !Path::new("/usr/sbin/runc").exists() && !Path::new("/usr/bin/runc").exists() {
        return Some("needs runc (scripts/install-deps.sh)");
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("needs busybox-static");
    }
    None
}

#[test]
fn a_vps_runs_reaches_its_tenants_vm_survives_the_daemon_and_leaves_nothing() {
    if let Some(why) = skip() {
        eprintln!("skipped: {why}");
        return;
    }
    let Some(a) = guest_assets() else { return };
    let guest_dir = a.initrd.parent().unwrap_or(Path::new("."));
    let mut d = TestDaemon::start(Path::new(env!("CARGO_BIN_EXE_hostel")), guest_dir, "vps");
    // A real state directory is 0700 (it holds secrets): the VPS's root, an unprivileged id
    // outside, must never need to search it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.state_path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let (acme, acme_token) = tenant(&d, "acme");
    let (umbrella, _) = tenant(&d, "umbrella");

    // The CLI: create with the flags, exec with the command's exit status.
    let (code, out) = cli(
        &d.url,
        &acme_token,
        &[
            "vps",
            "create",
            "cli1",
            "--image",
            "busybox",
            "--vcpus",
            "1",
            "--memory",
            "64M",
            "--disk",
            "1G",
            "--network",
            "lan",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(
        &d.url,
        &acme_token,
        &["vps", "exec", "cli1", "--", "id", "-u"],
    );
    assert_eq!((code, out.as_str()), (0, "0\n"));
    let (code, _) = cli(
        &d.url,
        &acme_token,
        &["vps", "exec", "cli1", "--", "sh", "-c", "exit 3"],
    );
    assert_eq!(code, 3);
    let (code, out) = cli(&d.url, &acme_token, &["vps", "delete", "cli1"]);
    assert_eq!(code, 0, "{out}");

    let v = acme.vpss(None).create(&vps("web", "10.19.0.10")).unwrap();
    assert_eq!(v.state, "running", "{v:?}");
    let pid = v.pid.expect("a running VPS has a pid");
    assert_eq!(v.nics[0].ipv4.as_deref(), Some("10.19.0.10"));
    let (code, out) = sh(&acme, "web", "id -u; hostname; ip -o -4 addr show dev eth0");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("0\nweb\n") && out.contains("10.19.0.10/24"),
        "{out}"
    );

    // A VM of the same tenant: it pings the VPS, the VPS pings it back.
    let script = "if ping -c 3 -W 3 10.19.0.10 >/dev/null; then echo VM-PING-OK; else echo VM-PING-FAILED; fi; sleep 600";
    acme.vms(None)
        .create(&CreateVm {
            name: "vm1".into(),
            memory: Some(hostel_api::Size::Mib(128)),
            cmdline: Some(run_arg(script)),
            networks: vec![NicRequest {
                network: "lan".into(),
                ip: Some("10.19.0.20".into()),
            }],
            ..Default::default()
        })
        .unwrap();
    let mut w = LineWatcher::new(acme.vms(None).console_follow("vm1").unwrap());
    let hit = w.wait_for("VM-PING-", BOOT_TIMEOUT);
    assert!(
        w.transcript().contains("VM-PING-OK"),
        "the VM could not reach the VPS ({hit:?}): {}",
        w.transcript()
    );
    let (code, out) = sh(&acme, "web", "ping -c 2 -W 3 10.19.0.20");
    assert_eq!(code, Some(0), "the VPS could not reach the VM: {out}");

    // A forged source address from the VPS is dropped by the switch (root in the VPS owns
    // its network namespace, so it can add the address; the switch does not let it out).
    let (code, out) = sh(&acme, "web", "ip addr add 10.19.0.99/24 dev eth0");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = sh(&acme, "web", "ping -c 2 -W 2 -I 10.19.0.99 10.19.0.20");
    assert_ne!(code, Some(0), "a forged source got through: {out}");
    let (code, out) = sh(
        &acme,
        "web",
        "ip addr del 10.19.0.99/24 dev eth0; ping -c 1 -W 3 10.19.0.20",
    );
    assert_eq!(
        code,
        Some(0),
        "the VPS's own address stopped working: {out}"
    );

    // Another tenant, same subnet: its VPS does not reach acme's, and acme's is not found.
    umbrella
        .vpss(None)
        .create(&vps("web", "10.19.0.11"))
        .unwrap();
    let (code, _) = sh(&umbrella, "web", "ping -c 2 -W 2 10.19.0.10");
    assert_ne!(code, Some(0), "umbrella reached acme's VPS");
    assert_eq!(
        umbrella.vpss(None).show("nothing").unwrap_err().status(),
        Some(404)
    );
    let theirs = umbrella.vpss(None).list().unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].nics[0].ipv4.as_deref(), Some("10.19.0.11"));
    // Metrics show the VPS with what its cgroups count.
    let op = Client::new(&d.url, Some(d.operator_token.clone()));
    let metrics = op.get_text("/metrics").unwrap();
    assert!(
        metrics.contains("hostel_vps_running{tenant=\"acme\",vps=\"web\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hostel_vps_memory_bytes{tenant=\"acme\",vps=\"web\"}"),
        "{metrics}"
    );
    // A VPS is no VM: the VM routes do not see it.
    assert_eq!(acme.vms(None).show("web").unwrap_err().status(), Some(404));

    // Quotas count VPSs together with VMs: acme holds 2 instances, 192 MiB.
    let quota: QuotaBody = serde_json::from_value(serde_json::json!({
        "vcpus": 64, "memory_mib": 65536, "disk_gib": 1000, "vms": 2
    }))
    .unwrap();
    op.set_quota("acme", &quota).unwrap();
    let refused = acme
        .vpss(None)
        .create(&vps("third", "10.19.0.12"))
        .unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");

    // kill -9 of the daemon: the container keeps running and the next daemon adopts it.
    d.kill9();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the VPS died with the daemon"
    );
    d.respawn();
    let again = acme.vpss(None).show("web").unwrap();
    assert_eq!((again.state.as_str(), again.pid), ("running", Some(pid)));
    let (code, _) = sh(&acme, "web", "ping -c 1 -W 3 10.19.0.20");
    assert_eq!(
        code,
        Some(0),
        "the VPS lost its network across the daemon's restart"
    );

    // Delete: no process, cgroup, mount or TAP is left.
    acme.vpss(None).delete("web").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the VPS's PID 1 survived its delete"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let id = again.id;
    for c in ["cpu", "memory", "pids", "blkio"] {
        assert!(
            !Path::new(&format!("/sys/fs/cgroup/{c}/hostel-vps/{id}")).exists(),
            "{c} cgroup left"
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id), "a mount of the VPS is left");
    let tap = format!("hv{}", &id.replace('-', "")[20..]);
    assert!(
        !Path::new("/sys/class/net").join(&tap).exists(),
        "TAP {tap} left"
    );
    assert_eq!(acme.vpss(None).show("web").unwrap_err().status(), Some(404));
    umbrella.vpss(None).delete("web").unwrap();
}
