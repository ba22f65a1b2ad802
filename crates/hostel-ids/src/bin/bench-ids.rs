//! `make bench-ids`: `hostel-ids replay` against `suricata -r` (single-threaded run mode), in one
//! run, alternating, on the same generated capture (HTTP sessions, DNS queries and answers,
//! bulk TCP) with 100, 1,000 and 10,000 generated rules. Reports medians of throughput per
//! core (capture bits over the child process's user+system CPU time) and wall time, the
//! ratios, and whether the alerts are the same (sid, addresses, ports, count).
//!
//! `bench-ids [--mb N] [--rounds N] [--rules 100,1000,10000] [--out BENCHMARKS-section.md]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

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

const MSS: usize = 1448;

struct Gen {
    w: PcapWriter<std::io::BufWriter<std::fs::File>>,
    t: Duration,
    bytes: u64,
    rng: Rng,
}

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
    let total = (20 + l4.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(l4);
    f
}

fn tcp(sp: u16, dp: u16, seq: u32, ack: u32, flags: u8, p: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + p.len());
    t.extend_from_slice(&sp.to_be_bytes());
    t.extend_from_slice(&dp.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(p);
    t
}

fn udp(sp: u16, dp: u16, p: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + p.len());
    u.extend_from_slice(&sp.to_be_bytes());
    u.extend_from_slice(&dp.to_be_bytes());
    u.extend_from_slice(&((8 + p.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(p);
    u
}

impl Gen {
    fn push(&mut self, f: Vec<u8>) {
        self.t += Duration::from_micros(20);
        self.bytes += f.len() as u64;
        let _ = self
            .w
            .write_packet(&PcapPacket::new(self.t, f.len() as u32, &f));
    }

    /// A TCP session: handshake, the client's data, the server's, FINs; an ACK every two
    /// segments.
    fn session(&mut self, c: [u8; 4], s: [u8; 4], cp: u16, sp: u16, up: &[u8], down: &[u8]) {
        let (mut cs, mut ss) = (1000u32, 900_000u32);
        self.push(ipv4(c, s, 6, &tcp(cp, sp, cs, 0, 0x02, &[])));
        self.push(ipv4(s, c, 6, &tcp(sp, cp, ss, cs + 1, 0x12, &[])));
        cs += 1;
        ss += 1;
        self.push(ipv4(c, s, 6, &tcp(cp, sp, cs, ss, 0x10, &[])));
        for (i, chunk) in up.chunks(MSS).enumerate() {
            self.push(ipv4(c, s, 6, &tcp(cp, sp, cs, ss, 0x18, chunk)));
            cs = cs.wrapping_add(chunk.len() as u32);
            if i % 2 == 1 {
                self.push(ipv4(s, c, 6, &tcp(sp, cp, ss, cs, 0x10, &[])));
            }
        }
        self.push(ipv4(s, c, 6, &tcp(sp, cp, ss, cs, 0x10, &[])));
        for (i, chunk) in down.chunks(MSS).enumerate() {
            self.push(ipv4(s, c, 6, &tcp(sp, cp, ss, cs, 0x18, chunk)));
            ss = ss.wrapping_add(chunk.len() as u32);
            if i % 2 == 1 {
                self.push(ipv4(c, s, 6, &tcp(cp, sp, cs, ss, 0x10, &[])));
            }
        }
        self.push(ipv4(c, s, 6, &tcp(cp, sp, cs, ss, 0x11, &[])));
        self.push(ipv4(s, c, 6, &tcp(sp, cp, ss, cs + 1, 0x11, &[])));
        self.push(ipv4(c, s, 6, &tcp(cp, sp, cs + 1, ss + 1, 0x10, &[])));
    }

    fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: [&str; 12] = [
            "the ",
            "lorem ",
            "ipsum ",
            "<div> ",
            "</p> ",
            "data ",
            "value ",
            "class=\"x\" ",
            "hostel ",
            "stream ",
            "{\"k\": 1} ",
            "\n",
        ];
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            v.extend_from_slice(WORDS[self.rng.below(12) as usize].as_bytes());
        }
        v.truncate(n);
        v
    }
}

