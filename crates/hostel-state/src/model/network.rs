//! Per-tenant virtual networks and the NICs that attach VMs to them.
//!
//! The store is the source of truth for addressing: the switch tables are
//! rebuilt from these records on every daemon start, so an address handed out
//! here must never be handed out twice, across restarts included.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::ids::{NetworkId, NetworkName, TenantId, VmId};
use crate::time::Timestamp;
pub use hostel_types::MacAddr;

/// Smallest accepted prefix length: a /8 already holds 16M hosts, and larger
/// networks only make allocation scans and broadcast domains worse.
pub const MIN_PREFIX: u8 = 8;
/// Largest accepted prefix length: a /30 is the smallest subnet that still has
/// room for a gateway and one VM once network and broadcast are excluded.
pub const MAX_PREFIX: u8 = 30;
/// NICs per VM; bounded so one request cannot claim a whole subnet and
/// because each NIC costs a PCI slot and a switch port.
pub const MAX_NICS_PER_VM: usize = 8;

/// An IPv4 subnet such as `10.0.0.0/24`, always held as its network address
/// so two spellings of the same subnet compare and store identically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// Host bits of `addr` are cleared (`10.0.0.7/24` becomes `10.0.0.0/24`).
    /// Errors name the field `subnet`, the only place this type is accepted.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, StoreError> {
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&prefix) {
            return Err(StoreError::invalid(
                "subnet",
                format!("prefix length /{prefix} not allowed; use /{MIN_PREFIX} to /{MAX_PREFIX}"),
            ));
        }
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix));
        Ok(Ipv4Net { network, prefix })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// Whether `addr` lies in the subnet (network and broadcast included).
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether `addr` can be given to a machine: inside the subnet and
    /// neither the network nor the broadcast address.
    pub fn is_host(&self, addr: Ipv4Addr) -> bool {
        self.contains(addr) && addr != self.network && addr != self.broadcast()
    }

    /// Usable host addresses in ascending order (network and broadcast
    /// excluded). Lazy, so scanning a /8 for the first free address only
    /// touches as many addresses as are in use.
    pub fn hosts(&self) -> impl DoubleEndedIterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) + 1;
        let last = u32::from(self.broadcast()) - 1;
        (first..=last).map(Ipv4Addr::from)
    }

    /// The conventional gateway address, `.1` of the subnet.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
}

fn mask(prefix: u8) -> u32 {
    // prefix is validated to 8..=30, so the shift never overflows.
    u32::MAX << (32 - u32::from(prefix))
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || StoreError::invalid("subnet", format!("{s:?} is not a CIDR like 10.0.0.0/24"));
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        // u8::from_str would accept "+24"; only plain digits are CIDR.
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Ipv4Net::new(addr, prefix)
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

/// A network's IPv6 prefix. Always a /64: guests configure themselves by SLAAC from the
/// switch's router advertisements, and SLAAC only works on /64s. Each NIC's address is
/// the EUI-64 one its guest derives from its MAC ([`slaac_address`]), so the store never
/// allocates (or can double-allocate) IPv6 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv6Prefix64 {
    network: Ipv6Addr,
}

impl Ipv6Prefix64 {
    pub fn network(&self) -> Ipv6Addr {
        self.network
    }

    /// `::1` of the prefix: the switch's address on the network.
    pub fn gateway(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.network) | 1)
    }
}

impl FromStr for Ipv6Prefix64 {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| StoreError::invalid("subnet6", format!("{s:?}: {why}"));
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("not a CIDR like fd00:1::/64"))?;
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| bad("not a CIDR like fd00:1::/64"))?;
        if prefix != "64" {
            return Err(bad(
                "the prefix length must be /64 (guests configure by SLAAC)",
            ));
        }
        let network = Ipv6Addr::from(u128::from(addr) & !u128::from(u64::MAX));
        // Judged on the prefix itself, so `::5/64` (whose /64 holds `::` and `::1`) is
        // refused like `::/64`.
        if network.is_multicast() {
            return Err(bad("a multicast prefix (ff00::/8) is not a subnet"));
        }
        if u128::from(network) >> 64 == 0 {
            return Err(bad(
                "the unspecified and loopback addresses (::/64) are not a subnet",
            ));
        }
        if network.segments()[0] & 0xffc0 == 0xfe80 {
            return Err(bad(
                "link-local addresses are the switch's and the guests' own",
            ));
        }
        Ok(Ipv6Prefix64 { network })
    }
}

