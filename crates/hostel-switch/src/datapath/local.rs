//! Builds the frames the switch answers itself (ARP, NDP, DHCP) for a [`LocalReply`] verdict.

use crate::datapath::pipeline::{Ingress, LocalReply};
use crate::packet::{arp, dhcp, ndp, Parsed, L3};
use crate::stats::DropReason;
use crate::tables::{NetIdx, Tables};

/// Writes the reply into `out` and returns its length. `frame` is the switch's private copy
/// of the request (long enough for DHCP options).
pub fn build(
    t: &Tables,
    ingress: Ingress,
    ni: NetIdx,
    reply: LocalReply,
    parsed: &Parsed,
    frame: &[u8],
    out: &mut [u8],
) -> Result<usize, DropReason> {
    let net = &t.net(ni).cfg;
    let n = match (reply, &parsed.l3) {
        (LocalReply::Arp { answer }, L3::Arp(a)) => arp::build_reply(a, answer, out),
        (
            LocalReply::NeighborAdvert {
                target,
                mac,
                router,
            },
            L3::Ipv6(ip),
        ) => ndp::build_advert(parsed.src, &ip.src, &target, mac, router, out),
        (LocalReply::RouterAdvert, L3::Ipv6(ip)) => {
            let prefix = net.subnet6.ok_or(DropReason::NdpUnanswered)?;
            let gw_ll = net.gateway_mac.link_local();
            ndp::build_router_advert(net.gateway_mac, &gw_ll, parsed.src, &ip.src, prefix, out)
        }
        (LocalReply::Dhcp, L3::Ipv4(ip)) => {
            let Ingress::Port(pi) = ingress else {
                return Err(DropReason::DhcpIgnored);
            };
            let port = &t.port(pi).cfg;
            let req = dhcp::parse_request(frame, ip).ok_or(DropReason::DhcpIgnored)?;
            let (Some(assigned), Some(server_ip), Some(subnet)) =
                (port.ipv4, net.gateway4, net.subnet4)
            else {
                return Err(DropReason::DhcpIgnored);
            };
            if req.chaddr != port.mac {
                return Err(DropReason::SpoofedSrcMac);
            }
            let lease = dhcp::Lease {
                server_mac: net.gateway_mac,
                server_ip,
                subnet,
                assigned,
                dns: &net.dns,
                mtu: net.mtu,
            };
            dhcp::build_reply(&req, &lease, out)
        }
        _ => 0,
    };
    if n == 0 {
        let reason = match reply {
            LocalReply::Arp { .. } => DropReason::ArpUnanswered,
            LocalReply::Dhcp => DropReason::DhcpIgnored,
            _ => DropReason::NdpUnanswered,
        };
        return Err(reason);
    }
    Ok(n)
}
