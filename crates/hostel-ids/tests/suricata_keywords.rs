//! The keywords `replay.rs`'s rule set leaves out (reject, gid, offset, pcre flags, to_client,
//! from_client, flowbits isnotset/unset, threshold types `threshold` and `both`, address lists
//! with negation, an operator variable, IPv6, content split over TCP segments) through
//! `hostel-ids replay` and Suricata 7 on the same capture: the same alerts (sid, addresses,
//! ports, count). Every EVE line of ours is checked against the types Suricata's EVE schema
//! (`etc/schema.json` in Suricata's source; Debian's package does not ship it) gives the fields
//! an alert carries, the `alert` object's field set being closed there.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use common::eve::*;
use common::*;

const RULES: &str = r#"reject tcp any any -> any 2323 (msg:"telnet login"; flow:established,to_server; content:"root"; offset:2; depth:10; gid:1; sid:2000001; rev:2;)
alert tcp any 80 -> any any (msg:"server banner"; flow:to_client,established; pcre:"/^server:\s+NGINX/mi"; sid:2000002; rev:1;)
alert tcp any any -> any 80 (msg:"client dotall"; flow:from_client; pcre:"/a.b/s"; sid:2000003; rev:1;)
alert tcp any any -> any 2525 (msg:"helo first"; flow:to_server,established; content:"HI"; flowbits:set,chat.hi; flowbits:noalert; sid:2000004; rev:1;)
alert tcp any any -> any 2525 (msg:"mail without helo"; flow:to_server,established; content:"SEND"; flowbits:isnotset,chat.hi; sid:2000005; rev:1;)
alert tcp any any -> any 2525 (msg:"quit clears"; flow:to_server,established; content:"BYE"; flowbits:isset,chat.hi; flowbits:unset,chat.hi; sid:2000006; rev:1;)
alert tcp any any -> any 2525 (msg:"data after quit"; flow:to_server,established; content:"BODY"; flowbits:isnotset,chat.hi; sid:2000007; rev:1;)
alert udp any any -> any 161 (msg:"snmp every 3rd"; content:"public"; threshold:type threshold, track by_src, count 3, seconds 60; sid:2000008; rev:1;)
alert udp any any -> any 162 (msg:"trap once per 3"; content:"trap"; threshold:type both, track by_dst, count 3, seconds 60; sid:2000009; rev:1;)
alert udp [10.0.0.0/8,!10.0.0.6] any -> $DNS_SERVERS 53 (msg:"list and negation"; content:"|01 00|"; offset:2; depth:2; sid:2000010; rev:1;)
alert tcp any any -> any 443 (msg:"split secret"; flow:established,to_server; content:"TOPSECRET"; fast_pattern; sid:2000011; rev:1;)
alert udp any any -> any 5000 (msg:"v6 udp"; content:"hello6"; sid:2000012; rev:1;)
alert tcp any any -> any ![80,443,2525,21] (msg:"any other port"; flow:established,to_server; content:"zz"; sid:2000013; rev:1;)
"#;

/// Suricata writes IPv6 addresses with every group in four digits; so does our EVE.
const V6_A: &str = "2001:0db8:0000:0000:0000:0000:0000:0001";
const V6_B: &str = "2001:0db8:0000:0000:0000:0000:0000:0002";
const DNS: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);