impl fmt::Display for Ipv6Prefix64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/64", self.network)
    }
}

impl TryFrom<String> for Ipv6Prefix64 {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Ipv6Prefix64> for String {
    fn from(n: Ipv6Prefix64) -> String {
        n.to_string()
    }
}

/// A network's subnet in the shared vocabulary (the switch's tables, policies): the same
/// prefix, already validated here.
impl From<Ipv4Net> for hostel_types::Ipv4Cidr {
    fn from(n: Ipv4Net) -> Self {
        hostel_types::Ipv4Cidr {
            addr: n.network(),
            prefix: n.prefix(),
        }
    }
}

/// A network's IPv6 /64 in the shared vocabulary.
impl From<Ipv6Prefix64> for hostel_types::Ipv6Cidr {
    fn from(p: Ipv6Prefix64) -> Self {
        hostel_types::Ipv6Cidr {
            addr: p.network(),
            prefix: 64,
        }
    }
}

/// The address a guest gives itself by SLAAC with an EUI-64 interface id (the kernel's
/// default `addr_gen_mode`): see [`MacAddr::slaac`].
pub fn slaac_address(prefix: &Ipv6Prefix64, mac: &MacAddr) -> Ipv6Addr {
    mac.slaac(prefix.network)
}

/// A tenant's virtual L2/L3 network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: NetworkId,
    pub tenant: TenantId,
    pub name: NetworkName,
    pub subnet4: Ipv4Net,
    /// Address the switch answers on; never allocated to a VM.
    pub gateway4: Ipv4Addr,
    /// IPv6 on the network, when it has it.
    pub subnet6: Option<Ipv6Prefix64>,
    pub uplink: Uplink,
    pub created_at: Timestamp,
}

/// Where a network's traffic for addresses no VM on the host owns goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Uplink {
    /// Nowhere: the network reaches only its own VMs (and the switch's gateway services).
    #[default]
    None,
    /// A TAP device in the host, named by [`Network::uplink_ifname`], carrying the
    /// gateway's MAC; the host side routes (or bridges) it toward the real network.
    Tap,
}

impl Uplink {
    pub fn as_str(self) -> &'static str {
        match self {
            Uplink::None => "none",
            Uplink::Tap => "tap",
        }
    }
}

impl FromStr for Uplink {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Uplink::None),
            "tap" => Ok(Uplink::Tap),
            other => Err(StoreError::invalid(
                "uplink",
                format!("{other:?} is not an uplink kind (none, tap)"),
            )),
        }
    }
}

impl Network {
    /// The host interface of the uplink, when it has one. Derived from the id (not the
    /// tenant's name for it) so it is unique on the host, stable across restarts and
    /// within the kernel's 15-byte limit.
    pub fn uplink_ifname(&self) -> Option<String> {
        match self.uplink {
            Uplink::None => None,
            Uplink::Tap => {
                let hex: String = self.id.as_uuid().simple().to_string();
                Some(format!("hn-{}", &hex[..10]))
            }
        }
    }
}

/// What a caller asks for when creating a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNetwork {
    pub name: NetworkName,
    pub subnet4: Ipv4Net,
    /// `None`: the subnet's first host.
    pub gateway4: Option<Ipv4Addr>,
    pub subnet6: Option<Ipv6Prefix64>,
    pub uplink: Uplink,
}

impl NewNetwork {
    /// An isolated IPv4-only network with the default gateway.
    pub fn ipv4(name: NetworkName, subnet4: Ipv4Net) -> Self {
        NewNetwork {
            name,
            subnet4,
            gateway4: None,
            subnet6: None,
            uplink: Uplink::None,
        }
    }
}

/// Address ranges no virtual network may use, with why: packets to them never leave the
/// host (loopback), are not one host's (multicast, broadcast), are the link's own
/// (link-local) or mean "no address" (unspecified, 0.0.0.0/8).
const UNUSABLE_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "unspecified (0.0.0.0/8)"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback (127.0.0.0/8)"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local (169.254.0.0/16)",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast (224.0.0.0/4)"),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        "reserved, with the broadcast address (240.0.0.0/4)",
    ),
];

