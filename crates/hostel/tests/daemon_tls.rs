//! The API over TLS, end to end against a real `hostel daemon` (no guests needed): the
//! self-signed certificate and its fingerprint, pinning by the client and the CLI's remotes,
//! a changed certificate refused naming both fingerprints, the operator's own pair, and the
//! development plain-HTTP flag kept to loopback.

mod common;

use common::{hostel_cmd, run, ChildGuard, Out, HOSTEL};
use hostel_api::tls::{Fingerprint, Trust};
use hostel_api::{Client, ClientError};
use hostel_testkit::daemon::TestDaemon;
use hostel_testkit::{workspace_root, LineWatcher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const START: Duration = Duration::from_secs(30);

fn guest_dir() -> PathBuf {
    std::env::var_os("HOSTEL_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/guest"))
}

fn https_daemon(tag: &str) -> TestDaemon {
    let d = TestDaemon::start_https(Path::new(HOSTEL), &guest_dir(), tag);
    assert!(d.url.starts_with("https://"), "{}", d.url);
    d
}

fn printed_fingerprint(d: &TestDaemon) -> Fingerprint {
    Fingerprint::parse(d.fingerprint.as_deref().expect("fingerprint printed")).unwrap()
}

/// The SHA-256 of the DER inside a PEM certificate file, computed here independently of the
/// daemon's code.
fn file_fingerprint(pem: &Path) -> Fingerprint {
    use base64::Engine as _;
    let text = std::fs::read_to_string(pem).unwrap();
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    Fingerprint::of(&der)
}

/// `hostel ARGS` with the config file at `config` and nothing else from the environment.
fn cli(config: &Path, args: &[&str]) -> Out {
    let mut cmd = hostel_cmd();
    cmd.env("HOSTEL_CONFIG", config).args(args);
    run(cmd)
}

#[test]
fn https_with_the_pinned_certificate_and_no_plain_http_on_its_port() {
    let d = https_daemon("tls-pin");
    let fp = printed_fingerprint(&d);
    let tls = d.state_path().join("tls");
    assert_eq!(file_fingerprint(&tls.join("cert.pem")), fp);
    let mode = std::fs::metadata(tls.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "key.pem mode {mode:o}");

    let op = Client::with_trust(
        d.url.clone(),
        Some(d.operator_token.clone()),
        Trust::Pinned(fp),
    )
    .unwrap();
    op.list_tenants().expect("HTTPS call with the pin");
    assert_eq!(op.presented_fingerprint(), Some(fp));

    // Another pin: refused before any request is sent, naming both fingerprints.
    let wrong = Fingerprint::of(b"another certificate");
    let other = Client::with_trust(
        d.url.clone(),
        Some(d.operator_token.clone()),
        Trust::Pinned(wrong),
    )
    .unwrap();
    match other.list_tenants() {
        Err(e @ ClientError::CertificateChanged { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&fp.to_string()) && msg.contains(&wrong.to_string()),
                "{msg}"
            );
        }
        other => panic!("expected CertificateChanged, got {:?}", other.err()),
    }

    // Plain HTTP to the TLS port gets no API answer.
    let plain = d.url.replacen("https://", "http://", 1);
    let r = Client::new(plain, Some(d.operator_token.clone())).list_tenants();
    assert!(
        !matches!(r, Ok(_) | Err(ClientError::Api { .. })),
        "plain HTTP answered: {:?}",
        r.err()
    );
}

