//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` and by the bounded
//! random-input tests that run on stable in CI. Each must return without panicking for any
//! input; the assertions they make are the promises under test (work bounded per input,
//! only safe memory accepted).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hostel_virtq::{MemMap, Ring, SegList, MAX_CHAIN_DESCS};
use vhost_user_backend::VringT;
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
};

use crate::config::{NetworkConfig, PortConfig};
use crate::datapath::local;
use crate::datapath::pipeline::{Ctx, Decision, Ingress, Pipeline};
use crate::datapath::port::{PortRuntime, RxTarget, Vring};
use crate::datapath::rx::RX_DELIVERY_BUDGET;
use crate::datapath::tx::{process_tx, TxScratch};
use crate::datapath::vnet::OFFERED_FEATURES;
use crate::datapath::Core;
use crate::packet::{parse, REPLY_BUF};
use crate::tables::Tables;
use crate::types::MacAddr;
use hostel_vhost::vet;

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
        limits: Default::default(),
        kind: Default::default(),
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

/// The external network's untrusted inputs on an arbitrary byte string: the ring block walk
/// (as if the kernel's headers were the input), the wire handler (as if the frame came in
/// on the external interface), and the edge's outbound path (as if a tenant port sent it).
pub fn external_frame(data: &[u8]) {
    use crate::datapath::edge::{self, EdgeRuntime, EdgeScratch, PassFilter};
    use crate::datapath::rx::FrameSrc;
    use crate::datapath::vnet::VnetHdr;
    use crate::external::{self, External};

    let mut frames = 0usize;
    let mut block = data.to_vec();
    crate::afpacket::complete_checksums(&mut block);
    crate::afpacket::walk_block(&block, |_| frames += 1);
    assert!(
        frames <= data.len() / 48 + 1,
        "block walk not bounded by the block"
    );
    let net = NetworkConfig {
        id: "e".into(),
        uplink: None,
        ..network()
    };
    let p = PortConfig {
        network: "e".into(),
        ..port("e2", 2)
    };
    let ext: Result<hostel_switch_proto::ExternalConfig, _> = serde_json::from_str(
        r#"{"interface":"fuzz1","mac":"02:00:5e:00:00:01","subnet4":"203.0.113.0/24",
            "gateway4":"203.0.113.1","subnet6":"2001:db8:1::/64","gateway6":"2001:db8:1::1",
            "edges":[{"tenant":"t","networks":["e"],"outside4":"203.0.113.10",
                      "outside6":"2001:db8:1::10","floating4":["203.0.113.11"],
                      "routed4":["10.0.0.0/24"],"routed6":["fd00::/64"]}]}"#,
    );
    let Ok(ext) = ext else { return };
    let rt = External::detached("external");
    let sender = PortRuntime::new("e2");
    let Some(t) = Tables::build(&[net], &[p], |_| sender.clone(), |_| None)
        .ok()
        .and_then(|t| {
            t.with_external(
                &ext,
                rt,
                |e| Arc::new(EdgeRuntime::new(&e.tenant, Box::new(PassFilter))),
                false,
            )
            .ok()
        })
    else {
        return;
    };
    let Some(x) = t.ext.as_ref() else { return };
    let mut scratch = EdgeScratch::default();
    let mut reply = [0u8; REPLY_BUF];
    let _ = external::handle(&t, x, data, &mut scratch, &mut reply, 1);
    let empty = SegList::default();
    let src = FrameSrc {
        head: data,
        tail: &empty,
        tail_skip: 0,
        len: data.len(),
    };
    let _ = edge::outbound(&t, 0, &sender, VnetHdr::default(), &src, &mut scratch);
}

const MEM: usize = 64 << 10;
const QSIZE: u16 = 16;
const DESC: u64 = 0;
const AVAIL: u64 = 0x100;
const USED: u64 = 0x200;

/// Reads fuzz input as a byte stream, yielding zeros once exhausted.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
}

