//! Intrusion detection of a tenant's traffic between its own VMs (`IdsSpec::intra_networks`,
//! off by default): frames one of its NICs sends to another NIC of the same network never
//! cross the firewall or the edge, so the TX path hands them to the tenant's engine here,
//! before they are delivered. The same engine, CPU budget, overload behaviour (fail open
//! or closed) and alert ring as the edge's, so turning it on costs the tenant its own
//! budget and never another tenant's time.
//!
//! The engine lives with the tenant's edge (`EdgeRuntime::ids`): a network is inspected
//! only while it is attached to the external network. Non-IP frames (ARP, and anything
//! the switch cannot read as one IPv4/IPv6 packet) pass uninspected, as they do at the edge.

use crate::datapath::ids::{EdgeIds, IdsVerdict, Scope};
use crate::datapath::rx::FrameSrc;
use crate::packet::ip::ip_frame_len;
use crate::packet::parse::ETH_HLEN;
use crate::stats::DropReason;
use crate::tables::{PortIdx, Tables};

/// The detection inspecting VM-to-VM traffic of port `me`'s network, with the network's
/// id; `None` (the common case: one atomic load) when there is none.
pub fn for_port(tables: &Tables, me: PortIdx) -> Option<(&EdgeIds, &str)> {
    let net = tables.net(tables.port(me).net);
    let e = net.edge?;
    let ids = &tables.ext.as_ref()?.edges.get(e as usize)?.rt.ids;
    ids.intra_enabled().then_some((ids, net.cfg.id.as_str()))
}

/// Inspects one frame bound for another VM, copied whole into `buf` (the sender's memory
/// is read once, bounded by `buf`'s size). `Some(reason)`: drop it (prevent mode matched,
/// or the tenant's budget is spent and it fails closed).
pub fn inspect(ids: &EdgeIds, net: &str, src: &FrameSrc<'_>, buf: &mut [u8]) -> Option<DropReason> {
    if src.len > buf.len() {
        // Longer than any frame the TX path accepts; it is refused there.
        return None;
    }
    let n = src.copy_prefix(buf);
    let len = ip_frame_len(&buf[..n]).ok()?;
    match ids.inspect_scoped(Scope::Intra, net, &buf[ETH_HLEN..len]) {
        IdsVerdict::Pass => None,
        IdsVerdict::Drop => Some(DropReason::Filtered),
    }
}