/// TOFU through `hostel remote add`; later commands use the pin from the config file; a
/// restart keeps the certificate; a regenerated one is refused naming both fingerprints.
#[test]
fn remote_add_pins_on_first_use_and_a_new_certificate_is_refused() {
    let mut d = https_daemon("tls-remote");
    let fp = printed_fingerprint(&d);
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("hostel/config.toml");

    let add = cli(
        &config,
        &[
            "remote",
            "add",
            "local",
            &d.url,
            "--token",
            &d.operator_token,
        ],
    );
    assert!(add.ok(), "{add:?}");
    assert!(add.stdout.contains(&fp.to_string()), "shows it: {add:?}");
    let stored = std::fs::read_to_string(&config).unwrap();
    assert!(stored.contains(&fp.to_string()), "{stored}");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "config holds a token: mode {mode:o}");

    // No --url, no token: the default remote and its pin.
    let list = cli(&config, &["tenant", "list", "-o", "json"]);
    assert!(list.ok(), "{list:?}");
    let remotes = cli(&config, &["remote", "list"]);
    assert!(
        remotes.stdout.contains("local") && remotes.stdout.contains(&fp.to_string()),
        "{remotes:?}"
    );

    // A restart keeps the certificate.
    d.kill9();
    d.respawn();
    assert_eq!(
        printed_fingerprint(&d),
        fp,
        "restart made a new certificate"
    );
    assert!(cli(&config, &["tenant", "list"]).ok());

    // A new certificate (the key and certificate deleted: made again at start).
    d.kill9();
    let tls = d.state_path().join("tls");
    std::fs::remove_file(tls.join("key.pem")).unwrap();
    std::fs::remove_file(tls.join("cert.pem")).unwrap();
    d.respawn();
    let new = printed_fingerprint(&d);
    assert_ne!(new, fp);
    let refused = cli(&config, &["tenant", "list"]);
    let err = refused.refused("refusing");
    assert!(
        err.contains(&fp.to_string()) && err.contains(&new.to_string()),
        "names the pinned and the presented fingerprints: {err}"
    );

    // Re-pinning with the fingerprint the daemon printed, then switch and remove.
    let repin = cli(
        &config,
        &[
            "remote",
            "add",
            "local2",
            &d.url,
            "--token",
            &d.operator_token,
            "--fingerprint",
            &new.to_string(),
        ],
    );
    assert!(repin.ok(), "{repin:?}");
    assert!(cli(&config, &["remote", "switch", "local2"]).ok());
    assert!(cli(&config, &["tenant", "list"]).ok());
    assert!(cli(&config, &["remote", "remove", "local"]).ok());
    let gone = cli(&config, &["--remote", "local", "tenant", "list"]);
    assert!(
        !gone.ok() && gone.stderr.contains("no remote named"),
        "{gone:?}"
    );
}

/// A `hostel daemon` started by the test itself, for flags the harness does not pass.
struct Spawned {
    guard: ChildGuard,
    stdout: LineWatcher,
    _state: tempfile::TempDir,
}

fn spawn_daemon(args: &[&str]) -> Spawned {
    let state = tempfile::Builder::new()
        .prefix("hostel-test-tls-")
        .tempdir()
        .unwrap();
    let mut child = Command::new(HOSTEL)
        .arg("daemon")
        .arg("--state-dir")
        .arg(state.path())
        .arg("--guest-dir")
        .arg(guest_dir())
        .args(args)
        .env_remove("HOSTEL_STANDBY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = LineWatcher::new(child.stdout.take().unwrap());
    Spawned {
        guard: ChildGuard(child),
        stdout,
        _state: state,
    }
}

/// Waits (with a deadline) for a daemon that must refuse to start; returns its stderr.
fn refused_at_start(mut s: Spawned) -> String {
    let status = common::poll("the daemon refuses to start", START, || {
        s.guard.0.try_wait().unwrap()
    });
    assert!(!status.success());
    let mut err = String::new();
    use std::io::Read;
    s.guard
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

#[test]
fn insecure_http_is_refused_off_loopback() {
    let err = refused_at_start(spawn_daemon(&[
        "--listen",
        "0.0.0.0:0",
        "--insecure-http-loopback",
    ]));
    assert!(
        err.contains("--insecure-http-loopback") && err.contains("not a loopback address"),
        "{err}"
    );

    // On loopback it serves plain HTTP, and says so.
    let mut s = spawn_daemon(&["--listen", "127.0.0.1:0", "--insecure-http-loopback"]);
    let line = s
        .stdout
        .wait_for("listening on", START)
        .expect("daemon started");
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
}

#[test]
fn the_operators_certificate_is_used_and_a_mismatched_key_refused() {
    // Two pairs, made by two daemons.
    let a = https_daemon("tls-op-a");
    let b = https_daemon("tls-op-b");
    let a_tls = a.state_path().join("tls");
    let b_tls = b.state_path().join("tls");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, other_key) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("other-key.pem"),
    );
    std::fs::copy(a_tls.join("cert.pem"), &cert).unwrap();
    std::fs::copy(a_tls.join("key.pem"), &key).unwrap();
    std::fs::copy(b_tls.join("key.pem"), &other_key).unwrap();
    drop((a, b));

    let mut s = spawn_daemon(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let line = s
        .stdout
        .wait_for("certificate SHA-256 fingerprint: ", START)
        .expect("daemon started");
    let printed = Fingerprint::parse(line.rsplit(' ').next().unwrap()).unwrap();
    assert_eq!(
        printed,
        file_fingerprint(&cert),
        "the operator's certificate"
    );
    assert!(
        !s._state.path().join("tls").exists(),
        "no self-signed pair made"
    );
    drop(s);

    let err = refused_at_start(spawn_daemon(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        other_key.to_str().unwrap(),
    ]));
    assert!(
        err.contains("does not belong to the certificate") && err.contains("other-key.pem"),
        "{err}"
    );
}