/// Guest memory layouts, chosen by the input: one region; two with a hole between them
/// (buffers and tables straddling it must be refused); more regions than [`MemMap`]'s fast
/// table holds, so lookups take the slow path and every buffer splits at boundaries; and
/// regions of odd sizes at unaligned addresses.
///
/// [`MemMap`]: hostel_virtq::MemMap
fn layout(sel: u8) -> Vec<(GuestAddress, usize)> {
    match sel % 4 {
        0 => vec![(GuestAddress(0), MEM)],
        1 => vec![
            (GuestAddress(0), MEM / 2),
            (GuestAddress(MEM as u64 / 2 + 0x1000), MEM / 2),
        ],
        2 => (0..20u64)
            .map(|i| (GuestAddress(i * 0x1000), 0x1000))
            .collect(),
        _ => vec![
            (GuestAddress(0), 0x1801),
            (GuestAddress(0x1801), 0x37ff),
            (GuestAddress(0x6003), MEM - 0x6003),
        ],
    }
}

/// Builds one guest's memory from the input: a layout, a 16-entry descriptor table whose
/// addresses and lengths are usually (but not always) folded into guest memory, an avail
/// ring with a small index, and buffer contents. Structure keeps the fuzzer past "nothing
/// available".
fn guest(inp: &mut Input<'_>) -> Option<GuestAddressSpaceMem> {
    let m = GuestMemoryMmap::<()>::from_ranges(&layout(inp.u8())).ok()?;
    for d in 0..u64::from(QSIZE) {
        let sel = inp.u8();
        let mut addr = u64::from_le_bytes(inp.bytes::<8>());
        let mut len = u32::from_le_bytes(inp.bytes::<4>());
        if sel & 1 == 0 {
            addr = 0x400 + addr % (MEM as u64 - 0x400);
        }
        if sel & 2 == 0 {
            len %= 4096;
        }
        let flags = u16::from(sel >> 2) & 7;
        let next = u16::from(inp.u8()) % (QSIZE + 4);
        let base = GuestAddress(DESC + 16 * d);
        m.write_obj(addr, base).ok()?;
        m.write_obj(len, GuestAddress(base.0 + 8)).ok()?;
        m.write_obj(flags, GuestAddress(base.0 + 12)).ok()?;
        m.write_obj(next, GuestAddress(base.0 + 14)).ok()?;
    }
    let idx = u16::from(inp.u8()) % (QSIZE + 4);
    m.write_obj(idx, GuestAddress(AVAIL + 2)).ok()?;
    for slot in 0..u64::from(QSIZE) {
        let head = u16::from(inp.u8()) % (QSIZE + 2);
        m.write_obj(head, GuestAddress(AVAIL + 4 + 2 * slot)).ok()?;
    }
    let payload = inp.bytes::<512>();
    for chunk in 0..8u64 {
        // A chunk may fall in a hole of the layout; the rest still gets its bytes.
        let _ = m.write_slice(&payload, GuestAddress(0x400 + chunk * 0x1000));
    }
    Some(GuestMemoryAtomic::new(m))
}

type GuestAddressSpaceMem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

fn vring(mem: &GuestMemoryAtomic<GuestMemoryMmap<()>>) -> Option<Vring> {
    let v = Vring::new(mem.clone(), QSIZE).ok()?;
    v.set_queue_info(DESC, AVAIL, USED).ok()?;
    v.set_queue_size(QSIZE);
    v.set_queue_ready(true);
    v.set_enabled(true);
    Some(v)
}

/// A hostile guest pair: the input describes the sender's memory (descriptor table, avail
/// ring, buffers), then the receiver's (its RX ring and buffers), then the receiver's
/// feature bits. Runs the real TX path over it.
pub fn descriptor_chain(data: &[u8]) {
    let mut inp = Input(data);
    let (Some(ma), Some(mb)) = (guest(&mut inp), guest(&mut inp)) else {
        return;
    };
    let feature_mask = inp.u8();
    let (Some(tx), Some(rx_a), Some(rx_b)) = (vring(&ma), vring(&ma), vring(&mb)) else {
        return;
    };
    walk_chains(&ma, &tx);
    walk_chains(&mb, &rx_b);
    let ra = PortRuntime::new("p2");
    let rb = PortRuntime::new("p3");
    let features = OFFERED_FEATURES & !(u64::from(feature_mask) << 1);
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
        [("p2".into(), ra.clone()), ("p3".into(), rb.clone())].into();
    let Some(t) = tables(&rts) else {
        return;
    };
    let core = Core::new(Pipeline::new());
    core.publish(t);
    let mut scratch = TxScratch::default();
    process_tx(&core, &ra, &ma, &tx, &mut scratch);
    // Work is bounded whatever the rings hold: at most QSIZE chains taken from TX, each
    // causing at most one delivery (unicast, the flood's one copy, or a local reply).
    let visits =
        ra.stats.desc_visits.load(Ordering::Relaxed) + rb.stats.desc_visits.load(Ordering::Relaxed);
    let per_frame = u64::from(2 * MAX_CHAIN_DESCS + RX_DELIVERY_BUDGET);
    assert!(
        visits <= u64::from(QSIZE) * per_frame,
        "{visits} descriptor visits for one TX kick"
    );
}

