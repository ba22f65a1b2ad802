//! The chaos test of issue 14: 20 clients create, start, stop and delete small busybox VMs
//! through the API while the daemon is `kill -9`ed at random moments (several rounds) and
//! once SIGTERMed. After each restart and a settle (a condition waited for with a deadline),
//! what the API says must be what runs and what is on disk:
//! - every VM the API says is running has exactly one live QEMU, the one it names;
//! - no QEMU under the state directory is unknown to the API;
//! - every acknowledged stop and delete is done (and an acknowledged start or create is too);
//! - each tenant's usage is the sum of its VMs;
//! - no record without its disk directory, no disk directory without a record;
//! - every acknowledged change has its audit entry (one per call), and no entry says a call
//!   succeeded that the clients never made;
//! - no call ever got a 500.
//!
//! Guests boot under TCG; quotas keep at most 12 VMs, and a client-side gate at most 3 launches
//! at once. Run alone (`--test-threads=1`); bounded to a few minutes by its deadlines.

mod common;

use common::api::{all_qemus, client, guest_dir, qemus_of, small_vm, stop_body};
use common::{poll, DaemonCli, HOSTEL};
use hostel_api::{Client, ClientError, VmView};
use hostel_testkit::daemon::TestDaemon;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const TENANTS: usize = 4;
const CLIENTS_PER_TENANT: usize = 5;
const KILL_ROUNDS: usize = 8;
/// How many calls the clients make before each kill: random within this range.
const ROUND_CALLS: (u64, u64) = (20, 150);
/// The most a round's traffic may take to make those calls.
const ROUND_LIMIT: Duration = Duration::from_secs(60);
/// Reconciled and quiet after a restart, or the test fails.
const SETTLE: Duration = Duration::from_secs(60);
const MAX_LAUNCHING: usize = 3;

/// The last operation a client issued on a VM, and whether the daemon acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create { start: bool },
    Start,
    Stop,
    Delete,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    op: Op,
    acked: bool,
}

/// What the clients did, per (tenant, VM name), and every 500 they saw.
#[derive(Default)]
struct Ledger {
    last: Mutex<BTreeMap<(usize, String), Last>>,
    server_errors: Mutex<Vec<String>>,
    /// Calls answered (any answer), across rounds.
    calls: AtomicU64,
    /// Per (tenant, audit action, VM name): calls acknowledged, and calls that may or may
    /// not have made their change (cut by the kill, or refused after it).
    audit: Mutex<HashMap<AuditKey, (u32, u32)>>,
}

/// (tenant, audit action, VM name).
type AuditKey = (usize, &'static str, String);

impl Op {
    fn action(self) -> &'static str {
        match self {
            Op::Create { .. } => "vm.create",
            Op::Start => "vm.start",
            Op::Stop => "vm.stop",
            Op::Delete => "vm.delete",
        }
    }
}

impl Ledger {
    fn count(&self, t: usize, vm: &str, op: Op, acked: bool) {
        let mut audit = self.audit.lock().unwrap();
        let n = audit.entry((t, op.action(), vm.to_string())).or_default();
        if acked {
            n.0 += 1;
        } else {
            n.1 += 1;
        }
    }
    fn issue(&self, t: usize, vm: &str, op: Op) {
        let mut last = self.last.lock().unwrap();
        last.insert((t, vm.to_string()), Last { op, acked: false });
    }
    fn ack(&self, t: usize, vm: &str, op: Op) {
        let mut last = self.last.lock().unwrap();
        last.insert((t, vm.to_string()), Last { op, acked: true });
    }
    /// A refusal (quota, capacity, not found): nothing to expect of this VM but consistency.
    fn forget(&self, t: usize, vm: &str) {
        self.last.lock().unwrap().remove(&(t, vm.to_string()));
    }
}

/// At most [`MAX_LAUNCHING`] calls that launch a QEMU at once, across all clients.
struct Gate {
    used: Mutex<usize>,
    cv: Condvar,
}

impl Gate {
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        let mut used = self
            .cv
            .wait_while(self.used.lock().unwrap(), |u| *u >= MAX_LAUNCHING)
            .unwrap();
        *used += 1;
        drop(used);
        let out = f();
        *self.used.lock().unwrap() -= 1;
        self.cv.notify_all();
        out
    }
}

