//! Two TCG guests with vhost-user NICs on one switch network: they reach each other, one gets
//! its address from the switch's DHCP server, and a spoofed source is dropped and counted.
//!
//! Skipped (with a printed reason) when QEMU or the guest assets are missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use base64::Engine;
use hostel_switch::{DropReason, NetworkConfig, PortConfig, Switch};

fn assets() -> Option<(PathBuf, PathBuf)> {
    let root = std::env::var_os("HOSTEL_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guest"));
    let (k, i) = (root.join("vmlinux"), root.join("initrd.img"));
    (k.exists() && i.exists()).then_some((k, i))
}

fn have_qemu() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

struct Guest {
    name: &'static str,
    child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
}

impl Guest {
    fn boot(
        name: &'static str,
        sock: &Path,
        mac: &str,
        cmdline_extra: &str,
        script: &str,
    ) -> Guest {
        let (kernel, initrd) = assets().expect("assets checked");
        let run = base64::engine::general_purpose::STANDARD.encode(script);
        // On a loaded host, TCG guests fail TSC/PIT calibration and can hang right after
        // "Marking TSC unstable"; preset the TSC rate and loops-per-jiffy so boot never
        // calibrates (time accuracy does not matter to this test).
        let append = format!(
            "console=ttyS0 quiet pci=off tsc_early_khz=2000000 lpj=8000000 no_timer_check \
             {cmdline_extra} hostel.run={run}"
        );
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-M", "microvm,acpi=on,memory-backend=mem,pcie=off"])
            .args(["-object", "memory-backend-memfd,id=mem,size=128M,share=on"])
            .args(["-m", "128M", "-smp", "1", "-accel", "tcg,tb-size=64"])
            .args(["-global", "virtio-mmio.force-legacy=false"])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", &append, "-serial", "stdio"])
            .arg("-chardev")
            // reconnect=1: QEMU redials the switch after it restarts.
            .arg(format!("socket,id=n0,path={},reconnect=1", sock.display()))
            .args(["-netdev", "vhost-user,id=net0,chardev=n0"])
            .args([
                "-device",
                &format!("virtio-net-device,netdev=net0,mac={mac}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn qemu");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Guest {
            name,
            child,
            lines: rx,
            log: Vec::new(),
        }
    }

    /// Waits for a console line containing `needle`; panics with the console log on timeout.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("[{}] {}", self.name, line);
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "{}: no {needle:?} within {timeout:?} ({e}); console:\n{}",
                    self.name,
                    self.log.join("\n")
                ),
            }
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A switch with network t1 (10.0.0.0/24) and ports vm-a (.2) and vm-b (.3), as the daemon
/// would program it.
fn switch_with_two_ports(dir: &Path) -> std::sync::Arc<Switch> {
    let sw = Switch::new();
    sw.add_network(NetworkConfig {
        id: "t1".into(),
        subnet4: Some("10.0.0.0/24".parse().unwrap()),
        gateway4: Some("10.0.0.1".parse().unwrap()),
        subnet6: None,
        gateway6: None,
        gateway_mac: "52:54:00:00:00:01".parse().unwrap(),
        uplink: None,
        dns: vec![],
        mtu: 1500,
    })
    .unwrap();
    for (id, last) in [("vm-a", 2u8), ("vm-b", 3)] {
        sw.add_port(PortConfig {
            id: id.into(),
            network: "t1".into(),
            mac: format!("52:54:00:00:00:{last:02x}").parse().unwrap(),
            ipv4: Some(format!("10.0.0.{last}").parse().unwrap()),
            ipv6: vec![],
            socket: dir.join(format!("{id}.sock")),
            limits: Default::default(),
        })
        .unwrap();
    }
    sw
}

/// Tests here boot two guests each; this keeps it to two guests on the machine at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn missing() -> Option<&'static str> {
    if !have_qemu() {
        return Some("qemu-system-x86_64 not found");
    }
    if assets().is_none() {
        return Some("guest assets target/guest/{vmlinux,initrd.img} missing");
    }
    None
}

/// Why the test cannot run; with HOSTEL_REQUIRE_GUEST set that is a failure, not a skip.
fn skip_reason() -> Option<&'static str> {
    let why = missing()?;
    assert!(
        std::env::var_os("HOSTEL_REQUIRE_GUEST").is_none(),
        "HOSTEL_REQUIRE_GUEST is set but {why}"
    );
    Some(why)
}