fn dns_name(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Writes a capture of about `mb` MB; returns its size in bytes (frames as captured).
fn capture(path: &Path, mb: u64) -> u64 {
    let file = std::io::BufWriter::new(std::fs::File::create(path).expect("create capture"));
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut g = Gen {
        w: PcapWriter::with_header(file, header).expect("pcap header"),
        t: Duration::from_secs(1_700_000_000),
        bytes: 0,
        rng: Rng(0x9e37_79b9_7f4a_7c15),
    };
    let target = mb << 20;
    let mut k: u64 = 0;
    while g.bytes < target {
        k += 1;
        let c = [10, 1, (k >> 8) as u8, k as u8];
        let s = [93, 184, (k % 7) as u8, 34];
        let cp = 20_000 + (k % 40_000) as u16;
        match k % 10 {
            // HTTP: one request, a 20-60 KB answer; every 20th asks for a planted path.
            0..=5 => {
                let path = if k % 20 == 0 {
                    format!("/p{:05}/", (k / 20 * 5) % 100)
                } else {
                    format!("/static/{k}/")
                };
                let req = format!(
                    "GET {path}index.html HTTP/1.1\r\nHost: www{}.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n",
                    k % 50
                );
                let n = 20_000 + g.rng.below(40_000) as usize;
                let mut resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {n}\r\n\r\n"
                )
                .into_bytes();
                let body = g.text(n);
                resp.extend_from_slice(&body);
                g.session(c, s, cp, 80, req.as_bytes(), &resp);
            }
            // DNS: a query and its answer; every 10th for a planted name.
            6..=8 => {
                for j in 0..4u64 {
                    let name = if (k + j) % 10 == 0 {
                        format!("bad{:05}.example.net", (k * 5 + 2) % 100)
                    } else {
                        format!("host{k}.zone{}.example", j)
                    };
                    let q = dns_name(&name);
                    g.push(ipv4(c, [10, 0, 0, 53], 17, &udp(cp + j as u16, 53, &q)));
                    let mut a = q.clone();
                    a[2] = 0x81;
                    a[3] = 0x80;
                    a[7] = 1;
                    a.extend_from_slice(&[
                        0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 93, 184, 216, 34,
                    ]);
                    g.push(ipv4([10, 0, 0, 53], c, 17, &udp(53, cp + j as u16, &a)));
                }
            }
            // Bulk TCP: 1 MB of random bytes up.
            _ => {
                let mut data = vec![0u8; 1 << 20];
                for ch in data.chunks_mut(8) {
                    let r = g.rng.next().to_le_bytes();
                    ch.copy_from_slice(&r[..ch.len()]);
                }
                g.session(c, s, cp, 5001, &data, b"done\r\n");
            }
        }
    }
    g.bytes
}

