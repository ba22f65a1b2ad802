//! Executing decisions against receivers' RX rings: one lock of a destination ring per group
//! of frames, one notification per group, counters added once per group.

use vhost_user_backend::VringT;
use vm_memory::GuestAddressSpace;

use crate::datapath::port::PortRuntime;
use crate::datapath::rx::{deliver, FrameSrc, RxQueue};
use crate::datapath::vnet::{VnetHdr, F_MRG_RXBUF};
use crate::stats::DropReason;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

/// Adapter from a locked vring's queue to [`RxQueue`].
pub struct QueueRx<'a> {
    pub q: &'a mut Queue,
    pub mem: &'a GuestMemoryMmap<()>,
}

impl RxQueue for QueueRx<'_> {
    fn pop(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        out: &mut crate::datapath::chain::SegList,
    ) -> Option<(u16, Result<(), DropReason>)> {
        let chain = self.q.pop_descriptor_chain(mem)?;
        let head = chain.head_index();
        Some((head, out.gather_into(mem, chain, true, usize::MAX)))
    }
    fn unpop(&mut self) {
        self.q.go_to_previous_position();
    }
    fn add_used(&mut self, head: u16, len: u32) -> Result<(), DropReason> {
        self.q
            .add_used(self.mem, head, len)
            .map_err(|_| DropReason::NoRxBuffer)
    }
}

/// An open RX ring of one destination, valid for the duration of [`with_rx`]'s closure.
pub struct RxSink<'a> {
    q: QueueRx<'a>,
    features: u64,
    packets: u64,
    bytes: u64,
}

impl RxSink<'_> {
    pub fn send(&mut self, hdr: VnetHdr, src: &FrameSrc<'_>) -> Result<(), DropReason> {
        if !hdr.receivable_with(self.features) {
            return Err(DropReason::OffloadUnsupported);
        }
        let mem = self.q.mem;
        deliver(&mut self.q, mem, self.features & F_MRG_RXBUF != 0, hdr, src)?;
        self.packets += 1;
        // Frame bytes, as the guest sees them (the virtio-net header is not traffic).
        self.bytes += src.len as u64;
        Ok(())
    }
}

/// Locks `port`'s RX ring once, runs `f` to deliver any number of frames, then signals the
/// guest if it asked to be notified and updates the port's RX counters.
pub fn with_rx<R>(
    port: &PortRuntime,
    f: impl FnOnce(&mut RxSink<'_>) -> R,
) -> Result<R, DropReason> {
    let target = port.rx().ok_or(DropReason::DestinationDown)?;
    let guard = target.mem.memory();
    let mem: &GuestMemoryMmap<()> = &guard;
    let mut st = target.vring.get_mut();
    if !st.is_enabled() || !st.get_queue().ready() {
        return Err(DropReason::DestinationDown);
    }
    let mut sink = RxSink {
        q: QueueRx {
            q: st.get_queue_mut(),
            mem,
        },
        features: target.features,
        packets: 0,
        bytes: 0,
    };
    let r = f(&mut sink);
    let (packets, bytes) = (sink.packets, sink.bytes);
    if packets > 0 {
        if st.needs_notification().unwrap_or(true) {
            if let Err(e) = st.signal_used_queue() {
                tracing::debug!(port = %port.id, error = %e, "signalling RX failed");
            }
        }
        port.stats.add_rx(packets, bytes);
    }
    Ok(r)
}
