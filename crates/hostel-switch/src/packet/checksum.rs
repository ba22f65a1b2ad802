//! RFC 1071 internet checksum, for the headers of frames the switch builds itself.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` to a running one's-complement sum (not yet folded).
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds and complements a running sum into the 16-bit checksum field value.
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(0, data))
}

/// Sum of the IPv4 pseudo-header for UDP/TCP checksums.
pub fn pseudo4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let mut acc = sum(0, &src.octets());
    acc = sum(acc, &dst.octets());
    acc.wrapping_add(u32::from(proto))
        .wrapping_add(u32::from(len))
}

/// Sum of the IPv6 pseudo-header for ICMPv6 checksums.
pub fn pseudo6(src: &Ipv6Addr, dst: &Ipv6Addr, next: u8, len: u32) -> u32 {
    let mut acc = sum(0, &src.octets());
    acc = sum(acc, &dst.octets());
    acc.wrapping_add(len >> 16)
        .wrapping_add(len & 0xffff)
        .wrapping_add(u32::from(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // Example from RFC 1071 section 3: sum of 0001 f203 f4f5 f6f7 is ddf2, checksum 220d.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&d), !0xddf2);
        // A buffer including its own correct checksum sums to zero.
        let mut hdr = [
            0x45u8, 0, 0, 0x54, 0, 0, 0x40, 0, 0x40, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 3,
        ];
        let c = checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&hdr), 0);
    }
}
