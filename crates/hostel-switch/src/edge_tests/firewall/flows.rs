//! Traffic through firewalled edges, from and to the namespace's kernel.

use super::*;
use std::net::{SocketAddr, TcpStream, UdpSocket};

/// The namespace's kernel connects to the floating address; VM `a2` (a test ring) answers
/// the SYN it receives translated. Returns the client's socket, connected, and the
/// client's port and first sequence number.
fn connect_to_a2(rig: &mut FwRig, port: u16) -> (TcpStream, u16, u32) {
    let client =
        rig.in_ns(move || TcpStream::connect_timeout(&SocketAddr::from((FLOAT1, port)), WAIT));
    let syn = vm_gets(&mut rig.vms[A2], "the SYN, translated to a2", |f| {
        is_tcp(f) && ports(f).1 == port && f[47] == SYN
    });
    // The namespace's kernel picks its on-link address (the gateway's) as the source.
    assert_eq!((ipv4_of(&syn, 26), ipv4_of(&syn, 30)), (UPSTREAM, PRIV));
    assert!(l4_ok(&syn), "TCP checksum after translation");
    let (cport, cseq) = (ports(&syn).0, seq_of(&syn));
    let synack = tcp(
        (VM_A, GW_A),
        (PRIV, port),
        (UPSTREAM, cport),
        7_000,
        cseq.wrapping_add(1),
        SYN | ACK,
        &[],
    );
    rig.send(A2, &synack);
    let s = client
        .join()
        .expect("client thread")
        .expect("the external host's connect through the floating address");
    // The client's ACK completes the handshake at the VM.
    vm_gets(&mut rig.vms[A2], "the handshake's ACK", |f| {
        is_tcp(f) && ports(f) == (cport, port) && f[47] == ACK
    });
    (s, cport, cseq)
}

#[test]
fn a_floating_ip_answers_only_allowed_ports_and_rejects_with_rst_or_icmp() {
    let Some(mut rig) = FwRig::new() else { return };
    let wire = rig.net.wire();
    rig.gateway_resolved();

    // Allowed: a real connect() from the external host completes through the translation
    // both ways (the SYN-ACK leaves from the floating address, or connect would not return).
    let (_s, _, _) = connect_to_a2(&mut rig, 22);

    // Denied: a SYN to another port is dropped by the default policy; the VM sees nothing.
    let before = rig.drops("t1", "default");
    let gw = rig.net.gw_mac;
    wire.send(&tcp(
        (gw, EXT_MAC),
        (FAR, 40001),
        (FLOAT1, 23),
        1,
        0,
        SYN,
        &[],
    ));
    wait_for("the denied SYN's drop", || {
        (rig.drops("t1", "default") > before).then_some(())
    });
    assert!(
        rig.vms[A2].received().is_empty(),
        "a denied SYN reached the VM"
    );

    // Rejected TCP: the external host's connect() is refused (it received a RST from the
    // floating address).
    let refused = rig
        .in_ns(|| TcpStream::connect_timeout(&SocketAddr::from((FLOAT1, 25)), WAIT))
        .join()
        .expect("client thread");
    let e = refused.expect_err("a reject rule let a connection through");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    let rst = wire
        .expect(WAIT, |f| is_tcp(f) && ports(f).0 == 25 && f[47] & RST != 0)
        .expect("the RST on the wire");
    assert_eq!(
        ipv4_of(&rst, 26),
        FLOAT1,
        "the RST comes from the public address"
    );

    // Rejected UDP: an ICMP port unreachable, which the kernel reports on the connected
    // socket as a refused connection.
    let r = rig
        .in_ns(|| {
            let u = UdpSocket::bind((FAR, 0))?;
            u.set_read_timeout(Some(WAIT))?;
            u.connect((FLOAT1, 69))?;
            u.send(b"tftp?")?;
            let mut b = [0u8; 16];
            u.recv(&mut b).map(|_| ())
        })
        .join()
        .expect("client thread");
    let e = r.expect_err("a reject rule answered nothing, or let the datagram through");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    assert!(rig.vms[A2].received().is_empty());
    let fw = rig.fw("t1");
    assert_eq!(fw.rejects_sent, 2);
    let hits = |id: u32| {
        fw.rules
            .iter()
            .find(|r| r.rule == Some(id))
            .map_or(0, |r| r.packets)
    };
    assert!(
        hits(1) >= 1 && hits(2) >= 1 && hits(3) >= 1,
        "{:?}",
        fw.rules
    );
}

