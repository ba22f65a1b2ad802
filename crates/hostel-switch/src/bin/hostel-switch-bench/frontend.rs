//! A vhost-user frontend playing one VM: memfd guest memory shared with the switch, and an
//! RX and a TX split ring driven by hostel-virtq's guest-side driver. Every chain is one
//! descriptor and descriptor `i` always carries the same buffer, so offering a chain is one
//! avail-ring slot and taking one back is one used-ring read: the driver side costs little
//! next to the switch it is measuring.

use std::fs::File;
use std::path::Path;

use hostel_switch::datapath::vnet::{VnetHdr, OFFERED_FEATURES, VNET_HDR_LEN};
use hostel_virtq::driver::SplitRing;
use hostel_virtq::ring::F_WRITE;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub const QSIZE: u16 = 1024;
pub const MEM_SIZE: usize = 64 << 20;
const DATA: u64 = 1 << 20;

pub struct Vm {
    _mem: GuestMemoryMmap<()>,
    _frontend: Frontend,
    pub rx: SplitRing,
    pub tx: SplitRing,
    pub rx_kick: EventFd,
    pub tx_kick: EventFd,
    _calls: [EventFd; 2],
}

/// Guest memory as QEMU's memfd backend makes it: sealed against shrinking, which the switch
/// requires (a file that can shrink under its mapping would fault the switch).
fn memfd(size: usize) -> std::io::Result<File> {
    hostel_virtq::testing::sealed_memfd(size as u64)
}

type BoxErr = Box<dyn std::error::Error>;

impl Vm {
    /// Connects to a port socket and sets the device up as a guest driver would: the TX
    /// ring's descriptors all carry `tx_frame` (with `hdr`), the RX ring's each own one
    /// `rx_buf_size` buffer.
    pub fn connect(
        sock: &Path,
        rx_buf_size: u32,
        hdr: VnetHdr,
        tx_frame: &[u8],
    ) -> Result<Vm, BoxErr> {
        let file = memfd(MEM_SIZE)?;
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(0),
            MEM_SIZE,
            Some(FileOffset::new(file, 0)),
        )])?;
        let mut fe = Frontend::connect(sock, 2)?;
        fe.set_owner()?;
        let offered = fe.get_features()?;
        // EVENT_IDX left out: the bench polls and uses the flag-based suppression.
        let want = (OFFERED_FEATURES & !(1 << VIRTIO_RING_F_EVENT_IDX))
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        fe.set_features(offered & want)?;
        let pf = fe.get_protocol_features()?;
        fe.set_protocol_features(pf & VhostUserProtocolFeatures::REPLY_ACK)?;
        let regions: Vec<VhostUserMemoryRegionInfo> = mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<_, _>>()?;
        fe.set_mem_table(&regions)?;
        let host = mem.get_host_address(GuestAddress(0))?;
        let (mut rx, end) = SplitRing::new(&mem, 0x1000, QSIZE)?;
        let (mut tx, end) = SplitRing::new(&mem, (end + 0xfff) & !0xfff, QSIZE)?;
        assert!(end < DATA);

        let mut data = hdr.to_bytes().to_vec();
        data.extend_from_slice(tx_frame);
        mem.write_slice(&data, GuestAddress(DATA))?;
        let tx_len = (VNET_HDR_LEN + tx_frame.len()) as u32;
        let rx_base = DATA + (128 << 10);
        assert!(rx_base + u64::from(QSIZE) * u64::from(rx_buf_size) <= MEM_SIZE as u64);
        for id in 0..QSIZE {
            tx.write_desc(id, DATA, tx_len, 0, 0);
            let addr = rx_base + u64::from(id) * u64::from(rx_buf_size);
            rx.write_desc(id, addr, rx_buf_size, F_WRITE, 0);
        }
        rx.suppress_interrupts();
        tx.suppress_interrupts();

        let calls = [EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?];
        let kicks = [EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?];
        let host = host as u64;
        for (q, r) in [&rx, &tx].into_iter().enumerate() {
            fe.set_vring_num(q, QSIZE)?;
            fe.set_vring_addr(
                q,
                &VringConfigData {
                    queue_max_size: QSIZE,
                    queue_size: QSIZE,
                    flags: 0,
                    desc_table_addr: host + r.desc(),
                    used_ring_addr: host + r.used(),
                    avail_ring_addr: host + r.avail(),
                    log_addr: None,
                },
            )?;
            fe.set_vring_base(q, 0)?;
            fe.set_vring_call(q, &calls[q])?;
            fe.set_vring_kick(q, &kicks[q])?;
            fe.set_vring_enable(q, true)?;
        }
        let [rx_kick, tx_kick] = kicks;
        Ok(Vm {
            _mem: mem,
            _frontend: fe,
            rx,
            tx,
            rx_kick,
            tx_kick,
            _calls: calls,
        })
    }

    /// Re-posts every free RX descriptor.
    pub fn refill_rx(&mut self) {
        while self.rx.repost().is_some() {}
        self.rx.publish();
    }

    /// Posts every RX buffer and kicks once so the switch learns of the ring.
    pub fn fill_rx(&mut self) {
        self.refill_rx();
        let _ = self.rx_kick.write(1);
    }
}
