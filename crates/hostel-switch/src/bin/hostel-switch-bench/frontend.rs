//! A vhost-user frontend playing one VM: memfd guest memory shared with the switch, an RX
//! and a TX split ring driven by [`hostel_switch::driver::SplitRing`].

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::Path;

use hostel_switch::datapath::vnet::{VnetHdr, OFFERED_FEATURES, VNET_HDR_LEN};
use hostel_switch::driver::SplitRing;
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
    pub mem: GuestMemoryMmap<()>,
    _frontend: Frontend,
    pub rx: SplitRing,
    pub tx: SplitRing,
    pub rx_kick: EventFd,
    pub tx_kick: EventFd,
    _calls: [EventFd; 2],
    /// Address of the shared TX frame buffer (every TX chain points at it: the content
    /// never changes, so in-flight chains can share it).
    pub tx_buf: u64,
    pub tx_len: u32,
    pub rx_buf_size: u32,
}

fn memfd(size: usize) -> std::io::Result<File> {
    // SAFETY: memfd_create with a static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"hostel-bench".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size as u64)?;
    Ok(f)
}

type BoxErr = Box<dyn std::error::Error>;

impl Vm {
    /// Connects to a port socket and sets the device up as a guest driver would.
    pub fn connect(sock: &Path, rx_buf_size: u32) -> Result<Vm, BoxErr> {
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
        let host = mem.get_host_address(GuestAddress(0))? as u64;
        let (rx, end) = SplitRing::new(0x1000, QSIZE);
        let (tx, end) = SplitRing::new((end + 0xfff) & !0xfff, QSIZE);
        assert!(end < DATA);
        let calls = [EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?];
        let kicks = [EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?];
        for (q, r) in [&rx, &tx].into_iter().enumerate() {
            fe.set_vring_num(q, QSIZE)?;
            fe.set_vring_addr(
                q,
                &VringConfigData {
                    queue_max_size: QSIZE,
                    queue_size: QSIZE,
                    flags: 0,
                    desc_table_addr: host + r.desc,
                    used_ring_addr: host + r.used,
                    avail_ring_addr: host + r.avail,
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
            mem,
            _frontend: fe,
            rx,
            tx,
            rx_kick,
            tx_kick,
            _calls: calls,
            tx_buf: DATA,
            tx_len: 0,
            rx_buf_size,
        })
    }

    /// Stores the frame every TX chain will carry.
    pub fn set_tx_frame(&mut self, hdr: VnetHdr, frame: &[u8]) -> Result<(), BoxErr> {
        let mut data = hdr.to_bytes().to_vec();
        data.extend_from_slice(frame);
        self.mem.write_slice(&data, GuestAddress(self.tx_buf))?;
        self.tx_len = (VNET_HDR_LEN + frame.len()) as u32;
        Ok(())
    }

    /// Re-posts recycled RX descriptors with their buffers; descriptor `i` always owns
    /// buffer `i`, so no bookkeeping is needed.
    pub fn refill_in_place(&mut self) {
        while self.rx.free_descriptors() > 0 {
            let Some(id) = self.rx.peek_free() else { break };
            let addr = DATA + (128 << 10) + u64::from(id) * u64::from(self.rx_buf_size);
            if self
                .rx
                .push(&self.mem, &[(addr, self.rx_buf_size, true)])
                .is_none()
            {
                break;
            }
        }
        self.rx.publish(&self.mem);
    }

    /// Posts every free RX descriptor as a buffer, tells the device not to interrupt (the
    /// bench polls), and kicks once so the switch learns of the ring.
    pub fn fill_rx(&mut self) {
        self.refill_in_place();
        let _ = self.mem.write_obj(1u16, GuestAddress(self.rx.avail));
        self.rx.publish(&self.mem);
        let _ = self.rx_kick.write(1);
    }
}
