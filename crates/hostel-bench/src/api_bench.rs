//! `bench-api`: what the control plane adds to a boot, how a burst of starts scales, and how
//! fast the read-only calls are with many VMs recorded.
//!
//! Readiness is always the guest's `HOSTEL-READY` line, seen where a user would see it: on
//! `hostel run`'s stdout, and on the API's console follow stream. The console log file QEMU
//! writes is watched as well, so the follow stream's own delay is measured, not guessed.

use crate::api_daemon::Daemon;
use crate::machine::Machine;
use crate::stats::{ratio, Summary};
use anyhow::{bail, Context, Result};
use hostel_api::{Client, CreateTenant, CreateToken, CreateVm, QuotaBody};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
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

/// Where a byte stream is in its search for a marker that may straddle two reads.
#[derive(Debug, Default)]
pub struct MarkerScan {
    tail: Vec<u8>,
}

impl MarkerScan {
    /// Feeds the next chunk; true once the marker has been seen.
    pub fn feed(&mut self, chunk: &[u8], marker: &[u8]) -> bool {
        self.tail.extend_from_slice(chunk);
        if self.tail.windows(marker.len()).any(|w| w == marker) {
            return true;
        }
        let keep = marker.len().saturating_sub(1).min(self.tail.len());
        self.tail.drain(..self.tail.len() - keep);
        false
    }
}

/// Reads `r` on a thread and reports the instant `READY` arrived, then keeps draining so a
/// writer (a child's stdout) never blocks on a full pipe.
fn watch_reader(mut r: impl Read + Send + 'static) -> Receiver<Instant> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut scan = MarkerScan::default();
        let mut seen = false;
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            if !seen && scan.feed(&buf[..n], READY) {
                seen = true;
                let _ = tx.send(Instant::now());
            }
        }
    });
    rx
}