/// Every head of the ring (and a few past it) gathered both ways, straight through
/// hostel-virtq: each gather reads at most [`MAX_CHAIN_DESCS`] descriptors, and every segment
/// accepted lies inside guest memory (and can be read whole, which would fault otherwise).
fn walk_chains(mem: &GuestAddressSpaceMem, v: &Vring) {
    let guard = mem.memory();
    let m: &GuestMemoryMmap<()> = &guard;
    let map = MemMap::new(m);
    let st = v.get_ref();
    let Ok(ring) = Ring::new(st.get_queue(), &map) else {
        return;
    };
    let mut list = SegList::new();
    let mut byte = [0u8; 1];
    for head in 0..QSIZE + 2 {
        for writable in [false, true] {
            let ok = ring.gather(head, writable, usize::MAX, &mut list).is_ok();
            assert!(list.visits() <= MAX_CHAIN_DESCS, "{} visits", list.visits());
            if !ok {
                continue;
            }
            let mut total = 0;
            for s in list.as_slice() {
                assert!(m.check_range(GuestAddress(s.addr()), s.len()));
                assert_eq!(s.read(s.len() - 1, &mut byte), 1);
                total += s.len();
            }
            assert_eq!(total, list.total());
        }
    }
}

/// One vhost-user message with descriptors the input describes (memfds of any size, sealed
/// or not; eventfds, some in semaphore mode) through the relay's checks. Whatever is
/// accepted must be safe to map: every region inside its file, the file sealed against
/// shrinking, the total under the per-port cap.
pub fn vhost_message(data: &[u8]) {
    let mut inp = Input(data);
    let req = match inp.u8() % 4 {
        0 => vet::SET_MEM_TABLE,
        1 => vet::ADD_MEM_REG,
        2 => vet::SET_VRING_KICK,
        _ => u32::from(inp.u8()),
    };
    let mut fds = Vec::new();
    for _ in 0..inp.u8() % 4 {
        let kind = inp.u8();
        let size = u64::from(u32::from_le_bytes(inp.bytes::<4>())) << (kind >> 5);
        let fd = match kind % 3 {
            0 | 1 => memfd(size, kind % 3 == 0),
            _ => eventfd(kind & 0x10 != 0),
        };
        let Some(fd) = fd else { return };
        fds.push(fd);
    }
    let payload = inp.0;
    let mut v = vet::Vetter::default();
    if v.check(req, payload, &fds).is_err() || fds.is_empty() {
        return;
    }
    let regions: Vec<(u64, u64)> = match req {
        vet::SET_MEM_TABLE => (0..fds.len())
            .map(|i| (le64(payload, 16 + 32 * i), le64(payload, 32 + 32 * i)))
            .collect(),
        vet::ADD_MEM_REG => vec![(le64(payload, 16), le64(payload, 32))],
        _ => return,
    };
    let mut total = 0u64;
    for (fd, (size, offset)) in fds.iter().zip(regions) {
        let file = std::fs::File::from(fd.try_clone().expect("dup"));
        let len = file.metadata().expect("fstat").len();
        assert!(offset.checked_add(size).is_some_and(|end| end <= len));
        // SAFETY: F_GET_SEALS only reads the seal set of a descriptor we hold.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert!(seals > 0 && seals & libc::F_SEAL_SHRINK != 0);
        total += size;
    }
    assert!(total <= vet::MAX_PORT_MEMORY);
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn memfd(size: u64, seal: bool) -> Option<OwnedFd> {
    hostel_virtq::testing::memfd(size, seal)
        .ok()
        .map(OwnedFd::from)
}

fn eventfd(semaphore: bool) -> Option<OwnedFd> {
    let flags = libc::EFD_CLOEXEC | if semaphore { libc::EFD_SEMAPHORE } else { 0 };
    // SAFETY: eventfd(2) with valid flags.
    let fd = unsafe { libc::eventfd(0, flags) };
    // SAFETY: a fresh descriptor owned by nothing else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}
