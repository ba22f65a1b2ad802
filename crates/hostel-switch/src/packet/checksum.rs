//! The internet checksum (RFC 1071/1624): `hostel-firewall`'s, the one implementation both
//! crates use (the firewall is the lower crate).

pub use hostel_firewall::checksum::*;
