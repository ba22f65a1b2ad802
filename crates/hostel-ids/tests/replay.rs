//! `hostel-ids replay` on pcap files written here (classic and nanosecond, Ethernet with
//! VLAN tags, Linux SLL, raw IP), and the same captures through Suricata 7 when it is
//! installed (`scripts/install-suricata.sh`): the same alerts (sid, addresses, ports, count).

mod common;

use std::path::Path;

use common::eve::*;
use common::*;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};

/// A rule set using every supported keyword, and a capture that exercises it.
const RULES: &str = r#"alert tcp $HOME_NET any -> $EXTERNAL_NET $HTTP_PORTS (msg:"split uri"; flow:established,to_server; content:"GET"; depth:3; content:"/admin.php"; distance:1; within:20; nocase; fast_pattern; classtype:web-application-attack; metadata:created_at 2026_12_07; reference:url,example.com/x; sid:1000001; rev:3;)
alert tcp $EXTERNAL_NET 80 -> $HOME_NET any (msg:"server token"; flow:from_server,established; content:"X-Secret|3a| "; pcre:"/^[0-9a-f]{8}/R"; classtype:policy-violation; sid:1000002; rev:1;)
alert tcp any any -> any 22 (msg:"syn to 22"; flags:S,12; flow:not_established; sid:1000003; rev:1;)
alert udp $HOME_NET any -> any 53 (msg:"dns evil"; content:"|04|evil|03|com|00|"; nocase; dsize:<512; priority:1; sid:1000004; rev:1;)
alert icmp any any -> any any (msg:"echo low ttl"; itype:8; icode:0; ttl:<10; threshold:type limit, track by_src, count 2, seconds 60; sid:1000005; rev:1;)
alert tcp any any -> any 21 (msg:"user seen"; flow:to_server,established; content:"USER "; flowbits:set,ftp.login; flowbits:noalert; sid:1000006; rev:1;)
alert tcp any any -> any 21 (msg:"pass after user"; flow:to_server,established; content:"PASS "; flowbits:isset,ftp.login; classtype:suspicious-login; sid:1000007; rev:1;)
alert tcp any any -> any 21 (msg:"no anon"; flow:to_server,established; content:"USER "; content:!"anonymous"; within:20; sid:1000008; rev:1;)
alert udp any any -> any 514 (msg:"syslog burst"; content:"fail"; detection_filter:track by_dst, count 2, seconds 60; sid:1000009; rev:1;)
drop tcp any any -> any 8080 (msg:"drop in detect mode"; flow:established; content:"exploit"; sid:1000010; rev:1;)
pass tcp any any -> any 8080 (msg:"trusted"; content:"exploit-trusted"; sid:1000011; rev:1;)
alert ip any any <> 198.51.100.0/24 any (msg:"bad net"; sid:1000012; rev:1;)
alert tcp any any -> any [!80,!21,1:9000] (msg:"ports"; flow:established,to_server; content:"ping"; sid:1000013; rev:1;)
"#;

fn capture() -> Capture {
    let mut cap = Capture::default();
    cap.tcp_session(
        41000,
        80,
        &[b"GET /foo/../AD", b"MIN.php HTTP/1.1\r\nHost: x\r\n\r\n"],
        &[b"HTTP/1.1 200 OK\r\nX-Secret: deadbeef99\r\n\r\n"],
    );
    cap.push(ether(&ipv4(
        CLIENT,
        SERVER,
        6,
        64,
        &tcp(41001, 22, 1, 0, SYN, &[]),
    )));
    cap.push(ether(&ipv4(
        CLIENT,
        SERVER,
        17,
        64,
        &udp(5353, 53, &dns_query("www.EVIL.com")),
    )));
    for _ in 0..4 {
        cap.push(ether(&ipv4(CLIENT, SERVER, 1, 5, &icmp(8, 0, b"abcd"))));
    }
    cap.tcp_session(41002, 21, &[b"USER bob\r\n", b"PASS hunter2\r\n"], &[]);
    cap.tcp_session(41003, 21, &[b"USER anonymous\r\n"], &[]);
    for _ in 0..4 {
        cap.push(ether(&ipv4(
            CLIENT,
            SERVER,
            17,
            64,
            &udp(40000, 514, b"auth fail"),
        )));
    }
    cap.tcp_session(41004, 8080, &[b"exploit now"], &[]);
    cap.tcp_session(41005, 8080, &[b"exploit-trusted"], &[]);
    let bad = std::net::Ipv4Addr::new(198, 51, 100, 7);
    cap.push(ether(&ipv4(bad, CLIENT, 17, 64, &udp(1, 2, b"x"))));
    cap.tcp_session(41006, 7000, &[b"ping"], &[]);
    cap
}

fn replay(rules: &Path, pcap: &Path, extra: &[&str]) -> String {
    let (eve, stderr) = hostel_replay(rules, pcap, extra);
    assert!(
        stderr.contains("rules: 13 loaded, 0 refused") || !extra.is_empty(),
        "{stderr}"
    );
    eve
}