/// xorshift: enough randomness for op choice and timing, seeded per client and round.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Client_ {
    tenant: usize,
    prefix: String,
    api: Client,
}

enum Outcome {
    Done,
    Refused,
    /// The daemon went away mid-call: the round is over for this client.
    Cut,
}

impl Client_ {
    fn call<T>(&self, ledger: &Ledger, vm: &str, op: Op, r: Result<T, ClientError>) -> Outcome {
        ledger.calls.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(_) => {
                ledger.ack(self.tenant, vm, op);
                ledger.count(self.tenant, vm, op, true);
                Outcome::Done
            }
            Err(ClientError::Api {
                status, message, ..
            }) => {
                if status >= 500 {
                    ledger
                        .server_errors
                        .lock()
                        .unwrap()
                        .push(format!("{op:?} {vm}: {status} {message}"));
                }
                ledger.count(self.tenant, vm, op, false);
                // A 404 on a delete is the delete done (a cut delete finished meanwhile).
                if status == 404 && op == Op::Delete {
                    ledger.ack(self.tenant, vm, op);
                } else {
                    ledger.forget(self.tenant, vm);
                }
                Outcome::Refused
            }
            Err(_) => {
                ledger.count(self.tenant, vm, op, false);
                Outcome::Cut
            }
        }
    }

    /// One client's round: clean up what it left, then VM lifecycles until told to stop or cut.
    fn round(&self, ledger: &Ledger, gate: &Gate, stop: &AtomicBool, seq: &AtomicU64, seed: u64) {
        let mut rng = Rng(seed | 1);
        let vms = self.api.vms(None);
        let Ok(mine) = vms.list() else { return };
        for v in mine.iter().filter(|v| v.name.starts_with(&self.prefix)) {
            ledger.issue(self.tenant, &v.name, Op::Delete);
            if let Outcome::Cut = self.call(ledger, &v.name, Op::Delete, vms.delete(&v.name)) {
                return;
            }
        }
        while !stop.load(Ordering::Relaxed) {
            let name = format!("{}{}", self.prefix, seq.fetch_add(1, Ordering::Relaxed));
            let start = rng.below(2) == 0;
            let op = Op::Create { start };
            ledger.issue(self.tenant, &name, op);
            let made = if start {
                gate.with(|| vms.create(&small_vm(&name, true, None)))
            } else {
                vms.create(&small_vm(&name, false, None))
            };
            match self.call(ledger, &name, op, made) {
                Outcome::Cut => return,
                Outcome::Refused => continue,
                Outcome::Done => {}
            }
            for _ in 0..=rng.below(2) {
                let (op, r) = if rng.below(2) == 0 {
                    ledger.issue(self.tenant, &name, Op::Start);
                    (Op::Start, gate.with(|| vms.start(&name)).map(drop))
                } else {
                    ledger.issue(self.tenant, &name, Op::Stop);
                    let body = stop_body(rng.below(2) == 0, Some(2));
                    (Op::Stop, vms.stop(&name, &body).map(drop))
                };
                if let Outcome::Cut = self.call(ledger, &name, op, r) {
                    return;
                }
            }
            ledger.issue(self.tenant, &name, Op::Delete);
            if let Outcome::Cut = self.call(ledger, &name, Op::Delete, vms.delete(&name)) {
                return;
            }
        }
    }
}

/// Everything the API says, per tenant.
fn snapshot(d: &TestDaemon, tokens: &[String]) -> Vec<Vec<VmView>> {
    tokens
        .iter()
        .map(|t| client(d, t).vms(None).list().expect("vm list"))
        .collect()
}

