//! Connection tracking: replies, related errors, stateless rules, policy changes, limits,
//! SYN floods, timeouts, rejects and the log's rate limit.

use super::build::*;
use crate::nat::NatConfig;
use crate::rule::Action;
use crate::{Config, DropReason, Verdict};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYNACK: u8 = 0x12;
const FIN: u8 = 0x01;

#[test]
fn replies_of_allowed_connections_pass_and_nothing_else() {
    let mut f = fw(vec![]);
    assert_eq!(
        run(
            &mut f,
            OUT,
            tcp4("10.0.0.5", 40000, "93.184.216.34", 443, SYN),
            0
        )
        .0,
        Verdict::Accept
    );
    assert_eq!(
        run(
            &mut f,
            IN,
            tcp4("93.184.216.34", 443, "10.0.0.5", 40000, SYNACK),
            1
        )
        .0,
        Verdict::Accept
    );
    assert_eq!(
        run(
            &mut f,
            OUT,
            tcp4("10.0.0.5", 40000, "93.184.216.34", 443, ACK),
            2
        )
        .0,
        Verdict::Accept
    );
    assert_eq!(
        run(
            &mut f,
            IN,
            tcp4("93.184.216.34", 443, "10.0.0.5", 40000, ACK),
            3
        )
        .0,
        Verdict::Accept
    );
    assert_eq!(f.conntrack().occupancy, 1);
    assert_eq!(f.conntrack().embryonic, 0, "established");
    // Another port of the same host is not a reply.
    assert_eq!(
        run(
            &mut f,
            IN,
            tcp4("93.184.216.34", 443, "10.0.0.5", 40001, ACK),
            4
        )
        .0,
        Verdict::Drop(DropReason::Default)
    );
    // A spoofed reply tuple travelling the wrong way gets nothing from the connection.
    assert_eq!(
        run(
            &mut f,
            OUT,
            tcp4("93.184.216.34", 443, "10.0.0.5", 40000, ACK),
            5
        )
        .0,
        Verdict::Drop(DropReason::TcpNoConnection)
    );
    // UDP and ICMP echo replies, and IPv6.
    assert_eq!(
        run(&mut f, OUT, udp4("10.0.0.5", 5353, "9.9.9.9", 53), 6).0,
        Verdict::Accept
    );
    assert_eq!(
        run(&mut f, IN, udp4("9.9.9.9", 53, "10.0.0.5", 5353), 7).0,
        Verdict::Accept
    );
    assert_eq!(
        run(&mut f, OUT, echo4("10.0.0.5", "9.9.9.9", true, 77), 8).0,
        Verdict::Accept
    );
    assert_eq!(
        run(&mut f, IN, echo4("9.9.9.9", "10.0.0.5", false, 77), 9).0,
        Verdict::Accept
    );
    assert_eq!(
        run(&mut f, IN, echo4("9.9.9.9", "10.0.0.5", false, 78), 9).0,
        Verdict::Drop(DropReason::Default)
    );
    assert_eq!(
        run(&mut f, OUT, udp6("fd00::5", 1000, "2001:db8::1", 53), 10).0,
        Verdict::Accept
    );
    assert_eq!(
        run(&mut f, IN, udp6("2001:db8::1", 53, "fd00::5", 1000), 11).0,
        Verdict::Accept
    );
    // A non-SYN segment opens nothing, even where rules allow.
    assert_eq!(
        run(
            &mut f,
            OUT,
            tcp4("10.0.0.5", 40009, "93.184.216.34", 443, ACK),
            12
        )
        .0,
        Verdict::Drop(DropReason::TcpNoConnection)
    );
}

