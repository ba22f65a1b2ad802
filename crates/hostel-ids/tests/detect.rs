//! The engine on captures made here: keywords matching and not, reassembly across segments,
//! thresholds, flowbits, precedence, EVE fields.

mod common;

use common::*;
use hostel_ids::{Config, Mode};

#[test]
fn content_split_across_two_segments_is_found_via_reassembly() {
    let rules = r#"alert tcp $HOME_NET any -> $EXTERNAL_NET 80 (msg:"split"; flow:established,to_server; content:"cmd.exe"; nocase; sid:1; rev:2;)"#;
    let mut cap = Capture::default();
    cap.tcp_session(
        40000,
        80,
        &[
            b"GET /scripts/..%c1%1c../win/cm",
            b"d.EXE?/c+dir HTTP/1.0\r\n\r\n",
        ],
        &[b"HTTP/1.0 404 Not Found\r\n\r\n"],
    );
    let alerts = run(&mut engine(rules), &cap);
    assert_eq!(sids(&alerts), [1]);
    let a = &alerts[0];
    assert_eq!((a.src, a.src_port, a.dst_port), (CLIENT.into(), 40000, 80));
    assert_eq!((a.rev, a.action, a.proto.as_str()), (2, "allowed", "TCP"));
}

#[test]
fn no_midstream_pickup_but_content_still_matches_packets() {
    let rules = "alert tcp any any -> any 80 (msg:\"est\"; flow:established; content:\"attack\"; sid:1;)\n\
                 alert tcp any any -> any 80 (msg:\"any\"; content:\"attack\"; sid:2;)\n\
                 alert tcp any any -> any 80 (msg:\"not est\"; flow:not_established; content:\"attack\"; sid:3;)";
    let mut cap = Capture::default();
    cap.push(ether(&ipv4(
        CLIENT,
        SERVER,
        6,
        64,
        &tcp(1234, 80, 77, 1, ACK | PSH, b"an attack here"),
    )));
    assert_eq!(sids(&run(&mut engine(rules), &cap)), [2, 3]);
}

#[test]
fn direction_and_eve_follow_the_data() {
    let rules = r#"alert tcp any 80 -> any any (msg:"server says"; flow:to_client,established; content:"secret"; classtype:policy-violation; sid:7;)
alert tcp any any -> any any (msg:"wrong way"; flow:from_server; content:"GET"; sid:8;)"#;
    let mut cap = Capture::default();
    cap.tcp_session(
        40001,
        80,
        &[b"GET / HTTP/1.0\r\n\r\n"],
        &[b"HTTP/1.0 200 OK\r\n\r\nsecret"],
    );
    let alerts = run(&mut engine(rules), &cap);
    assert_eq!(sids(&alerts), [7]);
    let a = &alerts[0];
    assert_eq!(
        (a.src, a.src_port, a.dst, a.dst_port),
        (SERVER.into(), 80, CLIENT.into(), 40001)
    );
    assert_eq!(
        (a.category.as_str(), a.severity),
        ("Potential Corporate Privacy Violation", 1)
    );
    let v = hostel_ids::eve::to_json(a);
    assert_eq!(v["event_type"], "alert");
    assert_eq!(v["src_ip"], "93.184.216.34");
    assert_eq!(v["dest_port"], 40001);
    assert_eq!(v["alert"]["signature_id"], 7);
    assert_eq!(v["alert"]["action"], "allowed");
    assert_eq!(v["alert"]["signature"], "server says");
    assert!(v["timestamp"]
        .as_str()
        .is_some_and(|t| t.starts_with("2023-11-14T22:13:20.")));
    assert!(v["flow_id"].as_u64().is_some());
}

#[test]
fn dns_over_udp_with_hex_and_ports() {
    let rules = r#"alert udp $HOME_NET any -> any 53 (msg:"dns example"; content:"|07|example|03|com|00|"; nocase; sid:20;)
alert udp any any -> any !53 (msg:"not dns"; content:"example"; sid:21;)
alert udp any [1:1023] -> any 53 (msg:"low src port"; content:"example"; sid:22;)"#;
    let mut cap = Capture::default();
    cap.push(ether(&ipv4(
        CLIENT,
        SERVER,
        17,
        64,
        &udp(5353, 53, &dns_query("www.EXAMPLE.com")),
    )));
    let alerts = run(&mut engine(rules), &cap);
    assert_eq!(sids(&alerts), [20]);
    assert_eq!(alerts[0].proto, "UDP");
}

