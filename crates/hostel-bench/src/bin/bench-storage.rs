//! `make bench-storage`: a synthetic vhost-user-blk frontend (no guest, as the switch bench
//! has) driving hostel-storage's backend and qemu-storage-daemon's vhost-user-blk export of a
//! raw file on the same file system, alternating in one run: 4 KiB random read and write,
//! 128 KiB sequential read and write, 32 requests in flight per queue, one and two queues;
//! hostel on a single-copy and on a mirrored volume. Reports IOPS and the server's CPU per
//! I/O (its utime + stime from /proc), medians over the rounds, and the goals' ratios.
//!
//! Both servers do direct I/O through io_uring on files of the same file system (hostel's
//! devices are opened `O_DIRECT` where the file system allows it; qemu-storage-daemon gets
//! `cache.direct=on,aio=io_uring`, the cache=none reference).

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hostel_bench::stats::{ratio, Summary};
use hostel_virtq::driver::SplitRing;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[derive(Parser)]
struct Args {
    /// The hostel-storage binary.
    #[arg(long)]
    hostel_storage: PathBuf,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 1.5)]
    seconds: f64,
    /// Where the pool devices and the raw file go (one file system).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long)]
    markdown: Option<PathBuf>,
}

const VOLUME: u64 = 256 << 20;
const DEPTH: usize = 32;
const QSIZE: u16 = 256;
const MEM: usize = 16 << 20;
const HDRS: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const SLOT_DATA: u64 = 128 * 1024;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
/// What the frontend drives (hostel's offer; qemu-storage-daemon offers a superset).
const FEATURES: u64 = (1 << 1) | (1 << 2) | (1 << 6) | (1 << 9) | (1 << 12) | (1 << 28) | (1 << 32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    RandRead4k,
    RandWrite4k,
    SeqRead128k,
    SeqWrite128k,
}

impl Work {
    fn all() -> [Work; 4] {
        [
            Work::RandRead4k,
            Work::RandWrite4k,
            Work::SeqRead128k,
            Work::SeqWrite128k,
        ]
    }
    fn name(self) -> &'static str {
        match self {
            Work::RandRead4k => "4k random read",
            Work::RandWrite4k => "4k random write",
            Work::SeqRead128k => "128k sequential read",
            Work::SeqWrite128k => "128k sequential write",
        }
    }
    fn len(self) -> u64 {
        match self {
            Work::RandRead4k | Work::RandWrite4k => 4096,
            _ => 128 * 1024,
        }
    }
    fn write(self) -> bool {
        matches!(self, Work::RandWrite4k | Work::SeqWrite128k)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    HostelSingle,
    HostelMirror,
    Qsd,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::HostelSingle => "hostel single-copy",
            Target::HostelMirror => "hostel mirrored",
            Target::Qsd => "qemu-storage-daemon",
        }
    }
}