/// `hostel vm console --attach` over HTTPS: the upgrade goes through the TLS bridge with the
/// pin checked; with a guest, typing reaches its shell.
#[test]
fn console_attach_goes_over_https_with_the_pin() {
    use hostel_api::{CreateTenant, CreateToken, CreateVm, Size};
    let guest = hostel_testkit::guest_assets();
    let dir = guest
        .as_ref()
        .and_then(|a| a.initrd.parent().map(Path::to_path_buf))
        .unwrap_or_else(guest_dir);
    let d = TestDaemon::start_https(Path::new(HOSTEL), &dir, "tls-attach");
    let fp = printed_fingerprint(&d);
    let op = Client::with_trust(
        d.url.clone(),
        Some(d.operator_token.clone()),
        Trust::Pinned(fp),
    )
    .unwrap();
    op.create_tenant(&CreateTenant {
        name: "acme".into(),
        quota: None,
    })
    .unwrap();
    let token = op
        .create_token("acme", &CreateToken::default())
        .unwrap()
        .secret;
    let attach = |pin: &str, vm: &str| {
        let mut cmd = hostel_cmd();
        cmd.args(["--url", &d.url, "--token", &token, "--fingerprint", pin])
            .args(["vm", "console", vm, "--attach"]);
        run(cmd)
    };

    // The daemon's answer comes back through the bridge.
    let out = attach(&fp.to_string(), "nosuch");
    out.refused("not found");
    let wrong = Fingerprint::of(b"x").to_string();
    let out = attach(&wrong, "nosuch");
    let err = out.refused("refusing");
    assert!(err.contains(&fp.to_string()), "{err}");

    let Some(_) = guest else { return };
    let _slot = common::boot_slots(1);
    let acme = Client::with_trust(d.url.clone(), Some(token.clone()), Trust::Pinned(fp)).unwrap();
    acme.vms(None)
        .create(&CreateVm {
            name: "con".into(),
            image: Some("busybox".into()),
            memory: Some(Size::Mib(128)),
            start: Some(true),
            ..Default::default()
        })
        .unwrap();
    let mut log = LineWatcher::new(acme.vms(None).console_follow("con").unwrap());
    assert!(
        log.wait_for("HOSTEL-READY", hostel_testkit::BOOT_TIMEOUT)
            .is_some(),
        "guest did not boot: {}",
        log.transcript()
    );
    let mut child = Command::new(HOSTEL)
        .env("HOSTEL_CONFIG", "/nonexistent")
        .args(["--url", &d.url, "--token", &token])
        .args(["--fingerprint", &fp.to_string()])
        .args(["vm", "console", "con", "--attach"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = LineWatcher::new(child.stdout.take().unwrap());
    let mut stderr = LineWatcher::new(child.stderr.take().unwrap());
    let _guard = ChildGuard(child);
    assert!(
        stderr.wait_for("Ctrl-] detaches", START).is_some(),
        "{}",
        stderr.transcript()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = false;
    while !answered && Instant::now() < deadline {
        use std::io::Write;
        stdin.write_all(b"echo TLS-$((40+2))\n").unwrap();
        answered = stdout.wait_for("TLS-42", Duration::from_secs(10)).is_some();
    }
    assert!(answered, "no answer: {}", stdout.transcript());
    use std::io::Write;
    stdin.write_all(&[0x1d]).unwrap();
    assert!(
        stderr.wait_for("detached", START).is_some(),
        "{}",
        stderr.transcript()
    );
}

/// An operator's certificate from their own CA (made here with the `openssl` command):
/// `remote add --ca` verifies it by the CA, names included; another CA is refused.
#[test]
fn remote_add_with_a_ca_trusts_what_it_signed() {
    if !hostel_testkit::which("openssl") {
        eprintln!("SKIPPED: the openssl command is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    for ca in ["ca", "other-ca"] {
        let (key, pem, subj) = (
            p(&format!("{ca}.key")),
            p(&format!("{ca}.pem")),
            format!("/CN={ca}"),
        );
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
        openssl(&args);
    }
    let mut args = vec!["req"];
    args.extend(ec);
    let (srv_key, csr, srv) = (p("srv.key"), p("srv.csr"), p("srv.pem"));
    args.extend(["-keyout", &srv_key, "-out", &csr, "-subj", "/CN=localhost"]);
    openssl(&args);
    let (ca_pem, ca_key, ext) = (p("ca.pem"), p("ca.key"), p("ext.cnf"));
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &srv,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);

    let mut s = spawn_daemon(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &srv,
        "--tls-key",
        &srv_key,
    ]);
    let line = s
        .stdout
        .wait_for("listening on https://", START)
        .expect("started");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap()
        .to_string();
    let token = std::fs::read_to_string(s._state.path().join("operator.token")).unwrap();
    let token = token.trim();
    let config = dir.path().join("config.toml");

    let add = cli(
        &config,
        &[
            "remote", "add", "op", &url, "--token", token, "--ca", &ca_pem,
        ],
    );
    assert!(add.ok(), "{add:?}");
    assert!(std::fs::read_to_string(&config).unwrap().contains("ca.pem"));
    let list = cli(&config, &["tenant", "list"]);
    assert!(list.ok(), "{list:?}");

    let other = p("other-ca.pem");
    let refused = cli(
        &config,
        &[
            "remote", "add", "op2", &url, "--token", token, "--ca", &other,
        ],
    );
    assert!(!refused.ok(), "{refused:?}");
    assert!(refused.stderr.contains("UnknownIssuer"), "{refused:?}");
}

/// SIGTERM drains HTTPS connections like plain ones: a create in flight finishes, and an idle
/// kept-alive TLS connection does not hold the daemon up.
#[test]
fn sigterm_drains_https_connections() {
    use hostel_api::{CreateTenant, CreateToken};
    let Some(a) = hostel_testkit::guest_assets() else {
        return;
    };
    let mut d = TestDaemon::start_https_with_env(
        Path::new(HOSTEL),
        a.initrd.parent().unwrap(),
        "tls-drain",
        &[("HOSTEL_FAILPOINTS", "launch.before-cont=3000")],
    );
    let fp = printed_fingerprint(&d);
    let pinned = |token: &str| {
        Client::with_trust(d.url.clone(), Some(token.to_string()), Trust::Pinned(fp)).unwrap()
    };
    let op = pinned(&d.operator_token);
    op.create_tenant(&CreateTenant {
        name: "acme".into(),
        quota: None,
    })
    .unwrap();
    let token = op
        .create_token("acme", &CreateToken::default())
        .unwrap()
        .secret;
    // `op` now holds an idle kept-alive TLS connection.
    let _slot = common::boot_slots(1);
    let c = pinned(&token);
    let create = std::thread::spawn(move || {
        c.vms(None)
            .create(&common::api::small_vm("drained", true, None))
    });
    common::poll(
        "the daemon at its failpoint",
        hostel_testkit::BOOT_TIMEOUT,
        || d.log().contains("holding at a failpoint").then_some(()),
    );
    // SAFETY: signalling the daemon child this test started.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    let vm = create
        .join()
        .unwrap()
        .expect("the create in flight over HTTPS was cut by SIGTERM");
    assert_eq!(vm.state, "running");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
