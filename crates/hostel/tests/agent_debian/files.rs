//! File push and pull against the real qemu-guest-agent in the shared Debian guest: a
//! round trip with the same SHA-256, mode and owner set, bad input named, the size limit,
//! a failed push leaving nothing, the operator's per-tenant switch, the audit entries.

use super::{cli, exec_out};
use hostel_api::{Client, ClientError, ExecVm, FilePush, SetTenantAgent};
use hostel_testkit::daemon::TestDaemon;
use sha2::{Digest, Sha256};

/// The daemon's default largest file (1 GiB), restored after the limit's cases.
const DEFAULT_LIMIT: u64 = 1 << 30;

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic bytes that are not all alike (every chunk boundary lands mid-pattern).
fn content(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn api_err<T>(r: Result<T, ClientError>) -> (u16, Option<String>, String) {
    match r.map(|_| ()) {
        Err(ClientError::Api {
            status,
            field,
            message,
            ..
        }) => (status, field, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// No file at `path` and no temporary push file in its directory.
fn assert_absent(acme: &Client, dir: &str, name: &str) {
    let ls = exec_out(acme, &["ls", "-a", dir]);
    assert!(
        !ls.lines().any(|l| l == name),
        "{name} exists in {dir}: {ls}"
    );
    assert!(
        !ls.contains(".hostel-push-"),
        "a temporary push file is left in {dir}: {ls}"
    );
}

pub fn push_pull(d: &TestDaemon, op: &Client, acme: &Client, token: &str) {
    let dir = tempfile::tempdir().unwrap();
    // Over three 1 MiB chunks and not a multiple of one.
    let data = content(3 * (1 << 20) + 12_345);
    let sum = hex(Sha256::digest(&data));
    let local = dir.path().join("blob");
    std::fs::write(&local, &data).unwrap();

    let out = cli(d, token)
        .args(["vm", "file", "push"])
        .arg(&local)
        .args([
            "deb:/root/blob",
            "--mode",
            "0640",
            "--uid",
            "1000",
            "--gid",
            "100",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&sum), "{stderr}");
    assert!(stderr.contains("the guest's sha256sum agrees"), "{stderr}");
    assert_eq!(
        exec_out(acme, &["stat", "-c", "%a %u %g %s", "/root/blob"]).trim(),
        format!("640 1000 100 {}", data.len())
    );
    assert_eq!(
        exec_out(acme, &["sha256sum", "/root/blob"])
            .split_whitespace()
            .next(),
        Some(sum.as_str())
    );
    assert_absent(acme, "/root", "nothing");

    let back = dir.path().join("back");
    let out = cli(d, token)
        .args(["vm", "file", "pull", "deb:/root/blob"])
        .arg(&back)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&sum), "{stderr}");
    let pulled = std::fs::read(&back).unwrap();
    assert_eq!(
        hex(Sha256::digest(&pulled)),
        sum,
        "the round trip changed the file"
    );

    // An empty file too.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let v = acme
        .vms(None)
        .push_file(
            "deb",
            &FilePush {
                path: "/root/empty".into(),
                ..Default::default()
            },
            std::fs::File::open(&empty).unwrap(),
            0,
        )
        .unwrap();
    assert_eq!(
        (v.size, v.guest_sha256.as_deref()),
        (0, Some(v.sha256.as_str()))
    );

    // Bad input is named and changes nothing.
    let push = |path: &str, mode: Option<&str>, body: &[u8]| {
        acme.vms(None).push_file(
            "deb",
            &FilePush {
                path: path.into(),
                mode: mode.map(Into::into),
                ..Default::default()
            },
            body,
            body.len() as u64,
        )
    };
    for bad in ["root/rel", "/root/a\0b", "/root/../etc/x", "/root/"] {
        let (status, field, msg) = api_err(push(bad, None, b"x"));
        assert_eq!(
            (status, field.as_deref()),
            (400, Some("path")),
            "{bad:?}: {msg}"
        );
    }
    let (status, field, _) = api_err(push("/root/m", Some("999"), b"x"));
    assert_eq!((status, field.as_deref()), (400, Some("mode")));
    assert_absent(acme, "/root", "m");
    let (status, _, msg) = api_err(acme.vms(None).pull_file("deb", "/root/missing"));
    assert_eq!(status, 404, "{msg}");
    assert!(msg.contains("/root/missing"), "{msg}");
    let (status, field, _) = api_err(acme.vms(None).pull_file("deb", "/root"));
    assert_eq!((status, field.as_deref()), (400, Some("path")));
    // A directory that does not exist: the agent refuses to open the file.
    let (status, _, msg) = api_err(push("/nonexistent/dir/f", None, b"x"));
    assert_eq!(status, 422, "{msg}");

    // The size limit, declared and discovered mid-stream.
    let limit = 1 << 20;
    op.set_tenant_agent(
        "acme",
        &SetTenantAgent {
            max_file_bytes: Some(limit),
            ..Default::default()
        },
    )
    .unwrap();
    let (status, field, _) = api_err(push("/root/big", None, &data));
    assert_eq!((status, field.as_deref()), (413, Some("max_file_bytes")));
    // Chunked (no Content-Length): the daemon has written 1 MiB when it sees the excess.
    let resp = ureq::put(&format!("{}/v1/vms/deb/files", d.url))
        .query("path", "/root/big")
        .set("Authorization", &format!("Bearer {token}"))
        .send(std::io::Read::chain(&data[..], &b""[..]));
    match resp {
        Err(ureq::Error::Status(413, _)) => {}
        // The daemon may answer and close before the client has written the rest.
        Err(ureq::Error::Transport(t)) => eprintln!("chunked push over the limit: {t}"),
        other => panic!("a chunked push over the limit: {other:?}"),
    }
    assert_absent(acme, "/root", "big");
    let (status, field, _) = api_err(acme.vms(None).pull_file("deb", "/root/blob"));
    assert_eq!((status, field.as_deref()), (413, Some("max_file_bytes")));

    // The operator's switch: off is 403 naming the setting, for exec and for files.
    let v = op
        .set_tenant_agent(
            "acme",
            &SetTenantAgent {
                exec: Some(false),
                max_file_bytes: Some(DEFAULT_LIMIT),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!v.exec && v.files);
    let (status, field, msg) = api_err(acme.vms(None).exec(
        "deb",
        &ExecVm {
            command: vec!["true".into()],
            ..Default::default()
        },
    ));
    assert_eq!((status, field.as_deref()), (403, Some("exec")), "{msg}");
    let out = cli(d, token)
        .args(["vm", "exec", "deb", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`exec`"));
    // Files still move while exec is off (the push's helpers are the daemon's, not the
    // tenant's exec).
    push("/root/small", None, b"small").unwrap();
    op.set_tenant_agent(
        "acme",
        &SetTenantAgent {
            exec: Some(true),
            files: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    let (status, field, _) = api_err(push("/root/small2", None, b"x"));
    assert_eq!((status, field.as_deref()), (403, Some("files")));
    let (status, field, _) = api_err(acme.vms(None).pull_file("deb", "/root/small"));
    assert_eq!((status, field.as_deref()), (403, Some("files")));
    assert_absent(acme, "/root", "small2");
    let v = op
        .set_tenant_agent(
            "acme",
            &SetTenantAgent {
                files: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(v.exec && v.files);
    assert_eq!(op.tenant_agent("acme").unwrap(), v);
    // A tenant cannot see or change the switch (operator-only routes are unknown to it).
    assert_eq!(acme.tenant_agent("acme").unwrap_err().status(), Some(404));

    // Audited with path and size, never content.
    let audit = op.audit(Some("acme"), 200).unwrap();
    let pushed = audit
        .iter()
        .find(|e| e.action == "vm.file.push" && e.target.contains("/root/blob"))
        .expect("the push is audited");
    assert!(
        pushed.target.contains(&format!("{} bytes", data.len())),
        "{pushed:?}"
    );
    assert!(audit
        .iter()
        .any(|e| e.action == "vm.file.pull" && e.target.contains("/root/blob")));
    // The operator's change is filed under no tenant.
    let all = op.audit(None, 200).unwrap();
    assert!(all
        .iter()
        .any(|e| e.action == "tenant.agent" && e.target == "acme"));
}
