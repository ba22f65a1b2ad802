//! End to end through the `hostel` CLI against a real `hostel daemon`: tenants and their
//! isolation, quotas, spec errors and the console; racing clients leave consistent state.
//! The daemon and the helpers are in `common` (see there for cleanup and boot slots).

mod common;

use common::{
    alive, boot_slots, cli_at, daemon_with_guests, daemon_without_guests, hostel_cmd, names, poll,
    run, DaemonCli, Out,
};
use hostel_api::{ClientError, CreateVm, Size, TenantView, VmView};
use std::collections::BTreeSet;
use std::time::Duration;

/// Two tenants each boot a VM; neither can see, touch or guess the other's; quotas and bad
/// specs are refused with the server's reason and the field; the console shows the guest.
#[test]
fn tenants_are_isolated_and_refusals_name_the_reason() {
    let Some(d) = daemon_with_guests("e2e-tenants") else {
        return;
    };

    // Endpoint and token from the config file when no flag or variable gives them, and a
    // flag beating the environment.
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join(".config/hostel/config.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &cfg,
        format!("url = \"{}\"\ntoken = \"{}\"\n", d.url, d.operator_token),
    )
    .unwrap();
    let mut cmd = hostel_cmd();
    cmd.env_remove("HOSTEL_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", home.path())
        .args(["tenant", "list", "-o", "json"]);
    let listed: Vec<TenantView> = run(cmd).json();
    assert!(listed.is_empty());
    let mut cmd = hostel_cmd();
    cmd.env("HOSTEL_URL", "http://127.0.0.1:9")
        .env("HOSTEL_TOKEN", &d.operator_token)
        .args(["--url", &d.url, "image", "list"]);
    let out = run(cmd);
    assert!(out.ok() && out.stdout.contains("busybox"), "{out:?}");
    // No token: the server's refusal, not a crash.
    let mut cmd = hostel_cmd();
    cmd.args(["--url", &d.url, "tenant", "list"]);
    assert_ne!(run(cmd).code, 0);

    let a = d.tenant(
        "acme",
        &["--vcpus", "4", "--memory", "512M", "--max-vms", "2"],
    );
    let b = d.tenant("beta", &[]);

    // One guest per tenant, booting together; both named "web" (names are per tenant).
    {
        let _slots = boot_slots(2);
        let va = a.create("web", &["--memory", "128M"]);
        let vb = b.create("web", &["--memory", "128M"]);
        assert_eq!((va.tenant.as_str(), vb.tenant.as_str()), ("acme", "beta"));
        assert_ne!(va.id, vb.id);
        a.wait_ready("web", 1);
        b.wait_ready("web", 1);
    }
    let console = a.cli(&["vm", "console", "web"]);
    assert!(
        console.ok() && console.stdout.contains("HOSTEL-READY"),
        "{console:?}"
    );
    let b_secret = b.create("b-only", &["--no-start", "--memory", "64M"]);

    // Each sees only its own.
    let (a_vms, b_vms) = (a.vms(), b.vms());
    assert_eq!(names(&a_vms), BTreeSet::from(["web".to_string()]));
    assert_eq!(
        names(&b_vms),
        BTreeSet::from(["web".to_string(), "b-only".to_string()])
    );
    assert!(a_vms.iter().all(|v| v.tenant == "acme"));
    let b_ids: BTreeSet<_> = b_vms.iter().map(|v| v.id.clone()).collect();
    assert!(a_vms.iter().all(|v| !b_ids.contains(&v.id)));
    let table = a.cli(&["vm", "list"]);
    assert!(table.ok() && !table.stdout.contains("beta"), "{table:?}");
    for args in [
        &["vm", "show", "b-only"][..],
        &["vm", "start", "b-only"],
        &["vm", "delete", "b-only"],
        &["vm", "console", "b-only"],
        // A tenant naming another tenant gets nothing either.
        &["vm", "show", "b-only", "--tenant", "beta"],
        &["vm", "delete", "web", "--tenant", "beta"],
    ] {
        let out = a.cli(args);
        out.refused("not found");
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
    }
    assert_eq!(b.show("b-only").id, b_secret.id);
    assert_eq!(b.show("web").state, "running");
    // The operator sees any tenant's VMs when naming it.
    let via_op: Vec<VmView> = d
        .op(&["vm", "list", "--tenant", "beta", "-o", "json"])
        .json();
    assert_eq!(names(&via_op), names(&b_vms));
    // Tenants are not operators.
    a.cli(&["tenant", "list"]).refused("");
    a.cli(&["quota", "set", "acme", "--max-vms", "100"])
        .refused("");

    // Bad specs: refused with the field, exit status 2, nothing created.
    for (args, field) in [
        (&["--vcpus", "0"][..], "vcpus"),
        (&["--memory", "lots"], "memory"),
        (&["--image", "no-such-image"], "image"),
    ] {
        let mut full = vec!["vm", "create", "bad", "--no-start"];
        full.extend_from_slice(args);
        let out = a.cli(&full);
        out.refused(&format!("(field: {field})"));
        assert_eq!(out.code, 2, "{out:?}");
    }
    let out = a.cli(&["vm", "create", "web", "--no-start", "--memory", "64M"]);
    out.refused("(field: name)");
    assert_eq!(names(&a.vms()), BTreeSet::from(["web".to_string()]));

    // Quotas (acme: 4 vCPUs, 512M, 2 VMs; "web" holds 1 vCPU, 128M): the message names the
    // resource.
    let out = a.cli(&["vm", "create", "big", "--no-start", "--memory", "1G"]);
    assert!(
        out.refused("quota").to_lowercase().contains("memory"),
        "{out:?}"
    );
    let out = a.cli(&[
        "vm",
        "create",
        "wide",
        "--no-start",
        "--vcpus",
        "4",
        "--memory",
        "64M",
    ]);
    assert!(out.refused("quota").contains("vcpus"), "{out:?}");
    a.create("second", &["--no-start", "--memory", "64M"]);
    let out = a.cli(&["vm", "create", "third", "--no-start", "--memory", "64M"]);
    assert!(
        out.refused("quota").to_lowercase().contains("vms"),
        "{out:?}"
    );
    // Raising one quota field keeps the others.
    let raised: TenantView = d
        .op(&["quota", "set", "acme", "--max-vms", "3", "-o", "json"])
        .json();
    assert_eq!(
        (
            raised.quota.vms,
            raised.quota.vcpus,
            raised.quota.memory_mib
        ),
        (3, 4, 512)
    );
    a.create("third", &["--no-start", "--memory", "64M"]);
    let usage = a.tenant_view().usage;
    assert_eq!((usage.vms, usage.memory_mib), (3, 128 + 64 + 64));

    // Resize a stopped VM; stop the running one; delete.
    let resized: VmView = a
        .cli(&["vm", "resize", "second", "--vcpus", "2", "-o", "json"])
        .json();
    assert_eq!(resized.vcpus, 2);
    a.cli(&["vm", "resize", "second", "--memory", "lots"])
        .refused("(field: memory)");
    let web_pid = a.show("web").pid.expect("web pid");
    let stopped: VmView = a
        .cli(&["vm", "stop", "web", "--force", "-o", "json"])
        .json();
    assert_eq!(stopped.desired, "stopped");
    poll("web stopped", Duration::from_secs(30), || {
        let v = a.show("web");
        (v.state == "stopped" && v.pid.is_none() && !alive(web_pid)).then_some(())
    });
    let out = a.cli(&["vm", "delete", "third"]);
    assert!(out.ok(), "{out:?}");
    a.cli(&["vm", "show", "third"]).refused("not found");

    // The audit log saw it all, per tenant.
    let audit = d.op(&["audit", "--tenant", "acme", "--limit", "100"]);
    assert!(audit.ok(), "{audit:?}");
    assert!(audit.stdout.contains("acme"), "{audit:?}");
    let entries: Vec<hostel_api::AuditView> = d
        .op(&["audit", "--tenant", "acme", "--limit", "100", "-o", "json"])
        .json();
    assert!(
        entries
            .iter()
            .any(|e| e.action.contains("create") && e.target.contains("web")),
        "{entries:#?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| !matches!(e.tenant.as_deref(), Some(t) if t != "acme")),
        "{entries:#?}"
    );
}