/// Polls a VM's console log file (which may not exist yet) for `READY` until found or
/// `stop` is set, every `every`.
fn watch_file(path: PathBuf, every: Duration, stop: Arc<AtomicBool>) -> Receiver<Instant> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut scan = MarkerScan::default();
        let mut file = None;
        let mut buf = [0u8; 8192];
        while !stop.load(Ordering::Relaxed) {
            if file.is_none() {
                file = std::fs::File::open(&path).ok();
            }
            if let Some(f) = file.as_mut() {
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if scan.feed(&buf[..n], READY) {
                        let _ = tx.send(Instant::now());
                        return;
                    }
                }
            }
            std::thread::sleep(every);
        }
    });
    rx
}

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
    let rx = watch_reader(child.stdout.take().context("stdout")?);
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
        let follow_rx = watch_reader(follow);
        let log_rx = watch_file(daemon.console_log(&vm.id), LOG_POLL, stop.clone());
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
        let log_rx = watch_file(daemon.console_log(id), BURST_LOG_POLL, stop.clone());
        handles.push(std::thread::spawn(move || -> Result<_> {
            let vms = client.vms(None);
            // Streaming before the start, so no output can be missed and the stream's set-up
            // is not in the measured time.
            let follow_rx = watch_reader(vms.console_follow(&name)?);
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

/// Everything one `bench-api` run measured.
#[derive(Debug, Clone, Default)]
pub struct ApiResults {
    pub run_ready_s: Vec<f64>,
    pub api: Vec<ApiSample>,
    pub run_failures: usize,
    pub api_failures: usize,
    pub burst: Option<BurstResult>,
    pub records: Option<RecordsResult>,
}

pub const BEGIN: &str = "<!-- bench-api:begin -->";
pub const END: &str = "<!-- bench-api:end -->";

fn secs(s: Option<Summary>) -> String {
    s.map_or("—".into(), |s| {
        format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max)
    })
}

/// Whether the goal is met, judged on the value as the table prints it (two decimals), so a
/// ratio shown as 1.20 never reads "missed" against a goal of 1.2.
fn goal_cell(value: Option<f64>, goal: f64, op: &str) -> String {
    let value = value.map(|v| (v * 100.0).round() / 100.0);
    let met = match (op, value) {
        ("≤", Some(v)) => Some(v <= goal),
        ("<", Some(v)) => Some(v < goal),
        _ => None,
    };
    match met {
        Some(true) => format!("{op} {goal}: **met**"),
        Some(false) => format!("{op} {goal}: **missed**"),
        None => format!("{op} {goal}"),
    }
}

/// The one-VM table: API against `hostel run`, and where the API's time goes.
pub fn sequential_table(r: &ApiResults) -> String {
    let run = Summary::of(&r.run_ready_s);
    let col = |f: fn(&ApiSample) -> f64| Summary::of(&r.api.iter().map(f).collect::<Vec<_>>());
    let follow = col(|a| a.follow_s);
    let q = ratio(follow, run);
    let mut out = String::from(
        "| metric (median, min–max) | value | ratio to `hostel run` | goal |\n|---|---|---|---|\n",
    );
    out.push_str(&format!(
        "| `hostel run` spawn → `HOSTEL-READY` on stdout (s) | {} | 1.00 | |\n",
        secs(run)
    ));
    out.push_str(&format!(
        "| **API create (`start: true`) → `HOSTEL-READY` on the console follow stream** (s) | {} | {} | {} |\n",
        secs(follow),
        q.map_or("—".into(), |q| format!("{q:.2}")),
        goal_cell(q, 1.2, "≤"),
    ));
    let log = col(|a| a.log_s);
    out.push_str(&format!(
        "| ↳ `HOSTEL-READY` written to QEMU's console log (s) | {} | {} | |\n",
        secs(log),
        ratio(log, run).map_or("—".into(), |q| format!("{q:.2}")),
    ));
    out.push_str(&format!(
        "| ↳ create call returns, QEMU running (s) | {} | | |\n",
        secs(col(|a| a.create_s))
    ));
    let lag = Summary::of(
        &r.api
            .iter()
            // The file is polled every 2 ms, so the stream can win by a hair; that is 0 lag.
            .map(|a| ((a.follow_s - a.log_s) * 1000.0).max(0.0))
            .collect::<Vec<_>>(),
    );
    out.push_str(&format!(
        "| ↳ follow stream behind the log file (ms) | {} | | |\n",
        lag.map_or("—".into(), |s| format!(
            "{:.0} ({:.0}–{:.0})",
            s.median, s.min, s.max
        ))
    ));
    out
}

/// The burst table: one row per measure over the `n` VMs. `one_vm_s` (the sequential
/// median) and `cores` give the scale: TCG guests share the cores, so `n` boots cannot take
/// less than about `n × one VM ÷ cores`.
pub fn burst_table(b: &BurstResult) -> String {
    let mut out = String::from("| metric (s from the first start call) | value |\n|---|---|\n");
    let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
    out.push_str(&format!(
        "| **all {} VMs `HOSTEL-READY` on their follow streams** | {} |\n",
        b.n,
        b.all_ready_s().map_or("—".into(), |v| format!("{v:.2}"))
    ));
    out.push_str(&format!(
        "| ↳ all {} in their console log files | {} |\n",
        b.n,
        max(&b.log_s).map_or("—".into(), |v| format!("{v:.2}"))
    ));
    out.push_str(&format!(
        "| one VM ready (follow), median (min–max) | {} |\n",
        secs(Summary::of(&b.follow_s))
    ));
    out.push_str(&format!(
        "| start call returned, median (min–max) | {} |\n",
        secs(Summary::of(&b.start_returned_s))
    ));
    out
}

/// The read-only calls table: median and p99 in ms.
pub fn records_table(r: &RecordsResult) -> String {
    let mut out = String::from(
        "| call (ms) | median | p99 | min–max | calls | goal (median) |\n|---|---|---|---|---|---|\n",
    );
    let list = format!(
        "**`GET /v1/vms`** (list, tenant token, {} VMs returned)",
        r.per_tenant
    );
    let rows: [(&str, &[f64], bool); 4] = [
        (&list, &r.list_ms, true),
        (
            "**`GET /v1/vms/NAME`** (show, tenant token)",
            &r.show_ms,
            true,
        ),
        (
            "`GET /v1/host` (operator; sums every VM's commitment)",
            &r.host_ms,
            false,
        ),
        (
            "`POST /v1/vms` `start: false` (while recording, store growing to the total)",
            &r.create_ms,
            false,
        ),
    ];
    for (label, v, has_goal) in rows {
        let s = Summary::of(v);
        out.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {} |\n",
            s.map_or("—".into(), |s| format!("{:.2}", s.median)),
            percentile(v, 0.99).map_or("—".into(), |p| format!("{p:.2}")),
            s.map_or("—".into(), |s| format!("{:.2}–{:.2}", s.min, s.max)),
            v.len(),
            if has_goal {
                goal_cell(s.map(|s| s.median), 5.0, "<")
            } else {
                String::new()
            }
        ));
    }
    out
}

