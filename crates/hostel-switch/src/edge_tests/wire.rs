//! Untrusted frames on the wire: hostile ones sent through the veth, and random ones
//! straight into the handler.

use super::*;

#[test]
fn hostile_wire_frames_are_counted_drops() {
    let Some(mut rig) = Rig::new() else { return };
    let wire = rig.net.wire();
    let gw = rig.net.gw_mac;
    let good = udp(gw, EXT_MAC, FAR, IP_A, 5000, b"good");
    let mut too_long = good.clone();
    too_long[16..18].copy_from_slice(&9000u16.to_be_bytes());
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    let truncated_ip = good[..24].to_vec();
    let truncated_arp = {
        let mut f = good[..30].to_vec();
        f[12..14].copy_from_slice(&[8, 6]);
        f
    };
    let mut v6_short = good.clone();
    v6_short[12..14].copy_from_slice(&[0x86, 0xdd]);
    v6_short[14] = 0x60;
    let mut ttl_one = good.clone();
    ttl_one[22] = 1;
    let ttl_one = with_ip_checksum(ttl_one);
    let mut vlan = good.clone();
    vlan[12..14].copy_from_slice(&[0x81, 0]);
    let mut other_mac = good.clone();
    other_mac[0..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
    // A wire host posing as tenant B (its routed address) towards tenant A.
    let forged = udp(gw, EXT_MAC, IP_B, IP_A, 5000, b"forged");
    let mut tiny = good[..14].to_vec();
    tiny[12..14].copy_from_slice(&[8, 0]);
    let base = |r| rig.ext_drops(r);
    let expect = [
        (DropReason::Malformed, base(DropReason::Malformed) + 6),
        (DropReason::TtlExceeded, base(DropReason::TtlExceeded) + 1),
        (DropReason::VlanTagged, base(DropReason::VlanTagged) + 1),
        (DropReason::NotForUs, base(DropReason::NotForUs) + 1),
        (DropReason::SpoofedSrcIp, base(DropReason::SpoofedSrcIp) + 1),
    ];
    for f in [
        &too_long,
        &bad_ihl,
        &truncated_ip,
        &truncated_arp,
        &v6_short,
        &tiny,
        &ttl_one,
        &vlan,
        &other_mac,
        &forged,
    ] {
        wire.send(f);
    }
    for (r, n) in expect {
        wait_for(r.name(), || (rig.ext_drops(r) >= n).then_some(()));
    }
    assert!(
        rig.a.received().is_empty(),
        "a hostile frame reached the VM"
    );
    // Still alive: a good frame after them is delivered.
    wire.send(&good);
    let g = vm_gets(&mut rig.a, "the good frame", |f| {
        f.len() >= 46 && f[42..46] == *b"good"
    });
    assert_eq!(MacAddr::from_slice(&g[6..12]), Some(GW_A));
}

/// Random and mutated frames straight into the wire handler: none may panic, and nothing
/// but a well-formed IP packet from the gateway may reach a VM.
#[test]
fn random_wire_frames_never_reach_a_vm_malformed() {
    let Some(mut rig) = Rig::new() else { return };
    let gw = rig.net.gw_mac;
    let templates = [
        udp(gw, EXT_MAC, FAR, IP_A, 5000, b"template-udp"),
        echo_request(gw, EXT_MAC, FAR, IP_A, 7),
        echo6(gw, EXT_MAC, FAR6, IP6_A, 9),
        {
            let mut a = vec![0u8; 60];
            a[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
            a[6..12].copy_from_slice(&gw.0);
            a[12..22].copy_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
            a[28..32].copy_from_slice(&UPSTREAM.octets());
            a[38..42].copy_from_slice(&[203, 0, 113, 10]);
            a
        },
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let t = rig.core.tables();
    let x = t.ext.as_ref().unwrap();
    let mut s = crate::datapath::edge::EdgeScratch::default();
    let mut reply = [0u8; crate::packet::REPLY_BUF];
    let mut delivered = 0;
    // Each delivery takes a fresh RX buffer of the test VM's 16 MiB: a few thousand fit.
    for i in 0..5_000u64 {
        let mut f = templates[(rnd() % 4) as usize].clone();
        if i % 10 == 0 {
            f = (0..rnd() % 200).map(|_| rnd() as u8).collect();
        } else {
            for _ in 0..=rnd() % 4 {
                let at = (rnd() as usize) % f.len();
                f[at] = rnd() as u8;
            }
            let cut = (rnd() as usize) % (f.len() + 1);
            if i % 3 == 0 {
                f.truncate(cut);
            }
        }
        let _ = external::handle(&t, x, &f, &mut s, &mut reply, i);
        let got = rig.a.received();
        let n = got.len();
        for (_, g) in got {
            delivered += 1;
            assert!(g.len() >= 34, "short frame delivered: {g:02x?}");
            assert_eq!(MacAddr::from_slice(&g[0..6]), Some(VM_A));
            assert_eq!(MacAddr::from_slice(&g[6..12]), Some(GW_A));
            assert_eq!(
                crate::packet::ip::ip_frame_len(&g),
                Ok(g.len()),
                "delivered frame's IP length disagrees with the frame"
            );
        }
        rig.a.post_rx(n, 2048);
    }
    assert!(
        delivered > 0,
        "no mutated frame was ever valid: the test tests nothing"
    );
}
