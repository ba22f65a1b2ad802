use super::*;
use hostel_engine::MacAddr;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDk0bGx0ZXN0a2V5c3R1ZmZzdHVmZnN0dWZmc3R1ZmY test@host";

fn base() -> SeedConfig {
    SeedConfig {
        instance_id: "vm-0001".into(),
        hostname: "web-1".into(),
        ssh_authorized_keys: vec![KEY.into()],
        ..Default::default()
    }
}

fn yaml_body(user_data: &str) -> Value {
    let body = user_data
        .strip_prefix("#cloud-config\n")
        .expect("cloud-config header");
    serde_json::from_str(body).expect("user-data body is JSON (hence YAML)")
}

#[test]
fn meta_and_user_data_carry_identity_keys_and_key_only_ssh() {
    let f = base().render().unwrap();
    let meta: Value = serde_json::from_str(&f.meta_data).unwrap();
    assert_eq!(meta["instance-id"], "vm-0001");
    assert_eq!(meta["local-hostname"], "web-1");
    let ud = yaml_body(&f.user_data);
    assert_eq!(ud["hostname"], "web-1");
    assert_eq!(ud["ssh_authorized_keys"][0], KEY);
    assert_eq!(ud["ssh_pwauth"], false);
    assert_eq!(ud["disable_root"], true);
    assert!(ud.get("users").is_none(), "default user only");
    assert_eq!(f.network_config, None);
}

#[test]
fn merged_fragments_cannot_reenable_password_ssh_and_lists_append() {
    let mut c = base();
    c.runcmd = vec![RunCmd::Argv(vec!["echo".into(), "one".into()])];
    c.cloud_config = serde_json::from_value(json!({
        "ssh_pwauth": true,
        "runcmd": ["echo two"],
        "write_files": [{"path": "/x", "content": "it's \"quoted\"\n: not: yaml"}],
    }))
    .unwrap();
    let ud = yaml_body(&c.render().unwrap().user_data);
    assert_eq!(ud["ssh_pwauth"], false);
    assert_eq!(ud["runcmd"], json!([["echo", "one"], "echo two"]));
    assert_eq!(
        ud["write_files"][0]["content"],
        "it's \"quoted\"\n: not: yaml"
    );
}

#[test]
fn users_get_locked_passwords_keys_and_sudo() {
    let mut c = base();
    c.users = vec![SeedUser {
        name: "alice".into(),
        ssh_authorized_keys: vec![KEY.into()],
        sudo: true,
        groups: vec!["adm".into()],
    }];
    let ud = yaml_body(&c.render().unwrap().user_data);
    assert_eq!(ud["users"][0], "default");
    assert_eq!(ud["users"][1]["name"], "alice");
    assert_eq!(ud["users"][1]["lock_passwd"], true);
    assert_eq!(ud["users"][1]["sudo"], "ALL=(ALL) NOPASSWD:ALL");
    assert_eq!(ud["users"][1]["groups"], "adm");
}

#[test]
fn static_network_is_v2_matched_by_mac_with_gateway_and_dns() {
    let mut c = base();
    c.network = SeedNetwork::Nics(vec![NicConfig {
        mac: MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        name: "eth0".into(),
        addressing: Addressing::Static {
            addresses: vec!["10.0.0.2/24".parse().unwrap()],
            gateway: Some("10.0.0.1".parse().unwrap()),
            dns: vec!["10.0.0.53".parse().unwrap()],
            search: vec!["example.internal".into()],
        },
    }]);
    let net: Value = serde_json::from_str(&c.render().unwrap().network_config.unwrap()).unwrap();
    let e = &net["ethernets"]["eth0"];
    assert_eq!(net["version"], 2);
    assert_eq!(e["match"]["macaddress"], "52:54:00:12:34:56");
    assert_eq!(e["set-name"], "eth0");
    assert_eq!(e["addresses"], json!(["10.0.0.2/24"]));
    assert_eq!(e["gateway4"], "10.0.0.1");
    assert_eq!(e["nameservers"]["addresses"], json!(["10.0.0.53"]));
    assert_eq!(e["nameservers"]["search"], json!(["example.internal"]));
}

#[test]
fn disabled_network_says_so() {
    let mut c = base();
    c.network = SeedNetwork::Disabled;
    let net: Value = serde_json::from_str(&c.render().unwrap().network_config.unwrap()).unwrap();
    assert_eq!(net, json!({"config": "disabled"}));
}

#[test]
fn bad_fields_are_refused_with_the_reason() {
    let cases: Vec<(SeedConfig, &str)> = vec![
        (
            SeedConfig {
                hostname: "bad_host!".into(),
                ..base()
            },
            "host name",
        ),
        (
            SeedConfig {
                hostname: "-x".into(),
                ..base()
            },
            "host name",
        ),
        (
            SeedConfig {
                instance_id: "has space".into(),
                ..base()
            },
            "instance_id",
        ),
        (
            SeedConfig {
                ssh_authorized_keys: vec!["hunter2".into()],
                ..base()
            },
            "public key",
        ),
        (
            SeedConfig {
                ssh_authorized_keys: vec![format!("{KEY}\nssh_pwauth: true")],
                ..base()
            },
            "public key",
        ),
        (
            SeedConfig {
                users: vec![SeedUser {
                    name: "root".into(),
                    ssh_authorized_keys: vec![],
                    sudo: false,
                    groups: vec![],
                }],
                ..base()
            },
            "user name",
        ),
        (
            SeedConfig {
                packages: vec!["nginx; reboot".into()],
                ..base()
            },
            "package",
        ),
    ];
    for (c, want) in cases {
        let err = c.render().unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    }
    assert!("10.0.0.2".parse::<IpCidr>().is_err());
    assert!("10.0.0.2/33".parse::<IpCidr>().is_err());
    assert!("fd00::2/64".parse::<IpCidr>().is_ok());
}

#[test]
fn raw_user_data_is_passed_through_as_a_second_mime_part() {
    let mut c = base();
    c.user_data = Some("#!/bin/sh\necho hello\n".into());
    let ud = c.render().unwrap().user_data;
    assert!(ud.starts_with("Content-Type: multipart/mixed"), "{ud}");
    assert!(ud.contains("Content-Type: text/cloud-config"));
    assert!(ud.contains("Content-Type: text/x-shellscript"));
    assert!(ud.contains("#!/bin/sh\necho hello\n"));
    assert!(ud.trim_end().ends_with("--"));
}

#[test]
fn seed_disk_is_vfat_labelled_cidata_with_the_files() {
    if !hostel_testkit::which("mkfs.vfat") || !hostel_testkit::which("mdir") {
        eprintln!("SKIPPED: dosfstools/mtools not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.img");
    let mut c = base();
    c.network = SeedNetwork::Disabled;
    c.write_disk(&path).unwrap();
    let p = path.display();
    let label = hostel_testkit::sh(&format!("MTOOLS_SKIP_CHECK=1 mlabel -s -i {p} ::"));
    assert!(label.contains("CIDATA"), "{label}");
    let meta = hostel_testkit::sh(&format!("MTOOLS_SKIP_CHECK=1 mtype -i {p} ::meta-data"));
    assert!(meta.contains("\"local-hostname\": \"web-1\""), "{meta}");
    let net = hostel_testkit::sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mtype -i {p} ::network-config"
    ));
    assert!(net.contains("disabled"), "{net}");
    // Rewriting replaces the disk; no temporary files are left next to it.
    c.write_disk(&path).unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1);
}