/// The invariants; `Err` names the first one broken.
fn check(
    d: &TestDaemon,
    tokens: &[String],
    tenant_ids: &[String],
    ledger: &Ledger,
) -> Result<(), String> {
    let state = d.state_path();
    let views = snapshot(d, tokens);
    let all: Vec<&VmView> = views.iter().flatten().collect();
    if let Some(v) = all
        .iter()
        .find(|v| matches!(v.state.as_str(), "creating" | "starting" | "stopping"))
    {
        return Err(format!("not settled: {} is {}", v.name, v.state));
    }
    // What the API says runs, runs: one QEMU, the one it names.
    for v in &all {
        let pids = qemus_of(&state, &v.id);
        let ok = match v.state.as_str() {
            "running" => pids.len() == 1 && v.pid == Some(pids[0] as u32),
            _ => pids.is_empty(),
        };
        if !ok {
            return Err(format!(
                "{} is {} (pid {:?}) but its QEMUs are {pids:?}",
                v.name, v.state, v.pid
            ));
        }
    }
    // No QEMU the API does not know.
    let ids: BTreeSet<&str> = all.iter().map(|v| v.id.as_str()).collect();
    if let Some((pid, id)) = all_qemus(&state)
        .into_iter()
        .find(|(_, id)| !ids.contains(id.as_str()))
    {
        return Err(format!("QEMU {pid} runs for {id}, unknown to the API"));
    }
    // Acknowledged operations are done.
    let by_name: HashMap<(usize, &str), &VmView> = views
        .iter()
        .enumerate()
        .flat_map(|(t, vs)| vs.iter().map(move |v| ((t, v.name.as_str()), v)))
        .collect();
    for ((t, name), last) in ledger.last.lock().unwrap().iter() {
        if !last.acked {
            continue;
        }
        let v = by_name.get(&(*t, name.as_str()));
        let ok = match (last.op, v) {
            (Op::Delete, v) => v.is_none(),
            (_, None) => false,
            (Op::Stop | Op::Create { start: false }, Some(v)) => {
                v.state == "stopped" && v.desired == "stopped"
            }
            (Op::Start | Op::Create { start: true }, Some(v)) => {
                v.state == "running" && v.desired == "running"
            }
        };
        if !ok {
            return Err(format!(
                "acknowledged {:?} of {name} not in effect: {v:?}",
                last.op
            ));
        }
    }
    // Usage is the sum of the VMs; records and disk directories match one to one.
    let op = client(d, &d.operator_token);
    let tenants = op.list_tenants().map_err(|e| e.to_string())?;
    for (t, vs) in views.iter().enumerate() {
        let view = tenants
            .iter()
            .find(|x| x.id == tenant_ids[t])
            .ok_or("tenant gone")?;
        let u = &view.usage;
        let sum = (
            vs.iter().map(|v| u64::from(v.vcpus)).sum::<u64>(),
            vs.iter().map(|v| v.memory_mib).sum::<u64>(),
            vs.iter().map(|v| v.disk_gib).sum::<u64>(),
            vs.len() as u64,
        );
        let usage = (u.vcpus, u.memory_mib, u.disk_gib, u.vms);
        if usage != sum {
            return Err(format!(
                "tenant {t}: usage {usage:?} but its VMs add up to {sum:?}"
            ));
        }
        let dir = state.join("disks").join(&tenant_ids[t]);
        let disks: BTreeSet<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let records: BTreeSet<String> = vs.iter().map(|v| v.id.clone()).collect();
        if disks != records {
            return Err(format!(
                "tenant {t}: records without disks {:?}, disks without records {:?}",
                records.difference(&disks).collect::<Vec<_>>(),
                disks.difference(&records).collect::<Vec<_>>()
            ));
        }
    }
    // Every acknowledged change has its entry, committed with it; no successful entry
    // without a call that may have made it.
    for t in 0..tokens.len() {
        let name = format!("chaos{t}");
        let entries = op.audit(Some(&name), 10_000).map_err(|e| e.to_string())?;
        let mut ok: HashMap<(&str, &str), u32> = HashMap::new();
        for e in entries
            .iter()
            .filter(|e| e.result == "ok" && e.action.starts_with("vm."))
        {
            *ok.entry((e.action.as_str(), e.target.as_str()))
                .or_default() += 1;
        }
        let calls = ledger.audit.lock().unwrap();
        for ((_, action, vm), (acked, maybe)) in calls.iter().filter(|(k, _)| k.0 == t) {
            let n = ok.remove(&(*action, vm.as_str())).unwrap_or(0);
            if n < *acked || n > acked + maybe {
                return Err(format!(
                    "tenant {t}: {n} ok entries {action} {vm} for {acked} acknowledged calls \
                     and {maybe} cut or refused"
                ));
            }
        }
        if let Some(((action, vm), n)) = ok.into_iter().next() {
            return Err(format!(
                "tenant {t}: {n} ok entries {action} {vm} and no such call"
            ));
        }
    }
    Ok(())
}

