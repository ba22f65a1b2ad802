//! `bench-api`: what the control plane adds to a boot, how a burst of starts scales, and how
//! fast the read-only calls are with many VMs recorded (the tables are in `api_report`).
//!
//! Readiness is always the guest's `HOSTEL-READY` line, seen where a user would see it: on
//! `hostel run`'s stdout, and on the API's console follow stream. The console log file QEMU
//! writes is watched as well, so the follow stream's own delay is measured, not guessed.

use crate::api_daemon::Daemon;
use crate::marker::{watch_file, watch_reader};
use anyhow::{bail, Context, Result};
use hostel_api::{Client, CreateTenant, CreateToken, CreateVm, QuotaBody};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The line the busybox image's init prints once userspace is up.
pub const READY: &[u8] = b"HOSTEL-READY";

/// Guest RAM of every VM here, as in bench-boot and the issue.
pub const GUEST_MIB: u64 = 128;

/// `hostel.run=` with base64 of `true`: the guest powers off right after `HOSTEL-READY`, so
/// a sequential round leaves nothing running behind it.
pub const RUN_TRUE: &str = "hostel.run=dHJ1ZQ==";

/// One boot that takes longer than this is stuck (the slowest seen on this host is ~15 s).
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// Twenty TCG guests on two cores boot one after the other in effect; allow for it.
const BURST_TIMEOUT: Duration = Duration::from_secs(900);

/// How often one VM's console log file is polled: fine enough that the file watcher is a
/// reference for the follow stream's 100 ms, cheap enough (one read) not to load the host.
const LOG_POLL: Duration = Duration::from_millis(2);

/// The same during a burst, where twenty watchers poll at once on two busy cores.
const BURST_LOG_POLL: Duration = Duration::from_millis(10);

fn wait_ready(rx: &Receiver<Instant>, deadline: Instant, what: &str) -> Result<Instant> {
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .map_err(|_| anyhow::anyhow!("no HOSTEL-READY on {what} in time"))
}

/// The `hostel run` argv that boots the same VM the daemon does: busybox image, 1 vCPU,
/// 128 MiB and a blank 1 GiB raw data disk (the daemon gives every VM one), so the only
/// difference left is the control plane.
pub fn hostel_run_argv(hostel: &Path, guest: &Path, run_dir: &Path) -> Vec<String> {
    let g = |f: &str| guest.join(f).display().to_string();
    vec![
        hostel.display().to_string(),
        "run".into(),
        "--kernel".into(),
        g("vmlinux"),
        "--initrd".into(),
        g("initrd.img"),
        "--cmdline".into(),
        format!("quiet {RUN_TRUE}"),
        "--run-dir".into(),
        run_dir.display().to_string(),
        "--vcpus".into(),
        "1".into(),
        "--memory".into(),
        format!("{GUEST_MIB}M"),
        "--disk".into(),
        format!("{},format=raw", run_dir.join("disk0.raw").display()),
    ]
}

