//! What the daemon programs into the switch: networks and ports.
//!
//! The switch keeps no state on disk; after a restart the daemon re-sends this configuration
//! (as a whole [`SwitchConfig`] or op by op over the control socket), so every type here is
//! plain serde data.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
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
    /// Unix socket path the switch listens on for QEMU's vhost-user connection.
    pub socket: PathBuf,
}

/// The whole table set, as re-sent by the daemon after a switch restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SwitchConfig {
    #[serde(default)]
    pub networks: Vec<NetworkConfig>,
    #[serde(default)]
    pub ports: Vec<PortConfig>,
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
        Ok(())
    }
}