struct Server {
    child: Child,
    /// Socket per (target, queues).
    socks: BTreeMap<(Target, u16), PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid; the worst case is an error return.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = s.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn wait_for(path: &Path, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if let Some(st) = child.try_wait()? {
            bail!("server exited ({st}) before {path:?} appeared");
        }
        if Instant::now() > deadline {
            bail!("{path:?} never appeared");
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// Creates the pool (two files) and its volumes: a single-copy and a mirrored one per queue
/// count (the backend takes one `--queues` for all its disks, so each queue count is its own
/// serving process). The socket each volume will be served on.
fn make_pool(bin: &Path, dir: &Path) -> Result<BTreeMap<(Target, u16), PathBuf>> {
    if !bin.exists() {
        bail!("{bin:?} not found");
    }
    let devs: Vec<PathBuf> = ["dev-a", "dev-b"].iter().map(|n| dir.join(n)).collect();
    for d in &devs {
        // Room for every volume written whole: 2 single-copy + 2 mirrored.
        std::fs::File::create(d)?.set_len(4 * VOLUME + (64 << 20))?;
    }
    let run = |args: &[&str]| -> Result<()> {
        let mut c = Command::new(bin);
        for d in &devs {
            c.arg("--device").arg(d);
        }
        let st = c.args(args).stdout(Stdio::null()).status()?;
        if !st.success() {
            bail!("hostel-storage {args:?}: {st}");
        }
        Ok(())
    };
    run(&["pool-create"])?;
    let size = VOLUME.to_string();
    let mut socks = BTreeMap::new();
    for (t, copies) in [(Target::HostelSingle, "1"), (Target::HostelMirror, "2")] {
        for q in [1u16, 2] {
            let name = format!("v{copies}-{q}");
            run(&["volume-create", &name, &size, "--copies", copies])?;
            socks.insert((t, q), dir.join(format!("{name}.sock")));
        }
    }
    Ok(socks)
}

fn serve_hostel(
    bin: &Path,
    dir: &Path,
    socks: &BTreeMap<(Target, u16), PathBuf>,
    q: u16,
) -> Result<Server> {
    let mut c = Command::new(bin);
    for n in ["dev-a", "dev-b"] {
        c.arg("--device").arg(dir.join(n));
    }
    c.args(["serve", "--queues", &q.to_string()]);
    let mut mine = BTreeMap::new();
    for ((t, qq), s) in socks {
        if *qq == q {
            let name = s.file_stem().and_then(|n| n.to_str()).context("sock")?;
            c.arg("--disk").arg(format!("{name}={}", s.display()));
            mine.insert((*t, q), s.clone());
        }
    }
    let mut child = c.stdout(Stdio::null()).spawn()?;
    for s in mine.values() {
        wait_for(s, &mut child)?;
    }
    Ok(Server { child, socks: mine })
}

fn serve_qsd(dir: &Path, q: u16) -> Result<Server> {
    let raw = dir.join("raw.img");
    if !raw.exists() {
        std::fs::File::create(&raw)?.set_len(VOLUME)?;
    }
    let sock = dir.join(format!("qsd-{q}.sock"));
    let _ = std::fs::remove_file(&sock);
    let mut child = Command::new("qemu-storage-daemon")
        .arg("--blockdev")
        .arg(format!(
            "driver=file,filename={},node-name=f,cache.direct=on,aio=io_uring",
            raw.display()
        ))
        .arg("--export")
        .arg(format!(
            "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path={},writable=on,num-queues={q}",
            sock.display()
        ))
        .stdout(Stdio::null())
        .spawn()
        .context("qemu-storage-daemon")?;
    wait_for(&sock, &mut child)?;
    let mut socks = BTreeMap::new();
    socks.insert((Target::Qsd, q), sock);
    Ok(Server { child, socks })
}

struct Driver {
    _fe: Frontend,
    mem: GuestMemoryMmap<()>,
    rings: Vec<SplitRing>,
    kicks: Vec<EventFd>,
    calls: Vec<EventFd>,
}

fn connect(sock: &Path, queues: u16) -> Result<Driver> {
    let file = hostel_virtq::testing::sealed_memfd(MEM as u64)?;
    let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
        GuestAddress(0),
        MEM,
        Some(FileOffset::new(file, 0)),
    )])?;
    let mut fe = Frontend::connect(sock, u64::from(queues))?;
    fe.set_owner()?;
    let offered = fe.get_features()?;
    fe.set_features(offered & (FEATURES | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()))?;
    let pf = fe.get_protocol_features()?;
    fe.set_protocol_features(
        pf & (VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK),
    )?;
    let regions: Vec<VhostUserMemoryRegionInfo> = mem
        .iter()
        .map(VhostUserMemoryRegionInfo::from_guest_region)
        .collect::<std::result::Result<_, _>>()?;
    fe.set_mem_table(&regions)?;
    let host = mem.get_host_address(GuestAddress(0))? as u64;
    let (mut rings, mut kicks, mut calls) = (Vec::new(), Vec::new(), Vec::new());
    let mut base = 0x1000;
    for q in 0..usize::from(queues) {
        let (r, end) = SplitRing::new(&mem, base, QSIZE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        base = (end + 0xfff) & !0xfff;
        fe.set_vring_num(q, QSIZE)?;
        fe.set_vring_addr(
            q,
            &VringConfigData {
                queue_max_size: QSIZE,
                queue_size: QSIZE,
                flags: 0,
                desc_table_addr: host + r.desc(),
                used_ring_addr: host + r.used(),
                avail_ring_addr: host + r.avail(),
                log_addr: None,
            },
        )?;
        fe.set_vring_base(q, 0)?;
        let (k, c) = (EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?);
        fe.set_vring_call(q, &c)?;
        fe.set_vring_kick(q, &k)?;
        fe.set_vring_enable(q, true)?;
        rings.push(r);
        kicks.push(k);
        calls.push(c);
    }
    Ok(Driver {
        _fe: fe,
        mem,
        rings,
        kicks,
        calls,
    })
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

impl Driver {
    /// Slot `s` of queue `q`: its header/status and data addresses.
    fn slot(q: usize, s: usize) -> (u64, u64) {
        let i = (q * DEPTH + s) as u64;
        (HDRS + i * 32, DATA + i * SLOT_DATA)
    }

    fn push(&mut self, q: usize, s: usize, w: Work, pos: &mut u64, rng: &mut Rng) -> Result<u16> {
        let (h, d) = Self::slot(q, s);
        let len = w.len();
        let off = match w {
            Work::RandRead4k | Work::RandWrite4k => (rng.next() % (VOLUME / len)) * len,
            _ => {
                let o = *pos;
                *pos = (*pos + len) % VOLUME;
                o
            }
        };
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&(if w.write() { T_OUT } else { T_IN }).to_le_bytes());
        hdr[8..16].copy_from_slice(&(off / 512).to_le_bytes());
        self.mem.write_slice(&hdr, GuestAddress(h))?;
        self.mem.write_obj(0xffu8, GuestAddress(h + 16))?;
        let chain = [
            (h, 16, false),
            (d, len as u32, !w.write()),
            (h + 16, 1, true),
        ];
        self.rings[q].push(&chain).context("ring full")
    }

    /// Keeps DEPTH requests in flight on every queue for `secs` (or, with `limit`, until that
    /// many requests were issued per queue); completed I/Os.
    fn run(&mut self, w: Work, secs: f64, seed: u64) -> Result<u64> {
        self.run_limit(w, secs, seed, u64::MAX)
    }

    fn run_limit(&mut self, w: Work, secs: f64, seed: u64, limit: u64) -> Result<u64> {
        let nq = self.rings.len();
        let mut rng = Rng(seed | 1);
        let mut pos: Vec<u64> = (0..nq as u64).map(|q| q * (VOLUME / 2)).collect();
        let mut heads: Vec<BTreeMap<u16, usize>> = vec![BTreeMap::new(); nq];
        for q in 0..nq {
            for s in 0..DEPTH {
                let h = self.push(q, s, w, &mut pos[q], &mut rng)?;
                heads[q].insert(h, s);
            }
            self.rings[q].publish();
            self.kicks[q].write(1)?;
        }
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut done = 0u64;
        let mut issued = vec![DEPTH as u64; nq];
        let mut stopping = false;
        loop {
            let mut any = false;
            for q in 0..nq {
                let mut refill = false;
                while let Some((head, _)) = self.rings[q].pop_used() {
                    any = true;
                    let s = heads[q].remove(&head).context("unknown head")?;
                    let (h, _) = Self::slot(q, s);
                    let st: u8 = self.mem.read_obj(GuestAddress(h + 16))?;
                    if st != 0 {
                        bail!("request failed with status {st}");
                    }
                    done += 1;
                    if !stopping && issued[q] < limit {
                        issued[q] += 1;
                        let h = self.push(q, s, w, &mut pos[q], &mut rng)?;
                        heads[q].insert(h, s);
                        refill = true;
                    }
                }
                if refill {
                    self.rings[q].publish();
                    self.kicks[q].write(1)?;
                }
            }
            if !stopping && (Instant::now() >= end || issued.iter().all(|&n| n >= limit)) {
                stopping = true;
            }
            if stopping && heads.iter().all(BTreeMap::is_empty) {
                return Ok(done);
            }
            if !any {
                let mut fds: Vec<libc::pollfd> = self
                    .calls
                    .iter()
                    .map(|c| libc::pollfd {
                        fd: c.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // SAFETY: a valid array of pollfds on eventfds this driver owns.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
                for c in &self.calls {
                    let _ = c.read();
                }
            }
        }
    }
}

#[derive(Default)]
struct Cell {
    iops: Vec<f64>,
    cpu_us_per_io: Vec<f64>,
    iops_per_core: Vec<f64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench-storage"));
    std::fs::create_dir_all(&base)?;
    let tmp = tempfile::tempdir_in(&base)?;
    let dir = tmp.path();
    let commits = commit_cost(dir, args.rounds)?;
    let socks = make_pool(&args.hostel_storage, dir)?;
    let ticks = 100.0; // USER_HZ
    let mut cells: BTreeMap<(Work, u16, Target), Cell> = BTreeMap::new();
    for round in 0..args.rounds {
        for q in [1u16, 2] {
            // Servers alternate per queue count: hostel, then qemu-storage-daemon.
            let servers = [
                serve_hostel(&args.hostel_storage, dir, &socks, q)?,
                serve_qsd(dir, q)?,
            ];
            let mut drivers = BTreeMap::new();
            for s in &servers {
                for ((t, _), sock) in &s.socks {
                    drivers.insert(*t, (connect(sock, q)?, s.child.id()));
                }
            }
            // Fill the volumes whole once (each queue writes its half), so reads read data,
            // not holes, and writes overwrite rather than allocate.
            if round == 0 {
                for (d, _) in drivers.values_mut() {
                    let per_queue = VOLUME / Work::SeqWrite128k.len() / u64::from(q);
                    d.run_limit(Work::SeqWrite128k, 600.0, 1, per_queue)?;
                }
            }
            for w in Work::all() {
                for t in [Target::HostelSingle, Target::Qsd, Target::HostelMirror] {
                    let (d, pid) = drivers.get_mut(&t).context("driver")?;
                    let c0 = cpu_ticks(*pid)?;
                    let t0 = Instant::now();
                    let n = d.run(w, args.seconds, (round as u64 + 1) * 7919)?;
                    let wall = t0.elapsed().as_secs_f64();
                    let cpu = (cpu_ticks(*pid)? - c0) as f64 / ticks;
                    let cell = cells.entry((w, q, t)).or_default();
                    cell.iops.push(n as f64 / wall);
                    cell.cpu_us_per_io.push(cpu * 1e6 / n.max(1) as f64);
                    cell.iops_per_core.push(n as f64 / cpu.max(1.0 / ticks));
                    eprintln!(
                        "round {round} q{q} {:<22} {:<20} {:>9.0} IOPS {:>7.1} µs CPU/IO",
                        w.name(),
                        t.name(),
                        n as f64 / wall,
                        cpu * 1e6 / n.max(1) as f64
                    );
                }
            }
        }
    }
    let mut report = report(&cells, &args);
    report.push_str(&commits);
    println!("{report}");
    if let Some(md) = &args.markdown {
        write_section(md, &report)?;
    }
    Ok(())
}

/// A flush's metadata commit on a pool whose volume has 512 MiB written (8192 clusters,
/// mirrored on two files): a delta after one 4 KiB write, against the whole-state commit every
/// flush wrote before the log (a checkpoint), alternating.
fn commit_cost(dir: &Path, rounds: usize) -> Result<String> {
    use hostel_pool::{BlockDevice, CreateOptions, FileDevice, Pool};
    let d = dir.join("commit");
    std::fs::create_dir_all(&d)?;
    let mut devs: Vec<Box<dyn BlockDevice>> = Vec::new();
    for n in ["a", "b"] {
        let p = d.join(n);
        std::fs::File::create(&p)?.set_len(640 << 20)?;
        devs.push(Box::new(FileDevice::open(&p)?));
    }
    let pool = Pool::create(devs, CreateOptions::default())?;
    let size: u64 = 512 << 20;
    pool.create_volume("v", size, 2)?;
    let chunk = vec![7u8; 1 << 20];
    for off in (0..size).step_by(chunk.len()) {
        pool.write("v", off, &chunk)?;
    }
    pool.flush()?;
    let (mut delta, mut whole) = (Vec::new(), Vec::new());
    let mut rng = Rng(99);
    for _ in 0..rounds.max(1) * 10 {
        pool.write("v", (rng.next() % (size / 4096)) * 4096, &[1u8; 4096])?;
        let t = Instant::now();
        pool.flush()?;
        delta.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        pool.checkpoint()?;
        whole.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let st = pool.commit_stats();
    let (d, w) = (Summary::of(&delta), Summary::of(&whole));
    let f = |x: Option<Summary>| x.map_or("—".to_string(), |x| format!("{:.2}", x.median));
    let bytes_whole = pool_checkpoint_bytes(&pool)?;
    Ok(format!(
        "\nMetadata commit of a flush (`hostel-pool`, 512 MiB written to a mirrored volume, two files on the same ext4, {} samples each, alternating; includes the fdatasync of both devices): delta (one 4 KiB write since the last flush) median {} ms; whole-state checkpoint (what every flush wrote before the log) median {} ms, {} KiB per device; ratio {}. ({} deltas, {} checkpoints written.)\n",
        delta.len(),
        f(d),
        f(w),
        bytes_whole / 1024,
        ratio(w, d).map_or("—".into(), |r| format!("{r:.1}× faster")),
        st.deltas,
        st.checkpoints
    ))
}

/// Bytes one checkpoint writes per device now.
fn pool_checkpoint_bytes(pool: &hostel_pool::Pool) -> Result<u64> {
    let before = pool.commit_stats().bytes;
    pool.checkpoint()?;
    Ok(pool.commit_stats().bytes - before)
}

fn med(v: &[f64]) -> Option<Summary> {
    Summary::of(v)
}

fn report(cells: &BTreeMap<(Work, u16, Target), Cell>, args: &Args) -> String {
    let mut s = String::new();
    s.push_str("## Storage: hostel-storage against qemu-storage-daemon (synthetic frontend)\n\n");
    s.push_str(&format!(
        "Command: `make bench-storage` (`bench-storage --rounds {} --seconds {}`): a synthetic vhost-user-blk frontend (no guest) keeps {DEPTH} requests in flight per queue against hostel-storage (a pool of two files; a single-copy and a mirrored volume) and qemu-storage-daemon 7.2's vhost-user-blk export of a raw file (`aio=io_uring,cache.direct=on`) on the same ext4 (hostel's devices `O_DIRECT` too), alternating target by target within each round; {} MiB volumes, written once before the first round. CPU is the server process's utime+stime over the measurement. Medians over the rounds.\n\n",
        args.rounds, args.seconds, VOLUME >> 20
    ));
    s.push_str("| workload | queues | hostel single IOPS | hostel mirrored IOPS | qsd IOPS | hostel single µs CPU/IO | qsd µs CPU/IO | hostel/qsd IOPS per core | mirrored/single IOPS |\n|---|---|---|---|---|---|---|---|---|\n");
    let mut per_core = Vec::new();
    let mut mirror = Vec::new();
    for w in Work::all() {
        for q in [1u16, 2] {
            let get = |t| cells.get(&(w, q, t));
            let f = |x: Option<Summary>, d: usize| {
                x.map_or("—".into(), |x| format!("{:.*}", d, x.median))
            };
            let iops = |t| get(t).and_then(|c| med(&c.iops));
            let cpu = |t| get(t).and_then(|c| med(&c.cpu_us_per_io));
            let pc = |t| get(t).and_then(|c| med(&c.iops_per_core));
            let r_core = ratio(pc(Target::HostelSingle), pc(Target::Qsd));
            let r_mir = ratio(iops(Target::HostelMirror), iops(Target::HostelSingle));
            if let Some(r) = r_core {
                per_core.push((w, q, r));
            }
            if w.write() {
                if let Some(r) = r_mir {
                    mirror.push((w, q, r));
                }
            }
            s.push_str(&format!(
                "| {} | {q} | {} | {} | {} | {} | {} | {} | {} |\n",
                w.name(),
                f(iops(Target::HostelSingle), 0),
                f(iops(Target::HostelMirror), 0),
                f(iops(Target::Qsd), 0),
                f(cpu(Target::HostelSingle), 1),
                f(cpu(Target::Qsd), 1),
                r_core.map_or("—".into(), |r| format!("{r:.2}×")),
                r_mir.map_or("—".into(), |r| format!("{r:.2}×")),
            ));
        }
    }
    let core_met = per_core.iter().filter(|c| c.2 >= 2.0).count();
    let mir_met = mirror.iter().filter(|c| c.2 >= 0.8).count();
    s.push_str(&format!(
        "\nGoals: backend ≥ 2× qemu-storage-daemon's IOPS per core: met in {core_met} of {} rows; mirrored writes ≥ 0.8× single-copy: met in {mir_met} of {} write rows.\n",
        per_core.len(),
        mirror.len()
    ));
    s
}

/// Replaces the section this benchmark wrote last time (from its heading to the next `## `)
/// or appends it.
fn write_section(md: &Path, section: &str) -> Result<()> {
    let cur = std::fs::read_to_string(md).unwrap_or_default();
    let head = "## Storage: hostel-storage against qemu-storage-daemon";
    let out = match cur.find(head) {
        Some(a) => {
            let rest = &cur[a + head.len()..];
            let b = rest
                .find("\n## ")
                .map_or(cur.len(), |i| a + head.len() + i + 1);
            format!("{}{}{}", &cur[..a], section, &cur[b..])
        }
        None => format!(
            "{}\n{}",
            cur.trim_end_matches('\n').to_string() + "\n",
            section
        ),
    };
    std::fs::write(md, out)?;
    Ok(())
}
