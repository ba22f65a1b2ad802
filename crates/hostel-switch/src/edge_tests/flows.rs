//! Traffic through the edges: out to the internet and back (IPv4 and IPv6), between two
//! tenants, and the switch's control of the external network.

use super::*;

#[test]
fn a_vm_reaches_the_internet_and_back_through_its_edge() {
    let Some(mut rig) = Rig::new() else { return };
    let wire = rig.net.wire();
    assert_eq!(rig.gateway_resolved(), rig.net.gw_mac);

    // Out: the routed public address leaves untranslated, from the external MAC to the
    // gateway's, one hop older.
    let out = udp(VM_A, GW_A, IP_A, FAR, 5000, b"to-the-internet");
    rig.a.queue_tx(VnetHdr::default(), &out, 2);
    rig.a.run_tx(&rig.core);
    let seen = wire
        .expect(WAIT, |f| {
            f.len() >= 42 && f[12..14] == [8, 0] && f[42..] == out[42..]
        })
        .expect("the VM's datagram never reached the wire");
    assert_eq!(MacAddr::from_slice(&seen[0..6]), Some(rig.net.gw_mac));
    assert_eq!(MacAddr::from_slice(&seen[6..12]), Some(EXT_MAC));
    assert_eq!((ipv4_of(&seen, 26), ipv4_of(&seen, 30)), (IP_A, FAR));
    assert_eq!(seen[22], out[22] - 1, "TTL decremented once");
    assert_eq!(
        checksum::checksum(&seen[14..34]),
        0,
        "IP checksum still valid"
    );

    // Back: the internet's echo reply to the public address is routed (by the namespace,
    // via the edge's outside address, which the switch answers ARP for) to the VM.
    let ping = echo_request(VM_A, GW_A, IP_A, FAR, 0x4242);
    rig.a.queue_tx(VnetHdr::default(), &ping, 1);
    rig.a.run_tx(&rig.core);
    let reply = vm_gets(&mut rig.a, "the echo reply", |f| {
        f.len() >= 42 && f[23] == 1 && f[34] == 0 && f[38..40] == [0x42, 0x42]
    });
    assert_eq!(MacAddr::from_slice(&reply[0..6]), Some(VM_A));
    assert_eq!(MacAddr::from_slice(&reply[6..12]), Some(GW_A));
    assert_eq!((ipv4_of(&reply, 26), ipv4_of(&reply, 30)), (FAR, IP_A));
    let neigh = sh(&format!("ip -n {} neigh show 203.0.113.10", rig.net.ns)).unwrap();
    assert!(
        neigh.contains(&EXT_MAC.to_string()),
        "the namespace did not learn the outside address at the external MAC: {neigh}"
    );
    let t = rig.core.tables();
    let t1 = &t.ext.as_ref().unwrap().edges[0].rt.stats;
    assert!(t1.tx_packets.load(Ordering::Relaxed) >= 2);
    assert!(t1.rx_packets.load(Ordering::Relaxed) >= 1);

    // ARP for a floating address is answered on the wire with the external MAC.
    let mut arp = vec![0u8; 60];
    arp[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    arp[6..12].copy_from_slice(&rig.net.gw_mac.0);
    arp[12..22].copy_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp[22..28].copy_from_slice(&rig.net.gw_mac.0);
    arp[28..32].copy_from_slice(&UPSTREAM.octets());
    arp[38..42].copy_from_slice(&[203, 0, 113, 11]);
    wire.send(&arp);
    let ans = wire
        .expect(WAIT, |f| {
            f.len() >= 42
                && f[12..14] == [8, 6]
                && f[20..22] == [0, 2]
                && f[28..32] == [203, 0, 113, 11]
        })
        .expect("no ARP reply for the floating address");
    assert_eq!(MacAddr::from_slice(&ans[22..28]), Some(EXT_MAC));

    // An address nobody owns is dropped and counted on the external port; so is ARP for it.
    let before = rig.ext_drops(DropReason::NoRoute);
    let stray = udp(
        rig.net.gw_mac,
        EXT_MAC,
        FAR,
        Ipv4Addr::new(203, 0, 113, 99),
        53,
        b"?",
    );
    wire.send(&stray);
    wait_for("the stray datagram's drop", || {
        (rig.ext_drops(DropReason::NoRoute) > before).then_some(())
    });
}

#[test]
fn two_tenants_meet_through_their_edges_not_the_wire() {
    let Some(mut rig) = Rig::new() else { return };
    let wire_frames = || rig.ext.port.stats.rx_packets.load(Ordering::Relaxed);
    let before = wire_frames();
    let f = udp(VM_A, GW_A, IP_A, IP_B, 5000, b"hello-tenant-b");
    rig.a.queue_tx(VnetHdr::default(), &f, 1);
    rig.a.run_tx(&rig.core);
    // Delivery is synchronous on the sender's thread: no wait needed.
    let got = rig.b.received();
    assert_eq!(got.len(), 1, "tenant B's VM did not get the datagram");
    let g = &got[0].1;
    assert_eq!(MacAddr::from_slice(&g[0..6]), Some(VM_B));
    assert_eq!(MacAddr::from_slice(&g[6..12]), Some(GW_B));
    assert_eq!((ipv4_of(g, 26), ipv4_of(g, 30)), (IP_A, IP_B));
    assert_eq!(g[22], f[22] - 2, "one hop per edge");
    assert_eq!(checksum::checksum(&g[14..34]), 0);
    assert_eq!(g[34..], f[34..]);
    assert_eq!(wire_frames(), before, "the hairpin went out on the wire");

    // B's inbound filter drops what it refuses: counted on the sender, nothing delivered.
    let refused = udp(VM_A, GW_A, IP_A, IP_B, 9, b"discard-me");
    rig.a.queue_tx(VnetHdr::default(), &refused, 1);
    rig.a.run_tx(&rig.core);
    assert!(rig.b.received().is_empty());
    assert_eq!(rig.a.rt.stats.drops(DropReason::Filtered), 1);

    // B's outbound filter answers instead of forwarding: the reply reaches B's VM from
    // its gateway, and nothing leaves.
    let answered = udp(VM_B, GW_B, IP_B, FAR, 7, b"echo-me");
    rig.b.queue_tx(VnetHdr::default(), &answered, 1);
    rig.b.run_tx(&rig.core);
    let r = rig.b.received();
    assert_eq!(r.len(), 1, "no reply from the edge filter");
    assert_eq!(MacAddr::from_slice(&r[0].1[6..12]), Some(GW_B));
    assert_eq!((ipv4_of(&r[0].1, 26), ipv4_of(&r[0].1, 30)), (FAR, IP_B));
    assert_eq!(rig.b.rt.stats.replies.load(Ordering::Relaxed), 1);

    // A TTL that runs out at the first edge is counted on the sender.
    let mut dying = udp(VM_A, GW_A, IP_A, IP_B, 5000, b"ttl");
    dying[22] = 1;
    let dying = with_ip_checksum(dying);
    rig.a.queue_tx(VnetHdr::default(), &dying, 1);
    rig.a.run_tx(&rig.core);
    assert_eq!(rig.a.rt.stats.drops(DropReason::TtlExceeded), 1);
    assert!(rig.b.received().is_empty());
    // ... and the sender hears it from its gateway (ICMP time exceeded).
    let te = rig.a.received();
    assert_eq!(te.len(), 1, "no time exceeded for the sender");
    let te = &te[0].1;
    assert_eq!((te[23], te[34]), (1, 11));
    assert_eq!(ipv4_of(te, 26), Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(ipv4_of(te, 30), IP_A);
}

#[test]
fn the_switch_sets_refuses_and_removes_the_external_network() {
    let net = match Internet::new() {
        Ok(n) => n,
        Err(e @ SetupError::NotRoot) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
        Err(e) => panic!("setting up the internet namespace: {e}"),
    };
    let sw = crate::Switch::new();
    let cfg = crate::SwitchConfig {
        networks: vec![
            network("a", "192.0.2.0/28", Ipv4Addr::new(192, 0, 2, 1), GW_A),
            network("b", "192.0.2.16/28", Ipv4Addr::new(192, 0, 2, 17), GW_B),
        ],
        ports: vec![],
        policies: vec![],
        external: Some(external_cfg(&net.nic)),
    };
    sw.apply(&cfg).unwrap();
    assert_eq!(sw.config(), cfg);
    let stats = sw.stats();
    assert!(stats.external.is_some());
    assert_eq!(stats.edges.keys().collect::<Vec<_>>(), ["t1", "t2"]);
    let mac = wait_for("the gateway resolved by the switch", || {
        sw.external_neighbor(IpAddr::V4(UPSTREAM))
    });
    assert_eq!(mac, net.gw_mac);

    // An edge naming a network the switch lacks is refused, naming the field; nothing moves.
    let mut bad = cfg.clone();
    bad.external.as_mut().unwrap().edges[1].networks = vec!["nope".into()];
    let err = sw.apply(&bad).unwrap_err().to_string();
    assert!(err.contains("external.edges[1].networks"), "{err}");
    assert_eq!(sw.config(), cfg);
    // A network with an uplink TAP cannot also be behind an edge.
    let mut both = cfg.clone();
    both.networks[0].uplink = Some("hx-nope".into());
    assert!(sw.apply(&both).is_err());
    assert_eq!(sw.config(), cfg);
    // An interface that does not exist is refused too.
    let mut gone = cfg.external.clone().unwrap();
    gone.interface = "hx-missing0".into();
    assert!(sw.set_external(Some(gone)).is_err());
    assert_eq!(sw.config(), cfg);

    sw.set_external(None).unwrap();
    assert!(sw.stats().external.is_none());
    assert!(sw.stats().edges.is_empty());
    sw.shutdown();
}

#[test]
fn ipv6_goes_out_and_comes_back_through_the_edge() {
    let Some(mut rig) = Rig::new() else { return };
    let wire = rig.net.wire();
    let gw = wait_for(
        "the IPv6 gateway resolved by neighbour solicitation",
        || rig.ext.neighbor(IpAddr::V6(UPSTREAM6)),
    );
    assert_eq!(gw, rig.net.gw_mac);
    let ping = echo6(VM_A, GW_A, IP6_A, FAR6, 0x6666);
    rig.a.queue_tx(VnetHdr::default(), &ping, 1);
    rig.a.run_tx(&rig.core);
    let seen = wire
        .expect(WAIT, |f| {
            f.len() >= 62 && f[12..14] == [0x86, 0xdd] && f[54] == 128
        })
        .expect("the echo request never reached the wire");
    assert_eq!(MacAddr::from_slice(&seen[0..6]), Some(rig.net.gw_mac));
    assert_eq!(MacAddr::from_slice(&seen[6..12]), Some(EXT_MAC));
    assert_eq!(seen[21], 63, "hop limit decremented once");
    assert_eq!((ipv6_of(&seen, 22), ipv6_of(&seen, 38)), (IP6_A, FAR6));
    // The reply is routed to the edge's outside6, which the switch answers NDP for.
    let reply = vm_gets(&mut rig.a, "the echo6 reply", |f| {
        f.len() >= 62 && f[12..14] == [0x86, 0xdd] && f[54] == 129 && f[58..60] == [0x66, 0x66]
    });
    assert_eq!(MacAddr::from_slice(&reply[0..6]), Some(VM_A));
    assert_eq!(MacAddr::from_slice(&reply[6..12]), Some(GW_A));
    assert_eq!((ipv6_of(&reply, 22), ipv6_of(&reply, 38)), (FAR6, IP6_A));

    // A hop limit that runs out at the edge: the sender hears ICMPv6 time exceeded from its
    // gateway, quoting its packet, and nothing leaves.
    let mut dying = echo6(VM_A, GW_A, IP6_A, FAR6, 0x6667);
    dying[21] = 1;
    let drops = rig.a.rt.stats.drops(DropReason::TtlExceeded);
    rig.a.queue_tx(VnetHdr::default(), &dying, 1);
    rig.a.run_tx(&rig.core);
    assert_eq!(rig.a.rt.stats.drops(DropReason::TtlExceeded), drops + 1);
    let te = rig.a.received();
    assert_eq!(te.len(), 1, "no time exceeded for the sender");
    let te = &te[0].1;
    assert_eq!((te[20], te[54], te[55]), (58, 3, 0), "ICMPv6 time exceeded");
    assert_eq!(MacAddr::from_slice(&te[6..12]), Some(GW_A));
    assert_eq!(ipv6_of(te, 38), IP6_A);
    assert_eq!(&te[62..], &dying[14..], "the packet quoted whole");
    let len = (te.len() - 54) as u32;
    let acc = checksum::pseudo6(&ipv6_of(te, 22), &IP6_A, 58, len);
    assert_eq!(checksum::finish(checksum::sum(acc, &te[54..])), 0);
}

/// Frames of several batches leave through the transmit ring (one kick per batch, slots
/// reused after the ring wraps), and a frame too big for a slot takes the `sendmsg` path:
/// every one reaches the wire.
#[test]
fn batches_leave_through_the_transmit_ring() {
    let Some(mut rig) = Rig::new() else { return };
    let wire = rig.net.wire();
    rig.gateway_resolved();
    const N: u16 = 301;
    const BIG: u16 = 150;
    let before = rig.ext.port.stats.rx_packets.load(Ordering::Relaxed);
    let mut seen = vec![false; N as usize];
    // Batch by batch, each read off the wire before the next is sent (the capture socket's
    // buffer holds a few hundred small frames, not all of them).
    for chunk in (0..N).collect::<Vec<_>>().chunks(64) {
        for &i in chunk {
            let len = if i == BIG { 4000 } else { 20 };
            let mut p = vec![0u8; len];
            p[..2].copy_from_slice(&i.to_be_bytes());
            let f = udp(VM_A, GW_A, IP_A, FAR, 6000, &p);
            rig.a.queue_tx(VnetHdr::default(), &f, 1);
        }
        rig.a.run_tx(&rig.core);
        let deadline = Instant::now() + WAIT;
        while chunk.iter().any(|&i| !seen[usize::from(i)]) && Instant::now() < deadline {
            if let Some(f) = wire.expect(Duration::from_millis(200), |f| {
                f.len() >= 44 && f[12..14] == [8, 0] && f[36..38] == 6000u16.to_be_bytes()
            }) {
                let i = usize::from(u16::from_be_bytes([f[42], f[43]]));
                if i == usize::from(BIG) {
                    assert_eq!(f.len(), 42 + 4000, "the big frame arrived cut");
                }
                seen[i] = true;
            }
        }
    }
    let missing: Vec<usize> = (0..N as usize).filter(|&i| !seen[i]).collect();
    assert!(
        missing.is_empty(),
        "frames never reached the wire: {missing:?}; external port {:?}, sender {:?}",
        rig.ext.port.stats.snapshot(),
        rig.a.rt.stats.snapshot()
    );
    let sent = rig.ext.port.stats.rx_packets.load(Ordering::Relaxed) - before;
    assert!(
        sent >= u64::from(N),
        "the external port counted {sent} frames out"
    );
    assert_eq!(rig.ext_drops(DropReason::UplinkError), 0);
}

/// A guest's TSO frame (one 3000-byte TCP segment for the NIC to cut in three).
fn tso_frame(dst_ip: Ipv4Addr) -> (VnetHdr, Vec<u8>) {
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let mut f = Vec::new();
    f.extend_from_slice(&GW_A.0);
    f.extend_from_slice(&VM_A.0);
    f.extend_from_slice(&[8, 0, 0x45, 0]);
    f.extend_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&IP_A.octets());
    f.extend_from_slice(&dst_ip.octets());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&7000u16.to_be_bytes());
    f.extend_from_slice(&1_000_000u32.to_be_bytes()); // seq
    f.extend_from_slice(&1u32.to_be_bytes()); // ack
    f.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(&payload);
    let f = with_ip_checksum(f);
    let mut f = f;
    // What a guest with checksum offload leaves in the TCP checksum: the pseudo-header sum.
    let pseudo = checksum::pseudo4(IP_A, dst_ip, 6, (20 + payload.len()) as u16);
    f[50..52].copy_from_slice(&(!checksum::finish(pseudo)).to_be_bytes());
    let hdr = VnetHdr {
        flags: crate::datapath::vnet::HDR_F_NEEDS_CSUM,
        gso_type: crate::datapath::vnet::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1000,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    (hdr, f)
}

fn tcp_checksum_ok(f: &[u8]) -> bool {
    let (src, dst) = (ipv4_of(f, 26), ipv4_of(f, 30));
    let tot = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let l4 = &f[34..14 + tot];
    let acc = checksum::pseudo4(src, dst, 6, l4.len() as u16);
    checksum::finish(checksum::sum(acc, l4)) == 0
}

/// A guest's TSO frame crosses the edge whole: to the wire it goes with its virtio-net
/// header, and the kernel (here: software GSO, the veth's offloads turned off) cuts it into
/// segments with correct checksums; to another tenant's VM it arrives as one TSO frame.
#[test]
fn tso_frames_cross_the_edge_whole() {
    let Some(mut rig) = Rig::new() else { return };
    let wire = rig.net.wire();
    rig.gateway_resolved();
    let (hdr, f) = tso_frame(FAR);
    let software = sh(&format!(
        "ethtool -K {} tso off gso off tx off",
        rig.net.nic
    ))
    .is_ok();
    rig.a.queue_tx(hdr, &f, 3);
    rig.a.run_tx(&rig.core);
    let mut got = 0usize;
    let mut seqs = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got < 3000 && Instant::now() < deadline {
        let Some(s) = wire.expect(Duration::from_millis(200), |s| {
            s.len() >= 54 && s[12..14] == [8, 0] && s[23] == 6 && s[36..38] == [0x1b, 0x58]
        }) else {
            continue;
        };
        let tot = usize::from(u16::from_be_bytes([s[16], s[17]]));
        assert_eq!(MacAddr::from_slice(&s[6..12]), Some(EXT_MAC));
        assert_eq!(s[22], 63);
        assert_eq!(
            checksum::checksum(&s[14..34]),
            0,
            "IP checksum of a segment"
        );
        if software {
            assert!(tcp_checksum_ok(&s), "TCP checksum of a segment");
            assert!(tot - 40 <= 1000, "a segment over the MSS: {}", tot - 40);
        }
        seqs.push(u32::from_be_bytes([s[38], s[39], s[40], s[41]]));
        got += tot - 40;
    }
    assert_eq!(
        got,
        3000,
        "TCP payload on the wire; sender {:?}, external {:?}",
        rig.a.rt.stats.snapshot(),
        rig.ext.port.stats.snapshot()
    );
    if software {
        assert_eq!(seqs, [1_000_000, 1_001_000, 1_002_000], "segments in order");
    } else {
        eprintln!("ethtool missing: segmentation left to the veth, checksums not checked");
    }
    assert_eq!(rig.a.rt.stats.drops(DropReason::GsoUnsupported), 0);

    // To tenant B: one frame, still TSO, with the partial checksum its NIC expects.
    let (hdr, f) = tso_frame(IP_B);
    rig.a.queue_tx(hdr, &f, 2);
    rig.a.run_tx(&rig.core);
    let r = rig.b.received();
    assert_eq!(r.len(), 1, "the TSO frame did not reach tenant B's VM");
    let (h, g) = &r[0];
    assert_eq!(
        (h.gso_type, h.gso_size, h.csum_start, h.csum_offset),
        (hdr.gso_type, 1000, 34, 16)
    );
    assert_eq!(g.len(), f.len());
    assert_eq!(g[50..52], f[50..52], "partial checksum restored");
    assert_eq!(g[54..], f[54..]);
}
