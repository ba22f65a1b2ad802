//! The API's edges against a real daemon, none booting a guest: what a hostile or careless
//! client sends (issue 14, defects 10-13), creates refused after their record was written
//! (defect 4), the audit trail of each (defect 5), token revocation and the OpenAPI
//! document.

mod common;

use common::{daemon_without_guests, DaemonCli};
use hostel_api::{
    AuditView, ClientError, CreateNetwork, CreateVm, QuotaBody, ResizeVm, Size, TenantView,
};
use serde_json::Value;

/// One raw request: status, `WWW-Authenticate`, body.
fn raw(
    method: &str,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, Option<String>, String) {
    let mut req = ureq::request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        req = req.set("Content-Type", ct);
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let auth = resp.header("www-authenticate").map(str::to_string);
    (status, auth, resp.into_string().unwrap_or_default())
}

/// The status a POST announcing a `len`-byte JSON body gets before any of the body is sent.
/// (Sending it whole races the server's early 413 and close: the client's write then fails
/// with a broken pipe, or the kernel's reset discards the answer.)
fn announced_body_status(base: &str, path: &str, token: &str, len: usize) -> u16 {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .expect("request head");
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("status line");
    let line = String::from_utf8_lossy(&head);
    line.get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {line:?}"))
}

fn api_status(e: ClientError) -> (u16, String, Option<String>) {
    match e {
        ClientError::Api {
            status,
            code,
            field,
            ..
        } => (status, code, field),
        other => panic!("not an API error: {other}"),
    }
}