#[test]
fn twenty_clients_and_a_daemon_killed_at_random_keep_api_and_host_equal() {
    let Some(dir) = guest_dir() else {
        return;
    };
    let began = Instant::now();
    let mut d = TestDaemon::start(Path::new(HOSTEL), &dir, "chaos");
    let mut tokens = Vec::new();
    let mut tenant_ids = Vec::new();
    for t in 0..TENANTS {
        // Three VMs of 128 MiB per tenant: at most 12 guests on the host.
        let tenant = d.tenant(&format!("chaos{t}"), &["--vcpus", "6", "--memory", "384M"]);
        tokens.push(tenant.token.clone());
        tenant_ids.push(tenant.tenant_view().id);
    }
    let ledger = Arc::new(Ledger::default());
    let gate = Arc::new(Gate {
        used: Mutex::new(0),
        cv: Condvar::new(),
    });
    let seq = Arc::new(AtomicU64::new(0));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("chaos seed {seed}");
    let mut rng = Rng(seed);
    for round in 0..=KILL_ROUNDS {
        let sigterm = round == KILL_ROUNDS;
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..TENANTS * CLIENTS_PER_TENANT)
            .map(|i| {
                let t = i / CLIENTS_PER_TENANT;
                let c = Client_ {
                    tenant: t,
                    prefix: format!("c{i}-"),
                    api: client(&d, &tokens[t]),
                };
                let (ledger, gate, stop, seq) =
                    (ledger.clone(), gate.clone(), stop.clone(), seq.clone());
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let s = seed;
                std::thread::spawn(move || c.round(&ledger, &gate, &stop, &seq, s))
            })
            .collect();
        // The kill comes at a random point of the clients' traffic: after a random number
        // of calls.
        let run_for = ROUND_CALLS.0 + rng.below(ROUND_CALLS.1 - ROUND_CALLS.0);
        let until = ledger.calls.load(Ordering::Relaxed) + run_for;
        poll("the round's traffic", ROUND_LIMIT, || {
            (ledger.calls.load(Ordering::Relaxed) >= until).then_some(())
        });
        let state = if sigterm {
            // SAFETY: signalling the daemon child this test started.
            unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
            let exited = poll(
                "the daemon drains and exits",
                Duration::from_secs(45),
                || d.child.try_wait().unwrap(),
            );
            assert!(exited.success(), "SIGTERM exit: {exited:?}");
            d.kill_daemon_only()
        } else {
            d.kill_daemon_only()
        };
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().expect("client thread");
        }
        d = TestDaemon::start_in(Path::new(HOSTEL), &dir, state);
        let mut last = String::new();
        let settled = Instant::now();
        while let Err(e) = check(&d, &tokens, &tenant_ids, &ledger) {
            if settled.elapsed() > SETTLE {
                panic!(
                    "round {round} ({}): not consistent after {SETTLE:?}: {e}\n--- daemon log ---\n{}",
                    if sigterm { "SIGTERM" } else { "kill -9" },
                    d.log()
                );
            }
            if e != last {
                eprintln!("round {round}: waiting: {e}");
                last = e;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let errors = ledger.server_errors.lock().unwrap().clone();
        assert!(
            errors.is_empty(),
            "round {round}: server errors: {errors:#?}"
        );
        let n = snapshot(&d, &tokens).iter().map(Vec::len).sum::<usize>();
        eprintln!(
            "round {round} ({} after {run_for} calls): consistent in {:?}, {n} VMs, {} VMs made so far",
            if sigterm { "SIGTERM" } else { "kill -9" },
            settled.elapsed(),
            seq.load(Ordering::Relaxed)
        );
    }
    eprintln!("chaos: {:?} in all", began.elapsed());
}