/// Inputs of the BENCHMARKS.md section besides the results.
pub struct SectionInfo<'a> {
    pub invocation: &'a str,
    pub machine: &'a Machine,
    pub load_after: &'a str,
    pub accelerator: &'a str,
    pub rounds: usize,
    pub hostel_command: &'a str,
}

/// The whole `bench-api` section, markers included.
pub fn section(r: &ApiResults, i: &SectionInfo<'_>) -> String {
    let m = i.machine;
    let mut out = format!(
        "{BEGIN}\n\
## bench-api: the API's create + start against `hostel run`, a burst of starts, read-only calls\n\n\
- Command: `make bench-api`, i.e. `{invocation}`\n\
- Machine: {date}, {cpu}, {cores} cores, {mem:.0} GiB, host kernel {kernel}, {qemu}, \
accelerator {accel}; shared with other builds (load average {lb} before, {la} after)\n\
- The benchmark starts its own `hostel daemon` (temporary state directory, port picked by \
the kernel) and deletes every VM and stops the daemon at the end. Every VM: image `busybox`, \
1 vCPU, {mib} MiB, the daemon's blank 1 GiB raw data disk.\n\
- `hostel run`: `{hostel}`\n\
- API: `POST /v1/vms` `{{\"name\": …, \"vcpus\": 1, \"memory\": {mib}, \"cmdline\": \"{run}\", \"start\": true}}` \
(tenant token), then `GET /v1/vms/NAME/console?follow=true`; the VM is deleted after each round\n\n\
### One VM: {rounds} rounds, alternating `hostel run` and the API (who goes first swaps), after one warm-up of each; failed: `hostel run` {rf}, API {af}\n\n\
{seq}\n",
        invocation = i.invocation,
        date = m.date,
        cpu = m.cpu,
        cores = m.cores,
        mem = m.mem_gib,
        kernel = m.kernel,
        qemu = m.qemu,
        accel = i.accelerator,
        lb = m.loadavg,
        la = i.load_after,
        mib = GUEST_MIB,
        hostel = i.hostel_command,
        run = RUN_TRUE,
        rounds = i.rounds,
        rf = r.run_failures,
        af = r.api_failures,
        seq = sequential_table(r),
    );
    if let Some(b) = &r.burst {
        out.push_str(&format!(
            "### {n} VMs started at once\n\n\
{n} VMs created with `start: false` and their follow streams opened, then {n} threads call \
`POST /v1/vms/NAME/start` together; the VMs stay up (in their shell) until all are ready.\n\n\
{table}\n",
            n = b.n,
            table = burst_table(b)
        ));
    }
    if let Some(rec) = &r.records {
        out.push_str(&format!(
            "### Calls that change no VM, with {total} VMs recorded\n\n\
{total} stopped VMs across {t} tenants ({p} each); calls made one at a time over a kept-alive \
connection, after 10 warm-up calls.\n\n\
{table}\n",
            total = rec.total_vms,
            t = rec.tenants,
            p = rec.per_tenant,
            table = records_table(rec)
        ));
    }
    out.push_str(
        "Times are wall-clock on the benchmark's side. \"Console log\" is QEMU's console log file \
in the VM's run directory, polled every 2 ms (10 ms in the burst): when the guest printed the line, with the API \
out of the path. The follow stream re-reads that file every 20 ms when it has nothing new, \
which is the gap between the two.\n",
    );
    out.push_str(END);
    out.push('\n');
    out
}

