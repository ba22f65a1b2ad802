//! Pipeline tests: lookup, anti-spoofing, local replies and tenant isolation.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::config::{NetworkConfig, PortConfig};
use crate::datapath::pipeline::{Ctx, Decision, Ingress, LocalReply, Pipeline, Stage, Verdict};
use crate::datapath::port::PortRuntime;
use crate::packet::parse::tests::udp4;
use crate::packet::parse::{ETHERTYPE_ARP, ETHERTYPE_VLAN};
use crate::packet::{arp, dhcp, ndp};
use crate::stats::DropReason;
use crate::tables::Tables;
use crate::types::MacAddr;

pub fn net(id: &str, uplink: bool) -> NetworkConfig {
    NetworkConfig {
        id: id.into(),
        subnet4: Some("10.0.0.0/24".parse().unwrap()),
        gateway4: Some(Ipv4Addr::new(10, 0, 0, 1)),
        subnet6: Some("fd00::/64".parse().unwrap()),
        gateway6: Some("fd00::1".parse().unwrap()),
        gateway_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        uplink: uplink.then(|| format!("tap-{id}")),
        dns: vec![],
        mtu: 1500,
    }
}

pub fn port(id: &str, net: &str, last: u8) -> PortConfig {
    PortConfig {
        id: id.into(),
        network: net.into(),
        mac: MacAddr([0x52, 0x54, 0, 0, 0, last]),
        ipv4: Some(Ipv4Addr::new(10, 0, 0, last)),
        ipv6: vec![format!("fd00::{last}").parse().unwrap()],
        socket: format!("/nonexistent/{id}.sock").into(),
        limits: Default::default(),
    }
}

/// Two tenants with the same subnet and the same addresses; only tenant "a" has an uplink.
fn tables() -> Tables {
    let nets = [net("a", true), net("b", false)];
    let ports = [
        port("a2", "a", 2),
        port("a3", "a", 3),
        port("b2", "b", 2),
        port("b3", "b", 3),
    ];
    Tables::build(&nets, &ports, |p| PortRuntime::new(&p.id), |_| None).unwrap()
}

fn run(t: &Tables, ingress: Ingress, frame: &[u8]) -> Decision {
    Pipeline::new().classify(&mut Ctx::new(t, ingress, frame, frame.len()))
}

fn mac(last: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, last])
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn arp_req(sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    f[6..12].copy_from_slice(&sha.0);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, arp::OP_REQUEST as u8]);
    f[22..28].copy_from_slice(&sha.0);
    f[28..32].copy_from_slice(&spa.octets());
    f[38..42].copy_from_slice(&tpa.octets());
    f
}

fn p(t: &Tables, id: &str) -> Ingress {
    Ingress::Port(t.port_by_id(id).unwrap())
}

#[test]
fn unicast_stays_inside_its_network() {
    let t = tables();
    let f = udp4(mac(2), mac(3), ip(2), ip(3), b"x");
    assert_eq!(
        run(&t, p(&t, "a2"), &f),
        Decision::Unicast(t.port_by_id("a3").unwrap())
    );
    assert_eq!(
        run(&t, p(&t, "b2"), &f),
        Decision::Unicast(t.port_by_id("b3").unwrap())
    );
}

#[test]
fn unknown_destination_goes_to_uplink_or_nowhere() {
    let t = tables();
    let f = udp4(
        mac(2),
        MacAddr([2, 0, 0, 0, 0, 1]),
        ip(2),
        Ipv4Addr::new(8, 8, 8, 8),
        b"x",
    );
    assert_eq!(run(&t, p(&t, "a2"), &f), Decision::Uplink);
    assert_eq!(
        run(&t, p(&t, "b2"), &f),
        Decision::Drop(DropReason::NoRoute)
    );
    let hairpin = udp4(mac(2), mac(2), ip(2), ip(2), b"x");
    assert_eq!(
        run(&t, p(&t, "a2"), &hairpin),
        Decision::Drop(DropReason::Hairpin)
    );
}

