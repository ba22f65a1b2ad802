//! A network's security appliance with real frames (the veth internet of `mod.rs`): t1's
//! second VM (`a3`, port `c`) is network `a`'s appliance. What `a2` sends to the outside
//! reaches the appliance (addressed to its MAC, the packet unchanged) and not the wire; what
//! the appliance routes on reaches the wire; what comes in for `a2` reaches the appliance,
//! not `a2`; the appliance cannot send as an address outside its network; with its NIC gone
//! the network's outside traffic stops both ways (`appliance_down`); without an appliance the
//! traffic goes straight out again.

use super::*;
use hostel_switch_proto::ApplianceConfig;

fn with_appliance(nic: &str, port: Option<&str>) -> ExternalConfig {
    let mut cfg = external_cfg(nic);
    cfg.edges[0].appliances = vec![ApplianceConfig {
        network: "a".into(),
        port: port.map(Into::into),
    }];
    cfg
}

fn payload_is(f: &[u8], p: &[u8]) -> bool {
    f.len() >= 42 + p.len() && &f[42..42 + p.len()] == p
}

#[test]
fn outside_traffic_goes_through_the_appliance_and_stops_without_it() {
    let Some(mut rig) = Rig::new() else { return };
    let wire = rig.net.wire();
    let gw = rig.net.gw_mac;
    rig.gateway_resolved();
    rig.republish(&with_appliance(&rig.net.nic, Some("a3")));

    // a2 → outside: steered to the appliance, addressed to its MAC, packet unchanged.
    let out = udp(VM_A, GW_A, IP_A, FAR, 5000, b"via the appliance");
    rig.a.queue_tx(VnetHdr::default(), &out, 1);
    rig.a.run_tx(&rig.core);
    let got = vm_gets(&mut rig.c, "the steered frame", |f| {
        payload_is(f, b"via the appliance")
    });
    assert_eq!(&got[0..6], &VM_C.0, "addressed to the appliance");
    assert_eq!(&got[6..12], &VM_A.0);
    assert_eq!(&got[14..], &out[14..], "the packet itself unchanged");
    // The appliance routes it on through the gateway: it reaches the wire.
    let mut fwd = got.clone();
    fwd[0..6].copy_from_slice(&GW_A.0);
    fwd[6..12].copy_from_slice(&VM_C.0);
    rig.c.queue_tx(VnetHdr::default(), &fwd, 1);
    rig.c.run_tx(&rig.core);
    wire.expect(WAIT, |f| payload_is(f, b"via the appliance"))
        .expect("what the appliance forwards reaches the wire");

    // Inbound for a2: to the appliance, not to a2.
    wire.send(&udp(gw, EXT_MAC, FAR, IP_A, 6000, b"inbound for a2"));
    let got = vm_gets(&mut rig.c, "the inbound frame", |f| {
        payload_is(f, b"inbound for a2")
    });
    assert_eq!(&got[0..6], &VM_C.0);
    assert_eq!(&got[30..34], &IP_A.octets(), "still addressed to a2's IP");
    assert!(
        !rig.a
            .received()
            .iter()
            .any(|(_, f)| payload_is(f, b"inbound for a2")),
        "inbound traffic bypassed the appliance"
    );

    // The appliance may forward its network's packets only: another source is refused.
    let spoofed = rig.c.rt.stats.drops(DropReason::SpoofedSrcIp);
    let out_b = udp(VM_C, GW_A, IP_B, FAR, 5000, b"as another network");
    rig.c.queue_tx(VnetHdr::default(), &out_b, 1);
    rig.c.run_tx(&rig.core);
    assert_eq!(rig.c.rt.stats.drops(DropReason::SpoofedSrcIp), spoofed + 1);

    // The appliance's NIC gone: the network fails closed, both ways.
    rig.republish(&with_appliance(&rig.net.nic, None));
    rig.a.queue_tx(VnetHdr::default(), &out, 1);
    rig.a.run_tx(&rig.core);
    assert_eq!(rig.a.rt.stats.drops(DropReason::ApplianceDown), 1);
    let before = rig.ext_drops(DropReason::ApplianceDown);
    wire.send(&udp(gw, EXT_MAC, FAR, IP_A, 6000, b"inbound, closed"));
    wait_for("the inbound drop", || {
        (rig.ext_drops(DropReason::ApplianceDown) > before).then_some(())
    });

    // No appliance any more: straight out again.
    rig.republish(&external_cfg(&rig.net.nic));
    let direct = udp(VM_A, GW_A, IP_A, FAR, 5001, b"direct again");
    rig.a.queue_tx(VnetHdr::default(), &direct, 1);
    rig.a.run_tx(&rig.core);
    wire.expect(WAIT, |f| payload_is(f, b"direct again"))
        .expect("without an appliance the traffic goes out directly");
}
