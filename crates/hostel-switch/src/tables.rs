//! The immutable lookup tables the datapath reads.
//!
//! The control plane builds a fresh [`Tables`] on every change and publishes it with one
//! pointer swap; worker threads take one snapshot per batch, so per-frame lookups take no
//! lock and a reconfiguration never blocks the datapath.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::config::{NetworkConfig, PortConfig};
use crate::datapath::port::PortRuntime;
use crate::error::ConfigError;
use crate::uplink::Uplink;

pub type PortIdx = u32;
pub type NetIdx = u32;

/// FNV-1a: addresses are short, fixed-size keys, and SipHash's DoS resistance buys nothing
/// when the keys come from the trusted control plane.
#[derive(Default)]
pub struct FnvHasher(u64);

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FnvHasher>>;

/// A network with its address→port indexes.
pub struct NetEntry {
    pub cfg: NetworkConfig,
    pub ports: Vec<PortIdx>,
    pub v4: FastMap<Ipv4Addr, PortIdx>,
    pub v6: FastMap<Ipv6Addr, PortIdx>,
    pub uplink: Option<Arc<Uplink>>,
}

pub struct PortEntry {
    pub cfg: PortConfig,
    pub net: NetIdx,
    pub link_local: Ipv6Addr,
    pub rt: Arc<PortRuntime>,
}

impl PortEntry {
    /// Whether `ip` is one of this port's IPv6 addresses (configured or link-local).
    pub fn owns_v6(&self, ip: &Ipv6Addr) -> bool {
        *ip == self.link_local || self.cfg.ipv6.contains(ip)
    }
}

#[derive(Default)]
pub struct Tables {
    pub nets: Vec<NetEntry>,
    pub ports: Vec<PortEntry>,
    by_key: FastMap<u64, PortIdx>,
}

impl Tables {
    /// Builds tables from validated configs. `runtime` supplies each port's live state (kept
    /// across rebuilds so counters and connected rings survive reconfiguration); `uplink`
    /// supplies each network's open TAP, if any.
    pub fn build<'a>(
        nets: impl IntoIterator<Item = &'a NetworkConfig>,
        ports: impl IntoIterator<Item = &'a PortConfig>,
        mut runtime: impl FnMut(&PortConfig) -> Arc<PortRuntime>,
        mut uplink: impl FnMut(&NetworkConfig) -> Option<Arc<Uplink>>,
    ) -> Result<Tables, ConfigError> {
        let mut t = Tables::default();
        let mut net_by_id: HashMap<&str, NetIdx> = HashMap::new();
        for n in nets {
            n.validate()?;
            if net_by_id.insert(&n.id, t.nets.len() as NetIdx).is_some() {
                return Err(ConfigError::DuplicateNetwork(n.id.clone()));
            }
            t.nets.push(NetEntry {
                cfg: n.clone(),
                ports: Vec::new(),
                v4: FastMap::default(),
                v6: FastMap::default(),
                uplink: uplink(n),
            });
        }
        let mut seen_ports: HashMap<&str, ()> = HashMap::new();
        for p in ports {
            if seen_ports.insert(&p.id, ()).is_some() {
                return Err(ConfigError::DuplicatePort(p.id.clone()));
            }
            let ni = *net_by_id
                .get(p.network.as_str())
                .ok_or_else(|| ConfigError::UnknownNetwork(p.network.clone()))?;
            let pi = t.ports.len() as PortIdx;
            let net = &mut t.nets[ni as usize];
            p.validate(&net.cfg)?;
            let in_use =
                |addr: String, owner: PortIdx, ports: &[PortEntry]| ConfigError::AddressInUse {
                    addr,
                    port: ports[owner as usize].cfg.id.clone(),
                    network: p.network.clone(),
                };
            if let Some(ip) = p.ipv4 {
                if let Some(o) = net.v4.insert(ip, pi) {
                    return Err(in_use(ip.to_string(), o, &t.ports));
                }
            }
            let link_local = p.mac.link_local();
            for ip in p.ipv6.iter().chain(std::iter::once(&link_local)) {
                if let Some(o) = net.v6.insert(*ip, pi) {
                    return Err(in_use(ip.to_string(), o, &t.ports));
                }
            }
            net.ports.push(pi);
            let rt = runtime(p);
            t.by_key.insert(rt.key, pi);
            t.ports.push(PortEntry {
                cfg: p.clone(),
                net: ni,
                link_local,
                rt,
            });
        }
        Ok(t)
    }

    /// Finds a port by its runtime key (what a vhost-user connection knows itself by).
    pub fn port_by_key(&self, key: u64) -> Option<PortIdx> {
        self.by_key.get(&key).copied()
    }

    pub fn port(&self, i: PortIdx) -> &PortEntry {
        &self.ports[i as usize]
    }

    pub fn net(&self, i: NetIdx) -> &NetEntry {
        &self.nets[i as usize]
    }

    pub fn net_by_id(&self, id: &str) -> Option<NetIdx> {
        self.nets
            .iter()
            .position(|n| n.cfg.id == id)
            .map(|i| i as NetIdx)
    }

    pub fn port_by_id(&self, id: &str) -> Option<PortIdx> {
        self.ports
            .iter()
            .position(|p| p.cfg.id == id)
            .map(|i| i as PortIdx)
    }
}
