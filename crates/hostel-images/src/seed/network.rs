//! The seed's `network-config` (version 2). Images render it with cloud-init's ENI renderer
//! (ifupdown), so gateways are written as `gateway4`/`gateway6` (an ifupdown `gateway` line)
//! rather than `routes`, which ENI turns into net-tools `route` commands the image lacks.

use hostel_engine::MacAddr;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address with its prefix length, `10.0.0.2/24` or `fd00::2/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Why an `address/prefix` text is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpCidrError {
    #[error("{0:?} lacks a /prefix")]
    NoPrefix(String),
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("{0:?} is not a prefix length")]
    Prefix(String),
    #[error("prefix /{prefix} is out of range for {addr}")]
    OutOfRange { addr: IpAddr, prefix: u8 },
}

impl FromStr for IpCidr {
    type Err = IpCidrError;
    fn from_str(s: &str) -> Result<Self, IpCidrError> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| IpCidrError::NoPrefix(s.to_string()))?;
        let addr: IpAddr = a.parse().map_err(|_| IpCidrError::Address(a.to_string()))?;
        let prefix: u8 = p.parse().map_err(|_| IpCidrError::Prefix(p.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix == 0 || prefix > max {
            return Err(IpCidrError::OutOfRange { addr, prefix });
        }
        Ok(IpCidr { addr, prefix })
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpCidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpCidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum Addressing {
    Dhcp,
    Static {
        addresses: Vec<IpCidr>,
        #[serde(default)]
        gateway: Option<IpAddr>,
        #[serde(default)]
        dns: Vec<IpAddr>,
        #[serde(default)]
        search: Vec<String>,
    },
}

/// One guest NIC, found by its MAC (the name the kernel gives it is not stable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicConfig {
    pub mac: MacAddr,
    /// Interface name inside the guest, e.g. "eth0".
    pub name: String,
    pub addressing: Addressing,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "nics")]
pub enum SeedNetwork {
    /// No network-config file: cloud-init's fallback, DHCP on the first NIC.
    #[default]
    CloudInitDefault,
    /// cloud-init configures no network (the guest may have no NIC).
    Disabled,
    Nics(Vec<NicConfig>),
}

/// The network-config document, or `None` for cloud-init's default.
pub(super) fn render(net: &SeedNetwork) -> Option<Value> {
    match net {
        SeedNetwork::CloudInitDefault => None,
        SeedNetwork::Disabled => Some(json!({ "config": "disabled" })),
        SeedNetwork::Nics(nics) => {
            let mut ethernets = Map::new();
            for nic in nics {
                ethernets.insert(nic.name.clone(), nic_entry(nic));
            }
            Some(json!({ "version": 2, "ethernets": ethernets }))
        }
    }
}

fn nic_entry(nic: &NicConfig) -> Value {
    let mut e = Map::new();
    e.insert("match".into(), json!({ "macaddress": nic.mac.to_string() }));
    e.insert("set-name".into(), json!(nic.name));
    match &nic.addressing {
        Addressing::Dhcp => {
            e.insert("dhcp4".into(), json!(true));
        }
        Addressing::Static {
            addresses,
            gateway,
            dns,
            search,
        } => {
            let addrs: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            e.insert("addresses".into(), json!(addrs));
            if let Some(gw) = gateway {
                let key = if gw.is_ipv4() { "gateway4" } else { "gateway6" };
                e.insert(key.into(), json!(gw.to_string()));
            }
            if !dns.is_empty() || !search.is_empty() {
                let dns: Vec<String> = dns.iter().map(ToString::to_string).collect();
                let mut ns = Map::new();
                if !dns.is_empty() {
                    ns.insert("addresses".into(), json!(dns));
                }
                if !search.is_empty() {
                    ns.insert("search".into(), json!(search));
                }
                e.insert("nameservers".into(), Value::Object(ns));
            }
        }
    }
    Value::Object(e)
}
