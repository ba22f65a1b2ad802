//! The whole path of a Debian VM: build debian-12 (cached across runs), a second build is a
//! cache hit, clone a bigger qcow2 disk from it, boot it through the engine with a NoCloud
//! seed, and check cloud-init applied the hostname, grew the root filesystem, configured the
//! static address, and that SSH takes the key and refuses passwords.

mod common;

use common::*;
use hostel_engine::MacAddr;
use hostel_images::{Addressing, NicConfig, RunCmd, SeedConfig, SeedNetwork};
use std::process::Command;
use std::time::{Duration, Instant};

const HOST: &str = "hostel-boot-test";
const GUEST_IP: &str = "10.0.0.2";

#[test]
fn debian_12_builds_boots_with_cloud_init_and_takes_ssh_keys_only() {
    let Some(store) = cached_store() else { return };
    let first = build(&store, "debian-12");
    eprintln!(
        "debian-12: cached={} in {:.1?}",
        first.cached, first.elapsed
    );
    let t = Instant::now();
    let again = build(&store, "debian-12");
    assert!(again.cached, "second build must be a cache hit");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "cache hit took {:?}",
        t.elapsed()
    );
    let m = again.image.manifest();
    assert!(again.image.disk_path().is_file());
    assert!(again
        .image
        .kernel_boot()
        .is_some_and(|(k, i, _)| k.is_file() && i.is_file()));
    assert_eq!(m.disk.virtual_size, 2 << 30);

    let dir = tempfile::tempdir().unwrap();
    let (key, public) = ssh_keypair(dir.path());
    let mac = MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0x02]);
    let seed = SeedConfig {
        instance_id: format!("i-{}", std::process::id()),
        hostname: HOST.into(),
        ssh_authorized_keys: vec![public],
        runcmd: vec![RunCmd::Shell(
            "echo HOSTEL-MARK host=$(hostname) rootbytes=$(df -B1 --output=size / | tail -n1 | tr -d ' ')"
                .into(),
        )],
        network: SeedNetwork::Nics(vec![NicConfig {
            mac,
            name: "eth0".into(),
            addressing: Addressing::Static {
                addresses: vec![format!("{GUEST_IP}/24").parse().unwrap()],
                gateway: Some("10.0.0.1".parse().unwrap()),
                dns: vec!["10.0.0.1".parse().unwrap()],
                search: vec![],
            },
        }]),
        ..Default::default()
    };

    let (ns, tap) = network("img");
    let dir_path = dir.path().to_path_buf();
    let nic = format!("tap={tap},mac={mac}").parse().unwrap();
    let result = ns.spawn_in(move || {
        runtime().block_on(async move {
            let mut g = boot(&store, "debian-12", &seed, &dir_path, Some(nic), 3 << 30).await;
            let login = g.expect(&format!("{HOST} login:"));
            let boot_to_login = g.started.elapsed();
            let mark = g.expect("HOSTEL-MARK host=");
            let ssh = |extra: &[&str], cmd: &str| {
                let mut c = Command::new("ssh");
                c.args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                ])
                .args([
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "ConnectTimeout=10",
                    "-o",
                    "LogLevel=ERROR",
                ])
                .args(extra)
                .arg(format!("debian@{GUEST_IP}"))
                .arg(cmd);
                c
            };
            let key_arg = key.display().to_string();
            let (ok, out) = retry(
                &mut || ssh(&["-i", &key_arg], "hostname; sudo -n true && echo SUDO-OK"),
                Duration::from_secs(90),
            );
            let (pw_ok, pw_out) = retry(
                &mut || {
                    ssh(
                        &[
                            "-o",
                            "PubkeyAuthentication=no",
                            "-o",
                            "PreferredAuthentications=password,keyboard-interactive",
                        ],
                        "true",
                    )
                },
                Duration::ZERO,
            );
            let transcript = g.transcript();
            g.save_transcript("boot_debian");
            g.vm.stop(Duration::from_secs(30)).await;
            (
                login,
                boot_to_login,
                mark,
                ok,
                out,
                pw_ok,
                pw_out,
                transcript,
            )
        })
    });
    let (login, boot_to_login, mark, ssh_ok, ssh_out, pw_ok, pw_out, transcript) =
        result.join().expect("guest thread");
    eprintln!("boot to login prompt: {boot_to_login:.1?} ({login})");
    // cloud-init set the hostname (the image's own is "debian") and grew the root to the disk.
    assert!(
        mark.contains(&format!("host={HOST}")),
        "{mark}\n{transcript}"
    );
    let root: u64 = mark
        .split("rootbytes=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(root > (5 << 30) / 2, "root filesystem not grown: {mark}");
    assert!(ssh_ok, "ssh with the key failed: {ssh_out}\n{transcript}");
    assert!(
        ssh_out.contains(HOST) && ssh_out.contains("SUDO-OK"),
        "{ssh_out}"
    );
    assert!(!pw_ok, "password login must be refused");
    assert!(pw_out.contains("Permission denied (publickey)"), "{pw_out}");
}
