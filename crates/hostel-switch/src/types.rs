//! Address types shared by the config, the tables and the packet code; defined in
//! [`hostel_switch_proto::types`] so the daemon can use them without the datapath.

pub use hostel_switch_proto::types::{AddrParseError, Ipv4Cidr, Ipv6Cidr, MacAddr};
