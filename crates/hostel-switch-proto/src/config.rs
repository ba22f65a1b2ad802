//! What the daemon programs into the switch: networks and ports.
//!
//! The switch keeps no state on disk; after a restart the daemon re-sends this configuration
//! (as a whole [`SwitchConfig`] or op by op over the control socket), so every type here is
//! plain serde data.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, LimitError};
use crate::external::ExternalConfig;
use crate::policy::PolicyConfig;
use crate::types::{Ipv4Cidr, Ipv6Cidr, MacAddr};

/// One tenant network: an L2 domain whose gateway the switch itself impersonates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Unique name, chosen by the daemon (tenant + network id).
    pub id: String,
    /// IPv4 subnet; ports' IPv4 addresses must lie inside it.
    pub subnet4: Option<Ipv4Cidr>,
    /// Gateway IPv4 address answered by the switch (ARP) and handed out by DHCP.
    pub gateway4: Option<Ipv4Addr>,
    #[serde(default)]
    pub subnet6: Option<Ipv6Cidr>,
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    /// MAC the switch uses for the gateway (and sets on the uplink TAP it creates).
    pub gateway_mac: MacAddr,
    /// TAP device name for traffic that is not port-to-port; `None` drops such traffic.
    #[serde(default)]
    pub uplink: Option<String>,
    /// DNS servers announced by DHCP.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// MTU announced by DHCP (option 26); 0 means don't announce.
    #[serde(default)]
    pub mtu: u16,
}

/// One virtual NIC: a vhost-user socket bound to a network with assigned addresses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortConfig {
    /// Unique name, chosen by the daemon (VM id + NIC index).
    pub id: String,
    pub network: String,
    /// The vNIC's MAC; frames with any other source MAC are dropped.
    pub mac: MacAddr,
    /// The single IPv4 address this port may use; also what DHCP hands out.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 addresses this port may use, besides the link-local derived from `mac`.
    #[serde(default)]
    pub ipv6: Vec<Ipv6Addr>,
    /// Unix socket path the switch listens on for QEMU's vhost-user connection (unused by
    /// other kinds).
    #[serde(default)]
    pub socket: PathBuf,
    /// What carries the port's frames; absent means a vhost-user NIC on `socket`.
    #[serde(default, skip_serializing_if = "PortKind::is_vhost_user")]
    pub kind: PortKind,
    /// Rate limits on what the port sends. Absent means unlimited; changing only this field
    /// (through `apply`) keeps the guest connected.
    #[serde(default, skip_serializing_if = "PortLimits::is_unlimited")]
    pub limits: PortLimits,
}

/// The kinds of port the switch drives. Every kind is switched, filtered and counted the
/// same way; only how frames get in and out differs (see `hostel_switch::datapath::port`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PortKind {
    /// A VM NIC: QEMU connects to `socket` as the vhost-user frontend.
    #[default]
    VhostUser,
    /// An existing host TAP device, attached by name (a container's NIC). The switch does
    /// not create it, so a misspelt name is an error, not a fresh device; it must be
    /// visible in the switch's network namespace when the port is added (it may be moved
    /// into a container's namespace afterwards: the attachment stays). The daemon should
    /// create it persistent, so it outlives a switch restart and the next switch attaches
    /// it again.
    Tap { device: String },
}

impl PortKind {
    pub fn is_vhost_user(&self) -> bool {
        *self == PortKind::VhostUser
    }
}

/// Token-bucket limits on a port's TX (what its guest sends into the switch), in three
/// classes checked together: a frame must fit `total` and, if it is broadcast/multicast,
/// `flood`, or, if it goes to an address no port of the network owns (the uplink),
/// `unknown`. Frames over `total` are dropped as `rate_limited`, over `flood`/`unknown` as
/// `storm_limited`, all counted on the sending port.
///
/// The daemon computes these from the operator's ceiling and the tenant's own setting
/// (the lower of the two per field); the switch enforces what it is given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortLimits {
    #[serde(default, skip_serializing_if = "RateLimit::is_unlimited")]
    pub total: RateLimit,
    #[serde(default, skip_serializing_if = "RateLimit::is_unlimited")]
    pub flood: RateLimit,
    #[serde(default, skip_serializing_if = "RateLimit::is_unlimited")]
    pub unknown: RateLimit,
}

/// One class's packet and byte buckets. A bucket holds at most its burst and refills at its
/// rate; a frame passes while the bucket holds at least one token and then takes its full
/// cost (so a 64 KiB TSO frame passes a small byte bucket and leaves it in debt, which later
/// frames repay). Unknown field names are refused: a misspelt limit must not mean "unlimited".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_per_sec: Option<u64>,
    /// Frame bytes (Ethernet header onwards, as counted in `tx_bytes`) per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_sec: Option<u64>,
    /// Bucket depth in packets; default [`DEFAULT_BURST_MS`] worth of the rate (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_packets: Option<u64>,
    /// Bucket depth in bytes; default [`DEFAULT_BURST_MS`] worth of the rate (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_bytes: Option<u64>,
}

/// Default bucket depth, in milliseconds of the configured rate.
pub const DEFAULT_BURST_MS: u64 = 100;
/// Largest rate or burst accepted (2^40: a terabyte per second, far above any NIC), so the
/// bucket arithmetic cannot overflow.
pub const MAX_LIMIT: u64 = 1 << 40;

impl RateLimit {
    pub fn is_unlimited(&self) -> bool {
        self.packets_per_sec.is_none() && self.bytes_per_sec.is_none()
    }

