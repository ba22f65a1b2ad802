//! Intrusion detection in the edge with real frames (the veth internet of `mod.rs`): detect
//! raises an alert and forwards, prevent drops the packet and the rest of its flow, content
//! split over two TCP segments is found, a threshold rule alerts the configured number of
//! times, and a tenant's rule never fires on another tenant's traffic.

use super::*;
use crate::datapath::ids::EdgeIds;
use hostel_switch_proto::ids::{IdsMode, IdsSpec};

/// Tenant `i`'s detection (0: t1 on network `a`, 1: t2 on network `b`).
fn ids_of(rig: &Rig, i: usize, f: impl FnOnce(&EdgeIds)) {
    let t = rig.core.tables();
    f(&t.ext.as_ref().expect("external network").edges[i].rt.ids);
}

fn set(rig: &Rig, i: usize, net: &str, mode: IdsMode, rules: &str) {
    ids_of(rig, i, |ids| {
        let r = ids.set(Some(&IdsSpec {
            networks: vec![net.into()],
            mode,
            rules: rules.into(),
            // The tenants' networks, as the daemon sets it.
            vars: [("HOME_NET".to_string(), "[192.0.2.0/24]".to_string())].into(),
            ..IdsSpec::default()
        }));
        assert!(r.refused.is_empty(), "refused: {:?}", r.refused);
    });
}

/// (sid, src, src_port, dest, dest_port) of every alert so far.
fn alerts(rig: &Rig, i: usize) -> Vec<(u64, String, u64, String, u64)> {
    let mut out = Vec::new();
    ids_of(rig, i, |ids| {
        for a in ids.alerts_after(0).alerts {
            out.push((
                a["alert"]["signature_id"].as_u64().unwrap_or(0),
                a["src_ip"].as_str().unwrap_or("").to_string(),
                a["src_port"].as_u64().unwrap_or(0),
                a["dest_ip"].as_str().unwrap_or("").to_string(),
                a["dest_port"].as_u64().unwrap_or(0),
            ));
        }
    });
    out
}

fn udp_from(sport: u16, f: Vec<u8>) -> Vec<u8> {
    let mut f = f;
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f
}

