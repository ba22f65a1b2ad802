//! The virtio-net header and the offload features the switch negotiates.
//!
//! The switch carries the sender's header to the receiver unchanged (except `num_buffers`),
//! which is what lets a 64 KiB TSO segment cross from VM to VM as one copy with its checksum
//! still pending: neither side ever segments or checksums in software.

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use crate::stats::DropReason;

/// Header length with VIRTIO_F_VERSION_1 (always includes `num_buffers`). Legacy devices
/// are refused, so this is the only layout the switch handles.
pub const VNET_HDR_LEN: usize = 12;

pub const fn bit(b: u32) -> u64 {
    1u64 << b
}

/// Features offered to the frontend (the vhost-user protocol-features bit is added by the
/// backend glue).
pub const OFFERED_FEATURES: u64 = bit(VIRTIO_F_VERSION_1)
    | bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_MRG_RXBUF)
    | bit(VIRTIO_RING_F_EVENT_IDX)
    | bit(VIRTIO_RING_F_INDIRECT_DESC);

pub const F_MRG_RXBUF: u64 = bit(VIRTIO_NET_F_MRG_RXBUF);
pub const F_EVENT_IDX: u64 = bit(VIRTIO_RING_F_EVENT_IDX);
pub const F_GUEST_CSUM: u64 = bit(VIRTIO_NET_F_GUEST_CSUM);
pub const F_GUEST_TSO4: u64 = bit(VIRTIO_NET_F_GUEST_TSO4);
pub const F_GUEST_TSO6: u64 = bit(VIRTIO_NET_F_GUEST_TSO6);

pub const HDR_F_NEEDS_CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
pub const GSO_NONE: u8 = VIRTIO_NET_HDR_GSO_NONE as u8;
pub const GSO_TCPV4: u8 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
pub const GSO_TCPV6: u8 = VIRTIO_NET_HDR_GSO_TCPV6 as u8;

/// `struct virtio_net_hdr_mrg_rxbuf`, little-endian on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub num_buffers: u16,
}

impl VnetHdr {
    pub fn from_bytes(b: &[u8; VNET_HDR_LEN]) -> Self {
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
            num_buffers: le(10),
        }
    }

    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }

    /// Checks what a hostile sender could use to confuse a receiver: the checksum location
    /// must lie inside the frame and GSO needs a segment size and partial checksum.
    pub fn validate(&self, frame_len: usize) -> Result<(), DropReason> {
        if self.flags & HDR_F_NEEDS_CSUM != 0 {
            let end = usize::from(self.csum_start) + usize::from(self.csum_offset) + 2;
            if end > frame_len {
                return Err(DropReason::BadVnetHeader);
            }
        }
        match self.gso_type {
            GSO_NONE => Ok(()),
            GSO_TCPV4 | GSO_TCPV6 => {
                if self.gso_size == 0 || self.flags & HDR_F_NEEDS_CSUM == 0 {
                    Err(DropReason::BadVnetHeader)
                } else {
                    Ok(())
                }
            }
            _ => Err(DropReason::BadVnetHeader),
        }
    }

    /// Whether a receiver that acked `features` can take this frame as is.
    pub fn receivable_with(&self, features: u64) -> bool {
        let csum_ok = self.flags & HDR_F_NEEDS_CSUM == 0 || features & F_GUEST_CSUM != 0;
        let gso_ok = match self.gso_type {
            GSO_TCPV4 => features & F_GUEST_TSO4 != 0,
            GSO_TCPV6 => features & F_GUEST_TSO6 != 0,
            _ => true,
        };
        csum_ok && gso_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_validation() {
        let h = VnetHdr {
            flags: HDR_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        };
        assert_eq!(VnetHdr::from_bytes(&h.to_bytes()), h);
        assert!(h.validate(65000).is_ok());
        assert_eq!(h.validate(40), Err(DropReason::BadVnetHeader));
        assert!(!h.receivable_with(F_GUEST_CSUM));
        assert!(h.receivable_with(F_GUEST_CSUM | F_GUEST_TSO4));
        let udp = VnetHdr { gso_type: 3, ..h };
        assert_eq!(udp.validate(65000), Err(DropReason::BadVnetHeader));
    }
}
