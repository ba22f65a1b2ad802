//! The rules behind the anti-spoof and destination-lookup stages.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::datapath::pipeline::{Decision, Ingress, LocalReply};
use crate::packet::{arp, dhcp, ndp, ArpPkt, Ipv4Pkt, Ipv6Pkt, Parsed, L3};
use crate::stats::DropReason;
use crate::tables::{NetEntry, NetIdx, PortEntry, PortIdx, Tables};

/// A port may only send from its own MAC and its assigned addresses. The unspecified source
/// (ARP probes aside, which the switch always consumes) passes here and is judged by
/// [`unspecified_source_allowed`] once the destination is known.
pub fn check_source(port: &PortEntry, p: &Parsed) -> Result<(), DropReason> {
    if p.src != port.cfg.mac {
        return Err(DropReason::SpoofedSrcMac);
    }
    match &p.l3 {
        L3::Arp(a) => {
            if a.sha != port.cfg.mac {
                return Err(DropReason::SpoofedSrcMac);
            }
            if a.spa != Ipv4Addr::UNSPECIFIED && Some(a.spa) != port.cfg.ipv4 {
                return Err(DropReason::SpoofedSrcIp);
            }
        }
        // A security appliance forwards its network's and the outside's packets: where they
        // may go is checked when they leave its network (`forward::appliance_out`).
        L3::Ipv4(_) | L3::Ipv6(_) if port.appliance => {}
        L3::Ipv4(ip) => {
            if Some(ip.src) != port.cfg.ipv4 && !ip.src.is_unspecified() {
                return Err(DropReason::SpoofedSrcIp);
            }
        }
        L3::Ipv6(ip) => {
            if !port.owns_v6(&ip.src) && !ip.src.is_unspecified() {
                return Err(DropReason::SpoofedSrcIp);
            }
        }
        L3::Vlan => return Err(DropReason::VlanTagged),
        L3::Other(_) => return Err(DropReason::UnsupportedEthertype),
    }
    Ok(())
}

/// Whether a frame from a port may carry the unspecified source given where it is going.
/// A host without an address may only talk to the switch: DHCP client messages the switch
/// answers, duplicate-address detection (a neighbour solicitation to a solicited-node group)
/// and router solicitation (to all-routers), both of which the switch consumes. MLD reports a
/// host sends from `::` before its link-local address exists are dropped too: the switch
/// floods multicast without snooping, so they carry nothing it needs.
pub fn unspecified_source_allowed(p: &Parsed, d: &Decision) -> bool {
    let consumed = matches!(d, Decision::Local(_) | Decision::Drop(_));
    match &p.l3 {
        L3::Ipv4(ip) if ip.src.is_unspecified() => *d == Decision::Local(LocalReply::Dhcp),
        L3::Ipv6(ip) if ip.src.is_unspecified() => {
            consumed
                && match ip.icmp_type {
                    Some(ndp::NEIGHBOR_SOLICIT) => is_solicited_node(&ip.dst),
                    Some(ndp::ROUTER_SOLICIT) => ip.dst == ALL_ROUTERS,
                    _ => false,
                }
        }
        _ => true,
    }
}

const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// ff02::1:ff00:0/104, the groups neighbour solicitations (and so DAD probes) go to.
fn is_solicited_node(a: &Ipv6Addr) -> bool {
    let o = a.octets();
    o[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]
}

fn unicast_or_uplink(net: &NetEntry, ingress: Ingress, found: Option<PortIdx>) -> Decision {
    match (found, ingress) {
        (Some(q), Ingress::Port(p)) if q == p => Decision::Drop(DropReason::Hairpin),
        (Some(q), _) => Decision::Unicast(q),
        (None, Ingress::Port(_)) if net.cfg.uplink.is_some() => Decision::Uplink,
        (None, Ingress::Port(_)) if net.edge.is_some() => Decision::Edge,
        (None, _) => Decision::Drop(DropReason::NoRoute),
    }
}