fn expected() -> Summary {
    let c = CLIENT.to_string();
    let s = SERVER.to_string();
    let mut m = Summary::new();
    let mut add = |sid: u64, src: &str, sp: u64, dst: &str, dp: u64, n: usize| {
        m.insert((sid, src.to_string(), sp, dst.to_string(), dp), n);
    };
    add(1000001, &c, 41000, &s, 80, 1);
    add(1000002, &s, 80, &c, 41000, 1);
    add(1000003, &c, 41001, &s, 22, 1);
    add(1000004, &c, 5353, &s, 53, 1);
    add(1000005, &c, 0, &s, 0, 2);
    add(1000007, &c, 41002, &s, 21, 1);
    add(1000008, &c, 41002, &s, 21, 1);
    add(1000009, &c, 40000, &s, 514, 2);
    add(1000010, &c, 41004, &s, 8080, 1);
    add(1000012, "198.51.100.7", 1, &c, 2, 1);
    add(1000013, &c, 41006, &s, 7000, 1);
    m
}

#[test]
fn replay_classic_and_nanosecond_pcaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("test.rules");
    std::fs::write(&rules, RULES).expect("write rules");
    for nanos in [false, true] {
        let pcap = dir.path().join(format!("cap-{nanos}.pcap"));
        capture().write(&pcap, nanos);
        let eve = replay(&rules, &pcap, &[]);
        assert_eq!(summarize(&eve), expected(), "nanos={nanos}\n{eve}");
        let first: serde_json::Value =
            serde_json::from_str(eve.lines().next().expect("an alert")).expect("json");
        for field in ["timestamp", "flow_id", "src_ip", "dest_ip", "proto"] {
            assert!(!first[field].is_null(), "{field} missing: {first}");
        }
        for field in [
            "action",
            "gid",
            "signature_id",
            "rev",
            "signature",
            "category",
            "severity",
        ] {
            assert!(
                !first["alert"][field].is_null(),
                "alert.{field} missing: {first}"
            );
        }
    }
}

fn write_link(path: &Path, link: DataLink, frames: &[Vec<u8>]) {
    let header = PcapHeader {
        datalink: link,
        ts_resolution: TsResolution::MicroSecond,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(std::fs::File::create(path).expect("create"), header)
        .expect("header");
    for (i, f) in frames.iter().enumerate() {
        let ts = std::time::Duration::from_secs(1_700_000_000 + i as u64);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
            .expect("write");
    }
}

#[test]
fn vlan_sll_and_raw_ip_link_types() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("r.rules");
    std::fs::write(
        &rules,
        "alert udp any any -> any 53 (msg:\"q\"; content:\"|04|evil\"; sid:1;)\n",
    )
    .expect("write");
    let ip = ipv4(CLIENT, SERVER, 17, 64, &udp(1, 53, &dns_query("evil.com")));
    // 802.1Q, and QinQ.
    let mut vlan = vec![
        2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0, 10, 0x08, 0x00,
    ];
    vlan.extend_from_slice(&ip);
    let mut qinq = vec![
        2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xa8, 0, 5, 0x81, 0x00,
    ];
    qinq.extend_from_slice(&[0, 10, 0x08, 0x00]);
    qinq.extend_from_slice(&ip);
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(&ip);
    for (name, link, frames) in [
        ("vlan", DataLink::ETHERNET, vec![vlan, qinq]),
        ("sll", DataLink::LINUX_SLL, vec![sll]),
        ("raw", DataLink::RAW, vec![ip.clone()]),
        ("ipv4", DataLink::IPV4, vec![ip.clone()]),
    ] {
        let pcap = dir.path().join(format!("{name}.pcap"));
        write_link(&pcap, link, &frames);
        let eve = replay(&rules, &pcap, &["--var", "HOME_NET=[10.0.0.0/8]"]);
        assert_eq!(eve.lines().count(), frames.len(), "{name}: {eve}");
    }
}

#[test]
fn random_frames_never_panic() {
    let mut e = engine(RULES);
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = capture();
    for i in 0..20_000u64 {
        let (_, f) = &base.frames[(next() % base.frames.len() as u64) as usize];
        let mut f = f.clone();
        for _ in 0..(next() % 6) {
            let at = (next() % f.len() as u64) as usize;
            f[at] = next() as u8;
        }
        f.truncate((next() % (f.len() as u64 + 1)) as usize);
        for link in [
            hostel_ids::packet::Link::Ethernet,
            hostel_ids::packet::Link::RawIp,
        ] {
            if let Some(p) = hostel_ids::packet::decode(link, &f) {
                let ts = std::time::Duration::from_millis(1_700_000_000_000 + i);
                let _ = e.inspect(ts, &p);
            }
        }
    }
}

/// The same capture and rules through Suricata 7, when installed: the same alerts.
#[test]
fn same_alerts_as_suricata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("test.rules");
    std::fs::write(&rules, RULES).expect("write rules");
    let pcap = dir.path().join("cap.pcap");
    capture().write(&pcap, false);
    let Some(theirs) = suricata_eve(dir.path(), &rules, &pcap, &[]) else {
        return;
    };
    let ours = replay(&rules, &pcap, &[]);
    assert_eq!(
        summarize(&ours),
        summarize(&theirs),
        "ours:\n{ours}\nsuricata:\n{theirs}"
    );
}