#[test]
fn related_icmp_errors_pass_for_tracked_flows_only() {
    let mut f = fw(vec![]);
    let out = udp4("10.0.0.5", 5353, "9.9.9.9", 53);
    assert_eq!(run(&mut f, OUT, out.clone(), 0).0, Verdict::Accept);
    let err = icmp4("9.9.9.9", "10.0.0.5", 3, 3, [0; 4], &out[..28]);
    assert_eq!(run(&mut f, IN, err, 1).0, Verdict::Accept);
    assert_eq!(f.stats().related, 1);
    let other = udp4("10.0.0.5", 5354, "9.9.9.9", 53);
    let err = icmp4("9.9.9.9", "10.0.0.5", 3, 3, [0; 4], &other[..28]);
    assert_eq!(
        run(&mut f, IN, err, 2).0,
        Verdict::Drop(DropReason::Default)
    );
    // ICMPv6: a destination unreachable quoting a tracked IPv6 flow passes too.
    let out6 = udp6("fd00::5", 1000, "2001:db8::1", 53);
    assert_eq!(run(&mut f, OUT, out6.clone(), 2).0, Verdict::Accept);
    let mut err6 = out6.clone();
    err6[8..24].copy_from_slice(&a6("2001:db8::ff"));
    err6[24..40].copy_from_slice(&a6("fd00::5"));
    err6[6] = 58;
    err6.truncate(40);
    err6.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    err6.extend_from_slice(&out6);
    let pl = (err6.len() - 40) as u16;
    err6[4..6].copy_from_slice(&pl.to_be_bytes());
    assert_eq!(run(&mut f, IN, err6, 2).0, Verdict::Accept);
    assert_eq!(f.stats().related, 2);
    // An error quoting a truncated header is malformed, not a panic.
    let err = icmp4("9.9.9.9", "10.0.0.5", 3, 3, [0; 4], &out[..22]);
    assert_eq!(
        run(&mut f, IN, err, 3).0,
        Verdict::Drop(DropReason::Malformed)
    );
}

#[test]
fn stateless_rule_tracks_nothing() {
    let mut r = rule(1, IN, Action::Allow, "udp");
    r.destination_ports = vec![port(53)];
    r.stateless = true;
    let mut f = fw(vec![r]);
    assert_eq!(
        run(&mut f, IN, udp4("1.1.1.1", 999, "10.0.0.5", 53), 0).0,
        Verdict::Accept
    );
    assert_eq!(f.conntrack().occupancy, 0);
    // Stateful default egress creates an entry for the answer, unless it is stateless too.
    let mut f2 = fw(vec![]);
    assert_eq!(
        run(&mut f2, IN, udp4("1.1.1.1", 999, "10.0.0.5", 53), 0).0,
        Verdict::Drop(DropReason::Default)
    );
}

#[test]
fn rule_change_cuts_forbidden_connections() {
    let mut ssh = rule(1, IN, Action::Allow, "tcp");
    ssh.destination_ports = vec![port(22)];
    let mut web = rule(2, IN, Action::Allow, "tcp");
    web.destination_ports = vec![port(80)];
    let mut f = fw(vec![ssh.clone(), web.clone()]);
    for (dp, t) in [(22u16, 0u64), (80, 10)] {
        assert_eq!(
            run(&mut f, IN, tcp4("1.2.3.4", 5000, "10.0.0.5", dp, SYN), t).0,
            Verdict::Accept
        );
        assert_eq!(
            run(
                &mut f,
                OUT,
                tcp4("10.0.0.5", dp, "1.2.3.4", 5000, SYNACK),
                t + 1
            )
            .0,
            Verdict::Accept
        );
        assert_eq!(
            run(
                &mut f,
                IN,
                tcp4("1.2.3.4", 5000, "10.0.0.5", dp, ACK),
                t + 2
            )
            .0,
            Verdict::Accept
        );
    }
    let g = f.generation();
    let change = f.set_policy(&policy(vec![web])).expect("valid");
    assert_eq!(change.generation, g + 1);
    assert_eq!(change.cut, 1);
    assert_eq!(f.conntrack().occupancy, 1);
    // Untracked now: the rules judge it (no SSH rule any more).
    assert_eq!(
        run(&mut f, IN, tcp4("1.2.3.4", 5000, "10.0.0.5", 22, ACK), 20).0,
        Verdict::Drop(DropReason::Default)
    );
    assert_eq!(
        run(&mut f, OUT, tcp4("10.0.0.5", 22, "1.2.3.4", 5000, ACK), 21).0,
        Verdict::Drop(DropReason::TcpNoConnection)
    );
    assert_eq!(
        run(&mut f, IN, tcp4("1.2.3.4", 5000, "10.0.0.5", 80, ACK), 22).0,
        Verdict::Accept
    );
    // A bad policy changes nothing.
    let mut bad = rule(3, IN, Action::Allow, "tcp");
    bad.destination_ports = vec![port(70000)];
    assert!(f.set_policy(&policy(vec![bad])).is_err());
    assert_eq!(f.generation(), g + 1);
    assert_eq!(
        run(&mut f, IN, tcp4("1.2.3.4", 5000, "10.0.0.5", 80, ACK), 23).0,
        Verdict::Accept
    );
}

