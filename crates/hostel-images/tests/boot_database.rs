//! The `database` template end to end: its image (debian-12 + PostgreSQL, derived and cached),
//! a VM seeded with the template's cloud-config and the customer's database, role and
//! password, then from the test network: `psql` logs in as that role with that password,
//! owns the database (creates a table, writes, reads back), and a wrong password is refused.
//! The password holds quotes, `$`, `;` and a `{{placeholder}}`: it must arrive verbatim.
//! The server's TLS certificate is the VM's own, not the one baked into the image.

mod common;

use common::*;
use hostel_engine::MacAddr;
use hostel_images::{Addressing, Catalog, NicConfig, SeedConfig, SeedNetwork};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

const HOST: &str = "hostel-db-test";
const GUEST_IP: &str = "10.0.0.2";
const DB_NAME: &str = "shop";
const DB_USER: &str = "shop_owner";
const DB_PASSWORD: &str = r#"it's a "pass" $HOME;--{{db_name}}"#;

/// `psql` against the guest as `user` with `password`, running `sql` (one result, unaligned,
/// tuples only). Everything reaches psql as argv/environment: no shell quoting involved.
fn psql(port: u16, user: &str, password: &str, sql: &str) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-q",
        "-w",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
    ])
    .arg(format!(
        "host={GUEST_IP} port={port} dbname={DB_NAME} user={user} connect_timeout=10"
    ))
    .env("PGPASSWORD", password)
    .env_remove("PGSERVICE")
    .env_remove("PGSSLMODE");
    c
}

/// The first PEM certificate in `text`.
fn first_pem(text: &str) -> Option<String> {
    let begin = text.find("-----BEGIN CERTIFICATE-----")?;
    let end_marker = "-----END CERTIFICATE-----";
    let end = text[begin..].find(end_marker)? + begin + end_marker.len();
    Some(text[begin..end].to_string())
}

/// The certificate the image carries (read out of its ext4 file system without mounting).
fn image_certificate(rootfs: &std::path::Path) -> Option<String> {
    let out = Command::new("debugfs")
        .args(["-R", "cat /etc/ssl/certs/ssl-cert-snakeoil.pem"])
        .arg(rootfs)
        .output()
        .ok()?;
    first_pem(&String::from_utf8_lossy(&out.stdout))
}

/// The certificate the server presents (PostgreSQL's STARTTLS).
fn server_certificate(port: u16) -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-starttls", "postgres", "-connect"])
        .arg(format!("{GUEST_IP}:{port}"))
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    first_pem(&String::from_utf8_lossy(&out.stdout))
}

fn run(mut c: Command) -> (bool, String) {
    let out = c.output().expect("spawn psql");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn database_template_serves_the_customers_database_with_password_login() {
    let Some(store) = cached_store() else { return };
    if !["psql", "openssl", "debugfs"]
        .iter()
        .all(|t| hostel_testkit::which(t))
    {
        eprintln!("SKIPPED: psql, openssl or debugfs missing (apt-get install postgresql-client)");
        return;
    }
    let catalog = Catalog::builtin();
    let db = catalog
        .template("database")
        .expect("database template")
        .clone();
    let out = build(&store, &db.image);
    eprintln!("{}: cached={} in {:.1?}", db.image, out.cached, out.elapsed);
    let baked = image_certificate(&out.image.disk_path()).expect("the image's certificate");

    let mac = MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0x04]);
    let mut seed = SeedConfig {
        instance_id: format!("db-{}", std::process::id()),
        hostname: HOST.into(),
        network: SeedNetwork::Nics(vec![NicConfig {
            mac,
            name: "eth0".into(),
            addressing: Addressing::Static {
                addresses: vec![format!("{GUEST_IP}/24").parse().unwrap()],
                gateway: None,
                dns: vec![],
                search: vec![],
            },
        }]),
        ..Default::default()
    };
    let params = BTreeMap::from([
        ("db_name".to_string(), DB_NAME.to_string()),
        ("db_user".to_string(), DB_USER.to_string()),
        ("db_password".to_string(), DB_PASSWORD.to_string()),
    ]);
    db.apply(&params, &mut seed).unwrap();
    let port = db.ports[0].port;

    let (ns, tap) = network("db");
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_path_buf();
    let nic = format!("tap={tap},mac={mac}").parse().unwrap();
    let image = db.image.clone();
    let result = ns
        .spawn_in(move || {
            runtime().block_on(async move {
                let mut g = boot(&store, &image, &seed, &dir_path, Some(nic), 2 << 30).await;
                g.expect(&format!("{HOST} login:"));
                // cloud-init's last word: the runcmd (database creation) has run by then.
                let done = g.expect(" finished at ");
                // The server restarted with the new configuration moments before: a few tries.
                let (ok, login) = retry(
                    &mut || {
                        psql(
                            port,
                            DB_USER,
                            DB_PASSWORD,
                            "select current_user || ' ' || current_database()",
                        )
                    },
                    Duration::from_secs(60),
                );
                // The role owns the database: it can create a table in it and use it.
                let (own_ok, own) = run(psql(
                    port,
                    DB_USER,
                    DB_PASSWORD,
                    "create table orders (n int); insert into orders values (6), (7); \
                     select sum(n) * 3 from orders",
                ));
                let (bad_ok, bad) = run(psql(port, DB_USER, "not-the-password", "select 1"));
                // postgres has no password: the network cannot log in as the superuser.
                let (su_ok, su) = run(psql(port, "postgres", DB_PASSWORD, "select 1"));
                let served = server_certificate(port);
                let transcript = g.transcript();
                g.save_transcript("boot_database");
                g.vm.stop(Duration::from_secs(30)).await;
                (
                    done,
                    (ok, login),
                    (own_ok, own),
                    (bad_ok, bad),
                    (su_ok, su),
                    served,
                    transcript,
                )
            })
        })
        .join()
        .expect("guest thread");
    let (done, (ok, login), (own_ok, own), (bad_ok, bad), (su_ok, su), served, transcript) = result;
    assert!(done.contains("Cloud-init"), "{done}");
    assert!(ok, "psql login failed: {login}\n{transcript}");
    assert_eq!(login.trim(), format!("{DB_USER} {DB_NAME}"), "{transcript}");
    assert!(own_ok, "the owner could not use its database: {own}");
    assert_eq!(own.trim(), "39");
    assert!(!bad_ok, "a wrong password was accepted: {bad}");
    assert!(
        bad.contains(&format!(
            "password authentication failed for user \"{DB_USER}\""
        )),
        "{bad}"
    );
    assert!(!su_ok, "the superuser logged in over the network: {su}");
    assert!(
        su.contains("password authentication failed for user \"postgres\""),
        "{su}"
    );
    let served = served.expect("the server offers TLS");
    assert_ne!(
        served, baked,
        "the server uses the image's shared TLS key pair"
    );
}