/// Spawn to `HOSTEL-READY` on stdout of one `hostel run`, in seconds. The guest powers off
/// by itself after that; the process is waited for (or killed) so the next round starts on
/// a quiet host.
pub fn hostel_run_once(hostel: &Path, guest: &Path, run_dir: &Path) -> Result<f64> {
    let disk = std::fs::File::create(run_dir.join("disk0.raw"))?;
    disk.set_len(1 << 30)?;
    let argv = hostel_run_argv(hostel, guest, run_dir);
    let t0 = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawning {}", argv[0]))?;
    let rx = watch_reader(child.stdout.take().context("stdout")?, READY);
    let ready = wait_ready(&rx, t0 + BOOT_TIMEOUT, "hostel run's stdout");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match child.try_wait()? {
            Some(_) => break,
            None if Instant::now() > deadline || ready.is_err() => {
                crate::api_daemon::kill_stray_qemu(run_dir);
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Ok(ready?.duration_since(t0).as_secs_f64())
}

/// The create body of every VM here: 1 vCPU, 128 MiB, the default image and disk. Built
/// from JSON so that fields the API gains later (all optional) keep their defaults instead
/// of breaking the benchmark's build.
pub fn vm_body(name: &str, start: bool, cmdline: Option<&str>) -> CreateVm {
    let mut v = serde_json::json!({
        "name": name,
        "vcpus": 1,
        "memory": GUEST_MIB,
        "start": start,
    });
    if let Some(c) = cmdline {
        v["cmdline"] = c.into();
    }
    serde_json::from_value(v).expect("a valid CreateVm body")
}

/// One API boot, in seconds from just before the create call.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiSample {
    /// `POST /v1/vms` with `start: true` returned (QEMU is running by then).
    pub create_s: f64,
    /// `HOSTEL-READY` arrived on the console follow stream: what a user sees.
    pub follow_s: f64,
    /// `HOSTEL-READY` appeared in QEMU's console log file: when the guest printed it.
    pub log_s: f64,
}

/// Creates and starts one VM through the API and waits for `HOSTEL-READY` on its console
/// follow stream (opened right after create returns, as a client would); deletes it after.
pub fn api_once(daemon: &Daemon, tenant: &Client, name: &str) -> Result<ApiSample> {
    let vms = tenant.vms(None);
    let t0 = Instant::now();
    let created = vms.create(&vm_body(name, true, Some(RUN_TRUE)));
    let vm = match created {
        Ok(vm) => vm,
        Err(e) => {
            let _ = vms.delete(name);
            bail!("create {name}: {e}");
        }
    };
    let create_s = t0.elapsed().as_secs_f64();
    let stop = Arc::new(AtomicBool::new(false));
    let result = (|| -> Result<ApiSample> {
        let follow = vms.console_follow(name).context("console follow")?;
        let follow_rx = watch_reader(follow, READY);
        let log_rx = watch_file(daemon.console_log(&vm.id), READY, LOG_POLL, stop.clone());
        let deadline = t0 + BOOT_TIMEOUT;
        let follow_at = wait_ready(&follow_rx, deadline, "the console follow stream")?;
        let log_at = wait_ready(&log_rx, deadline, "the console log file")?;
        Ok(ApiSample {
            create_s,
            follow_s: follow_at.duration_since(t0).as_secs_f64(),
            log_s: log_at.duration_since(t0).as_secs_f64(),
        })
    })();
    stop.store(true, Ordering::Relaxed);
    let deleted = vms.delete(name).with_context(|| format!("delete {name}"));
    let sample = result?;
    deleted?;
    Ok(sample)
}

/// `n` VMs started at once, times in seconds from the first start call.
#[derive(Debug, Clone, Default)]
pub struct BurstResult {
    pub n: usize,
    /// When each start call returned.
    pub start_returned_s: Vec<f64>,
    /// When each VM's `HOSTEL-READY` arrived on its follow stream.
    pub follow_s: Vec<f64>,
    /// When each VM's `HOSTEL-READY` appeared in its console log file.
    pub log_s: Vec<f64>,
}

impl BurstResult {
    /// First start call to the last VM ready on its follow stream.
    pub fn all_ready_s(&self) -> Option<f64> {
        self.follow_s.iter().copied().reduce(f64::max)
    }
}

/// Creates `n` stopped VMs, opens every console follow stream, then starts all of them from
/// `n` threads released together. The VMs are deleted afterwards, ready or not.
pub fn burst(daemon: &Daemon, tenant: &Client, n: usize) -> Result<BurstResult> {
    let names: Vec<String> = (0..n).map(|i| format!("burst-{i:02}")).collect();
    let result = burst_inner(daemon, tenant, &names);
    let vms = tenant.vms(None);
    for name in &names {
        let _ = vms.delete(name);
    }
    result
}

fn burst_inner(daemon: &Daemon, tenant: &Client, names: &[String]) -> Result<BurstResult> {
    let vms = tenant.vms(None);
    let mut ids = Vec::new();
    for name in names {
        let vm = vms
            .create(&vm_body(name, false, None))
            .with_context(|| format!("create {name}"))?;
        ids.push(vm.id);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(names.len()));
    let mut handles = Vec::new();
    for (name, id) in names.iter().zip(&ids) {
        let (client, name, barrier) = (tenant.clone(), name.clone(), barrier.clone());
        let log_rx = watch_file(daemon.console_log(id), READY, BURST_LOG_POLL, stop.clone());
        handles.push(std::thread::spawn(move || -> Result<_> {
            let vms = client.vms(None);
            // Streaming before the start, so no output can be missed and the stream's set-up
            // is not in the measured time.
            let follow_rx = watch_reader(vms.console_follow(&name)?, READY);
            barrier.wait();
            let called = Instant::now();
            vms.start(&name).with_context(|| format!("start {name}"))?;
            let returned = Instant::now();
            let deadline = called + BURST_TIMEOUT;
            let follow = wait_ready(&follow_rx, deadline, &format!("{name}'s follow stream"))?;
            let log = wait_ready(&log_rx, deadline, &format!("{name}'s console log"))?;
            Ok((called, returned, follow, log))
        }));
    }
    let mut times = Vec::new();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(t)) => times.push(t),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!("a start thread panicked"));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(e) = first_err {
        return Err(e);
    }
    let t0 = times.iter().map(|t| t.0).min().context("no VMs")?;
    let s = |at: Instant| at.duration_since(t0).as_secs_f64();
    Ok(BurstResult {
        n: names.len(),
        start_returned_s: times.iter().map(|t| s(t.1)).collect(),
        follow_s: times.iter().map(|t| s(t.2)).collect(),
        log_s: times.iter().map(|t| s(t.3)).collect(),
    })
}

