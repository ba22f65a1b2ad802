//! The unspecified source (0.0.0.0, `::`) over real rings: it may only talk to the switch
//! itself (DHCP, duplicate-address detection, router solicitation), never to other VMs, the
//! uplink or a multicast group.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::datapath::flow_tests::{setup, ALL};
use crate::datapath::pipeline::{Ctx, Decision, Ingress, LocalReply, Pipeline};
use crate::datapath::port::PortRuntime;
use crate::datapath::tests::{net, port};
use crate::datapath::vnet::VnetHdr;
use crate::packet::parse::tests::udp4;
use crate::packet::parse::IPPROTO_UDP;
use crate::packet::{dhcp, ndp};
use crate::stats::DropReason;
use crate::tables::Tables;
use crate::types::MacAddr;

const HOP_BY_HOP: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const IPPROTO_ICMPV6: u8 = 58;

fn mac(last: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, last])
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn ip6(last: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(last))
}

/// UDP 68→67 from 0.0.0.0: a DHCP client's ports, sent somewhere other than the switch.
fn dhcp_ports_from_zero(dst_mac: MacAddr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = udp4(mac(2), dst_mac, Ipv4Addr::UNSPECIFIED, dst, &[0u8; 64]);
    f[34..36].copy_from_slice(&dhcp::CLIENT_PORT.to_be_bytes());
    f[36..38].copy_from_slice(&dhcp::SERVER_PORT.to_be_bytes());
    f
}

/// An IPv6 frame with `next` as next header and a 32-byte payload whose first byte is
/// `first` (the ICMPv6 type when `next` is ICMPv6).
fn ipv6(src: Ipv6Addr, dst_mac: MacAddr, dst: Ipv6Addr, next: u8, first: u8) -> Vec<u8> {
    let mut f = vec![0u8; 54 + 32];
    f[0..6].copy_from_slice(&dst_mac.0);
    f[6..12].copy_from_slice(&mac(2).0);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    f[14] = 0x60;
    f[18..20].copy_from_slice(&32u16.to_be_bytes());
    f[20] = next;
    f[21] = 255;
    f[22..38].copy_from_slice(&src.octets());
    f[38..54].copy_from_slice(&dst.octets());
    f[54] = first;
    f
}

/// The solicited-node multicast group of `a` (ff02::1:ffXX:XXXX).
fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// A DAD probe: neighbour solicitation for `target` from `::` to `dst`.
fn dad(target: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut f = ipv6(
        Ipv6Addr::UNSPECIFIED,
        MacAddr::ipv6_multicast(&dst),
        dst,
        IPPROTO_ICMPV6,
        ndp::NEIGHBOR_SOLICIT,
    );
    f[62..78].copy_from_slice(&target.octets());
    f
}

#[test]
fn unspecified_ipv4_source_reaches_no_other_vm() {
    let (core, mut a, mut b) = setup(ALL);
    b.post_rx(8, 2048);
    a.post_rx(8, 2048);
    // DHCP ports do not make 0.0.0.0 a licence to talk to a neighbour, unicast or broadcast
    // to a UDP port that is not the server's.
    a.queue_tx(VnetHdr::default(), &dhcp_ports_from_zero(mac(3), ip(3)), 1);
    let mut other = udp4(
        mac(2),
        MacAddr::BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        b"x",
    );
    other[34..36].copy_from_slice(&dhcp::CLIENT_PORT.to_be_bytes());
    a.queue_tx(VnetHdr::default(), &other, 1);
    // A real DHCPDISCOVER is still answered by the switch.
    a.queue_tx(
        VnetHdr::default(),
        &dhcp::tests::client_msg(mac(2), dhcp::DISCOVER, None),
        1,
    );
    a.run_tx(&core);
    assert!(b.received().is_empty(), "0.0.0.0 reached another VM");
    let s = a.rt.stats.snapshot();
    assert_eq!(s.drop_count(DropReason::UnspecifiedSource), 2);
    assert_eq!(s.replies, 1, "the DHCPDISCOVER went unanswered");
    assert_eq!(a.received().len(), 1);
}

