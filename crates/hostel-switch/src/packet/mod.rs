//! Frame parsing and the replies the switch builds itself (ARP, NDP, DHCPv4).
//!
//! Everything here works on plain byte slices copied out of guest memory, so it can be unit
//! tested and fuzzed without any virtio machinery.

pub mod arp;
pub mod checksum;
pub mod dhcp;
pub mod ip;
pub mod ndp;
pub mod parse;

pub use parse::{parse, ArpPkt, Ipv4Pkt, Ipv6Pkt, ParseError, Parsed, L3};

/// Smallest Ethernet frame on the wire without FCS; replies are padded to it.
pub const MIN_FRAME: usize = 60;

/// Big enough for any reply the switch generates (DHCP is the largest, ~350 bytes).
pub const REPLY_BUF: usize = 600;
