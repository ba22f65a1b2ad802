//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` and by the bounded
//! random-input tests that run on stable in CI. Each must return without panicking for any
//! input.

use std::collections::HashMap;
use std::sync::Arc;

use vhost_user_backend::VringT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

use crate::config::{NetworkConfig, PortConfig};
use crate::datapath::local;
use crate::datapath::pipeline::{Ctx, Decision, Ingress, Pipeline};
use crate::datapath::port::{PortRuntime, RxTarget, Vring};
use crate::datapath::tx::{process_tx, TxScratch};
use crate::datapath::vnet::OFFERED_FEATURES;
use crate::datapath::Core;
use crate::packet::{parse, REPLY_BUF};
use crate::tables::Tables;
use crate::types::MacAddr;

fn network() -> NetworkConfig {
    NetworkConfig {
        id: "f".into(),
        subnet4: "10.0.0.0/24".parse().ok(),
        gateway4: "10.0.0.1".parse().ok(),
        subnet6: "fd00::/64".parse().ok(),
        gateway6: "fd00::1".parse().ok(),
        gateway_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        uplink: Some("fuzz0".into()),
        dns: vec![],
        mtu: 1500,
    }
}

fn port(id: &str, last: u8) -> PortConfig {
    PortConfig {
        id: id.into(),
        network: "f".into(),
        mac: MacAddr([0x52, 0x54, 0, 0, 0, last]),
        ipv4: Some(std::net::Ipv4Addr::new(10, 0, 0, last)),
        ipv6: vec![std::net::Ipv6Addr::new(
            0xfd00,
            0,
            0,
            0,
            0,
            0,
            0,
            u16::from(last),
        )],
        socket: format!("/nonexistent/{id}").into(),
    }
}

fn tables(rts: &HashMap<String, Arc<PortRuntime>>) -> Option<Tables> {
    Tables::build(
        &[network()],
        &[port("p2", 2), port("p3", 3)],
        |p| {
            rts.get(&p.id)
                .cloned()
                .unwrap_or_else(|| PortRuntime::new(&p.id))
        },
        |_| None,
    )
    .ok()
}

/// Frame parser, pipeline and local responders on an arbitrary frame, from a port and from
/// the uplink.
pub fn frame(data: &[u8]) {
    let _ = parse(data);
    let Some(t) = tables(&HashMap::new()) else {
        return;
    };
    let pl = Pipeline::new();
    let mut out = [0u8; REPLY_BUF];
    for ingress in [Ingress::Port(0), Ingress::Uplink(0)] {
        let mut ctx = Ctx::new(&t, ingress, data, data.len());
        if let Decision::Local(r) = pl.classify(&mut ctx) {
            if let Ok(p) = parse(data) {
                let _ = local::build(&t, ingress, 0, r, &p, data, &mut out);
            }
        }
    }
}

const MEM: usize = 64 << 10;
const QSIZE: u16 = 16;
const DESC: u64 = 0;
const AVAIL: u64 = 0x100;
const USED: u64 = 0x200;

fn guest(image: &[u8]) -> Option<GuestMemoryAtomic<GuestMemoryMmap<()>>> {
    let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).ok()?;
    let n = image.len().min(MEM);
    m.write_slice(&image[..n], GuestAddress(0)).ok()?;
    Some(GuestMemoryAtomic::new(m))
}

fn vring(mem: &GuestMemoryAtomic<GuestMemoryMmap<()>>) -> Option<Vring> {
    let v = Vring::new(mem.clone(), QSIZE).ok()?;
    v.set_queue_info(DESC, AVAIL, USED).ok()?;
    v.set_queue_size(QSIZE);
    v.set_queue_ready(true);
    v.set_enabled(true);
    Some(v)
}

/// A hostile guest: the first half of `data` is the sender's memory (descriptor table, avail
/// ring, buffers), the second half the receiver's (its RX ring and buffers). Runs the real
/// TX path over it.
pub fn descriptor_chain(data: &[u8]) {
    let (a, b) = data.split_at(data.len() / 2);
    let (Some(ma), Some(mb)) = (guest(a), guest(b)) else {
        return;
    };
    let (Some(tx), Some(rx_a), Some(rx_b)) = (vring(&ma), vring(&ma), vring(&mb)) else {
        return;
    };
    let ra = PortRuntime::new("p2");
    let rb = PortRuntime::new("p3");
    let features = b.first().map_or(OFFERED_FEATURES, |f| {
        OFFERED_FEATURES & !(u64::from(*f) << 1)
    });
    ra.set_rx(Some(RxTarget {
        vring: rx_a,
        mem: ma.clone(),
        features,
    }));
    rb.set_rx(Some(RxTarget {
        vring: rx_b,
        mem: mb,
        features,
    }));
    let rts: HashMap<String, Arc<PortRuntime>> =
        [("p2".into(), ra.clone()), ("p3".into(), rb)].into();
    let Some(t) = tables(&rts) else {
        return;
    };
    let core = Core::new(Pipeline::new());
    core.publish(t);
    let mut scratch = TxScratch::default();
    process_tx(&core, &ra, &ma, &tx, &mut scratch);
}