#[allow(clippy::too_many_arguments)]
fn tcp(
    src: MacAddr,
    dst: MacAddr,
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    ports: (u16, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = udp4(src, dst, sip, dip, &[0u8; 12]);
    f.truncate(34);
    f[23] = 6;
    let tot = (20 + 20 + payload.len()) as u16;
    f[16..18].copy_from_slice(&tot.to_be_bytes());
    f.extend_from_slice(&ports.0.to_be_bytes());
    f.extend_from_slice(&ports.1.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    with_ip_checksum(f)
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

fn payload_is(f: &[u8], off: usize, p: &[u8]) -> bool {
    f.len() >= off + p.len() && &f[off..off + p.len()] == p
}

#[test]
fn detect_alerts_and_forwards_prevent_drops_the_rest_of_the_flow() {
    let Some(mut rig) = Rig::new() else { return };
    let wire = rig.net.wire();
    rig.gateway_resolved();
    let rule = "drop udp $HOME_NET any -> any 53 (msg:\"evil query\"; content:\"evil\"; sid:101; rev:1;)\n";
    set(&rig, 0, "a", IdsMode::Detect, rule);
    let evil = udp_from(40001, udp(VM_A, GW_A, IP_A, FAR, 53, b"an evil query"));
    rig.a.queue_tx(VnetHdr::default(), &evil, 1);
    rig.a.run_tx(&rig.core);
    wire.expect(WAIT, |f| payload_is(f, 42, b"an evil query"))
        .expect("detect mode forwards the matching datagram");
    let seen = alerts(&rig, 0);
    assert_eq!(
        seen,
        vec![(101, IP_A.to_string(), 40001, FAR.to_string(), 53)],
        "one alert, tenant-side addresses"
    );

    // Prevent: the match and the rest of its flow are dropped (synchronously, on the
    // sender's thread: counted `filtered` before run_tx returns); another flow passes.
    set(&rig, 0, "a", IdsMode::Prevent, rule);
    let filtered = rig.a.rt.stats.drops(DropReason::Filtered);
    rig.a.queue_tx(VnetHdr::default(), &evil, 1);
    rig.a.run_tx(&rig.core);
    assert_eq!(rig.a.rt.stats.drops(DropReason::Filtered), filtered + 1);
    let same_flow = udp_from(40001, udp(VM_A, GW_A, IP_A, FAR, 53, b"harmless now"));
    rig.a.queue_tx(VnetHdr::default(), &same_flow, 1);
    rig.a.run_tx(&rig.core);
    assert_eq!(rig.a.rt.stats.drops(DropReason::Filtered), filtered + 2);
    let other = udp_from(40002, udp(VM_A, GW_A, IP_A, FAR, 53, b"another flow"));
    rig.a.queue_tx(VnetHdr::default(), &other, 1);
    rig.a.run_tx(&rig.core);
    wire.expect(WAIT, |f| payload_is(f, 42, b"another flow"))
        .expect("another flow still passes");
    assert_eq!(rig.a.rt.stats.drops(DropReason::Filtered), filtered + 2);
    ids_of(&rig, 0, |ids| {
        let s = ids.stats().expect("stats");
        assert_eq!(s.drops, 2);
        assert_eq!(s.per_sid.get(&101), Some(&2));
    });
}

#[test]
fn vm_to_vm_traffic_is_inspected_only_when_asked_and_prevent_drops_it() {
    let Some(mut rig) = Rig::new() else { return };
    let rule = "drop udp any any -> any 5353 (msg:\"evil peer\"; content:\"evil\"; sid:202;)\n";
    let evil = udp_from(
        40100,
        udp(VM_A, VM_C, IP_A, IP_C, 5353, b"an evil datagram"),
    );
    let got_it = |c: &mut Vm| {
        c.received()
            .iter()
            .any(|(_, f)| payload_is(f, 42, b"an evil datagram"))
    };
    // Watched at the edge only (the default): a to c is delivered and not inspected.
    set(&rig, 0, "a", IdsMode::Prevent, rule);
    rig.a.queue_tx(VnetHdr::default(), &evil, 1);
    rig.a.run_tx(&rig.core);
    assert!(got_it(&mut rig.c), "delivered VM to VM");
    assert!(
        alerts(&rig, 0).is_empty(),
        "VM-to-VM traffic inspected while off"
    );

    // VM to VM on, detect: alert (the VMs' own addresses) and delivered.
    let spec = |mode| IdsSpec {
        networks: vec!["a".into()],
        intra_networks: vec!["a".into()],
        mode,
        rules: rule.into(),
        ..IdsSpec::default()
    };
    ids_of(&rig, 0, |ids| {
        ids.set(Some(&spec(IdsMode::Detect)));
    });
    rig.a.queue_tx(VnetHdr::default(), &evil, 1);
    rig.a.run_tx(&rig.core);
    assert!(got_it(&mut rig.c), "detect delivers");
    assert_eq!(
        alerts(&rig, 0),
        vec![(202, IP_A.to_string(), 40100, IP_C.to_string(), 5353)]
    );

    // Prevent: dropped on the sender (counted `filtered`), never reaches c; the other
    // tenant's detection saw nothing.
    ids_of(&rig, 0, |ids| {
        ids.set(Some(&spec(IdsMode::Prevent)));
    });
    let filtered = rig.a.rt.stats.drops(DropReason::Filtered);
    rig.a.queue_tx(VnetHdr::default(), &evil, 1);
    rig.a.run_tx(&rig.core);
    assert_eq!(rig.a.rt.stats.drops(DropReason::Filtered), filtered + 1);
    assert!(!got_it(&mut rig.c), "prevent let the match through");
    let fine = udp_from(40101, udp(VM_A, VM_C, IP_A, IP_C, 5353, b"fine datagram"));
    rig.a.queue_tx(VnetHdr::default(), &fine, 1);
    rig.a.run_tx(&rig.core);
    assert!(
        rig.c
            .received()
            .iter()
            .any(|(_, f)| payload_is(f, 42, b"fine datagram")),
        "another flow passes"
    );
    assert!(alerts(&rig, 1).is_empty());
}

#[test]
fn content_split_over_two_tcp_segments_is_found() {
    let Some(mut rig) = Rig::new() else { return };
    let wire = rig.net.wire();
    let gw = rig.net.gw_mac;
    rig.gateway_resolved();
    set(
        &rig,
        0,
        "a",
        IdsMode::Detect,
        "alert tcp any any -> $HOME_NET 80 (msg:\"admin\"; flow:established,to_server; content:\"/admin.php\"; sid:102; rev:1;)\n",
    );
    let ports = (40100, 80);
    let back = (ports.1, ports.0);
    // The internet opens a connection to the VM; the VM answers through its edge.
    wire.send(&tcp(gw, EXT_MAC, FAR, IP_A, ports, 100, 0, SYN, &[]));
    vm_gets(&mut rig.a, "the SYN", |f| f.len() >= 54 && f[47] == SYN);
    let synack = tcp(VM_A, GW_A, IP_A, FAR, back, 900, 101, SYN | ACK, &[]);
    rig.a.queue_tx(VnetHdr::default(), &synack, 1);
    rig.a.run_tx(&rig.core);
    wire.send(&tcp(gw, EXT_MAC, FAR, IP_A, ports, 101, 901, ACK, &[]));
    wire.send(&tcp(
        gw,
        EXT_MAC,
        FAR,
        IP_A,
        ports,
        101,
        901,
        ACK | PSH,
        b"GET /adm",
    ));
    vm_gets(&mut rig.a, "the first half", |f| {
        payload_is(f, 54, b"GET /adm")
    });
    assert!(alerts(&rig, 0).is_empty(), "half the pattern alerted");
    wire.send(&tcp(
        gw,
        EXT_MAC,
        FAR,
        IP_A,
        ports,
        109,
        901,
        ACK | PSH,
        b"in.php HTTP/1.0\r\n",
    ));
    vm_gets(&mut rig.a, "the second half", |f| {
        payload_is(f, 54, b"in.php")
    });
    assert_eq!(
        alerts(&rig, 0),
        vec![(102, FAR.to_string(), 40100, IP_A.to_string(), 80)]
    );
}

#[test]
fn a_threshold_rule_alerts_the_configured_number_of_times() {
    let Some(mut rig) = Rig::new() else { return };
    let wire = rig.net.wire();
    rig.gateway_resolved();
    set(
        &rig,
        0,
        "a",
        IdsMode::Detect,
        "alert udp any any -> any 514 (msg:\"auth fail\"; content:\"fail\"; threshold:type limit, track by_src, count 2, seconds 60; sid:103; rev:1;)\n",
    );
    for i in 0..5u8 {
        let f = udp(
            VM_A,
            GW_A,
            IP_A,
            FAR,
            514,
            &[b'f', b'a', b'i', b'l', b'0' + i],
        );
        rig.a.queue_tx(VnetHdr::default(), &f, 1);
        rig.a.run_tx(&rig.core);
    }
    wire.expect(WAIT, |f| payload_is(f, 42, b"fail4"))
        .expect("all five forwarded");
    let got = alerts(&rig, 0);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|g| g.0 == 103));
    ids_of(&rig, 0, |ids| {
        assert!(ids.stats().expect("stats").packets >= 5)
    });
}

#[test]
fn a_tenants_rule_never_fires_on_another_tenants_traffic() {
    let Some(mut rig) = Rig::new() else { return };
    let wire = rig.net.wire();
    let gw = rig.net.gw_mac;
    rig.gateway_resolved();
    let rule =
        "alert udp any any -> any any (msg:\"secret\"; content:\"secret\"; sid:200; rev:1;)\n";
    set(&rig, 1, "b", IdsMode::Detect, rule);
    set(
        &rig,
        0,
        "a",
        IdsMode::Detect,
        "alert udp any any -> any 1 (msg:\"x\"; content:\"zzzz\"; sid:1;)\n",
    );
    // t1's traffic, both ways, carries the pattern.
    let out = udp(VM_A, GW_A, IP_A, FAR, 5000, b"a secret of t1");
    rig.a.queue_tx(VnetHdr::default(), &out, 1);
    rig.a.run_tx(&rig.core);
    wire.expect(WAIT, |f| payload_is(f, 42, b"a secret of t1"))
        .expect("t1's datagram out");
    wire.send(&udp(gw, EXT_MAC, FAR, IP_A, 5000, b"in secret for t1"));
    vm_gets(&mut rig.a, "t1's inbound datagram", |f| {
        payload_is(f, 42, b"in secret for t1")
    });
    assert!(
        alerts(&rig, 1).is_empty(),
        "t2's rule fired on t1's traffic"
    );
    assert!(alerts(&rig, 0).is_empty(), "t1 has no such rule");
    // t2's own traffic does alert, on t2 only.
    let b_out = udp(VM_B, GW_B, IP_B, FAR, 5000, b"b secret");
    rig.b.queue_tx(VnetHdr::default(), &b_out, 1);
    rig.b.run_tx(&rig.core);
    wire.expect(WAIT, |f| payload_is(f, 42, b"b secret"))
        .expect("t2's datagram out");
    assert_eq!(
        alerts(&rig, 1),
        vec![(200, IP_B.to_string(), 1234, FAR.to_string(), 5000)]
    );
    assert!(alerts(&rig, 0).is_empty());
}
