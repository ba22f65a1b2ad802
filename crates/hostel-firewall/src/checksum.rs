//! Internet checksums (RFC 1071) and their incremental update (RFC 1624), so address and port
//! translation touches only the bytes it changes instead of re-summing a 1500-byte payload.
//! The one implementation for the firewall and the switch (`hostel-switch` re-exports it as
//! `packet::checksum`).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` (big-endian 16-bit words, odd byte padded) to a running one's-complement sum,
/// not yet folded.
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so a 64 KiB payload cannot overflow the accumulator.
        if acc > 0x7fff_ffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [b] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*b) << 8);
    }
    acc
}

/// Folds a sum into 16 bits and complements it: the value stored in a header.
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum of `data` alone.
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(0, data))
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for one 16-bit word changing from `old` to `new`.
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!csum) + u32::from(!old) + u32::from(new);
    finish(acc)
}

/// The same for a 32-bit field (an IPv4 address), as two words.
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let c = update16(csum, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

/// Sum of the IPv4 pseudo-header for a transport checksum (`len`: the transport length).
pub fn pseudo4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let acc = sum(sum(0, &src.octets()), &dst.octets());
    acc + u32::from(proto) + u32::from(len)
}

/// Sum of the IPv6 pseudo-header for a transport checksum.
pub fn pseudo6(src: &Ipv6Addr, dst: &Ipv6Addr, next: u8, len: u32) -> u32 {
    let acc = sum(sum(0, &src.octets()), &dst.octets());
    acc + u32::from(next) + (len & 0xffff) + (len >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2, its checksum 220d.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&d), !0xddf2);
        // An odd length pads the last byte.
        assert_eq!(sum(0, &[0xab]), 0xab00);
        // 64 KiB of 0xff sums without overflowing.
        assert_eq!(checksum(&vec![0xff; 65_536]), 0);
    }

    #[test]
    fn incremental_matches_full() {
        let mut hdr = [
            0x45u8, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 5, 8, 8, 8, 8,
        ];
        let c = checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&hdr), 0);
        let old = u32::from_be_bytes([10, 0, 0, 5]);
        let new = u32::from_be_bytes([203, 0, 113, 9]);
        let c2 = update32(c, old, new);
        hdr[12..16].copy_from_slice(&new.to_be_bytes());
        hdr[10..12].copy_from_slice(&c2.to_be_bytes());
        assert_eq!(checksum(&hdr), 0);
    }
}