#[test]
fn two_guests_ping_and_spoof_is_dropped() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let sw = switch_with_two_ports(dir.path());

    // B takes its address from the switch's DHCP server, then idles. The lease script is
    // named explicitly: this busybox's udhcpc does not look in /usr/share/udhcpc, so init's
    // own DHCP attempt obtains the lease but never applies it.
    let mut b = Guest::boot(
        "b",
        &dir.path().join("vm-b.sock"),
        "52:54:00:00:00:03",
        "",
        "killall udhcpc 2>/dev/null\n\
         printf '#!/bin/sh\\nexec sh /usr/share/udhcpc/default.script \"$@\"\\n' > /tmp/dhcp.sh; chmod +x /tmp/dhcp.sh\n\
         udhcpc -s /tmp/dhcp.sh -i eth0 -f -q -n -t 5 -T 1 2>&1\n\
         ip -4 addr show eth0; echo B-UP; sleep 600",
    );
    b.wait_for("B-UP", Duration::from_secs(120));
    eprintln!("{}", serde_json::to_string_pretty(&sw.stats()).unwrap());
    assert!(
        b.log.iter().any(|l| l.contains("inet 10.0.0.3/24")),
        "B did not get 10.0.0.3 from DHCP: {:?}",
        b.log
    );

    let script = "i=0; while [ $i -lt 20 ]; do ping -c 1 -W 1 10.0.0.3 >/dev/null 2>&1 && break; i=$((i+1)); done\n\
        if ping -c 3 -W 2 10.0.0.3; then echo PING-OK; else echo PING-FAIL; fi\n\
        i=0; while [ $i -lt 30 ]; do ping6 -c 1 -W 1 -I eth0 fe80::5054:ff:fe00:3 >/dev/null 2>&1 && break; sleep 1; i=$((i+1)); done\n\
        if ping6 -c 2 -W 2 -I eth0 fe80::5054:ff:fe00:3; then echo PING6-OK; else echo PING6-FAIL; fi\n\
        ip addr add 10.0.0.99/24 dev eth0\n\
        if ping -c 2 -W 1 -I 10.0.0.99 10.0.0.3 >/dev/null 2>&1; then echo SPOOF-PASSED; else echo SPOOF-BLOCKED; fi\n";
    let mut a = Guest::boot(
        "a",
        &dir.path().join("vm-a.sock"),
        "52:54:00:00:00:02",
        "hostel.ip=10.0.0.2/24 hostel.gw=10.0.0.1",
        script,
    );
    let ping = a.wait_for("PING-", Duration::from_secs(180));
    assert!(ping.contains("PING-OK"), "ping failed: {:?}", a.log);
    // IPv6 link-local: neighbour discovery is answered by the switch, like ARP. (The guest
    // retries with a pause because its own address stays tentative until DAD finishes.)
    let ping6 = a.wait_for("PING6-", Duration::from_secs(60));
    assert!(ping6.contains("PING6-OK"), "IPv6 ping failed: {:?}", a.log);
    let spoof = a.wait_for("SPOOF-", Duration::from_secs(60));
    assert!(spoof.contains("SPOOF-BLOCKED"), "spoofed ping got through");
    a.wait_for("HOSTEL-EXIT", Duration::from_secs(30));

    let stats = sw.stats();
    eprintln!("{}", serde_json::to_string_pretty(&stats).unwrap());
    let sa = &stats.ports["vm-a"].stats;
    let sb = &stats.ports["vm-b"].stats;
    assert!(
        sa.drop_count(DropReason::SpoofedSrcIp) >= 2,
        "spoof not counted: {sa:?}"
    );
    assert!(
        sa.tx_packets >= 4 && sb.rx_packets >= 4,
        "a={sa:?} b={sb:?}"
    );
    assert!(
        sb.replies >= 2,
        "B's DHCP exchange not answered locally: {sb:?}"
    );
    drop(b);
    sw.shutdown();
}

/// The switch process dies and a new one is programmed with the same tables (what the
/// daemon does after a restart): QEMU reconnects and the guests talk again.
#[test]
fn guests_reconnect_after_switch_restart() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let sw = switch_with_two_ports(dir.path());
    let mut b = Guest::boot(
        "b",
        &dir.path().join("vm-b.sock"),
        "52:54:00:00:00:03",
        "hostel.ip=10.0.0.3/24",
        "echo B-UP; sleep 600",
    );
    b.wait_for("B-UP", Duration::from_secs(120));
    let script = "until ping -c 1 -W 1 10.0.0.3 >/dev/null 2>&1; do :; done; echo PHASE1-OK\n\
        i=0; while [ $i -lt 3 ]; do ping -c 1 -W 1 10.0.0.3 >/dev/null 2>&1 || i=$((i+1)); done; echo SAW-OUTAGE\n\
        i=0; while [ $i -lt 60 ]; do ping -c 1 -W 1 10.0.0.3 >/dev/null 2>&1 && break; i=$((i+1)); done\n\
        if ping -c 2 -W 2 10.0.0.3 >/dev/null; then echo PHASE2-OK; else echo PHASE2-FAIL; fi\n";
    let mut a = Guest::boot(
        "a",
        &dir.path().join("vm-a.sock"),
        "52:54:00:00:00:02",
        "hostel.ip=10.0.0.2/24",
        script,
    );
    a.wait_for("PHASE1-OK", Duration::from_secs(180));
    sw.shutdown();
    drop(sw);
    a.wait_for("SAW-OUTAGE", Duration::from_secs(60));
    let sw = switch_with_two_ports(dir.path());
    let done = a.wait_for("PHASE2-", Duration::from_secs(120));
    assert!(
        done.contains("PHASE2-OK"),
        "no traffic after restart: {:?}",
        a.log
    );
    assert!(sw.stats().ports.values().all(|p| p.connected));
    drop(b);
    sw.shutdown();
}