#[test]
fn source_nat_routed_subnets_and_two_tenants_with_one_private_subnet() {
    let Some(mut rig) = FwRig::new() else { return };
    let wire = rig.net.wire();
    rig.gateway_resolved();
    // (VM, its MAC and gateway MAC, source its echo request must have on the wire)
    let cases = [
        (A3, VM_A3, GW_A, PRIV3, OUT1, "a3 via source NAT"),
        (
            R2,
            VM_R,
            GW_R,
            IP_R,
            IP_R,
            "r2 in a routed subnet, untranslated",
        ),
        (A2, VM_A, GW_A, PRIV, FLOAT1, "a2 via its floating address"),
        (
            B2,
            VM_B,
            GW_B,
            PRIV,
            FLOAT2,
            "b2, t2's 10.1.0.2, via its floating address",
        ),
    ];
    for (i, mac, gw, ip, public, what) in cases {
        let id = 0x5100 + i as u16;
        rig.send(i, &echo_request(mac, gw, ip, FAR, id));
        let seen = wire
            .expect(WAIT, |f| {
                f.len() >= 42
                    && f[23] == 1
                    && f[34] == 8
                    && ipv4_of(f, 30) == FAR
                    && ipv4_of(f, 26) == public
            })
            .unwrap_or_else(|| panic!("{what}: no echo request from {public} on the wire"));
        assert!(l4_ok(&seen), "{what}: ICMP checksum");
        let reply = vm_gets(&mut rig.vms[i], what, |f| {
            f.len() >= 42 && f[23] == 1 && f[34] == 0
        });
        assert_eq!(
            (ipv4_of(&reply, 26), ipv4_of(&reply, 30)),
            (FAR, ip),
            "{what}: the reply translated back"
        );
        assert_eq!(reply[38..40], id.to_be_bytes(), "{what}: echo id restored");
        assert!(l4_ok(&reply), "{what}: ICMP checksum of the reply");
    }
    assert!(rig.fw("t1").conntrack >= 3 && rig.fw("t2").conntrack >= 1);
}

#[test]
fn one_tenant_reaches_anothers_floating_ip_only_where_it_allows() {
    let Some(mut rig) = FwRig::new() else { return };
    // a3 (t1, source NAT) to t2's floating address: allowed on 80, translated twice (out
    // of t1 as 203.0.113.10, into t2 as 10.1.0.2), never on the wire.
    rig.send(
        A3,
        &tcp((VM_A3, GW_A), (PRIV3, 41000), (FLOAT2, 80), 1, 0, SYN, &[]),
    );
    let got = rig.vms[B2].received();
    assert_eq!(got.len(), 1, "b2 did not get the SYN to port 80");
    let g = &got[0].1;
    assert_eq!((ipv4_of(g, 26), ipv4_of(g, 30)), (OUT1, PRIV));
    assert_eq!(ports(g).1, 80);
    assert!(l4_ok(g));
    // Port 81 is not allowed by t2: dropped at t2's inbound, counted on the sender.
    let before = rig.vms[A3].rt.stats.drops(DropReason::Filtered);
    rig.send(
        A3,
        &tcp((VM_A3, GW_A), (PRIV3, 41001), (FLOAT2, 81), 1, 0, SYN, &[]),
    );
    assert!(rig.vms[B2].received().is_empty(), "t2 let port 81 in");
    assert_eq!(rig.vms[A3].rt.stats.drops(DropReason::Filtered), before + 1);
    assert_eq!(rig.drops("t2", "default"), 1);
}