/// Twenty clients creating at once: exactly as many VMs exist as creates succeeded, the
/// quota holds, and a name raced by everyone is taken exactly once.
#[test]
fn concurrent_creates_leave_consistent_state() {
    let d = daemon_without_guests("e2e-race");
    let t = d.tenant(
        "racers",
        &[
            "--vcpus",
            "100",
            "--memory",
            "100G",
            "--disk-gib",
            "1000",
            "--max-vms",
            "15",
        ],
    );

    // 20 CLI processes, distinct names, quota for 15.
    let url = d.url.as_str();
    let token = t.token.clone();
    let results: Vec<(String, Out)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let token = token.clone();
                s.spawn(move || {
                    let name = format!("vm-{i:02}");
                    let out = cli_at(
                        url,
                        &token,
                        &[
                            "vm",
                            "create",
                            &name,
                            "--no-start",
                            "--memory",
                            "64M",
                            "-o",
                            "json",
                        ],
                    );
                    (name, out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: BTreeSet<String> = results
        .iter()
        .filter(|(_, o)| o.ok())
        .map(|(n, _)| n.clone())
        .collect();
    for (_, out) in results.iter().filter(|(_, o)| !o.ok()) {
        out.refused("quota");
    }
    assert_eq!(ok.len(), 15, "{results:#?}");
    let listed = t.vms();
    assert_eq!(listed.len(), ok.len());
    assert_eq!(names(&listed), ok);
    assert_eq!(t.tenant_view().usage.vms, 15);

    // 20 API clients, one name, in a tenant with room for all of them.
    let u = d.tenant(
        "samename",
        &["--max-vms", "20", "--vcpus", "40", "--memory", "40G"],
    );
    let client = d.client(&u.token);
    let outcomes: Vec<Result<VmView, ClientError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let client = client.clone();
                s.spawn(move || {
                    client.vms(None).create(&CreateVm {
                        name: "contested".into(),
                        vcpus: Some(1),
                        memory: Some(Size::Text("64M".into())),
                        image: None,
                        disk_gib: None,
                        cmdline: None,
                        restart_policy: None,
                        start: Some(false),
                        networks: Vec::new(),
                        ..Default::default()
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{outcomes:#?}");
    for r in &outcomes {
        if let Err(e) = r {
            assert!(
                matches!(e, ClientError::Api { field: Some(f), .. } if f == "name"),
                "{e:?}"
            );
        }
    }
    let listed = u.vms();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(u.tenant_view().usage.vms, 1);
    // The first tenant is untouched by the second's race.
    assert_eq!(t.vms().len(), 15);
}