    /// The packet bucket as (rate, burst), if limited.
    pub fn packets(&self) -> Option<(u64, u64)> {
        self.packets_per_sec
            .map(|r| (r, self.burst_packets.unwrap_or_else(|| default_burst(r))))
    }

    /// The byte bucket as (rate, burst), if limited.
    pub fn bytes(&self) -> Option<(u64, u64)> {
        self.bytes_per_sec
            .map(|r| (r, self.burst_bytes.unwrap_or_else(|| default_burst(r))))
    }

    fn validate(&self, class: &'static str) -> Result<(), LimitError> {
        let fields = [
            ("packets_per_sec", self.packets_per_sec),
            ("bytes_per_sec", self.bytes_per_sec),
            ("burst_packets", self.burst_packets),
            ("burst_bytes", self.burst_bytes),
        ];
        for (field, v) in fields {
            match v {
                Some(0) => return Err(LimitError::Zero { class, field }),
                Some(v) if v > MAX_LIMIT => {
                    return Err(LimitError::TooLarge {
                        class,
                        field,
                        max: MAX_LIMIT,
                    })
                }
                _ => {}
            }
        }
        let orphan = |field, needs| LimitError::BurstWithoutRate {
            class,
            field,
            needs,
        };
        if self.burst_packets.is_some() && self.packets_per_sec.is_none() {
            return Err(orphan("burst_packets", "packets_per_sec"));
        }
        if self.burst_bytes.is_some() && self.bytes_per_sec.is_none() {
            return Err(orphan("burst_bytes", "bytes_per_sec"));
        }
        Ok(())
    }
}

fn default_burst(rate: u64) -> u64 {
    (rate.saturating_mul(DEFAULT_BURST_MS) / 1000).max(1)
}

impl PortLimits {
    pub fn is_unlimited(&self) -> bool {
        self.total.is_unlimited() && self.flood.is_unlimited() && self.unknown.is_unlimited()
    }

    pub fn validate(&self) -> Result<(), LimitError> {
        self.total.validate("total")?;
        self.flood.validate("flood")?;
        self.unknown.validate("unknown")
    }
}

/// The whole table set, as re-sent by the daemon after a switch restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SwitchConfig {
    #[serde(default)]
    pub networks: Vec<NetworkConfig>,
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    /// Policy stages ([`crate::policy`]), evaluated in order of attachment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyConfig>,
    /// The external network and the tenants' edges on it (see [`crate::external`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalConfig>,
}

impl NetworkConfig {
    /// Rejects configurations the datapath cannot honour (gateway outside its subnet, ...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: &str| ConfigError::Network {
            id: self.id.clone(),
            reason: why.to_string(),
        };
        if self.id.is_empty() {
            return Err(bad("empty id"));
        }
        if self.gateway_mac.is_multicast() || self.gateway_mac == MacAddr::ZERO {
            return Err(bad("gateway_mac must be a unicast address"));
        }
        match (self.subnet4, self.gateway4) {
            (Some(s), Some(g)) if !s.contains(g) => return Err(bad("gateway4 outside subnet4")),
            (None, Some(_)) => return Err(bad("gateway4 without subnet4")),
            _ => {}
        }
        match (self.subnet6, self.gateway6) {
            (Some(s), Some(g)) if !s.contains(g) => return Err(bad("gateway6 outside subnet6")),
            (None, Some(_)) => return Err(bad("gateway6 without subnet6")),
            _ => {}
        }
        if let Some(name) = &self.uplink {
            if name.is_empty() || name.len() >= 16 {
                return Err(bad("uplink TAP name must be 1..=15 bytes"));
            }
        }
        Ok(())
    }
}

impl PortConfig {
    /// Whether `other` is this port with at most its limits changed: such a change is made
    /// in place, without disconnecting the guest.
    pub fn same_but_limits(&self, other: &PortConfig) -> bool {
        PortConfig {
            limits: other.limits,
            ..self.clone()
        } == *other
    }

    /// Checks the port against its network: addresses must be inside the network's subnets.
    pub fn validate(&self, net: &NetworkConfig) -> Result<(), ConfigError> {
        let bad = |why: &str| ConfigError::Port {
            id: self.id.clone(),
            reason: why.to_string(),
        };
        if self.id.is_empty() {
            return Err(bad("empty id"));
        }
        if self.mac.is_multicast() || self.mac == MacAddr::ZERO {
            return Err(bad("mac must be a unicast address"));
        }
        if self.mac == net.gateway_mac {
            return Err(bad("mac equals the network's gateway_mac"));
        }
        match &self.kind {
            PortKind::VhostUser if self.socket.as_os_str().is_empty() => {
                return Err(bad("a vhost-user port needs a socket"))
            }
            PortKind::Tap { device } if device.is_empty() || device.len() >= 16 => {
                return Err(bad("TAP device name must be 1..=15 bytes"))
            }
            _ => {}
        }
        if let Some(ip) = self.ipv4 {
            match net.subnet4 {
                Some(s) if s.contains(ip) => {}
                _ => return Err(bad("ipv4 outside the network's subnet4")),
            }
            if Some(ip) == net.gateway4 {
                return Err(bad("ipv4 equals the gateway"));
            }
        }
        for ip in &self.ipv6 {
            match net.subnet6 {
                Some(s) if s.contains(*ip) => {}
                _ => return Err(bad("ipv6 outside the network's subnet6")),
            }
        }
        self.limits
            .validate()
            .map_err(|source| ConfigError::Limits {
                id: self.id.clone(),
                source,
            })
    }
}