#[test]
fn spoofed_sources_are_dropped() {
    let t = tables();
    let bad_ip = udp4(mac(2), mac(3), ip(9), ip(3), b"x");
    assert_eq!(
        run(&t, p(&t, "a2"), &bad_ip),
        Decision::Drop(DropReason::SpoofedSrcIp)
    );
    // b3's addresses are not a2's even though they are "the same" numbers in another tenant.
    let other_mac = udp4(mac(3), mac(3), ip(3), ip(3), b"x");
    assert_eq!(
        run(&t, p(&t, "a2"), &other_mac),
        Decision::Drop(DropReason::SpoofedSrcMac)
    );
    let arp_lie = arp_req(mac(2), ip(3), ip(1));
    assert_eq!(
        run(&t, p(&t, "a2"), &arp_lie),
        Decision::Drop(DropReason::SpoofedSrcIp)
    );
    let mut vlan = udp4(mac(2), mac(3), ip(2), ip(3), b"x");
    vlan[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
    assert_eq!(
        run(&t, p(&t, "a2"), &vlan),
        Decision::Drop(DropReason::VlanTagged)
    );
    assert_eq!(
        run(&t, p(&t, "a2"), &[0u8; 10]),
        Decision::Drop(DropReason::Malformed)
    );
}

#[test]
fn arp_is_answered_locally() {
    let t = tables();
    let gw = run(&t, p(&t, "a2"), &arp_req(mac(2), ip(2), ip(1)));
    assert_eq!(
        gw,
        Decision::Local(LocalReply::Arp {
            answer: MacAddr([2, 0, 0, 0, 0, 1])
        })
    );
    let peer = run(&t, p(&t, "a2"), &arp_req(mac(2), ip(2), ip(3)));
    assert_eq!(peer, Decision::Local(LocalReply::Arp { answer: mac(3) }));
    let own = run(
        &t,
        p(&t, "a2"),
        &arp_req(mac(2), Ipv4Addr::UNSPECIFIED, ip(2)),
    );
    assert_eq!(own, Decision::Drop(DropReason::ArpUnanswered));
    let nobody = run(&t, p(&t, "a2"), &arp_req(mac(2), ip(2), ip(77)));
    assert_eq!(nobody, Decision::Drop(DropReason::ArpUnanswered));
}

#[test]
fn dhcp_and_broadcast() {
    let t = tables();
    let d = dhcp::tests::client_msg(mac(2), dhcp::DISCOVER, None);
    assert_eq!(run(&t, p(&t, "a2"), &d), Decision::Local(LocalReply::Dhcp));
    let bcast = udp4(
        mac(2),
        MacAddr::BROADCAST,
        ip(2),
        Ipv4Addr::new(10, 0, 0, 255),
        b"x",
    );
    assert_eq!(run(&t, p(&t, "a2"), &bcast), Decision::Flood);
}

/// A neighbour solicitation for `target`, sent (as hosts do) to its solicited-node group.
fn ns(src_mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ]);
    let mut f = vec![0u8; 86];
    f[0..6].copy_from_slice(&MacAddr::ipv6_multicast(&group).0);
    f[6..12].copy_from_slice(&src_mac.0);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    f[14] = 0x60;
    f[18..20].copy_from_slice(&32u16.to_be_bytes());
    f[20] = 58;
    f[21] = 255;
    f[22..38].copy_from_slice(&src.octets());
    f[38..54].copy_from_slice(&group.octets());
    f[54] = ndp::NEIGHBOR_SOLICIT;
    f[62..78].copy_from_slice(&target.octets());
    f
}