/// Destination lookup inside network `ni`. Only that network's tables are consulted, which
/// is what keeps tenants with overlapping subnets apart.
pub fn destination(
    t: &Tables,
    ingress: Ingress,
    ni: NetIdx,
    p: &Parsed,
    window: &[u8],
) -> Decision {
    let net = t.net(ni);
    match &p.l3 {
        L3::Arp(a) => arp_decision(t, net, ingress, a),
        L3::Ipv4(ip) => ipv4_decision(net, ingress, p, ip),
        L3::Ipv6(ip) => ipv6_decision(t, net, ingress, p, ip, window),
        L3::Vlan => Decision::Drop(DropReason::VlanTagged),
        L3::Other(_) => Decision::Drop(DropReason::UnsupportedEthertype),
    }
}

fn arp_decision(t: &Tables, net: &NetEntry, ingress: Ingress, a: &ArpPkt) -> Decision {
    if a.op != arp::OP_REQUEST {
        return Decision::Drop(DropReason::ArpUnanswered);
    }
    if Some(a.tpa) == net.cfg.gateway4 && matches!(ingress, Ingress::Port(_)) {
        return Decision::Local(LocalReply::Arp {
            answer: net.cfg.gateway_mac,
        });
    }
    match net.v4.get(&a.tpa) {
        // A port asking for its own address is probing for conflicts: stay silent.
        Some(q) if Ingress::Port(*q) == ingress => Decision::Drop(DropReason::ArpUnanswered),
        Some(q) => Decision::Local(LocalReply::Arp {
            answer: t.port(*q).cfg.mac,
        }),
        None => Decision::Drop(DropReason::ArpUnanswered),
    }
}

fn ipv4_decision(net: &NetEntry, ingress: Ingress, p: &Parsed, ip: &Ipv4Pkt) -> Decision {
    if p.dst.is_multicast() {
        if ip.udp == Some((dhcp::CLIENT_PORT, dhcp::SERVER_PORT)) {
            return match ingress {
                Ingress::Port(_) => Decision::Local(LocalReply::Dhcp),
                Ingress::Uplink(_) => Decision::Drop(DropReason::DhcpIgnored),
            };
        }
        return Decision::Flood;
    }
    if ip.udp == Some((dhcp::CLIENT_PORT, dhcp::SERVER_PORT)) && p.dst == net.cfg.gateway_mac {
        // Renewals are unicast to the server.
        return Decision::Local(LocalReply::Dhcp);
    }
    unicast_or_uplink(net, ingress, net.v4.get(&ip.dst).copied())
}

fn ipv6_decision(
    t: &Tables,
    net: &NetEntry,
    ingress: Ingress,
    p: &Parsed,
    ip: &Ipv6Pkt,
    window: &[u8],
) -> Decision {
    match ip.icmp_type {
        Some(ndp::NEIGHBOR_SOLICIT) => {
            let Some(target) = ndp::solicited_target(window, ip) else {
                return Decision::Drop(DropReason::NdpUnanswered);
            };
            let gw_ll = net.cfg.gateway_mac.link_local();
            if (Some(target) == net.cfg.gateway6 || target == gw_ll)
                && matches!(ingress, Ingress::Port(_))
            {
                return Decision::Local(LocalReply::NeighborAdvert {
                    target,
                    mac: net.cfg.gateway_mac,
                    router: true,
                });
            }
            return match net.v6.get(&target) {
                Some(q) if Ingress::Port(*q) == ingress => {
                    Decision::Drop(DropReason::NdpUnanswered)
                }
                Some(q) => Decision::Local(LocalReply::NeighborAdvert {
                    target,
                    mac: t.port(*q).cfg.mac,
                    router: false,
                }),
                None => Decision::Drop(DropReason::NdpUnanswered),
            };
        }
        Some(ndp::ROUTER_SOLICIT) => {
            return match (ingress, net.cfg.subnet6) {
                (Ingress::Port(_), Some(_)) => Decision::Local(LocalReply::RouterAdvert),
                _ => Decision::Drop(DropReason::NdpUnanswered),
            };
        }
        // Advertisements from guests would let them claim addresses: the switch is the only
        // source of neighbour and router information.
        Some(ndp::NEIGHBOR_ADVERT) | Some(ndp::ROUTER_ADVERT)
            if matches!(ingress, Ingress::Port(_)) =>
        {
            return Decision::Drop(DropReason::NdpUnanswered);
        }
        _ => {}
    }
    if p.dst.is_multicast() {
        return Decision::Flood;
    }
    unicast_or_uplink(net, ingress, net.v6.get(&ip.dst).copied())
}