fn capture() -> Capture {
    let mut cap = Capture::default();
    cap.tcp_session(42000, 2323, &[b"xxroot\r\n"], &[]);
    cap.tcp_session(42001, 2323, &[b"root\r\n"], &[]);
    cap.tcp_session(
        42002,
        80,
        &[b"GET / a\nb"],
        &[b"HTTP/1.1 200 OK\r\nServer:  nginx\r\n"],
    );
    cap.tcp_session(
        42003,
        2525,
        &[b"HI x\r\n", b"SEND a\r\n", b"BYE\r\n", b"BODY\r\n"],
        &[],
    );
    cap.tcp_session(42004, 2525, &[b"SEND c\r\n"], &[]);
    for _ in 0..7 {
        cap.push(ether(&ipv4(
            CLIENT,
            SERVER,
            17,
            64,
            &udp(40001, 161, b"public"),
        )));
    }
    for _ in 0..5 {
        cap.push(ether(&ipv4(
            CLIENT,
            SERVER,
            17,
            64,
            &udp(40002, 162, b"trap"),
        )));
    }
    let q = dns_query("example.org");
    cap.push(ether(&ipv4(CLIENT, DNS, 17, 64, &udp(40003, 53, &q))));
    cap.push(ether(&ipv4(
        Ipv4Addr::new(10, 0, 0, 6),
        DNS,
        17,
        64,
        &udp(40004, 53, &q),
    )));
    cap.push(ether(&ipv4(CLIENT, SERVER, 17, 64, &udp(40005, 53, &q))));
    cap.tcp_session(42005, 443, &[b"xxTOPSE", b"CRETyy"], &[]);
    cap.tcp_session(42006, 9999, &[b"zz"], &[]);
    cap.tcp_session(42007, 21, &[b"zz"], &[]);
    let (a6, b6): (Ipv6Addr, Ipv6Addr) = (V6_A.parse().expect("v6"), V6_B.parse().expect("v6"));
    cap.push(ether6(&ipv6(a6, b6, 17, &udp(40006, 5000, b"say hello6"))));
    cap
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
    let mut v = vec![0x60, 0, 0, 0];
    v.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    v.extend_from_slice(&[next, 64]);
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.extend_from_slice(l4);
    v
}

fn ether6(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    f.extend_from_slice(ip);
    f
}

/// The JSON types Suricata's EVE schema gives the fields an alert record of ours carries; the
/// schema closes the `alert` object (`additionalProperties: false`) and requires
/// `event_type` and `timestamp` (the pattern below is the schema's).
fn check_schema(line: &str) {
    let v: serde_json::Value = serde_json::from_str(line).expect("EVE line is JSON");
    let top: &[(&str, &str)] = &[
        ("timestamp", "string"),
        ("event_type", "string"),
        ("flow_id", "integer"),
        ("src_ip", "string"),
        ("src_port", "integer"),
        ("dest_ip", "string"),
        ("dest_port", "integer"),
        ("proto", "string"),
        ("icmp_type", "integer"),
        ("icmp_code", "integer"),
        ("pcap_cnt", "integer"),
        ("alert", "object"),
    ];
    let alert: &[(&str, &str)] = &[
        ("action", "string"),
        ("category", "string"),
        ("gid", "integer"),
        ("rev", "integer"),
        ("rule", "string"),
        ("severity", "integer"),
        ("signature", "string"),
        ("signature_id", "integer"),
        ("xff", "string"),
        ("metadata", "object"),
        ("source", "object"),
        ("target", "object"),
    ];
    let is = |x: &serde_json::Value, ty: &str| match ty {
        "string" => x.is_string(),
        "integer" => x.is_i64() || x.is_u64(),
        "object" => x.is_object(),
        _ => false,
    };
    let obj = v.as_object().expect("an EVE record is an object");
    for (k, x) in obj {
        let ty = top
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("{k}: not a field an alert of ours may carry: {line}"));
        assert!(is(x, ty), "{k} must be {ty}: {line}");
    }
    for req in ["event_type", "timestamp"] {
        assert!(obj.contains_key(req), "{req} missing: {line}");
    }
    let ts = v["timestamp"].as_str().unwrap_or("");
    let re = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+[+\-]\d+$").expect("re");
    assert!(
        re.is_match(ts),
        "timestamp {ts} does not match the schema's pattern"
    );
    let a = v["alert"].as_object().expect("alert object");
    for (k, x) in a {
        let ty = alert
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("alert.{k}: the schema's alert object has no such field"));
        assert!(is(x, ty), "alert.{k} must be {ty}: {line}");
    }
    for ip in ["src_ip", "dest_ip"] {
        if let Some(s) = v[ip].as_str() {
            assert!(s.parse::<IpAddr>().is_ok(), "{ip} {s} is no address");
        }
    }
}

