//! Per-NIC rate limits through the daemon (issue 13, item 8): the operator's ceiling, a
//! tenant's limits refused above it (400 naming the field, nothing changed) and taken
//! within it, the switch programmed with the effective limits (per field the lower of the
//! two), the tenant's default ceiling, and another tenant unable to see or touch them.
//!
//! Boots nothing: the VMs are created stopped; their NICs are switch ports all the same.

mod common;

use common::DaemonCli;
use hostel_api::{Client, NicLimitsBody, RateLimitBody};
use hostel_switch::control::Response;
use hostel_switch::{PortConfig, PortLimits};
use hostel_testkit::daemon::TestDaemon;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

fn pps(n: u64) -> NicLimitsBody {
    NicLimitsBody {
        total: RateLimitBody {
            packets_per_sec: Some(n),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// What the daemon's switch has for VM `vm_id`'s NIC 0, asked on its control socket.
fn switch_port(d: &TestDaemon, vm_id: &str) -> PortConfig {
    try_switch_port(d, vm_id).unwrap_or_else(|| panic!("no switch port for {vm_id}"))
}

fn try_switch_port(d: &TestDaemon, vm_id: &str) -> Option<PortConfig> {
    let sock = d.state_path().join("switch/control.sock");
    let mut s = UnixStream::connect(&sock)
        .unwrap_or_else(|e| panic!("switch control socket {}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"{\"op\":\"show_config\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let resp: Response = serde_json::from_str(&line).unwrap();
    let id = format!("{vm_id}-0");
    resp.config
        .expect("show_config answers with the config")
        .ports
        .into_iter()
        .find(|p| p.id == id)
}

fn status_and_field(r: hostel_api::ClientError) -> (Option<u16>, Option<String>) {
    match r {
        hostel_api::ClientError::Api { status, field, .. } => (Some(status), field),
        other => (other.status(), None),
    }
}

/// A daemon whose "kernel" is an empty file: nothing can boot, and nothing here needs to.
fn daemon(tag: &str) -> (tempfile::TempDir, TestDaemon) {
    let fake_guest = tempfile::tempdir().unwrap();
    for f in ["vmlinux", "initrd.img"] {
        std::fs::write(fake_guest.path().join(f), b"").unwrap();
    }
    let d = TestDaemon::start(Path::new(common::HOSTEL), fake_guest.path(), tag);
    (fake_guest, d)
}

#[test]
fn tenant_limits_within_the_operator_ceiling_reach_the_switch() {
    let (_g, d) = daemon("niclimits");
    let acme = d.tenant("acme", &[]);
    let other = d.tenant("umbrella", &[]);
    assert!(acme
        .cli(&["network", "create", "lan", "--subnet", "10.0.0.0/24"])
        .ok());
    let web = acme.create("web", &["--no-start", "--network", "lan"]);
    let op = d.client(&d.operator_token);
    let opvms = op.vms(Some("acme"));
    let tenant = d.client(&acme.token);
    let vms = tenant.vms(None);

    // Unlimited to begin with, in the API and in the switch.
    let v = vms.nic_limits("web", 0).unwrap();
    assert_eq!(v.ceiling_source, "none");
    assert_eq!(v.effective, NicLimitsBody::default());
    // A VM created stopped has its switch port too (the create syncs the switch).
    let port = common::poll("web's switch port", common::NOTICE_TIMEOUT, || {
        try_switch_port(&d, &web.id)
    });
    assert_eq!(port.limits, PortLimits::default());

    // The ceiling is the operator's: a tenant gets the unknown-route answer.
    let e = vms.set_nic_ceiling("web", 0, &pps(1)).unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert_eq!(e.to_string(), "no such route");
    let mut ceiling = pps(1000);
    ceiling.flood.packets_per_sec = Some(50);
    let v = opvms.set_nic_ceiling("web", 0, &ceiling).unwrap();
    assert_eq!(v.ceiling_source, "nic");
    assert_eq!(
        v.effective, ceiling,
        "no limits of its own: the ceiling holds"
    );
    let port = switch_port(&d, &web.id);
    assert_eq!(port.limits.total.packets_per_sec, Some(1000));
    assert_eq!(port.limits.flood.packets_per_sec, Some(50));

    // Above the ceiling, or zero: 400 naming the field, and nothing changes.
    for (limits, field) in [
        (pps(1001), "limits.total.packets_per_sec"),
        (pps(0), "limits.total.packets_per_sec"),
    ] {
        let e = vms.set_nic_limits("web", 0, &limits).unwrap_err();
        assert_eq!(
            status_and_field(e),
            (Some(400), Some(field.to_string())),
            "{limits:?}"
        );
    }
    assert_eq!(
        vms.nic_limits("web", 0).unwrap().limits,
        NicLimitsBody::default()
    );
    assert_eq!(
        switch_port(&d, &web.id).limits.total.packets_per_sec,
        Some(1000)
    );

    // Within it: taken, and the switch enforces per field the lower of the two.
    let mut mine = pps(400);
    mine.total.bytes_per_sec = Some(1_000_000);
    mine.flood.packets_per_sec = Some(80);
    let v = vms.set_nic_limits("web", 0, &mine).unwrap_err();
    assert_eq!(
        status_and_field(v),
        (Some(400), Some("limits.flood.packets_per_sec".into())),
        "80 flood pps is above the ceiling's 50"
    );
    mine.flood.packets_per_sec = Some(20);
    let v = vms.set_nic_limits("web", 0, &mine).unwrap();
    assert_eq!(v.limits, mine);
    let port = switch_port(&d, &web.id);
    assert_eq!(port.limits.total.packets_per_sec, Some(400));
    assert_eq!(port.limits.total.bytes_per_sec, Some(1_000_000));
    assert_eq!(port.limits.flood.packets_per_sec, Some(20));
    assert_eq!(port.limits.unknown, Default::default());

    // A lower ceiling caps what is enforced at once; the tenant's setting is kept.
    opvms.set_nic_ceiling("web", 0, &pps(100)).unwrap();
    let port = switch_port(&d, &web.id);
    assert_eq!(port.limits.total.packets_per_sec, Some(100));
    assert_eq!(port.limits.flood.packets_per_sec, Some(20));
    assert_eq!(vms.nic_limits("web", 0).unwrap().limits, mine);

    // The tenant's default ceiling applies once the NIC's own is gone.
    op.set_tenant_nic_ceiling("acme", &pps(10)).unwrap();
    opvms.clear_nic_ceiling("web", 0).unwrap();
    let v = vms.nic_limits("web", 0).unwrap();
    assert_eq!(v.ceiling_source, "tenant");
    assert_eq!(v.effective.total.packets_per_sec, Some(10));
    assert_eq!(
        switch_port(&d, &web.id).limits.total.packets_per_sec,
        Some(10)
    );
    let e = tenant.tenant_nic_ceiling("acme").unwrap_err();
    assert_eq!(e.status(), Some(404));

    // Another tenant finds neither the VM nor its limits; bad NIC indexes are not found.
    let umbrella = d.client(&other.token);
    for e in [
        umbrella.vms(None).nic_limits("web", 0).unwrap_err(),
        umbrella
            .vms(None)
            .set_nic_limits("web", 0, &pps(1))
            .unwrap_err(),
        umbrella.vms(Some("acme")).nic_limits("web", 0).unwrap_err(),
        vms.nic_limits("web", 1).unwrap_err(),
    ] {
        assert_eq!(e.status(), Some(404), "{e}");
    }
    let raw = Client::new(&d.url, Some(acme.token.clone()));
    let e = raw
        .get::<serde_json::Value>("/v1/vms/web/nics/x/limits")
        .unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert_eq!(vms.nic_limits("web", 0).unwrap().limits, mine);

    // The CLI shows them, and sets them.
    let out = acme.cli(&["vm", "limits", "web", "--pps", "5"]);
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("pps=5"), "{}", out.stdout);
    let out = acme.cli(&["vm", "show", "web"]);
    assert!(out.stdout.contains("eth0 limits"), "{}", out.stdout);
    assert!(out.stdout.contains("pps=5"), "{}", out.stdout);
    acme.cli(&["vm", "limits", "web", "--pps", "11"])
        .refused("above the operator's ceiling");
    assert_eq!(
        switch_port(&d, &web.id).limits.total.packets_per_sec,
        Some(5)
    );

    acme.cli(&["vm", "limits", "web", "--ceiling", "--pps", "1000000"])
        .refused("no such route");
    acme.cli(&["tenant", "nic-ceiling", "acme", "--pps", "1000000"])
        .refused("no such route");

    // The operator's CLI: the tenant default (shown, raised), then the NIC's own ceiling.
    let out = d.op(&["tenant", "nic-ceiling", "acme"]);
    assert!(out.ok() && out.stdout.contains("pps=10"), "{out:?}");
    assert!(d.op(&["tenant", "nic-ceiling", "acme", "--pps", "20"]).ok());
    assert!(acme.cli(&["vm", "limits", "web", "--pps", "11"]).ok());
    let out = d.op(&[
        "vm",
        "limits",
        "web",
        "--tenant",
        "acme",
        "--ceiling",
        "--pps",
        "7",
    ]);
    assert!(out.ok() && out.stdout.contains("(nic)"), "{out:?}");
    assert_eq!(
        switch_port(&d, &web.id).limits.total.packets_per_sec,
        Some(7)
    );
    let out = d.op(&["tenant", "nic-ceiling", "acme", "--clear", "-o", "json"]);
    let v: hostel_api::TenantNicCeilingView = out.json();
    assert_eq!(v.ceiling, None);
}