#[test]
fn an_ipv6_rule_lets_in_only_what_it_names() {
    let Some(mut rig) = FwRig::new() else { return };
    let wire = rig.net.wire();
    let gw = rig.net.gw_mac;
    // From 2001:db8:ff::7 (allowed by rule 4): reaches r2, untranslated.
    wire.send(&echo6(gw, EXT_MAC, FAR6, IP6_A, 0x0606));
    let g = vm_gets(&mut rig.vms[R2], "the allowed echo6", |f| {
        f.len() >= 62 && f[12..14] == [0x86, 0xdd] && f[54] == 128
    });
    assert_eq!((ipv6_of(&g, 22), ipv6_of(&g, 38)), (FAR6, IP6_A));
    // From the gateway's address (not in the rule's source): dropped.
    let before = rig.drops("t1", "default");
    wire.send(&echo6(gw, EXT_MAC, UPSTREAM6, IP6_A, 0x0607));
    wait_for("the echo6 from elsewhere dropped", || {
        (rig.drops("t1", "default") > before).then_some(())
    });
    assert!(rig.vms[R2]
        .received()
        .iter()
        .all(|(_, f)| f[58..60] != [6, 7]));
}

#[test]
fn a_rule_change_mid_connection_cuts_it_and_a_restart_brings_the_rules_back() {
    let Some(mut rig) = FwRig::new() else { return };
    rig.gateway_resolved();
    let (mut s, _, _) = connect_to_a2(&mut rig, 22);
    use std::io::Write;
    s.write_all(b"before").expect("write before");
    vm_gets(&mut rig.vms[A2], "data before the change", |f| {
        is_tcp(f) && f.ends_with(b"before")
    });

    // The new policy no longer allows SSH: the connection is cut between two packets, the
    // table keeps the rest (t2's policy and table untouched).
    let mut p = policy1();
    p.rules.retain(|r| r.id != 1);
    let generation = rig
        .edge("t1")
        .set_policy(&p)
        .expect("a firewall")
        .expect("a valid policy");
    assert_eq!(generation, 2);
    assert!(rig.fw("t1").cut_by_policy >= 1);
    let dropped = |rig: &FwRig| rig.fw("t1").drops.values().sum::<u64>();
    let before = dropped(&rig);
    s.write_all(b"after").expect("write after");
    wait_for("the cut connection's segment dropped", || {
        (dropped(&rig) > before).then_some(())
    });

    assert!(
        rig.vms[A2]
            .received()
            .iter()
            .all(|(_, f)| !f.ends_with(b"after")),
        "a segment of the cut connection reached the VM"
    );

    // A restart (new firewalls from the same configuration): the rules apply to the first
    // packet. The original policy allows SSH again, and port 23 is still denied at once.
    rig.restart_filters();
    assert_eq!(rig.fw("t1").generation, 1);
    assert_eq!(rig.fw("t1").conntrack, 0, "tables start empty");
    let (_s2, _, _) = connect_to_a2(&mut rig, 22);
    let wire = rig.net.wire();
    let gw = rig.net.gw_mac;
    wire.send(&tcp(
        (gw, EXT_MAC),
        (FAR, 40009),
        (FLOAT1, 23),
        1,
        0,
        SYN,
        &[],
    ));
    wait_for("port 23 denied after the restart", || {
        (rig.drops("t1", "default") >= 1).then_some(())
    });
}

#[test]
fn a_full_conntrack_table_stops_only_its_tenant() {
    let Some(mut rig) = FwRig::with(|c| c.edges[1].conntrack_limit = 4) else {
        return;
    };
    let wire = rig.net.wire();
    rig.gateway_resolved();
    for port in 1..=6u16 {
        rig.send(B2, &udp(VM_B, GW_B, PRIV, FAR, 7000 + port, b"fill"));
    }
    let t2 = rig.fw("t2");
    assert_eq!(t2.conntrack_limit, 4);
    assert_eq!(t2.conntrack, 4);
    assert_eq!(t2.drops.get("conntrack_full").copied(), Some(2), "{t2:?}");
    // t1 is untouched: a new flow of a3's goes out and its reply comes back.
    rig.send(A3, &echo_request(VM_A3, GW_A, PRIV3, FAR, 0x7777));
    wire.expect(WAIT, |f| {
        f.len() >= 42 && f[23] == 1 && ipv4_of(f, 26) == OUT1
    })
    .expect("t1's echo request on the wire");
    vm_gets(&mut rig.vms[A3], "t1's echo reply", |f| {
        f.len() >= 42 && f[23] == 1 && f[34] == 0
    });
    assert_eq!(rig.drops("t1", "conntrack_full"), 0);
}

