//! Driving a daemon through the typed API client (no CLI process per call): what the
//! lifecycle and chaos tests share. A daemon restarted with [`restart`] listens elsewhere, so
//! clients are made again from the new URL with the same tokens.

use super::{poll, DaemonCli, HOSTEL};
use hostel_api::{Client, CreateVm, StopVm, VmView};
use hostel_testkit::daemon::{pids_mentioning, TestDaemon};
use hostel_testkit::{guest_assets, LineWatcher};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn guest_dir() -> Option<PathBuf> {
    let assets = guest_assets()?;
    Some(assets.vmlinux.parent().expect("guest dir").to_path_buf())
}

/// A daemon with `HOSTEL_FAILPOINTS` set (see `hostel-daemon/src/failpoint.rs`).
pub fn daemon_with_failpoints(tag: &str, failpoints: &str) -> Option<TestDaemon> {
    let dir = guest_dir()?;
    Some(TestDaemon::start_with_env(
        Path::new(HOSTEL),
        &dir,
        tag,
        &[("HOSTEL_FAILPOINTS", failpoints)],
    ))
}

/// `kill -9` of the daemon alone, then a daemon without failpoints on the same state.
pub fn restart(d: TestDaemon) -> TestDaemon {
    let dir = guest_dir().expect("guest dir");
    let state = d.kill_daemon_only();
    TestDaemon::start_in(Path::new(HOSTEL), &dir, state)
}

/// A tenant (quota roomy enough for the test) and its API client.
pub fn tenant_client(d: &TestDaemon, name: &str) -> (String, Client) {
    let t = d.tenant(name, &["--vcpus", "64", "--memory", "8G"]);
    let token = t.token.clone();
    (token.clone(), Client::new(d.url.clone(), Some(token)))
}

/// The id of tenant `name` (VM views name their tenant by name; disks go by id).
pub fn tenant_id(d: &TestDaemon, name: &str) -> String {
    let op = client(d, &d.operator_token);
    let all = op.list_tenants().expect("tenant list");
    all.into_iter().find(|t| t.name == name).expect("tenant").id
}

pub fn client(d: &TestDaemon, token: &str) -> Client {
    Client::new(d.url.clone(), Some(token.to_string()))
}

/// A busybox VM of 128 MiB (the harness's initramfs does not boot in 64); `cmdline` is
/// extra kernel command line.
pub fn small_vm(name: &str, start: bool, cmdline: Option<String>) -> CreateVm {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "memory": 128,
        "start": start,
        "cmdline": cmdline,
    }))
    .expect("CreateVm")
}

pub fn stop_body(force: bool, timeout_secs: Option<u64>) -> StopVm {
    serde_json::from_value(serde_json::json!({"force": force, "timeout_secs": timeout_secs}))
        .expect("StopVm")
}

pub fn show(c: &Client, vm: &str) -> Option<VmView> {
    match c.vms(None).show(vm) {
        Ok(v) => Some(v),
        Err(e) if e.status() == Some(404) => None,
        Err(e) => panic!("show {vm}: {e}"),
    }
}

/// Waits until `vm` satisfies `f`.
pub fn wait_vm(
    c: &Client,
    vm: &str,
    what: &str,
    t: Duration,
    f: impl Fn(&VmView) -> bool,
) -> VmView {
    poll(&format!("{vm}: {what}"), t, || show(c, vm).filter(|v| f(v)))
}

/// Follows the console until a line containing `marker`.
pub fn wait_console(c: &Client, vm: &str, marker: &str, t: Duration) {
    let stream = c.vms(None).console_follow(vm).expect("console follow");
    let mut lines = LineWatcher::new(stream);
    assert!(
        lines.wait_for(marker, t).is_some(),
        "{vm}: no {marker:?} on the console:\n{}",
        lines.transcript()
    );
}

/// Live QEMUs launched in `<state>/run/<vm id>/`.
pub fn qemus_of(state: &Path, vm_id: &str) -> Vec<i32> {
    let dir = format!("{}/run/{vm_id}/", state.display());
    pids_mentioning(&["-pidfile", &dir])
        .into_iter()
        .filter(|p| super::alive(*p as u32))
        .collect()
}

/// Every live QEMU under `<state>/run/`, by the VM id its run directory names.
pub fn all_qemus(state: &Path) -> Vec<(i32, String)> {
    let root = format!("{}/run/", state.display());
    pids_mentioning(&["-pidfile", &root])
        .into_iter()
        .filter(|p| super::alive(*p as u32))
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd);
            let rest = &cmd[cmd.find(&root)? + root.len()..];
            Some((pid, rest.split('/').next()?.to_string()))
        })
        .collect()
}