fn replay(rules: &Path, pcap: &Path) -> String {
    let (eve, stderr) = hostel_replay(rules, pcap, &["--var", "DNS_SERVERS=[10.9.9.0/24]"]);
    let n = RULES.lines().count();
    assert!(
        stderr.contains(&format!("rules: {n} loaded, 0 refused")),
        "{stderr}"
    );
    eve
}

fn expected() -> Summary {
    let c = CLIENT.to_string();
    let s = SERVER.to_string();
    let d = DNS.to_string();
    let mut m = Summary::new();
    let mut add = |sid: u64, src: &str, sp: u64, dst: &str, dp: u64, n: usize| {
        m.insert((sid, src.to_string(), sp, dst.to_string(), dp), n);
    };
    add(2000001, &c, 42000, &s, 2323, 1);
    add(2000002, &s, 80, &c, 42002, 1);
    add(2000003, &c, 42002, &s, 80, 1);
    add(2000005, &c, 42004, &s, 2525, 1);
    add(2000006, &c, 42003, &s, 2525, 1);
    add(2000007, &c, 42003, &s, 2525, 1);
    add(2000008, &c, 40001, &s, 161, 2);
    add(2000009, &c, 40002, &s, 162, 1);
    add(2000010, &c, 40003, &d, 53, 1);
    add(2000011, &c, 42005, &s, 443, 1);
    add(2000012, V6_A, 40006, V6_B, 5000, 1);
    add(2000013, &c, 42006, &s, 9999, 1);
    m
}

#[test]
fn every_remaining_keyword_alerts_as_expected_and_eve_fits_the_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("k.rules");
    std::fs::write(&rules, RULES).expect("write rules");
    let pcap = dir.path().join("k.pcap");
    capture().write(&pcap, false);
    let eve = replay(&rules, &pcap);
    assert_eq!(summarize(&eve), expected(), "\n{eve}");
    for line in eve.lines() {
        check_schema(line);
    }
}

#[test]
fn same_alerts_as_suricata_for_the_remaining_keywords() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("k.rules");
    std::fs::write(&rules, RULES).expect("write rules");
    let pcap = dir.path().join("k.pcap");
    capture().write(&pcap, false);
    let vars = ["--set", "vars.address-groups.DNS_SERVERS=[10.9.9.0/24]"];
    let Some(theirs) = suricata_eve(dir.path(), &rules, &pcap, &vars) else {
        return;
    };
    let ours = replay(&rules, &pcap);
    assert_eq!(
        comparable(summarize(&ours)),
        comparable(summarize(&theirs)),
        "ours:\n{ours}\nsuricata:\n{theirs}"
    );
}

/// Two known differences, both from how Suricata's IDS mode inspects a TCP stream, left out of
/// the comparison (the switch inspects inline, every segment as it passes):
/// - Suricata inspects the raw stream of a flow without an application parser in chunks of at
///   least 2,560 bytes or at the flow's end, so the flowbit set, read and unset by four small
///   segments of flow 42003 are all evaluated on one chunk at its FIN (in rule order: set,
///   isset+unset, isnotset): it also alerts sid 2000005 there. Our alerts for that flow are
///   asserted in the test above; the isnotset alone (flow 42004) is compared.
/// - A `reject` rule alerts twice in Suricata (the data segment, then the FIN Suricata's
///   reject leaves in the flow); the count is compared as "alerted at all".
fn comparable(mut s: Summary) -> Summary {
    s.retain(|k, _| k.2 != 42003);
    for (k, n) in s.iter_mut() {
        if k.0 == 2000001 {
            *n = 1;
        }
    }
    s
}
