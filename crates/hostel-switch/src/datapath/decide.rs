//! The rules behind the anti-spoof and destination-lookup stages.

use std::net::Ipv4Addr;

use crate::datapath::pipeline::{Decision, Ingress, LocalReply};
use crate::packet::parse::IPPROTO_ICMPV6;
use crate::packet::{arp, dhcp, ndp, ArpPkt, Ipv4Pkt, Ipv6Pkt, Parsed, L3};
use crate::stats::DropReason;
use crate::tables::{NetEntry, NetIdx, PortEntry, PortIdx, Tables};

/// A port may only send from its own MAC and its assigned addresses. The unspecified source
/// is allowed where the protocols need it before an address exists: DHCP client messages,
/// ARP probes and IPv6 DAD/router solicitation.
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
        L3::Ipv4(ip) => {
            let dhcp_client = ip.src == Ipv4Addr::UNSPECIFIED
                && ip.udp == Some((dhcp::CLIENT_PORT, dhcp::SERVER_PORT));
            if Some(ip.src) != port.cfg.ipv4 && !dhcp_client {
                return Err(DropReason::SpoofedSrcIp);
            }
        }
        L3::Ipv6(ip) => {
            // DAD and router solicitations are ICMPv6; MLD reports sent before the link-local
            // address exists carry a hop-by-hop header (next header 0).
            let unspecified_ok = ip.src.is_unspecified() && matches!(ip.next, 0 | IPPROTO_ICMPV6);
            if !port.owns_v6(&ip.src) && !unspecified_ok {
                return Err(DropReason::SpoofedSrcIp);
            }
        }
        L3::Vlan => return Err(DropReason::VlanTagged),
        L3::Other(_) => return Err(DropReason::UnsupportedEthertype),
    }
    Ok(())
}

fn unicast_or_uplink(net: &NetEntry, ingress: Ingress, found: Option<PortIdx>) -> Decision {
    match (found, ingress) {
        (Some(q), Ingress::Port(p)) if q == p => Decision::Drop(DropReason::Hairpin),
        (Some(q), _) => Decision::Unicast(q),
        (None, Ingress::Port(_)) if net.cfg.uplink.is_some() => Decision::Uplink,
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