/// Latencies of the calls that change no VM, with many VMs recorded; milliseconds.
#[derive(Debug, Clone, Default)]
pub struct RecordsResult {
    pub total_vms: usize,
    pub tenants: usize,
    pub per_tenant: usize,
    /// `POST /v1/vms` with `start: false`, while the records were being made.
    pub create_ms: Vec<f64>,
    /// `GET /v1/vms` from a tenant token (that tenant's VMs).
    pub list_ms: Vec<f64>,
    /// `GET /v1/vms/NAME` from a tenant token.
    pub show_ms: Vec<f64>,
    /// `GET /v1/host` from the operator token (it sums every VM's commitment).
    pub host_ms: Vec<f64>,
}

/// Records `tenants × per_tenant` stopped VMs, then times `calls` list, show and host calls.
pub fn records(
    operator: &Client,
    url: &str,
    tenants: usize,
    per_tenant: usize,
    calls: usize,
) -> Result<RecordsResult> {
    let mut r = RecordsResult {
        total_vms: tenants * per_tenant,
        tenants,
        per_tenant,
        ..Default::default()
    };
    let quota = QuotaBody {
        vcpus: per_tenant as u32 * 2,
        memory_mib: per_tenant as u64 * GUEST_MIB * 2,
        disk_gib: per_tenant as u64 * 2,
        vms: per_tenant as u32 * 2,
        networks: hostel_api::DEFAULT_MAX_NETWORKS,
        uplinks: hostel_api::DEFAULT_MAX_UPLINKS,
        public_addresses: hostel_api::DEFAULT_MAX_PUBLIC_ADDRESSES,
    };
    let mut clients = Vec::new();
    for t in 0..tenants {
        let name = format!("rec-{t:02}");
        operator
            .create_tenant(&CreateTenant {
                name: name.clone(),
                quota: Some(quota),
            })
            .with_context(|| format!("create tenant {name}"))?;
        let token = operator.create_token(
            &name,
            &CreateToken {
                name: Some("bench".into()),
            },
        )?;
        clients.push(Client::new(url, Some(token.secret)));
    }
    for i in 0..per_tenant {
        // Round-robin over tenants, so every tenant grows as the store does.
        for c in &clients {
            let t = Instant::now();
            c.vms(None)
                .create(&vm_body(&format!("vm-{i:03}"), false, None))
                .with_context(|| format!("record vm-{i:03}"))?;
            r.create_ms.push(ms(t));
        }
        if (i + 1) % 25 == 0 {
            eprintln!("records: {} VMs", (i + 1) * tenants);
        }
    }
    let vms = clients[0].vms(None);
    let listed = vms.list()?.len();
    if listed != per_tenant {
        bail!("tenant rec-00 lists {listed} VMs, expected {per_tenant}");
    }
    // Warm-up: connection pool, SQLite page cache.
    for _ in 0..10 {
        vms.list()?;
        vms.show("vm-000")?;
        operator.host()?;
    }
    for i in 0..calls {
        let t = Instant::now();
        vms.list()?;
        r.list_ms.push(ms(t));
        let t = Instant::now();
        vms.show(&format!("vm-{:03}", i % per_tenant))?;
        r.show_ms.push(ms(t));
        let t = Instant::now();
        operator.host()?;
        r.host_ms.push(ms(t));
    }
    Ok(r)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// The `p`-th percentile (0–1) by nearest rank: with 200 calls, p99 is the 198th fastest.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), Some(198.0));
        assert_eq!(percentile(&v, 0.5), Some(100.0));
        assert_eq!(percentile(&[], 0.99), None);
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
    }

    #[test]
    fn vm_body_asks_for_the_benchmark_vm() {
        let b = vm_body("a", true, Some(RUN_TRUE));
        assert_eq!(b.memory.unwrap().to_mib().unwrap(), GUEST_MIB);
        assert_eq!((b.vcpus, b.start), (Some(1), Some(true)));
        assert_eq!(b.cmdline.as_deref(), Some(RUN_TRUE));
        assert_eq!(vm_body("b", false, None).cmdline, None);
    }

    #[test]
    fn hostel_run_boots_what_the_daemon_boots() {
        let a = hostel_run_argv(Path::new("h"), Path::new("g"), Path::new("r")).join(" ");
        assert!(
            a.contains("--memory 128M") && a.contains("--vcpus 1"),
            "{a}"
        );
        assert!(a.contains(&format!("quiet {RUN_TRUE}")), "{a}");
        assert!(a.contains("--disk r/disk0.raw,format=raw"), "{a}");
    }
}
