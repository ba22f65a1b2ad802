//! Floating IPs, source NAT and routed subnets, with every checksum verified independently.

use super::build::*;
use crate::nat::{FloatingIp, NatConfig, SnatNetwork};
use crate::rule::Action;
use crate::{Config, DropReason, Firewall, Verdict};

const SYN: u8 = 0x02;
const SYNACK: u8 = 0x12;

fn nat() -> NatConfig {
    NatConfig {
        floating: vec![FloatingIp {
            public: "198.51.100.7".parse().expect("addr"),
            private: "10.0.0.5".parse().expect("addr"),
        }],
        snat: vec![SnatNetwork {
            network: "10.0.0.0/24".parse().expect("cidr"),
            outside: "203.0.113.1".parse().expect("addr"),
        }],
        snat_ports: (1024, 65535),
    }
}

fn ssh_fw() -> Firewall {
    let mut ssh = rule(1, IN, Action::Allow, "tcp");
    ssh.destination_ports = vec![port(22)];
    fw_with(Config::default(), vec![ssh], &nat())
}

fn addr(p: &[u8], off: usize) -> [u8; 4] {
    [p[off], p[off + 1], p[off + 2], p[off + 3]]
}

fn port_at(p: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([p[off], p[off + 1]])
}

#[test]
fn floating_ip_is_translated_both_ways() {
    let mut f = ssh_fw();
    let (v, p) = run(
        &mut f,
        IN,
        tcp4("1.2.3.4", 5000, "198.51.100.7", 22, SYN),
        0,
    );
    assert_eq!(v, Verdict::Accept);
    assert_eq!(addr(&p, 16), a4("10.0.0.5"));
    assert_checksums(&p);
    let (v, p) = run(
        &mut f,
        OUT,
        tcp4("10.0.0.5", 22, "1.2.3.4", 5000, SYNACK),
        1,
    );
    assert_eq!(v, Verdict::Accept);
    assert_eq!(addr(&p, 12), a4("198.51.100.7"));
    assert_eq!(port_at(&p, 20), 22, "1:1 keeps ports");
    assert_checksums(&p);
    // The floating VM's own outgoing traffic leaves from its public address, not the SNAT one.
    let (v, p) = run(&mut f, OUT, udp4("10.0.0.5", 4000, "9.9.9.9", 53), 2);
    assert_eq!(v, Verdict::Accept);
    assert_eq!((addr(&p, 12), port_at(&p, 20)), (a4("198.51.100.7"), 4000));
    assert_checksums(&p);
    // A port the rules do not open stays closed on the floating IP.
    assert_eq!(
        run(
            &mut f,
            IN,
            tcp4("1.2.3.4", 5000, "198.51.100.7", 23, SYN),
            3
        )
        .0,
        Verdict::Drop(DropReason::Default)
    );
}

#[test]
fn source_nat_both_ways_with_checksums() {
    let mut f = ssh_fw();
    let (v, out) = run(&mut f, OUT, tcp4("10.0.0.6", 40000, "1.2.3.4", 443, SYN), 0);
    assert_eq!(v, Verdict::Accept);
    assert_eq!(addr(&out, 12), a4("203.0.113.1"));
    let p = port_at(&out, 20);
    assert_eq!(p, 40000, "port preserved when free");
    assert_checksums(&out);
    let (v, back) = run(
        &mut f,
        IN,
        tcp4("1.2.3.4", 443, "203.0.113.1", p, SYNACK),
        1,
    );
    assert_eq!(v, Verdict::Accept);
    assert_eq!(
        (addr(&back, 16), port_at(&back, 22)),
        (a4("10.0.0.6"), 40000)
    );
    assert_checksums(&back);
    // A second VM with the same source port gets another outside port.
    let (_, out2) = run(&mut f, OUT, tcp4("10.0.0.7", 40000, "1.2.3.4", 443, SYN), 2);
    let p2 = port_at(&out2, 20);
    assert_ne!(p2, p);
    assert_checksums(&out2);
    let (v, back2) = run(
        &mut f,
        IN,
        tcp4("1.2.3.4", 443, "203.0.113.1", p2, SYNACK),
        3,
    );
    assert_eq!(v, Verdict::Accept);
    assert_eq!(addr(&back2, 16), a4("10.0.0.7"));
    // UDP with no checksum keeps none; ICMP echo identifiers are translated.
    let mut u = udp4("10.0.0.6", 5000, "9.9.9.9", 53);
    u[26] = 0;
    u[27] = 0;
    let (v, uo) = run(&mut f, OUT, u, 4);
    assert_eq!(v, Verdict::Accept);
    assert_eq!(&uo[26..28], &[0, 0]);
    assert_eq!(addr(&uo, 12), a4("203.0.113.1"));
    assert_checksums(&uo);
    run(&mut f, OUT, echo4("10.0.0.7", "9.9.9.9", true, 9), 5);
    let (v, e) = run(&mut f, OUT, echo4("10.0.0.6", "9.9.9.9", true, 9), 5);
    assert_eq!(v, Verdict::Accept);
    let id = port_at(&e, 24);
    assert_ne!(
        id, 9,
        "the second echo id 9 on one outside address is moved"
    );
    assert_checksums(&e);
    let (v, r) = run(&mut f, IN, echo4("9.9.9.9", "203.0.113.1", false, id), 6);
    assert_eq!(v, Verdict::Accept);
    assert_eq!((addr(&r, 16), port_at(&r, 24)), (a4("10.0.0.6"), 9));
    assert_checksums(&r);
    // Routed (not SNAT, not floating) addresses pass untranslated.
    let (v, routed) = run(&mut f, OUT, udp4("192.0.2.10", 7, "9.9.9.9", 53), 7);
    assert_eq!(v, Verdict::Accept);
    assert_eq!(addr(&routed, 12), a4("192.0.2.10"));
    // Nothing reaches the SNAT address unasked.
    assert_eq!(
        run(&mut f, IN, tcp4("1.2.3.4", 443, "203.0.113.1", 999, SYN), 8).0,
        Verdict::Drop(DropReason::Default)
    );
}

