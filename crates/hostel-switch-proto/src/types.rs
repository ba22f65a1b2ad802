//! Address types shared by the config, the tables and the packet code: hostel's one
//! vocabulary (`hostel-types`), re-exported at the paths this crate has always had them.

pub use hostel_types::{AddrParseError, Ipv4Cidr, Ipv6Cidr, MacAddr};