#[test]
fn conntrack_limit_is_per_tenant() {
    let cfg = Config {
        conntrack_limit: 4,
        ..Config::default()
    };
    let mut a = fw_with(cfg.clone(), vec![], &NatConfig::default());
    let mut b = fw_with(cfg, vec![], &NatConfig::default());
    for i in 0..4 {
        assert_eq!(
            run(&mut a, OUT, udp4("10.0.0.5", 1000 + i, "9.9.9.9", 53), 0).0,
            Verdict::Accept
        );
    }
    assert_eq!(
        run(&mut a, OUT, udp4("10.0.0.5", 2000, "9.9.9.9", 53), 0).0,
        Verdict::Drop(DropReason::ConntrackFull)
    );
    assert_eq!(a.conntrack().occupancy, 4);
    assert_eq!(a.conntrack().full, 1);
    assert_eq!(
        run(&mut b, OUT, udp4("10.0.0.5", 2000, "9.9.9.9", 53), 0).0,
        Verdict::Accept
    );
    assert_eq!(b.conntrack().occupancy, 1);
    // Once the old flows expire (30 s unreplied), room comes back without any other call.
    assert_eq!(
        run(&mut a, OUT, udp4("10.0.0.5", 2000, "9.9.9.9", 53), secs(31)).0,
        Verdict::Accept
    );
}

#[test]
fn syn_flood_cap_evicts_oldest_half_open_and_rate_limits() {
    let cfg = Config {
        max_embryonic: 8,
        syn_rate: 1000,
        syn_burst: 1000,
        ..Config::default()
    };
    let mut allow = rule(1, IN, Action::Allow, "tcp");
    allow.destination_ports = vec![port(80)];
    let mut f = fw_with(cfg, vec![allow.clone()], &NatConfig::default());
    for i in 0..20u16 {
        assert_eq!(
            run(
                &mut f,
                IN,
                tcp4("6.6.6.6", 1000 + i, "10.0.0.5", 80, SYN),
                0
            )
            .0,
            Verdict::Accept
        );
    }
    assert_eq!(f.conntrack().embryonic, 8);
    assert_eq!(f.conntrack().evicted_embryonic, 12);
    // The oldest went: the server's SYN-ACK to the first is no reply any more; to the last it is.
    assert_eq!(
        run(
            &mut f,
            OUT,
            tcp4("10.0.0.5", 80, "6.6.6.6", 1000, SYNACK),
            1
        )
        .0,
        Verdict::Drop(DropReason::TcpNoConnection)
    );
    assert_eq!(
        run(
            &mut f,
            OUT,
            tcp4("10.0.0.5", 80, "6.6.6.6", 1019, SYNACK),
            1
        )
        .0,
        Verdict::Accept
    );

    let cfg = Config {
        syn_rate: 10,
        syn_burst: 5,
        ..Config::default()
    };
    let mut f = fw_with(cfg, vec![allow], &NatConfig::default());
    let mut ok = 0;
    for i in 0..50u16 {
        if run(
            &mut f,
            IN,
            tcp4("6.6.6.6", 1000 + i, "10.0.0.5", 80, SYN),
            0,
        )
        .0 == Verdict::Accept
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 5, "the burst");
    assert_eq!(f.stats().drops(DropReason::SynFlood), 45);
    // 1 s later: 10 more.
    let mut later = 0;
    for i in 0..50u16 {
        if run(
            &mut f,
            IN,
            tcp4("6.6.6.6", 3000 + i, "10.0.0.5", 80, SYN),
            secs(1),
        )
        .0 == Verdict::Accept
        {
            later += 1;
        }
    }
    assert_eq!(later, 5, "burst caps what a second banks");
}