/// Refuses a subnet that overlaps a range no network may use ([`UNUSABLE_V4`]).
/// Checked when a network is created, not when one is read: a stored network stays
/// readable whatever later releases refuse.
pub(crate) fn check_usable_subnet(subnet: &Ipv4Net) -> Result<(), StoreError> {
    for &(addr, prefix, what) in UNUSABLE_V4 {
        // Two CIDR blocks overlap exactly when the shorter one contains the other's start.
        let shorter = prefix.min(subnet.prefix());
        let m = u32::MAX << (32 - u32::from(shorter));
        if u32::from(addr) & m == u32::from(subnet.network()) & m {
            return Err(StoreError::invalid(
                "subnet",
                format!("{subnet} overlaps the {what} range, which no network may use"),
            ));
        }
    }
    Ok(())
}

/// Picks and checks a network's gateway: defaults to the first host, and must
/// be a host address of the subnet so VMs can reach it on-link.
pub(crate) fn resolve_gateway(
    subnet: &Ipv4Net,
    gateway: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, StoreError> {
    let gw = gateway.unwrap_or_else(|| subnet.first_host());
    if !subnet.is_host(gw) {
        return Err(StoreError::invalid(
            "gateway4",
            format!("{gw} is not a host address of {subnet}"),
        ));
    }
    Ok(gw)
}

/// One NIC requested at VM creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewNic {
    pub network: NetworkId,
    /// `None`: the store allocates the lowest free host address.
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
}

/// A VM's attachment to a network: what the engine needs for
/// `-device virtio-net,mac=…` and the switch needs for its port tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmNic {
    pub vm: VmId,
    /// Position within the VM (0-based), which fixes guest device order.
    pub idx: u32,
    pub network: NetworkId,
    /// `52:54:00:xx:xx:xx` (stored as that text).
    pub mac: MacAddr,
    pub ipv4: Ipv4Addr,
}

/// A stable, locally administered unicast MAC for NIC `idx` of `vm`.
///
/// Derived rather than random so the same NIC keeps its MAC if the record is
/// ever re-created from the same ids; `attempt` lets the caller re-derive on
/// the (rare) collision within a network. The `52:54:00` prefix is the one
/// QEMU users recognize, and 0x52 has the locally-administered bit set and
/// the multicast bit clear.
/// The MAC NIC `idx` of VM `vm` gets unless it collides in its network (then the store
/// derives another): what a VM booted before its record exists (a standby) is given.
pub fn first_choice_mac(vm: &VmId, idx: u32) -> MacAddr {
    derive_mac(vm, idx, 0)
}