/// Issue 14 (12): trailing data is 400, an oversized body 413, a body not declared JSON
/// 415, a 401 names the Bearer scheme, and a tenant calling an operator-only route gets
/// exactly the unknown route's 404 whatever its body.
#[test]
fn hostile_requests_get_their_own_statuses() {
    let d = daemon_without_guests("api-http");
    let t = d.tenant("acme", &[]);
    let url = |p: &str| format!("{}{p}", d.url);
    let tok = Some(t.token.as_str());
    let json = Some("application/json");

    let (status, _, body) = raw(
        "POST",
        &url("/v1/networks"),
        tok,
        json,
        br#"{"name":"lan","subnet":"10.0.0.0/24"} trailing"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("trailing"), "{body}");

    let status = announced_body_status(&d.url, "/v1/networks", &t.token, 3 << 20);
    assert_eq!(
        status, 413,
        "a 3 MiB body must be refused from its Content-Length"
    );

    let ok_body = br#"{"name":"lan","subnet":"10.0.0.0/24"}"#;
    for ct in [Some("text/plain"), None] {
        let (status, _, body) = raw("POST", &url("/v1/networks"), tok, ct, ok_body);
        assert_eq!(status, 415, "{ct:?}: {body}");
    }

    let (status, scheme, _) = raw("GET", &url("/v1/vms"), None, None, b"");
    assert_eq!((status, scheme.as_deref()), (401, Some("Bearer")));
    let (status, scheme, _) = raw("GET", &url("/v1/vms"), Some("hst_nope"), None, b"");
    assert_eq!((status, scheme.as_deref()), (401, Some("Bearer")));

    let (status, _, unknown) = raw("GET", &url("/v1/no-such-thing"), tok, None, b"");
    assert_eq!(status, 404);
    for (method, path, body) in [
        ("POST", "/v1/tenants", &b"{"[..]),
        ("POST", "/v1/tenants", &b"{}"[..]),
        ("PUT", "/v1/host/settings", &b"not json"[..]),
        ("PUT", "/v1/tenants/acme/quota", &b"{}"[..]),
        ("POST", "/v1/images/import", &b"[]"[..]),
        ("GET", "/v1/audit?limit=abc", &b""[..]),
        ("GET", "/v1/host", &b""[..]),
    ] {
        let (status, _, answer) = raw(method, &url(path), tok, json, body);
        assert_eq!(
            (status, &answer),
            (404, &unknown),
            "{method} {path} must look like an unknown route"
        );
    }
    // The operator still gets the field at fault.
    let (status, _, body) = raw(
        "POST",
        &url("/v1/tenants"),
        Some(&d.operator_token),
        json,
        b"{}",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("name"), "{body}");
}

/// Issue 14 (4, 5): a create refused after its record was written (host admission, a
/// disk directory that cannot be made) leaves no record, no disks and no quota usage; the
/// log has the create and its undoing, each committed with its change.
#[test]
fn creates_refused_after_their_record_leave_nothing() {
    let d = daemon_without_guests("api-revert");
    let t = d.tenant("acme", &["--memory", "1T", "--vcpus", "64"]);
    let op = d.client(&d.operator_token);
    let client = d.client(&t.token);

    // Admission: a VM as large as the host, on a host that promises a tenth of itself.
    let host = op.host().unwrap();
    op.set_host(&hostel_api::HostSettings {
        memory_overcommit: 0.1,
        cpu_overcommit: 0.1,
    })
    .unwrap();
    let big = CreateVm {
        name: "big".into(),
        memory: Some(Size::Mib(host.memory_mib.max(64))),
        ..Default::default()
    };
    let (status, code, _) = api_status(client.vms(None).create(&big).unwrap_err());
    assert_eq!((status, code.as_str()), (409, "host_capacity"));
    let nothing_left = |what: &str| {
        assert!(
            client.vms(None).list().unwrap().is_empty(),
            "{what}: record left"
        );
        let usage = t.tenant_view().usage;
        assert_eq!((usage.vms, usage.memory_mib), (0, 0), "{what}: quota used");
        let tenant_id = t.tenant_view().id;
        let disks = d.state_path().join("disks").join(&tenant_id);
        let left: Vec<_> = std::fs::read_dir(&disks)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{what}: disks left: {left:?}");
    };
    nothing_left("admission");
    let log: Vec<AuditView> = op.audit(Some("acme"), 10).unwrap();
    let creates: Vec<&AuditView> = log.iter().filter(|e| e.action == "vm.create").collect();
    assert_eq!(creates.len(), 2, "{log:?}");
    assert!(
        creates[0].result.starts_with("error: ") && creates[0].result.ends_with("(undone)"),
        "{creates:?}"
    );
    assert_eq!(creates[1].result, "ok");

    // A disk directory that cannot be made (a file where the tenant's directory goes).
    op.set_host(&hostel_api::HostSettings {
        memory_overcommit: 1.0,
        cpu_overcommit: 4.0,
    })
    .unwrap();
    let tenant_disks = d.state_path().join("disks").join(t.tenant_view().id);
    let _ = std::fs::remove_dir_all(&tenant_disks);
    std::fs::write(&tenant_disks, b"in the way").unwrap();
    let small = CreateVm {
        name: "small".into(),
        start: Some(false),
        ..Default::default()
    };
    let (status, _, _) = api_status(client.vms(None).create(&small).unwrap_err());
    assert_eq!(status, 500);
    assert!(client.vms(None).list().unwrap().is_empty(), "record left");
    assert_eq!(t.tenant_view().usage.vms, 0);
    std::fs::remove_file(&tenant_disks).unwrap();
    let vm = client.vms(None).create(&small).unwrap();
    assert_eq!(vm.name, "small");
    assert_eq!(t.tenant_view().usage.vms, 1);
}

/// Issue 14 (10): a resize passes the checks a create does.
#[test]
fn resize_is_validated_like_create() {
    let d = daemon_without_guests("api-resize");
    let t = d.tenant("acme", &[]);
    let vms = d.client(&t.token);
    let vms = vms.vms(None);
    vms.create(&CreateVm {
        name: "web".into(),
        start: Some(false),
        memory: Some(Size::Mib(128)),
        ..Default::default()
    })
    .unwrap();
    for (body, field) in [
        (
            ResizeVm {
                memory: Some(Size::Mib(1)),
                ..Default::default()
            },
            "memory",
        ),
        (
            ResizeVm {
                vcpus: Some(300),
                ..Default::default()
            },
            "vcpus",
        ),
        (
            ResizeVm {
                vcpus: Some(0),
                ..Default::default()
            },
            "vcpus",
        ),
    ] {
        let (status, _, f) = api_status(vms.resize("web", &body).unwrap_err());
        assert_eq!((status, f.as_deref()), (400, Some(field)), "{body:?}");
        // The same shape is refused at create too.
        let (status, _, f) = api_status(
            vms.create(&CreateVm {
                name: "other".into(),
                start: Some(false),
                memory: body.memory.clone(),
                vcpus: body.vcpus,
                ..Default::default()
            })
            .unwrap_err(),
        );
        assert_eq!((status, f.as_deref()), (400, Some(field)), "{body:?}");
    }
    let vm = vms.show("web").unwrap();
    assert_eq!((vm.vcpus, vm.memory_mib), (1, 128));
    let grown = vms
        .resize(
            "web",
            &ResizeVm {
                memory: Some(Size::Mib(256)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(grown.memory_mib, 256);
}

/// Issue 14 (11): networks count against the tenant's quota, which the operator sets;
/// special subnets are a clear 400.
#[test]
fn networks_are_bounded_and_special_subnets_refused() {
    let d = daemon_without_guests("api-netquota");
    let t = d.tenant("acme", &["--max-networks", "2"]);
    let client = d.client(&t.token);
    let net = |name: &str, subnet: &str| CreateNetwork {
        name: name.into(),
        subnet: subnet.into(),
        gateway: None,
        uplink: false,
        subnet6: None,
    };
    for (subnet, what) in [
        ("127.0.0.0/24", "loopback"),
        ("224.1.0.0/16", "multicast"),
        ("169.254.3.0/24", "link-local"),
        ("0.0.0.0/8", "unspecified"),
        ("255.255.255.0/24", "broadcast"),
    ] {
        match client.create_network(None, &net("x", subnet)).unwrap_err() {
            ClientError::Api {
                status,
                field,
                message,
                ..
            } => {
                assert_eq!(
                    (status, field.as_deref()),
                    (400, Some("subnet")),
                    "{subnet}"
                );
                assert!(message.contains(what), "{subnet}: {message}");
            }
            other => panic!("{other}"),
        }
    }
    let mut six = net("x", "10.9.0.0/24");
    six.subnet6 = Some("::1/64".into());
    let (status, _, field) = api_status(client.create_network(None, &six).unwrap_err());
    assert_eq!((status, field.as_deref()), (400, Some("subnet6")));

    client
        .create_network(None, &net("a", "10.0.0.0/24"))
        .unwrap();
    client
        .create_network(None, &net("b", "10.0.1.0/24"))
        .unwrap();
    let (status, code, field) = api_status(
        client
            .create_network(None, &net("c", "10.0.2.0/24"))
            .unwrap_err(),
    );
    assert_eq!(
        (status, code.as_str(), field.as_deref()),
        (409, "quota_exceeded", Some("networks"))
    );
    let view: TenantView = t.tenant_view();
    assert_eq!((view.usage.networks, view.quota.networks), (2, 2));
    // The operator raises it like any other quota.
    let op = d.client(&d.operator_token);
    op.set_quota(
        "acme",
        &QuotaBody {
            networks: 3,
            ..view.quota
        },
    )
    .unwrap();
    client
        .create_network(None, &net("c", "10.0.2.0/24"))
        .unwrap();
}

/// Tokens are listed (never their secrets) and revoked: the operator any tenant's, a
/// tenant its own; a revoked secret stops working at once, and the revocation is audited.
#[test]
fn tokens_are_listed_and_revoked() {
    let d = daemon_without_guests("api-tokens");
    let a = d.tenant("a", &[]);
    let b = d.tenant("b", &[]);
    let listed = d.op(&["token", "list", "-o", "json"]);
    let all: Vec<hostel_api::TokenView> = listed.json();
    assert!(!listed.stdout.contains(&a.token), "a secret was listed");
    assert_eq!(all.len(), 3, "operator + one per tenant: {all:?}");
    let own: Vec<hostel_api::TokenView> = a.cli(&["token", "list", "-o", "json"]).json();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].tenant.as_deref(), Some("a"));
    let b_token = all
        .iter()
        .find(|t| t.tenant.as_deref() == Some("b"))
        .unwrap()
        .id
        .clone();
    // Another tenant's token is not found, and stays valid.
    a.cli(&["token", "delete", &b_token]).refused("not found");
    assert!(b.cli(&["vm", "list"]).ok());
    // The operator's own token is the daemon's.
    let op_token = all.iter().find(|t| t.tenant.is_none()).unwrap().id.clone();
    d.op(&["token", "delete", &op_token])
        .refused("operator.token");

    assert!(d.op(&["token", "delete", &b_token]).ok());
    b.cli(&["vm", "list"]).refused("unknown API token");
    // A tenant may revoke its own, the one it calls with included.
    assert!(a.cli(&["token", "delete", &own[0].id]).ok());
    a.cli(&["vm", "list"]).refused("unknown API token");

    let log: Vec<AuditView> = d.client(&d.operator_token).audit(Some("b"), 10).unwrap();
    assert!(
        log.iter()
            .any(|e| e.action == "token.delete" && e.target == b_token && e.result == "ok"),
        "{log:?}"
    );
}

/// Issue 14 (13): the document declares what the API does: every path parameter, the
/// operator's `tenant` parameter, the bearer scheme, the common 4xx answers, optional
/// bodies as optional and limits as constraints.
#[test]
fn openapi_document_describes_the_api() {
    let d = daemon_without_guests("api-doc");
    let (status, _, text) = raw("GET", &format!("{}/openapi.json", d.url), None, None, b"");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["security"][0].get("bearer").is_some());
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let declared =
                |name: &str, at: &str| params.iter().any(|p| p["name"] == name && p["in"] == at);
            for seg in path.split('/') {
                if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    assert!(
                        declared(name, "path"),
                        "{method} {path}: {{{name}}} undeclared"
                    );
                }
            }
            if path.starts_with("/v1/vms") || path.starts_with("/v1/networks") {
                assert!(declared("tenant", "query"), "{method} {path}: no tenant");
            }
            assert!(
                op["responses"].get("401").is_some(),
                "{method} {path}: no 401"
            );
            if op.get("requestBody").is_some() {
                for s in ["400", "413", "415"] {
                    assert!(op["responses"].get(s).is_some(), "{method} {path}: no {s}");
                }
            }
        }
    }
    // Bodies whose every field is optional may be left out; a create's may not.
    assert_eq!(
        paths["/v1/vms/{name}/stop"]["post"]["requestBody"]["required"],
        false
    );
    assert_eq!(paths["/v1/vms"]["post"]["requestBody"]["required"], true);
    let create_vm = &doc["components"]["schemas"]["CreateVm"]["properties"];
    assert!(create_vm["name"]["pattern"].is_string());
    assert_eq!(create_vm["vcpus"]["maximum"], 255);
}