#[test]
fn the_log_rate_limit_holds() {
    let Some(rig) = FwRig::new() else { return };
    let gw = rig.net.gw_mac;
    let f = udp(gw, EXT_MAC, FAR, FLOAT1, 514, b"<13>log me");
    let t = rig.core.tables();
    let x = t.ext.as_ref().unwrap();
    let mut s = crate::datapath::edge::EdgeScratch::default();
    let mut reply = [0u8; crate::packet::REPLY_BUF];
    // 300 logged drops at one instant: the bucket's burst (200) is written, the rest counted.
    let now = crate::datapath::ratelimit::now_ns();
    for _ in 0..300 {
        let r = external::handle(&t, x, &f, &mut s, &mut reply, now);
        assert_eq!(r, Err(DropReason::Filtered));
    }
    let fw = rig.fw("t1");
    assert_eq!((fw.log_written, fw.log_rate_limited), (200, 100));
    let mut log = Vec::new();
    rig.edge("t1").drain_log(&mut log);
    assert_eq!(log.len(), 200);
    assert!(log
        .iter()
        .all(|e| e.rule == Some(5) && e.dport == 514 && e.src == IpAddr::V4(FAR)));
    let mut again = Vec::new();
    rig.edge("t1").drain_log(&mut again);
    assert!(again.is_empty(), "entries are read once");
}

/// Frames from a guest that leaves its transport checksum to the device (virtio-net's
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the field holds only the pseudo-header sum of the
/// *private* addresses) leave through source NAT with a whole, correct checksum for the
/// *public* source: the edge completes it before the firewall translates.
#[test]
fn offloaded_checksums_come_out_of_source_nat_correct() {
    let Some(mut rig) = FwRig::new() else { return };
    let wire = rig.net.wire();
    rig.gateway_resolved();
    let partial = |mut f: Vec<u8>, proto: u8, offset: u16| {
        let l4_len = f.len() - 34;
        let pseudo = checksum::pseudo4(PRIV3, FAR, proto, l4_len as u16);
        let at = 34 + usize::from(offset);
        f[at..at + 2].copy_from_slice(&(!checksum::finish(pseudo)).to_be_bytes());
        let hdr = VnetHdr {
            flags: crate::datapath::vnet::HDR_F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: offset,
            ..VnetHdr::default()
        };
        (hdr, f)
    };
    let udp_frame = udp(
        VM_A3,
        GW_A,
        PRIV3,
        FAR,
        7100,
        b"offloaded checksum, translated",
    );
    let tcp_syn = tcp(
        (VM_A3, GW_A),
        (PRIV3, 41000),
        (FAR, 7101),
        77,
        0,
        0x02,
        b"syn with data",
    );
    for (what, (hdr, f), proto, dport) in [
        ("udp", partial(udp_frame, 17, 6), 17u8, 7100u16),
        ("tcp", partial(tcp_syn, 6, 16), 6, 7101),
    ] {
        assert!(
            !l4_ok(&f),
            "{what}: the guest's frame has only a partial checksum"
        );
        rig.vms[A3].queue_tx(hdr, &f, 2);
        rig.vms[A3].run_tx(&rig.core);
        let seen = wire
            .expect(WAIT, |s| {
                s.len() >= 42
                    && s[12..14] == [8, 0]
                    && s[23] == proto
                    && u16::from_be_bytes([s[36], s[37]]) == dport
            })
            .unwrap_or_else(|| panic!("{what}: nothing on the wire"));
        assert_eq!(ipv4_of(&seen, 26), OUT1, "{what}: source-NATed");
        assert_eq!(checksum::checksum(&seen[14..34]), 0, "{what}: IP checksum");
        assert!(l4_ok(&seen), "{what}: transport checksum after NAT");
    }
}