#[test]
fn tcp_timeouts_follow_the_state() {
    let mut f = fw(vec![]);
    let c = |f: &mut crate::Firewall, d, fl, t| {
        let p = if d == OUT {
            tcp4("10.0.0.5", 40000, "1.2.3.4", 80, fl)
        } else {
            tcp4("1.2.3.4", 80, "10.0.0.5", 40000, fl)
        };
        run(f, d, p, t).0
    };
    // SYN_SENT lives 120 s.
    assert_eq!(c(&mut f, OUT, SYN, 0), Verdict::Accept);
    assert_eq!(
        c(&mut f, IN, SYNACK, secs(121)),
        Verdict::Drop(DropReason::Default)
    );
    assert_eq!(f.conntrack().occupancy, 0);
    // Established lives a day, not forever.
    let t0 = secs(200);
    assert_eq!(c(&mut f, OUT, SYN, t0), Verdict::Accept);
    assert_eq!(c(&mut f, IN, SYNACK, t0 + 1), Verdict::Accept);
    assert_eq!(c(&mut f, OUT, ACK, t0 + 2), Verdict::Accept);
    assert_eq!(c(&mut f, IN, ACK, t0 + secs(3600)), Verdict::Accept);
    let t1 = t0 + secs(3600);
    assert_eq!(
        c(&mut f, IN, ACK, t1 + secs(86_401)),
        Verdict::Drop(DropReason::Default)
    );
    // Teardown: FIN both ways, last ACK -> TIME_WAIT (120 s).
    let t0 = secs(1_000_000);
    assert_eq!(c(&mut f, OUT, SYN, t0), Verdict::Accept);
    assert_eq!(c(&mut f, IN, SYNACK, t0), Verdict::Accept);
    assert_eq!(c(&mut f, OUT, ACK, t0), Verdict::Accept);
    assert_eq!(c(&mut f, OUT, FIN | ACK, t0), Verdict::Accept);
    assert_eq!(c(&mut f, IN, FIN | ACK, t0), Verdict::Accept);
    assert_eq!(c(&mut f, OUT, ACK, t0), Verdict::Accept);
    assert_eq!(
        c(&mut f, IN, ACK, t0 + secs(119)),
        Verdict::Accept,
        "TIME_WAIT still there"
    );
    assert_eq!(
        c(&mut f, IN, ACK, t0 + secs(119) + secs(121)),
        Verdict::Drop(DropReason::Default)
    );
    // A SYN-ACK in the wrong direction while SYN_SENT is invalid.
    assert_eq!(c(&mut f, OUT, SYN, t0 + secs(1000)), Verdict::Accept);
    assert_eq!(
        c(&mut f, IN, ACK, t0 + secs(1000)),
        Verdict::Drop(DropReason::TcpInvalid)
    );
}

#[test]
fn reject_answers_are_well_formed_and_rate_limited() {
    let mut r = rule(1, IN, Action::Reject, "any");
    r.log = true;
    let cfg = Config {
        reject_rate: 1,
        reject_burst: 3,
        ..Config::default()
    };
    let mut f = fw_with(cfg, vec![r], &NatConfig::default());
    let mut reply = [0u8; 1600];
    let mut syn = tcp4("1.2.3.4", 5555, "10.0.0.5", 23, SYN);
    let v = f.process(IN, &mut syn, 0, &mut reply);
    let Verdict::Reject { len } = v else {
        panic!("{v:?}")
    };
    let rst = &reply[..len];
    assert_eq!(len, 40);
    assert_checksums(rst);
    assert_eq!(&rst[12..16], &a4("10.0.0.5"));
    assert_eq!(&rst[16..20], &a4("1.2.3.4"));
    assert_eq!(u16::from_be_bytes([rst[20], rst[21]]), 23);
    assert_eq!(u16::from_be_bytes([rst[22], rst[23]]), 5555);
    assert_eq!(rst[33], 0x14, "RST|ACK");
    // ack = seq + 4 bytes of data + SYN
    assert_eq!(
        u32::from_be_bytes([rst[28], rst[29], rst[30], rst[31]]),
        1005
    );

    let mut u = udp4("1.2.3.4", 5555, "10.0.0.5", 161);
    let Verdict::Reject { len } = f.process(IN, &mut u, 0, &mut reply) else {
        panic!()
    };
    let icmp = &reply[..len];
    assert_checksums(icmp);
    assert_eq!(
        (icmp[9], icmp[20], icmp[21]),
        (1, 3, 3),
        "ICMP port unreachable"
    );
    assert_eq!(&icmp[28..28 + u.len()], &u[..], "quotes the datagram");

    let mut u6 = udp6("2001:db8::1", 5555, "fd00::5", 161);
    let Verdict::Reject { len } = f.process(IN, &mut u6, 0, &mut reply) else {
        panic!()
    };
    let icmp6 = &reply[..len];
    assert_checksums(icmp6);
    assert_eq!((icmp6[6], icmp6[40], icmp6[41]), (58, 1, 4));
    // The fourth within the same second is only dropped.
    let mut again = udp4("1.2.3.4", 5555, "10.0.0.5", 161);
    assert_eq!(
        f.process(IN, &mut again, 0, &mut reply),
        Verdict::Drop(DropReason::Reject)
    );
    assert_eq!(f.stats().rejects_rate_limited, 1);
    assert_eq!(f.stats().rejects_sent, 3);
    // Rejecting a RST answers nothing.
    let mut rst_in = tcp4("1.2.3.4", 5555, "10.0.0.5", 23, 0x04);
    assert_eq!(
        f.process(IN, &mut rst_in, secs(10), &mut reply),
        Verdict::Drop(DropReason::Reject)
    );
    // A reply buffer too small gets no partial answer.
    let mut tiny = [0u8; 10];
    let mut syn = tcp4("1.2.3.4", 5555, "10.0.0.5", 23, SYN);
    assert_eq!(
        f.process(IN, &mut syn, secs(20), &mut tiny),
        Verdict::Drop(DropReason::Reject)
    );
}

