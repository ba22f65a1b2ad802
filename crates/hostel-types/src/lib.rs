//! hostel-types: the vocabulary shared by hostel's crates — one MAC address type, one IPv4
//! and one IPv6 prefix type, and the EUI-64 addresses a guest derives from its MAC — so the
//! store, the engine, the switch and the daemon parse and print them the same way.
//!
//! They serialize as the usual text forms (`52:54:00:12:34:56`, `10.0.0.0/24`), which is also
//! how the store keeps them, so the control protocol stays readable by humans and by the
//! daemon's JSON encoder alike.

mod ids;
pub use ids::{IdsMode, IdsOverload};

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Group bit set: broadcast or multicast; such frames are never unicast-switched.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// A stable locally-administered unicast address derived from `seed`, so a VM keeps
    /// its MAC across restarts without storing one.
    pub fn derived(seed: &str, index: usize) -> Self {
        // FNV-1a: tiny, deterministic, good enough to spread names over 32 bits.
        let mut h: u32 = 0x811c_9dc5;
        for b in seed.bytes().chain(index.to_le_bytes()) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        let b = h.to_be_bytes();
        MacAddr([0x52, 0x54, b[0], b[1], b[2], b[3]])
    }

    /// The modified EUI-64 interface identifier of this MAC (RFC 4291 appendix A): ff:fe in
    /// the middle and the universal/local bit flipped.
    pub fn eui64(&self) -> [u8; 8] {
        let m = self.0;
        [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
    }

    /// The address a guest gives itself by SLAAC in the /64 whose first half is `prefix`'s
    /// (the kernel's default `addr_gen_mode`: the EUI-64 interface identifier).
    pub fn slaac(&self, prefix: Ipv6Addr) -> Ipv6Addr {
        let mut o = prefix.octets();
        o[8..].copy_from_slice(&self.eui64());
        Ipv6Addr::from(o)
    }

    /// Reads a MAC from the first six bytes of `b`; callers check the length first.
    pub fn from_slice(b: &[u8]) -> Option<MacAddr> {
        let a: [u8; 6] = b.get(..6)?.try_into().ok()?;
        Some(MacAddr(a))
    }

    /// The modified-EUI-64 link-local address Linux derives from this MAC, so a guest's
    /// automatic fe80:: address passes anti-spoofing without being configured.
    pub fn link_local(&self) -> Ipv6Addr {
        self.slaac(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0))
    }

    /// The Ethernet multicast address for an IPv6 multicast group (33:33 + low 32 bits).
    pub fn ipv6_multicast(ip: &Ipv6Addr) -> MacAddr {
        let o = ip.octets();
        MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error for malformed address text in configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid {kind} {text:?}")]
pub struct AddrParseError {
    pub kind: &'static str,
    pub text: String,
}

impl FromStr for MacAddr {
    type Err = AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || AddrParseError {
            kind: "MAC address",
            text: s.to_string(),
        };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(':') {
            if n == 6 || part.len() != 2 {
                return Err(err());
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| err())?;
            n += 1;
        }
        if n != 6 {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// An IPv4 subnet in CIDR form, e.g. `10.0.0.0/24`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn mask(&self) -> Ipv4Addr {
        let bits = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix.min(32)))
        };
        Ipv4Addr::from(bits)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.mask());
        u32::from(ip) & m == u32::from(self.addr) & m
    }

    /// The directed broadcast address of the subnet (all host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !u32::from(self.mask()))
    }
}

/// An IPv6 prefix in CIDR form, e.g. `fd00::/64`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ipv6Cidr {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl Ipv6Cidr {
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        let p = u32::from(self.prefix.min(128));
        let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
        u128::from(ip) & m == u128::from(self.addr) & m
    }
}

fn split_cidr<'a>(s: &'a str, kind: &'static str) -> Result<(&'a str, u8), AddrParseError> {
    let err = || AddrParseError {
        kind,
        text: s.to_string(),
    };
    let (a, p) = s.split_once('/').ok_or_else(err)?;
    Ok((a, p.parse().map_err(|_| err())?))
}

impl FromStr for Ipv4Cidr {
    type Err = AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, prefix) = split_cidr(s, "IPv4 CIDR")?;
        let addr = a.parse().map_err(|_| AddrParseError {
            kind: "IPv4 CIDR",
            text: s.to_string(),
        })?;
        if prefix > 32 {
            return Err(AddrParseError {
                kind: "IPv4 CIDR",
                text: s.to_string(),
            });
        }
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl FromStr for Ipv6Cidr {
    type Err = AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, prefix) = split_cidr(s, "IPv6 CIDR")?;
        let addr = a.parse().map_err(|_| AddrParseError {
            kind: "IPv6 CIDR",
            text: s.to_string(),
        })?;
        if prefix > 128 {
            return Err(AddrParseError {
                kind: "IPv6 CIDR",
                text: s.to_string(),
            });
        }
        Ok(Ipv6Cidr { addr, prefix })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(MacAddr);
serde_via_str!(Ipv4Cidr);
serde_via_str!(Ipv6Cidr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_roundtrip_and_flags() {
        let m: MacAddr = "52:54:00:00:00:02".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:00:00:02");
        assert!(!m.is_multicast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!("52:54:00:00:00".parse::<MacAddr>().is_err());
        assert!("52:54:00:00:00:02:03".parse::<MacAddr>().is_err());
        assert_eq!(
            m.link_local(),
            "fe80::5054:ff:fe00:2".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn slaac_is_the_eui64_of_the_mac_in_the_prefix() {
        let m: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let p: Ipv6Addr = "fd00:1::".parse().unwrap();
        let want: Ipv6Addr = "fd00:1::5054:ff:fe12:3456".parse().unwrap();
        assert_eq!(m.slaac(p), want);
    }

    #[test]
    fn derived_macs_are_stable_unicast_and_local() {
        let a = MacAddr::derived("web1", 0);
        assert_eq!(a, MacAddr::derived("web1", 0));
        assert_ne!(a, MacAddr::derived("web1", 1));
        assert!(!a.is_multicast());
        assert_eq!(a.0[0] & 0x02, 0x02, "locally administered");
    }

    #[test]
    fn serde_uses_the_text_forms() {
        let m: MacAddr = serde_json::from_str(r#""52:54:00:00:00:02""#).unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), r#""52:54:00:00:00:02""#);
        assert!(serde_json::from_str::<MacAddr>(r#""52:54:00:00:00""#).is_err());
        let c: Ipv4Cidr = serde_json::from_str(r#""10.0.0.0/24""#).unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), r#""10.0.0.0/24""#);
    }

    #[test]
    fn cidr_contains() {
        let c: Ipv4Cidr = "10.0.0.0/24".parse().unwrap();
        assert!(c.contains("10.0.0.77".parse().unwrap()));
        assert!(!c.contains("10.0.1.1".parse().unwrap()));
        assert_eq!(c.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 0, 0, 255));
        let c6: Ipv6Cidr = "fd00:1::/64".parse().unwrap();
        assert!(c6.contains("fd00:1::5".parse().unwrap()));
        assert!(!c6.contains("fd00:2::5".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
    }
}