#[test]
fn icmp_error_quoting_a_translated_packet_is_translated_back() {
    let mut f = ssh_fw();
    let (_, out) = run(&mut f, OUT, udp4("10.0.0.6", 5000, "9.9.9.9", 53), 0);
    assert_eq!(addr(&out, 12), a4("203.0.113.1"));
    let oport = port_at(&out, 20);
    let err = icmp4("9.9.9.9", "203.0.113.1", 3, 3, [0; 4], &out);
    let (v, e) = run(&mut f, IN, err, 1);
    assert_eq!(v, Verdict::Accept);
    assert_eq!(addr(&e, 16), a4("10.0.0.6"), "outer destination");
    assert_eq!(addr(&e, 28 + 12), a4("10.0.0.6"), "quoted source");
    assert_eq!(port_at(&e, 48), 5000, "quoted source port");
    let _ = oport;
    assert_checksums(&e);
    // The quoted UDP checksum still matches its (translated) quoted datagram.
    assert_checksums(&e[28..]);

    // Floating: an error about the public address goes to the VM with the private one quoted.
    let (_, out) = run(&mut f, OUT, udp4("10.0.0.5", 6000, "9.9.9.9", 53), 2);
    let err = icmp4("9.9.9.9", "198.51.100.7", 11, 0, [0; 4], &out);
    let (v, e) = run(&mut f, IN, err, 3);
    assert_eq!(v, Verdict::Accept);
    assert_eq!(
        (addr(&e, 16), addr(&e, 28 + 12)),
        (a4("10.0.0.5"), a4("10.0.0.5"))
    );
    assert_checksums(&e);
}

#[test]
fn snat_port_exhaustion_is_a_drop_not_a_panic() {
    let mut cfg = nat();
    cfg.snat_ports = (1000, 1003);
    let small = Config {
        conntrack_limit: 64,
        ..Config::default()
    };
    let mut f = fw_with(small, vec![], &cfg);
    for i in 0..4u16 {
        assert_eq!(
            run(&mut f, OUT, udp4("10.0.0.9", 2000 + i, "9.9.9.9", 53), 0).0,
            Verdict::Accept
        );
    }
    assert_eq!(
        run(&mut f, OUT, udp4("10.0.0.9", 3000, "9.9.9.9", 53), 0).0,
        Verdict::Drop(DropReason::SnatExhausted)
    );
    // Ports come back when their connections expire.
    assert_eq!(
        run(&mut f, OUT, udp4("10.0.0.9", 3000, "9.9.9.9", 53), secs(31)).0,
        Verdict::Accept
    );
    // A stateless allow cannot source-NAT.
    let mut r = rule(1, OUT, Action::Allow, "udp");
    r.stateless = true;
    let mut f = fw_with(Config::default(), vec![r], &nat());
    assert_eq!(
        run(&mut f, OUT, udp4("10.0.0.9", 1, "9.9.9.9", 53), 0).0,
        Verdict::Drop(DropReason::SnatNeedsState)
    );
}

#[test]
fn nat_config_errors_name_the_field() {
    let mut c = nat();
    c.floating.push(c.floating[0]);
    let e = Firewall::new(Config::default(), &policy(vec![]), &c)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("floating[1].public"), "{e}");
    let mut c = nat();
    c.snat[0].outside = c.floating[0].public;
    let e = Firewall::new(Config::default(), &policy(vec![]), &c)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("snat[0].outside"), "{e}");
}