pub(crate) fn derive_mac(vm: &VmId, idx: u32, attempt: u32) -> MacAddr {
    let mut h = Sha256::new();
    h.update(b"hostel-nic-mac\0");
    h.update(vm.as_uuid().as_bytes());
    h.update(idx.to_be_bytes());
    h.update(attempt.to_be_bytes());
    let d = h.finalize();
    MacAddr([0x52, 0x54, 0x00, d[0], d[1], d[2]])
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv6_prefixes_are_64s_and_slaac_matches_the_kernel() {
        let p: Ipv6Prefix64 = "fd00:9::1234/64".parse().unwrap();
        assert_eq!(p.to_string(), "fd00:9::/64");
        assert_eq!(p.gateway(), "fd00:9::1".parse::<Ipv6Addr>().unwrap());
        // What Linux derives for 52:54:00:12:34:56.
        let c: hostel_types::Ipv6Cidr = p.into();
        assert_eq!(c.to_string(), "fd00:9::/64");
        let n: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let c: hostel_types::Ipv4Cidr = n.into();
        assert_eq!(c.to_string(), "10.0.0.0/24");
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(
            slaac_address(&p, &mac),
            "fd00:9::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
        for bad in [
            "fd00::/48",
            "fd00::",
            "fe80::/64",
            "ff02::/64",
            "x/64",
            "fd00::/064",
            "::/64",
            "::1/64",
            "::5/64",
            "ff00::/64",
            "febf::/64",
        ] {
            assert!(bad.parse::<Ipv6Prefix64>().is_err(), "{bad}");
        }
    }

    #[test]
    fn subnets_of_special_ranges_are_refused_and_named() {
        for (subnet, named) in [
            ("127.0.0.0/8", "loopback"),
            ("127.1.2.0/24", "loopback"),
            ("169.0.0.0/8", "link-local"),
            ("224.0.0.0/24", "multicast"),
            ("239.255.0.0/16", "multicast"),
            ("169.254.1.0/24", "link-local"),
            ("0.0.0.0/8", "unspecified"),
            ("255.255.255.252/30", "broadcast"),
            ("240.0.0.0/8", "reserved"),
        ] {
            let err = check_usable_subnet(&subnet.parse().unwrap()).unwrap_err();
            assert!(err.to_string().contains(named), "{subnet}: {err}");
            assert!(matches!(
                err,
                StoreError::Invalid {
                    field: "subnet",
                    ..
                }
            ));
        }
        for ok in [
            "10.0.0.0/8",
            "192.168.1.0/24",
            "126.0.0.0/8",
            "128.0.0.0/8",
            "169.253.0.0/16",
            "223.255.255.0/24",
        ] {
            check_usable_subnet(&ok.parse().unwrap()).unwrap();
        }
    }

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parse_normalizes_and_validates() {
        assert_eq!(net("10.0.0.7/24").to_string(), "10.0.0.0/24");
        assert_eq!(net("10.0.0.0/24"), net("10.0.0.255/24"));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/+24",
            "10.0.0.0/7",
            "10.0.0.0/31",
            "10.0.0.0/32",
            "10.0.0/24",
            "010.0.0.0/24",
            "10.0.0.0/024",
            " 10.0.0.0/24",
            "x/24",
        ] {
            match bad.parse::<Ipv4Net>() {
                Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "subnet", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn hosts_contains_and_broadcast() {
        let n = net("192.168.1.0/30");
        let hosts: Vec<_> = n.hosts().collect();
        assert_eq!(
            hosts,
            vec![Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(192, 168, 1, 2)]
        );
        assert_eq!(n.broadcast(), Ipv4Addr::new(192, 168, 1, 3));
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 252));
        assert!(n.contains(Ipv4Addr::new(192, 168, 1, 3)));
        assert!(!n.is_host(Ipv4Addr::new(192, 168, 1, 3)));
        assert!(!n.contains(Ipv4Addr::new(192, 168, 1, 4)));
        let big = net("10.0.0.0/8");
        assert_eq!(big.hosts().next(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            big.hosts().next_back(),
            Some(Ipv4Addr::new(10, 255, 255, 254))
        );
    }

    #[test]
    fn gateway_defaults_to_first_host_and_must_be_a_host() {
        let n = net("10.1.2.0/24");
        assert_eq!(
            resolve_gateway(&n, None).unwrap(),
            Ipv4Addr::new(10, 1, 2, 1)
        );
        assert!(resolve_gateway(&n, Some(Ipv4Addr::new(10, 1, 2, 254))).is_ok());
        for bad in [[10, 1, 2, 0], [10, 1, 2, 255], [10, 1, 3, 1]] {
            let e = resolve_gateway(&n, Some(Ipv4Addr::from(bad))).unwrap_err();
            assert!(matches!(
                e,
                StoreError::Invalid {
                    field: "gateway4",
                    ..
                }
            ));
        }
    }

    #[test]
    fn serde_is_cidr_text_and_validates() {
        let n = net("10.0.0.0/24");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"10.0.0.0/24\"");
        assert_eq!(
            serde_json::from_str::<Ipv4Net>("\"10.0.0.0/24\"").unwrap(),
            n
        );
        assert!(serde_json::from_str::<Ipv4Net>("\"10.0.0.0/31\"").is_err());
        let nic: NewNic =
            serde_json::from_str(&format!("{{\"network\":\"{}\"}}", NetworkId::new_random()))
                .unwrap();
        assert_eq!(nic.ipv4, None);
    }

    #[test]
    fn macs_are_stable_local_unicast_and_vary() {
        let vm = VmId::new_random();
        let m = derive_mac(&vm, 0, 0);
        assert_eq!(m, derive_mac(&vm, 0, 0));
        let text = m.to_string();
        assert!(text.starts_with("52:54:00:") && text.len() == 17, "{m}");
        assert_eq!(text, text.to_lowercase(), "stored lowercase, as before");
        assert!(!m.is_multicast());
        assert_ne!(m, derive_mac(&vm, 1, 0));
        assert_ne!(m, derive_mac(&vm, 0, 1));
    }
}