#[test]
fn unspecified_ipv6_source_reaches_no_other_vm() {
    let (core, mut a, mut b) = setup(ALL);
    b.post_rx(16, 2048);
    a.post_rx(16, 2048);
    let u = Ipv6Addr::UNSPECIFIED;
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let attacks = [
        ipv6(u, mac(3), ip6(3), IPPROTO_UDP, 0),
        ipv6(u, mac(3), ip6(3), IPPROTO_ICMPV6, ICMPV6_ECHO_REQUEST),
        ipv6(u, mac(3), ip6(3), HOP_BY_HOP, IPPROTO_ICMPV6),
        ipv6(
            u,
            MacAddr::ipv6_multicast(&all_nodes),
            all_nodes,
            IPPROTO_ICMPV6,
            ICMPV6_ECHO_REQUEST,
        ),
        ipv6(
            u,
            MacAddr::ipv6_multicast(&all_nodes),
            all_nodes,
            HOP_BY_HOP,
            IPPROTO_ICMPV6,
        ),
        // A neighbour solicitation from `::` is DAD only when sent to the solicited-node
        // group; unicast to a neighbour it is something else.
        {
            let mut f = dad(ip6(3), ip6(3));
            f[0..6].copy_from_slice(&mac(3).0);
            f
        },
    ];
    for f in &attacks {
        a.queue_tx(VnetHdr::default(), f, 1);
    }
    a.run_tx(&core);
    assert!(b.received().is_empty(), ":: reached another VM");
    let s = a.rt.stats.snapshot();
    assert_eq!(
        s.drop_count(DropReason::UnspecifiedSource),
        attacks.len() as u64
    );
    // DAD still works: probing a free address is consumed silently, probing a taken one
    // gets the owner's advertisement, both without reaching the owner.
    a.queue_tx(VnetHdr::default(), &dad(ip6(2), solicited_node(ip6(2))), 1);
    a.queue_tx(VnetHdr::default(), &dad(ip6(3), solicited_node(ip6(3))), 1);
    a.run_tx(&core);
    assert!(b.received().is_empty());
    let got = a.received();
    assert_eq!(got.len(), 1, "a taken address got no advertisement");
    assert_eq!(&got[0].1[6..12], &mac(3).0);
    let s = a.rt.stats.snapshot();
    assert_eq!(
        s.drop_count(DropReason::UnspecifiedSource),
        attacks.len() as u64
    );
    assert_eq!(s.drop_count(DropReason::NdpUnanswered), 1);
}

#[test]
fn unspecified_source_never_reaches_the_uplink() {
    let t = Tables::build(
        &[net("a", true)],
        &[port("a2", "a", 2)],
        |p| PortRuntime::new(&p.id),
        |_| None,
    )
    .unwrap();
    let from = Ingress::Port(t.port_by_id("a2").unwrap());
    let run = |f: &[u8]| Pipeline::new().classify(&mut Ctx::new(&t, from, f, f.len()));
    let gw = MacAddr([2, 0, 0, 0, 0, 1]);
    let out4 = dhcp_ports_from_zero(mac(9), Ipv4Addr::new(8, 8, 8, 8));
    assert_eq!(run(&out4), Decision::Drop(DropReason::UnspecifiedSource));
    let out6 = ipv6(
        Ipv6Addr::UNSPECIFIED,
        gw,
        "2001:db8::1".parse().unwrap(),
        IPPROTO_UDP,
        0,
    );
    assert_eq!(run(&out6), Decision::Drop(DropReason::UnspecifiedSource));
    // Renewal-style DHCP to the gateway's MAC, and router solicitation, stay with the switch.
    let renew = dhcp_ports_from_zero(gw, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(run(&renew), Decision::Local(LocalReply::Dhcp));
    let all_routers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
    let rs = ipv6(
        Ipv6Addr::UNSPECIFIED,
        MacAddr::ipv6_multicast(&all_routers),
        all_routers,
        IPPROTO_ICMPV6,
        ndp::ROUTER_SOLICIT,
    );
    assert_eq!(run(&rs), Decision::Local(LocalReply::RouterAdvert));
}
