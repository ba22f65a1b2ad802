//! The control protocol end to end: `run()` serving JSON lines on a Unix socket.

use std::path::Path;
use std::time::{Duration, Instant};

use hostel_switch::control::{Client, Request};
use hostel_switch::{run, NetworkConfig, PortConfig, RunOptions, SwitchConfig};

fn connect(path: &Path) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(path) {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("control socket never came up: {e}"),
            Err(_) => std::thread::yield_now(),
        }
    }
}

fn network(id: &str) -> NetworkConfig {
    NetworkConfig {
        id: id.into(),
        subnet4: Some("10.1.0.0/24".parse().unwrap()),
        gateway4: Some("10.1.0.1".parse().unwrap()),
        subnet6: None,
        gateway6: None,
        gateway_mac: "02:00:00:00:00:01".parse().unwrap(),
        uplink: None,
        dns: vec![],
        mtu: 0,
    }
}

#[test]
fn control_socket_programs_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("ctl.sock");
    let opts = RunOptions {
        control_socket: ctl.clone(),
        config: None,
    };
    let server = std::thread::spawn(move || run(opts));
    let mut c = connect(&ctl);

    let r = c
        .call(&Request::AddNetwork {
            network: network("n1"),
        })
        .unwrap();
    assert!(r.ok, "{r:?}");
    let port = PortConfig {
        id: "vm1-0".into(),
        network: "n1".into(),
        mac: "52:54:00:12:34:56".parse().unwrap(),
        ipv4: Some("10.1.0.5".parse().unwrap()),
        ipv6: vec![],
        socket: dir.path().join("vm1-0.sock"),
        limits: Default::default(),
    };
    assert!(c.call(&Request::AddPort { port: port.clone() }).unwrap().ok);
    assert!(dir.path().join("vm1-0.sock").exists());

    // Conflicts are refused without side effects.
    let mut dup = port.clone();
    dup.id = "vm2-0".into();
    dup.socket = dir.path().join("vm2-0.sock");
    let r = c.call(&Request::AddPort { port: dup }).unwrap();
    assert!(!r.ok && r.error.unwrap().contains("already used"));
    let r = c.call(&Request::RemoveNetwork { id: "n1".into() }).unwrap();
    assert!(!r.ok);

    let r = c.call(&Request::Stats).unwrap();
    let stats = r.stats.unwrap();
    assert!(!stats.ports["vm1-0"].connected);

    let cfg = c.call(&Request::ShowConfig).unwrap().config.unwrap();
    assert_eq!(cfg.ports, vec![port.clone()]);

    // A daemon re-sending its tables after a restart: apply replaces everything.
    let replacement = SwitchConfig {
        networks: vec![network("n2")],
        ports: vec![PortConfig {
            network: "n2".into(),
            ..port.clone()
        }],
    };
    assert!(
        c.call(&Request::Apply {
            config: replacement.clone()
        })
        .unwrap()
        .ok
    );
    let cfg = c.call(&Request::ShowConfig).unwrap().config.unwrap();
    assert_eq!(cfg, replacement);

    assert!(
        c.call(&Request::RemovePort { id: "vm1-0".into() })
            .unwrap()
            .ok
    );
    assert!(!dir.path().join("vm1-0.sock").exists());

    let mut raw = connect(&ctl);
    let bad = raw.call_raw("{\"op\":\"frobnicate\"}").unwrap();
    assert!(bad.contains("\"ok\":false"), "{bad}");

    assert!(c.call(&Request::Shutdown).unwrap().ok);
    server.join().unwrap().unwrap();
}
