//! Intrusion detection through the daemon and the CLI (issue 16, item 4): a tenant's rules
//! stored with refusals named (sid and keyword), watched networks and mode, another tenant's
//! view untouched, bad input refused naming the field, each change audited, and the routes
//! in the OpenAPI document. The daemon's switch has no external network here, so no tenant
//! has an edge: installing says `pending` and alerts are refused (the switch-level live
//! tests, `hostel-switch`'s `edge_tests::ids`, cover detection itself).

mod common;

use common::DaemonCli;
use hostel_api::IdsView;
use hostel_testkit::daemon::TestDaemon;
use std::path::Path;

fn daemon(tag: &str) -> (tempfile::TempDir, TestDaemon) {
    let fake_guest = tempfile::tempdir().unwrap();
    for f in ["vmlinux", "initrd.img"] {
        std::fs::write(fake_guest.path().join(f), b"").unwrap();
    }
    let d = TestDaemon::start(Path::new(common::HOSTEL), fake_guest.path(), tag);
    (fake_guest, d)
}

const RULES: &str =
    "alert tcp any any -> $HOME_NET 80 (msg:\"admin\"; content:\"/admin\"; sid:1; rev:1;)\n\
alert tcp any any -> any 80 (msg:\"sticky\"; http.uri; content:\"/x\"; sid:2; rev:1;)\n";

#[test]
fn a_tenants_rules_and_networks_through_the_api_and_cli() {
    let (_g, d) = daemon("ids");
    let acme = d.tenant("acme", &[]);
    let other = d.tenant("umbrella", &[]);
    assert!(acme
        .cli(&["network", "create", "lan", "--subnet", "10.0.0.0/24"])
        .ok());
    // Operator rules apply to every tenant.
    let op_dir = d.state_path().join("ids/rules.d");
    std::fs::create_dir_all(&op_dir).unwrap();
    std::fs::write(
        op_dir.join("site.rules"),
        "alert ip any any -> any any (msg:\"op\"; sid:9000;)\n",
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.rules");
    std::fs::write(&file, RULES).unwrap();
    let v: IdsView = acme
        .cli(&["ids", "rules", file.to_str().unwrap(), "-o", "json"])
        .json();
    assert_eq!(v.rules_loaded, 1);
    assert_eq!(v.rules_refused.len(), 1, "{v:?}");
    assert_eq!(
        (v.rules_refused[0].sid, v.rules_refused[0].keyword.as_str()),
        (2, "http.uri")
    );
    assert_eq!(v.operator_rules_loaded, 1);
    assert_eq!(v.switch, "off");

    let v: IdsView = acme
        .cli(&[
            "ids",
            "set",
            "--network",
            "lan",
            "--mode",
            "prevent",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(
        (v.mode.as_str(), v.networks.clone()),
        ("prevent", vec!["lan".to_string()])
    );
    assert!(
        v.switch.starts_with("pending: ") && v.switch.contains("no edge"),
        "{}",
        v.switch
    );

    // Bad input: named, nothing changed.
    acme.cli(&["ids", "set", "--network", "lan", "--mode", "block"])
        .refused("(field: mode)");
    acme.cli(&["ids", "set", "--network", "nope"])
        .refused("nope");
    acme.cli(&["ids", "set", "--intra-network", "lan"])
        .refused("(field: intra_networks[0])");
    let now: IdsView = acme.cli(&["ids", "show", "-o", "json"]).json();
    assert_eq!(now.mode, "prevent");
    assert_eq!(now.networks, vec!["lan".to_string()]);
    assert!(now.intra_networks.is_empty(), "off by default");

    // VM-to-VM inspection of a watched network: stored and shown.
    let v: IdsView = acme
        .cli(&[
            "ids",
            "set",
            "--network",
            "lan",
            "--intra-network",
            "lan",
            "--mode",
            "prevent",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(v.intra_networks, vec!["lan".to_string()]);

    // Another tenant sees its own (default) settings, and cannot name acme's network.
    let theirs: IdsView = other.cli(&["ids", "show", "-o", "json"]).json();
    assert_eq!((theirs.mode.as_str(), theirs.rules_loaded), ("detect", 0));
    assert!(theirs.networks.is_empty());
    other
        .cli(&["ids", "set", "--network", "lan"])
        .refused("lan");
    // The operator acts for a tenant with --tenant.
    let via_op: IdsView = d
        .op(&["ids", "show", "--tenant", "acme", "-o", "json"])
        .json();
    assert_eq!(via_op.networks, vec!["lan".to_string()]);

    // No edge on the switch: alerts are refused, not made up.
    let e = acme.cli(&["ids", "alerts"]);
    assert!(!e.ok(), "{e:?}");

    // Each change audited under the tenant.
    let audit = d.op(&["audit", "--tenant", "acme", "-o", "json"]);
    assert!(audit.ok(), "{audit:?}");
    for action in ["ids.rules", "ids.set"] {
        assert!(
            audit.stdout.contains(action),
            "{action} not audited: {}",
            audit.stdout
        );
    }

    // The routes are in the OpenAPI document.
    let doc = d
        .client(&d.operator_token)
        .get_text("/openapi.json")
        .unwrap();
    for p in ["\"/v1/ids\"", "\"/v1/ids/rules\"", "\"/v1/ids/alerts\""] {
        assert!(doc.contains(p), "{p} missing from the OpenAPI document");
    }
}

#[test]
fn replay_runs_offline_without_a_daemon() {
    let out = common::run({
        let mut c = common::hostel_cmd();
        c.args(["ids", "replay"]);
        c
    });
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("usage: hostel ids replay"), "{out:?}");
}