/// Writes the `bench-api` section into the markdown file (created if missing).
pub fn write_markdown(path: &Path, section: &str) -> std::io::Result<()> {
    crate::report::write_section(path, BEGIN, END, section)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::splice_between;

    #[test]
    fn marker_found_across_chunk_boundaries() {
        let mut s = MarkerScan::default();
        assert!(!s.feed(b"boot noise HOSTEL-RE", READY));
        assert!(s.feed(b"ADY\r\n", READY));
        let mut s = MarkerScan::default();
        assert!(!s.feed(b"HOSTEL-", READY));
        assert!(!s.feed(b"", READY));
        assert!(!s.feed(b"EXIT 0", READY));
    }

    #[test]
    fn p99_is_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), Some(198.0));
        assert_eq!(percentile(&v, 0.5), Some(100.0));
        assert_eq!(percentile(&[], 0.99), None);
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
    }

    #[test]
    fn tables_show_ratio_and_goals() {
        let r = ApiResults {
            run_ready_s: vec![2.0, 2.0],
            api: vec![
                ApiSample {
                    create_s: 0.3,
                    follow_s: 2.2,
                    log_s: 2.15,
                },
                ApiSample {
                    create_s: 0.3,
                    follow_s: 2.6,
                    log_s: 2.5,
                },
            ],
            ..Default::default()
        };
        let t = sequential_table(&r);
        let row = t.lines().find(|l| l.contains("follow stream**")).unwrap();
        assert!(
            row.contains("2.40 (2.20–2.60) | 1.20 | ≤ 1.2: **met**"),
            "{row}"
        );
        let lag = t.lines().find(|l| l.contains("behind")).unwrap();
        assert!(lag.contains("| 75 (50–100) |"), "{lag}");

        let rec = RecordsResult {
            list_ms: vec![6.0; 10],
            show_ms: vec![1.0; 10],
            ..Default::default()
        };
        let t = records_table(&rec);
        assert!(t
            .lines()
            .any(|l| l.contains("list") && l.contains("**missed**")));
        assert!(t
            .lines()
            .any(|l| l.contains("show") && l.contains("**met**")));
    }

    #[test]
    fn burst_table_has_the_last_ready() {
        let b = BurstResult {
            n: 2,
            start_returned_s: vec![0.1, 0.2],
            follow_s: vec![3.0, 4.0],
            log_s: vec![2.9, 3.9],
        };
        let t = burst_table(&b);
        assert!(t.contains("on their follow streams** | 4.00 |"), "{t}");
    }

    #[test]
    fn splice_keeps_other_sections() {
        let sec = format!("{BEGIN}\nnew\n{END}\n");
        let boot = "<!-- bench-boot:begin -->\nboot\n<!-- bench-boot:end -->\n";
        let appended = splice_between(&format!("# B\n\n{boot}"), BEGIN, END, &sec);
        assert_eq!(appended, format!("# B\n\n{boot}\n{sec}"));
        let replaced = splice_between(
            &format!("# B\n\n{BEGIN}\nold\n{END}\n\n{boot}"),
            BEGIN,
            END,
            &sec,
        );
        assert_eq!(replaced, format!("# B\n\n{sec}\n{boot}"));
        assert!(splice_between("", BEGIN, END, &sec).starts_with("# Benchmarks"));
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