#[test]
fn log_rate_limit_holds() {
    let mut r = rule(1, IN, Action::Drop, "udp");
    r.log = true;
    let cfg = Config {
        log_rate: 2,
        log_burst: 3,
        log_capacity: 100,
        ..Config::default()
    };
    let mut f = fw_with(cfg, vec![r], &NatConfig::default());
    for _ in 0..10 {
        run(&mut f, IN, udp4("1.2.3.4", 1, "10.0.0.5", 2), 0);
    }
    assert_eq!(f.log_stats().written, 3);
    assert_eq!(f.log_stats().rate_limited, 7);
    for _ in 0..10 {
        run(&mut f, IN, udp4("1.2.3.4", 1, "10.0.0.5", 2), secs(1));
    }
    assert_eq!(f.log_stats().written, 5, "2 per second after the burst");
    let entries: Vec<_> = f.drain_log().collect();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0].rule_id, Some(1));
    assert_eq!(entries[0].action, Action::Drop);
    assert_eq!(f.drain_log().count(), 0);
    // Bounded ring: the oldest entries go.
    let cfg = Config {
        log_rate: 1000,
        log_burst: 1000,
        log_capacity: 4,
        ..Config::default()
    };
    let mut r = rule(1, IN, Action::Drop, "udp");
    r.log = true;
    let mut f = fw_with(cfg, vec![r], &NatConfig::default());
    for i in 0..10 {
        run(&mut f, IN, udp4("1.2.3.4", 1, "10.0.0.5", 2), i);
    }
    assert_eq!(f.drain_log().count(), 4);
    assert_eq!(f.log_stats().overwritten, 6);
}

/// `p` (IPv4/TCP from `tcp4`) with its sequence number moved by `by`, checksum fixed.
fn shifted(mut p: Vec<u8>, by: u32) -> Vec<u8> {
    let seq = u32::from_be_bytes([p[24], p[25], p[26], p[27]]).wrapping_add(by);
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[36..38].fill(0);
    fill(&mut p, 20, 6, 16);
    p
}

#[test]
fn out_of_window_segments_from_outside_neither_kill_nor_enter_a_connection() {
    let mut f = fw(vec![]);
    let out = |fl| tcp4("10.0.0.5", 40000, "1.2.3.4", 80, fl);
    let inn = |fl| tcp4("1.2.3.4", 80, "10.0.0.5", 40000, fl);
    assert_eq!(run(&mut f, OUT, out(SYN), 0).0, Verdict::Accept);
    assert_eq!(run(&mut f, IN, inn(SYNACK), 1).0, Verdict::Accept);
    assert_eq!(run(&mut f, OUT, out(ACK), 2).0, Verdict::Accept);
    // A blind RST from outside with a guessed tuple but not the sequence: dropped, and the
    // connection lives on.
    const RST: u8 = 0x04;
    for by in [
        1u32 << 20,
        1 << 31,
        0x8000_0000 + 12345,
        u32::MAX - (1 << 20),
    ] {
        assert_eq!(
            run(&mut f, IN, shifted(inn(RST), by), 3).0,
            Verdict::Drop(DropReason::TcpWindow),
            "RST {by} off"
        );
        assert_eq!(
            run(&mut f, IN, shifted(inn(ACK), by), 3).0,
            Verdict::Drop(DropReason::TcpWindow),
            "data {by} off"
        );
    }
    assert_eq!(f.conntrack().occupancy, 1);
    assert_eq!(f.stats().drops(DropReason::TcpWindow), 8);
    assert_eq!(run(&mut f, IN, inn(ACK), 4).0, Verdict::Accept);
    assert_eq!(run(&mut f, OUT, out(ACK), 5).0, Verdict::Accept);
    // An in-window RST closes it as before.
    assert_eq!(run(&mut f, IN, inn(RST), 6).0, Verdict::Accept);
    assert_eq!(
        run(&mut f, IN, inn(ACK), 7).0,
        Verdict::Accept,
        "CLOSE lingers"
    );
    assert_eq!(
        run(&mut f, IN, inn(ACK), 7 + secs(11)).0,
        Verdict::Drop(DropReason::Default),
        "closed and expired"
    );
}