#[test]
fn icmp_itype_icode_ttl_dsize() {
    let rules = r#"alert icmp any any -> any any (msg:"echo"; itype:8; icode:0; sid:30;)
alert icmp any any -> any any (msg:"reply"; itype:0; sid:31;)
alert icmp any any -> any any (msg:"low ttl"; ttl:<5; sid:32;)
alert icmp any any -> any any (msg:"big"; dsize:>100; sid:33;)
alert icmp any any -> any any (msg:"range"; itype:7<>9; dsize:10<>20; sid:34;)"#;
    let mut cap = Capture::default();
    cap.push(ether(&ipv4(CLIENT, SERVER, 1, 3, &icmp(8, 0, &[0u8; 16]))));
    let alerts = run(&mut engine(rules), &cap);
    let mut got = sids(&alerts);
    got.sort();
    assert_eq!(got, [30, 32, 34]);
    let v = hostel_ids::eve::to_json(&alerts[0]);
    assert_eq!(v["icmp_type"], 8);
    assert_eq!(v["proto"], "ICMP");
}

#[test]
fn tcp_flags() {
    let rules = r#"alert tcp any any -> any any (msg:"syn only"; flags:S; sid:40;)
alert tcp any any -> any any (msg:"syn+ack"; flags:SA; sid:41;)
alert tcp any any -> any any (msg:"has ack"; flags:+A; sid:42;)
alert tcp any any -> any any (msg:"syn ignoring ecn"; flags:S,12; sid:43;)
alert tcp any any -> any any (msg:"no ack"; flags:!A; sid:44;)"#;
    let mut cap = Capture::default();
    cap.push(ether(&ipv4(
        CLIENT,
        SERVER,
        6,
        64,
        &tcp(1, 2, 0, 0, SYN | 0xc0, &[]),
    )));
    let mut got = sids(&run(&mut engine(rules), &cap));
    got.sort();
    assert_eq!(got, [43, 44]);
}

#[test]
fn offset_depth_distance_within_pcre() {
    let rules = r#"alert udp any any -> any any (msg:"od"; content:"USER"; offset:0; depth:4; content:"root"; distance:1; within:4; sid:50;)
alert udp any any -> any any (msg:"pcre"; content:"USER"; pcre:"/^\s+r[o]+t/R"; sid:51;)
alert udp any any -> any any (msg:"neg"; content:"USER"; content:!"admin"; sid:52;)
alert udp any any -> any any (msg:"neg hit"; content:"USER"; content:!"root"; sid:53;)
alert udp any any -> any any (msg:"depth miss"; content:"root"; depth:6; sid:54;)
alert udp any any -> any any (msg:"fp"; content:"US"; fast_pattern; content:"ot"; sid:55;)"#;
    let mut cap = Capture::default();
    cap.push(ether(&ipv4(
        CLIENT,
        SERVER,
        17,
        64,
        &udp(1, 2, b"USER root\r\n"),
    )));
    let mut got = sids(&run(&mut engine(rules), &cap));
    got.sort();
    assert_eq!(got, [50, 51, 52, 55]);
}

#[test]
fn bidirectional_and_negated_addresses() {
    let rules = r#"alert udp 93.184.216.0/24 any <> $HOME_NET any (msg:"bi"; content:"x"; sid:60;)
alert udp !$HOME_NET any -> any any (msg:"ext src"; content:"x"; sid:61;)
alert udp [10.0.0.0/8,!10.0.0.5] any -> any any (msg:"excluded"; content:"x"; sid:62;)"#;
    let mut cap = Capture::default();
    cap.push(ether(&ipv4(CLIENT, SERVER, 17, 64, &udp(1, 2, b"x"))));
    cap.push(ether(&ipv4(SERVER, CLIENT, 17, 64, &udp(2, 1, b"x"))));
    assert_eq!(sids(&run(&mut engine(rules), &cap)), [60, 60, 61]);
}

fn pings(n: usize) -> Capture {
    let mut cap = Capture::default();
    for _ in 0..n {
        cap.push(ether(&ipv4(CLIENT, SERVER, 1, 64, &icmp(8, 0, b"ping"))));
    }
    cap
}

#[test]
fn threshold_counts() {
    let rules = r#"alert icmp any any -> any any (msg:"limit"; itype:8; threshold:type limit, track by_src, count 2, seconds 60; sid:70;)
alert icmp any any -> any any (msg:"threshold"; itype:8; threshold:type threshold, track by_src, count 2, seconds 60; sid:71;)
alert icmp any any -> any any (msg:"both"; itype:8; threshold:type both, track by_dst, count 3, seconds 60; sid:72;)
alert icmp any any -> any any (msg:"df"; itype:8; detection_filter:track by_src, count 3, seconds 60; sid:73;)"#;
    let alerts = run(&mut engine(rules), &pings(7));
    let count = |sid| alerts.iter().filter(|a| a.sid == sid).count();
    assert_eq!((count(70), count(71), count(72), count(73)), (2, 3, 1, 4));
}