#[test]
fn ndp_is_answered_like_arp() {
    let t = tables();
    let me: Ipv6Addr = "fd00::2".parse().unwrap();
    let gw = run(&t, p(&t, "a2"), &ns(mac(2), me, "fd00::1".parse().unwrap()));
    assert!(matches!(
        gw,
        Decision::Local(LocalReply::NeighborAdvert { router: true, .. })
    ));
    let peer = run(
        &t,
        p(&t, "a2"),
        &ns(mac(2), mac(2).link_local(), mac(3).link_local()),
    );
    assert!(
        matches!(peer, Decision::Local(LocalReply::NeighborAdvert { mac: m, router: false, .. }) if m == mac(3))
    );
    let dad = run(&t, p(&t, "a2"), &ns(mac(2), Ipv6Addr::UNSPECIFIED, me));
    assert_eq!(dad, Decision::Drop(DropReason::NdpUnanswered));
    let spoof = run(&t, p(&t, "a2"), &ns(mac(2), "fd00::3".parse().unwrap(), me));
    assert_eq!(spoof, Decision::Drop(DropReason::SpoofedSrcIp));
}

#[test]
fn uplink_traffic_is_looked_up_in_its_own_network() {
    let t = tables();
    let a = t.net_by_id("a").unwrap();
    let f = udp4(
        MacAddr([2, 0, 0, 0, 0, 1]),
        mac(3),
        Ipv4Addr::new(8, 8, 8, 8),
        ip(3),
        b"x",
    );
    assert_eq!(
        run(&t, Ingress::Uplink(a), &f),
        Decision::Unicast(t.port_by_id("a3").unwrap())
    );
    let unknown = udp4(
        MacAddr([2, 0, 0, 0, 0, 1]),
        mac(9),
        Ipv4Addr::new(8, 8, 8, 8),
        ip(9),
        b"x",
    );
    assert_eq!(
        run(&t, Ingress::Uplink(a), &unknown),
        Decision::Drop(DropReason::NoRoute)
    );
    let who = arp_req(MacAddr([2, 0, 0, 0, 0, 1]), ip(1), ip(3));
    assert_eq!(
        run(&t, Ingress::Uplink(a), &who),
        Decision::Local(LocalReply::Arp { answer: mac(3) })
    );
}

struct DenyAll;
impl Stage for DenyAll {
    fn name(&self) -> &'static str {
        "deny_all"
    }
    fn run(&self, _ctx: &mut Ctx<'_>) -> Verdict {
        Verdict::Done(Decision::Drop(DropReason::Filtered))
    }
}

#[test]
fn uplink_hooks_see_only_uplink_traffic() {
    let t = tables();
    let mut pl = Pipeline::new();
    pl.add_uplink_hook(Arc::new(DenyAll));
    let out = udp4(
        mac(2),
        MacAddr([2, 0, 0, 0, 0, 1]),
        ip(2),
        Ipv4Addr::new(8, 8, 8, 8),
        b"x",
    );
    let local = udp4(mac(2), mac(3), ip(2), ip(3), b"x");
    let run = |f: &[u8]| pl.classify(&mut Ctx::new(&t, p(&t, "a2"), f, f.len()));
    assert_eq!(run(&out), Decision::Drop(DropReason::Filtered));
    assert_eq!(run(&local), Decision::Unicast(t.port_by_id("a3").unwrap()));
}

#[test]
fn config_conflicts_are_rejected() {
    let nets = [net("a", false)];
    let dup = [port("x", "a", 2), port("y", "a", 2)];
    let r = Tables::build(&nets, &dup, |p| PortRuntime::new(&p.id), |_| None);
    assert!(r.is_err());
    let mut outside = port("x", "a", 2);
    outside.ipv4 = Some(Ipv4Addr::new(192, 168, 0, 2));
    assert!(Tables::build(&nets, &[outside], |p| PortRuntime::new(&p.id), |_| None).is_err());
    let orphan = port("x", "zzz", 2);
    assert!(Tables::build(&nets, &[orphan], |p| PortRuntime::new(&p.id), |_| None).is_err());
}
