//! `hostel run` with real guests: disks both ways, read-only disks, and TAP networking to a
//! peer in a network namespace.

use hostel_testkit::{guest_assets, is_root, run_arg, sh, NetNs};
use std::process::{Command, Output, Stdio};

fn hostel() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hostel"));
    c.stdin(Stdio::null());
    c
}

/// Boots the busybox guest running `script`; returns hostel's output.
fn run_guest(extra: &[&str], script: &str) -> Option<Output> {
    let a = guest_assets()?;
    let mut cmd = hostel();
    cmd.arg("run")
        .arg("--kernel")
        .arg(&a.vmlinux)
        .arg("--initrd")
        .arg(&a.initrd)
        .args(extra);
    if !extra.contains(&"--cmdline") {
        cmd.args(["--cmdline", &format!("quiet {}", run_arg(script))]);
    }
    Some(cmd.output().unwrap())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn guest_reads_what_the_host_wrote_and_host_reads_what_the_guest_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let from_host = dir.path().join("from-host.raw");
    let to_host = dir.path().join("to-host.qcow2");
    let mut pattern = b"HOST-PATTERN-1234".to_vec();
    pattern.resize(1 << 20, 0);
    std::fs::write(&from_host, &pattern).unwrap();
    sh(&format!(
        "qemu-img create -q -f qcow2 {} 4M",
        to_host.display()
    ));
    let script = "head -c 17 /dev/vda; echo; \
                  printf GUEST-PATTERN-5678 | dd of=/dev/vdb bs=512 conv=sync,fsync 2>/dev/null; \
                  echo wrote=$?";
    let Some(out) = run_guest(
        &[
            "--disk",
            from_host.to_str().unwrap(),
            "--disk",
            &format!("{},format=qcow2", to_host.display()),
        ],
        script,
    ) else {
        return;
    };
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("HOST-PATTERN-1234"),
        "guest did not read the host's bytes:\n{t}"
    );
    assert!(t.contains("wrote=0"), "{t}");
    let raw = dir.path().join("back.raw");
    sh(&format!(
        "qemu-img convert -O raw {} {}",
        to_host.display(),
        raw.display()
    ));
    let back = std::fs::read(&raw).unwrap();
    assert_eq!(&back[..18], b"GUEST-PATTERN-5678");
}

#[test]
fn a_readonly_disk_refuses_guest_writes() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("ro.raw");
    std::fs::write(&disk, vec![0x5a; 1 << 20]).unwrap();
    let script = "cat /sys/block/vda/ro; \
                  if printf X | dd of=/dev/vda conv=fsync 2>/dev/null; then echo WRITE-OK; else echo WRITE-REFUSED; fi";
    let Some(out) = run_guest(&["--disk", &format!("{},readonly", disk.display())], script) else {
        return;
    };
    let t = text(&out);
    assert!(t.contains("WRITE-REFUSED"), "{t}");
    assert!(std::fs::read(&disk).unwrap().iter().all(|&b| b == 0x5a));
}

#[test]
fn guest_pings_and_exchanges_udp_with_a_namespace_peer_over_tap() {
    let Some(a) = guest_assets() else { return };
    if !is_root() {
        eprintln!("SKIPPED: TAP devices and namespaces need root");
        return;
    }
    let ns = NetNs::new("tap");
    let tap = format!("ht{}", std::process::id() % 100_000);
    ns.exec(&format!(
        "ip tuntap add dev {tap} mode tap && ip addr add 10.0.0.1/24 dev {tap} && ip link set {tap} up"
    ));
    // The peer, inside the namespace, speaks just enough TFTP (busybox's only UDP client
    // that carries data both ways): the guest's read request names a file, the peer answers
    // with one data block.
    let peer = ns.spawn_in(|| {
        let sock = std::net::UdpSocket::bind("10.0.0.1:5555").unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(120)))
            .unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        // RRQ: opcode 1, then "filename\0mode\0".
        assert_eq!(&buf[..2], &[0, 1], "not a TFTP read request");
        let name_end = buf[2..n].iter().position(|&b| b == 0).unwrap_or(n - 2) + 2;
        let mut data = vec![0, 3, 0, 1];
        data.extend_from_slice(b"pong-from-peer\n");
        sock.send_to(&data, from).unwrap();
        String::from_utf8_lossy(&buf[2..name_end]).into_owned()
    });
    let script = "ping -c 2 -W 5 10.0.0.1 >/dev/null && echo PING-OK; \
                  cd /tmp && tftp -g -r ping-from-guest -l reply 10.0.0.1 5555 && cat reply";
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_hostel"),
            "run",
        ])
        .arg("--kernel")
        .arg(&a.vmlinux)
        .arg("--initrd")
        .arg(&a.initrd)
        .args(["--net", &format!("tap={tap},mac=52:54:00:00:00:02")])
        .args([
            "--cmdline",
            &format!(
                "quiet hostel.ip=10.0.0.2/24 hostel.gw=10.0.0.1 {}",
                run_arg(script)
            ),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(t.contains("PING-OK"), "{t}");
    assert!(t.contains("pong-from-peer"), "guest got no UDP reply:\n{t}");
    assert_eq!(peer.join().unwrap().trim(), "ping-from-guest");
}