#[test]
fn flowbits_set_isset_noalert_unset() {
    let rules = r#"alert tcp any any -> any any (msg:"login"; flow:to_server; content:"USER "; flowbits:set,ftp.user; flowbits:noalert; sid:80;)
alert tcp any any -> any any (msg:"pass after user"; flow:to_server; content:"PASS "; flowbits:isset,ftp.user; sid:81;)
alert tcp any any -> any any (msg:"quit"; content:"QUIT"; flowbits:unset,ftp.user; flowbits:noalert; sid:83;)
alert tcp any any -> any any (msg:"pass without user"; content:"PASS "; flowbits:isnotset,ftp.user; sid:82;)"#;
    let mut cap = Capture::default();
    cap.tcp_session(
        40010,
        21,
        &[b"USER bob\r\n", b"PASS x\r\n", b"QUIT\r\n", b"PASS y\r\n"],
        &[],
    );
    // The second PASS comes after QUIT unset the bit.
    assert_eq!(sids(&run(&mut engine(rules), &cap)), [81, 82]);
    let mut cap = Capture::default();
    cap.tcp_session(40011, 21, &[b"PASS x\r\n"], &[]);
    assert_eq!(sids(&run(&mut engine(rules), &cap)), [82]);
}

#[test]
fn pass_beats_drop_and_prevent_blocks_the_flow() {
    let rules = r#"drop tcp any any -> any 80 (msg:"drop"; content:"evil"; sid:90;)
pass tcp any any -> any 80 (msg:"trusted"; content:"trusted-evil"; sid:91;)
alert tcp any any -> any 80 (msg:"alert"; content:"evil"; sid:92;)"#;
    let mut cap = Capture::default();
    cap.push(ether(&ipv4(
        CLIENT,
        SERVER,
        6,
        64,
        &tcp(1, 80, 0, 0, ACK, b"trusted-evil"),
    )));
    assert!(run(&mut engine(rules), &cap).is_empty());

    let mut cap = Capture::default();
    cap.tcp_session(40020, 80, &[b"evil", b"more"], &[]);
    let detect = run(&mut engine(rules), &cap);
    assert_eq!(sids(&detect), [90, 92]);
    assert!(detect.iter().all(|a| a.action == "allowed"));

    let mut e = engine_with(
        rules,
        Config {
            mode: Mode::Prevent,
            ..Config::default()
        },
    );
    let mut dropped = 0;
    let mut alerts = Vec::new();
    for (ts, f) in &cap.frames {
        let p = hostel_ids::packet::decode(hostel_ids::packet::Link::Ethernet, f).unwrap();
        let v = e.inspect(*ts, &p);
        dropped += usize::from(v.drop);
        alerts.extend(v.alerts);
    }
    assert_eq!(alerts[0].action, "blocked");
    assert_eq!(alerts[1].action, "allowed");
    // The matching segment and everything after it in the flow (ack, "more", its ack, 3 FIN/ACKs).
    assert_eq!(dropped, 7);
}

#[test]
fn stream_depth_bounds_inspection() {
    let rules = r#"alert tcp any any -> any any (msg:"late"; flow:established; content:"needle"; sid:100;)"#;
    let filler = vec![b'a'; 2000];
    let mut cap = Capture::default();
    cap.tcp_session(40030, 9000, &[&filler, b"needle"], &[]);
    let mut e = engine_with(
        rules,
        Config {
            stream_depth: 1024,
            ..Config::default()
        },
    );
    assert!(run(&mut e, &cap).is_empty());
    assert_eq!(sids(&run(&mut engine(rules), &cap)), [100]);
}

#[test]
fn fast_pattern_in_one_segment_rest_in_a_later_one() {
    let rules = r#"alert tcp any any -> any any (msg:"later"; flow:established,to_server; content:"LONGPATTERN"; content:"tail"; distance:0; sid:110;)"#;
    let mut cap = Capture::default();
    cap.tcp_session(
        40040,
        9000,
        &[b"xx LONGPATTERN yy", b"zz", b"and the tail"],
        &[],
    );
    assert_eq!(sids(&run(&mut engine(rules), &cap)), [110]);
}

#[test]
fn tcp_fast_open_data_is_inspected() {
    let rules = r#"alert tcp any any -> any 80 (msg:"tfo"; content:"hello"; sid:120;)"#;
    let mut cap = Capture::default();
    cap.push(ether(&ipv4(
        CLIENT,
        SERVER,
        6,
        64,
        &tcp(40050, 80, 7, 0, SYN, b"hello"),
    )));
    assert_eq!(sids(&run(&mut engine(rules), &cap)), [120]);
}

#[test]
fn content_split_after_inspected_bytes_were_freed() {
    let rules = r#"alert tcp any any -> any any (msg:"deep"; flow:established,to_server; content:"needle"; sid:130;)
alert tcp any any -> any any (msg:"reach back"; flow:established,to_server; content:"marker"; content:"needle"; distance:0; within:3000; sid:131;)"#;
    let filler = vec![b'a'; 1400];
    let mut segs: Vec<&[u8]> = vec![&filler; 150];
    segs.push(b"marker ... nee");
    segs.push(b"dle");
    let mut cap = Capture::default();
    cap.tcp_session(40060, 9000, &segs, &[]);
    let mut got = sids(&run(&mut engine(rules), &cap));
    got.sort();
    assert_eq!(got, [130, 131]);
}