/// `n` rules: HTTP paths (to server), DNS names, bulk-stream patterns and response headers,
/// with sids 1,000,000 + i. Paths and names below 100 are planted in the capture.
fn rules(n: usize) -> String {
    let mut out = String::new();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for i in 0..n {
        let sid = 1_000_000 + i;
        let line = match i % 5 {
            0 | 1 => format!(
                "alert tcp $HOME_NET any -> $EXTERNAL_NET 80 (msg:\"http path {i}\"; flow:established,to_server; content:\"GET \"; depth:4; content:\"/p{i:05}/\"; distance:0; within:20; classtype:web-application-attack; sid:{sid}; rev:1;)"
            ),
            2 => format!(
                "alert udp $HOME_NET any -> any 53 (msg:\"dns name {i}\"; content:\"|08|bad{i:05}|07|example\"; nocase; sid:{sid}; rev:1;)"
            ),
            3 => {
                let pat: String = (0..10)
                    .map(|_| (b'a' + rng.below(26) as u8) as char)
                    .collect();
                format!(
                    "alert tcp any any -> any 5001 (msg:\"bulk {i}\"; flow:established,to_server; content:\"{pat}\"; sid:{sid}; rev:1;)"
                )
            }
            _ => format!(
                "alert tcp $EXTERNAL_NET 80 -> $HOME_NET any (msg:\"resp {i}\"; flow:established,to_client; content:\"X-Bad-{i:05}\"; nocase; sid:{sid}; rev:1;)"
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The children's user+system CPU seconds so far (`/proc/self/stat`, reaped children only).
fn children_cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is [0]; cutime is field 16, cstime 17 (1-based).
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(13) + tick(14)) / 100.0
}

type Summary = BTreeMap<(u64, String, u64, String, u64), usize>;

fn summarize(eve: &str) -> Summary {
    let mut out = Summary::new();
    for line in eve.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["event_type"] != "alert" {
            continue;
        }
        let key = (
            v["alert"]["signature_id"].as_u64().unwrap_or(0),
            v["src_ip"].as_str().unwrap_or("").to_string(),
            v["src_port"].as_u64().unwrap_or(0),
            v["dest_ip"].as_str().unwrap_or("").to_string(),
            v["dest_port"].as_u64().unwrap_or(0),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

struct Run {
    wall: f64,
    cpu: f64,
    alerts: Summary,
}

fn run_ours(bin: &Path, rules: &Path, pcap: &Path, out: &Path) -> Run {
    let (c0, t0) = (children_cpu(), Instant::now());
    let o = Command::new(bin)
        .args(["replay", "--rules"])
        .arg(rules)
        .arg("--pcap")
        .arg(pcap)
        .output()
        .expect("run hostel-ids");
    let wall = t0.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::write(out, &o.stdout);
    Run {
        wall,
        cpu: children_cpu() - c0,
        alerts: summarize(&String::from_utf8_lossy(&o.stdout)),
    }
}

fn run_suricata(rules: &Path, pcap: &Path, logs: &Path) -> Run {
    let _ = std::fs::remove_dir_all(logs);
    std::fs::create_dir_all(logs).expect("log dir");
    let (c0, t0) = (children_cpu(), Instant::now());
    let o = Command::new("suricata")
        .arg("-r")
        .arg(pcap)
        .arg("-S")
        .arg(rules)
        .args(["-k", "none", "--runmode", "single", "-l"])
        .arg(logs)
        .output()
        .expect("run suricata");
    let wall = t0.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let eve = std::fs::read_to_string(logs.join("eve.json")).unwrap_or_default();
    Run {
        wall,
        cpu: children_cpu() - c0,
        alerts: summarize(&eve),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut mb, mut rounds, mut counts) = (500u64, 3usize, vec![100usize, 1000, 10_000]);
    let mut out_md: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--mb" => mb = v.parse().expect("--mb N"),
            "--rounds" => rounds = v.parse().expect("--rounds N"),
            "--rules" => counts = v.split(',').map(|x| x.parse().expect("count")).collect(),
            "--out" => out_md = Some(v.into()),
            _ => panic!("unknown argument {a}"),
        }
    }
    let ours = std::env::current_exe()
        .expect("own path")
        .with_file_name("hostel-ids");
    assert!(
        ours.exists(),
        "build hostel-ids next to bench-ids (cargo build --release -p hostel-ids)"
    );
    let has_suricata = Command::new("suricata").arg("-V").output().is_ok();
    let dir = tempfile::tempdir().expect("temp dir");
    let pcap = dir.path().join("mixed.pcap");
    let t0 = Instant::now();
    let bytes = capture(&pcap, mb);
    eprintln!(
        "capture: {:.0} MB of frames in {:.1} s",
        bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    let gbit = |secs: f64| bytes as f64 * 8.0 / secs / 1e9;
    let mut md = String::new();
    md.push_str("| rules | hostel-ids Gbit/s per core | Suricata Gbit/s per core | ratio | hostel-ids wall s | Suricata wall s | alerts (ours / Suricata) | identical |\n|---|---|---|---|---|---|---|---|\n");
    for &n in &counts {
        let rf = dir.path().join(format!("r{n}.rules"));
        std::fs::write(&rf, rules(n)).expect("rules");
        let (mut oc, mut ow, mut sc, mut sw) = (vec![], vec![], vec![], vec![]);
        let (mut oa, mut sa) = (Summary::new(), Summary::new());
        for r in 0..rounds {
            let o = run_ours(&ours, &rf, &pcap, &dir.path().join("ours.json"));
            eprintln!(
                "{n} rules, round {r}: hostel-ids cpu {:.2} s wall {:.2} s, {} alerts",
                o.cpu,
                o.wall,
                o.alerts.values().sum::<usize>()
            );
            oc.push(o.cpu);
            ow.push(o.wall);
            oa = o.alerts;
            if has_suricata {
                let s = run_suricata(&rf, &pcap, &dir.path().join("suricata"));
                eprintln!(
                    "{n} rules, round {r}: suricata cpu {:.2} s wall {:.2} s, {} alerts",
                    s.cpu,
                    s.wall,
                    s.alerts.values().sum::<usize>()
                );
                sc.push(s.cpu);
                sw.push(s.wall);
                sa = s.alerts;
            }
        }
        let (o_cpu, o_wall) = (median(oc), median(ow));
        let oa_n: usize = oa.values().sum();
        if has_suricata {
            let (s_cpu, s_wall) = (median(sc), median(sw));
            let sa_n: usize = sa.values().sum();
            let same = oa == sa;
            if !same {
                let only_ours = oa.iter().filter(|(k, v)| sa.get(*k) != Some(v)).count();
                let only_theirs = sa.iter().filter(|(k, v)| oa.get(*k) != Some(v)).count();
                eprintln!("{n} rules: alerts differ: {only_ours} keys ours-only/different, {only_theirs} Suricata's");
                for (k, v) in oa.iter().filter(|(k, v)| sa.get(*k) != Some(v)).take(4) {
                    eprintln!("  ours {k:?} x{v}, suricata x{:?}", sa.get(k));
                }
                for (k, v) in sa.iter().filter(|(k, v)| oa.get(*k) != Some(v)).take(4) {
                    eprintln!("  suricata {k:?} x{v}, ours x{:?}", oa.get(k));
                }
            }
            md.push_str(&format!(
                "| {n} | {:.2} | {:.2} | {:.2}x | {o_wall:.2} | {s_wall:.2} | {oa_n} / {sa_n} | {} |\n",
                gbit(o_cpu),
                gbit(s_cpu),
                s_cpu / o_cpu,
                if same { "yes" } else { "no" }
            ));
        } else {
            md.push_str(&format!(
                "| {n} | {:.2} | (no suricata) | | {o_wall:.2} | | {oa_n} / - | |\n",
                gbit(o_cpu)
            ));
        }
    }
    md.push_str(&format!(
        "\nCapture: {:.0} MB of frames ({} rounds per rule count, medians; alternating).\n",
        bytes as f64 / 1e6,
        rounds
    ));
    print!("{md}");
    if let Some(p) = out_md {
        std::fs::write(p, md).expect("write report");
    }
}