/// Issue 14 (5): each acknowledged change has exactly one entry, committed with it; a
/// refused call has one entry with its reason and changes nothing.
#[test]
fn each_change_has_exactly_one_audit_entry() {
    let d = daemon_without_guests("api-audit");
    let t = d.tenant("acme", &[]);
    let c = d.client(&t.token);
    let op = d.client(&d.operator_token);
    c.create_network(
        None,
        &CreateNetwork {
            name: "lan".into(),
            subnet: "10.0.0.0/24".into(),
            gateway: None,
            uplink: false,
            subnet6: None,
        },
    )
    .unwrap();
    let vms = c.vms(None);
    vms.create(&CreateVm {
        name: "web".into(),
        start: Some(false),
        ..Default::default()
    })
    .unwrap();
    vms.resize(
        "web",
        &ResizeVm {
            vcpus: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    vms.stop("web", &Default::default()).unwrap();
    assert!(vms
        .create(&CreateVm {
            name: "web".into(),
            start: Some(false),
            ..Default::default()
        })
        .is_err());
    vms.delete("web").unwrap();
    c.delete_network(None, "lan").unwrap();

    let mut log: Vec<AuditView> = op.audit(Some("acme"), 100).unwrap();
    log.reverse();
    let got: Vec<(String, String, bool)> = log
        .iter()
        .filter(|e| e.action != "token.create")
        .map(|e| (e.action.clone(), e.target.clone(), e.result == "ok"))
        .collect();
    let want: Vec<(String, String, bool)> = [
        ("network.create", "lan", true),
        ("vm.create", "web", true),
        ("vm.resize", "web", true),
        ("vm.stop", "web", true),
        ("vm.create", "web", false),
        ("vm.delete", "web", true),
        ("network.delete", "lan", true),
    ]
    .iter()
    .map(|(a, t, ok)| (a.to_string(), t.to_string(), *ok))
    .collect();
    assert_eq!(got, want);
}
