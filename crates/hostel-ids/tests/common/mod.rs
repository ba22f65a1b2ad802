//! Captures the tests make: Ethernet/IPv4 frames, TCP sessions with handshakes, UDP, ICMP,
//! written as pcap files with `pcap-file`. Checksums are left zero: replay does not check
//! them (Suricata with `-k none` neither).
#![allow(dead_code)]

pub mod eve;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use hostel_ids::packet::{decode, Link};
use hostel_ids::{Alert, Classifications, Config, Engine, RuleSet, Vars};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut v = vec![0x45, 0];
    v.extend_from_slice(&total.to_be_bytes());
    v.extend_from_slice(&[0, 1, 0x40, 0, ttl, proto, 0, 0]);
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.extend_from_slice(l4);
    v
}

pub fn ether(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(ip);
    f
}

pub fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

pub fn icmp(itype: u8, icode: u8, payload: &[u8]) -> Vec<u8> {
    let mut i = vec![itype, icode, 0, 0, 0, 1, 0, 1];
    i.extend_from_slice(payload);
    i
}

/// A DNS query for `name` (type A).
pub fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Frames (Ethernet) with their capture times.
#[derive(Default)]
pub struct Capture {
    pub frames: Vec<(Duration, Vec<u8>)>,
    t: u64,
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;
pub const FIN: u8 = 0x01;

impl Capture {
    pub fn push(&mut self, frame: Vec<u8>) {
        self.t += 1;
        // 1.7e9 s: a December-2023 date, 1 ms apart.
        let ts = Duration::from_secs(1_700_000_000) + Duration::from_millis(self.t);
        self.frames.push((ts, frame));
    }

    /// A TCP session: handshake, the client's segments, then the server's, then FINs.
    pub fn tcp_session(&mut self, cport: u16, sport: u16, client: &[&[u8]], server: &[&[u8]]) {
        let (c, s) = (CLIENT, SERVER);
        let (mut cseq, mut sseq) = (1000u32, 5000u32);
        self.push(ether(&ipv4(
            c,
            s,
            6,
            64,
            &tcp(cport, sport, cseq, 0, SYN, &[]),
        )));
        self.push(ether(&ipv4(
            s,
            c,
            6,
            64,
            &tcp(sport, cport, sseq, cseq + 1, SYN | ACK, &[]),
        )));
        cseq += 1;
        sseq += 1;
        self.push(ether(&ipv4(
            c,
            s,
            6,
            64,
            &tcp(cport, sport, cseq, sseq, ACK, &[]),
        )));
        for seg in client {
            self.push(ether(&ipv4(
                c,
                s,
                6,
                64,
                &tcp(cport, sport, cseq, sseq, ACK | PSH, seg),
            )));
            cseq += seg.len() as u32;
            self.push(ether(&ipv4(
                s,
                c,
                6,
                64,
                &tcp(sport, cport, sseq, cseq, ACK, &[]),
            )));
        }
        for seg in server {
            self.push(ether(&ipv4(
                s,
                c,
                6,
                64,
                &tcp(sport, cport, sseq, cseq, ACK | PSH, seg),
            )));
            sseq += seg.len() as u32;
            self.push(ether(&ipv4(
                c,
                s,
                6,
                64,
                &tcp(cport, sport, cseq, sseq, ACK, &[]),
            )));
        }
        self.push(ether(&ipv4(
            c,
            s,
            6,
            64,
            &tcp(cport, sport, cseq, sseq, FIN | ACK, &[]),
        )));
        self.push(ether(&ipv4(
            s,
            c,
            6,
            64,
            &tcp(sport, cport, sseq, cseq + 1, FIN | ACK, &[]),
        )));
        self.push(ether(&ipv4(
            c,
            s,
            6,
            64,
            &tcp(cport, sport, cseq + 1, sseq + 1, ACK, &[]),
        )));
    }

    pub fn write(&self, path: &Path, nanos: bool) {
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            ts_resolution: if nanos {
                TsResolution::NanoSecond
            } else {
                TsResolution::MicroSecond
            },
            ..Default::default()
        };
        let file = std::fs::File::create(path).expect("create pcap");
        let mut w = PcapWriter::with_header(file, header).expect("pcap header");
        for (ts, f) in &self.frames {
            w.write_packet(&PcapPacket::new(*ts, f.len() as u32, f))
                .expect("write packet");
        }
    }
}

/// Loads `rules` (every line must load) into a detect-mode engine.
pub fn engine(rules: &str) -> Engine {
    engine_with(rules, Config::default())
}

pub fn engine_with(rules: &str, config: Config) -> Engine {
    let mut set = RuleSet::default();
    let report = set.load(rules, &Vars::default(), &Classifications::default());
    assert!(report.refused.is_empty(), "refused: {:?}", report.refused);
    Engine::new(set, config)
}

/// Runs the capture through the engine; the alerts in order.
pub fn run(engine: &mut Engine, cap: &Capture) -> Vec<Alert> {
    let mut out = Vec::new();
    for (ts, f) in &cap.frames {
        let p = decode(Link::Ethernet, f).expect("test frames decode");
        out.extend(engine.inspect(*ts, &p).alerts);
    }
    out
}

pub fn sids(alerts: &[Alert]) -> Vec<u32> {
    alerts.iter().map(|a| a.sid).collect()
}
