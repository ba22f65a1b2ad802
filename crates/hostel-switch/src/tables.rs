//! The immutable lookup tables the datapath reads.
//!
//! The control plane builds a fresh [`Tables`] on every change and publishes it with one
//! pointer swap; worker threads take one snapshot per batch, so per-frame lookups take no
//! lock and a reconfiguration never blocks the datapath.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::config::{NetworkConfig, PortConfig};
use crate::datapath::edge::EdgeRuntime;
use crate::datapath::port::PortRuntime;
use crate::error::ConfigError;
use crate::external::External;
use crate::policy::{PolicyConfig, Rule, MAX_ATTACHED};
use crate::types::{Ipv4Cidr, Ipv6Cidr};
use hostel_switch_proto::{EdgeConfig, ExternalConfig};

pub type PortIdx = u32;
pub type NetIdx = u32;
/// Index of a compiled policy in [`Tables::policies`].
pub type PolicyIdx = u32;
/// Index of a tenant's edge in [`ExtEntry::edges`].
pub type EdgeIdx = u32;

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
    /// The network's uplink: a port of TAP kind, outside `ports`.
    pub uplink: Option<Arc<PortRuntime>>,
    /// Policies attached to the network, in order.
    pub policies: Vec<PolicyIdx>,
    /// The tenant edge its off-network traffic goes through (instead of an uplink).
    pub edge: Option<EdgeIdx>,
    /// The network's security appliance, when it has one: `Some(None)` while the designated
    /// NIC is gone (outside traffic is dropped).
    pub appliance: Option<Option<PortIdx>>,
}

/// One tenant's edge: its config, live state and inside networks.
pub struct EdgeEntry {
    pub cfg: EdgeConfig,
    pub rt: Arc<EdgeRuntime>,
    pub nets: Vec<NetIdx>,
}

/// The external network: its port and the edges with their public addresses.
pub struct ExtEntry {
    pub cfg: ExternalConfig,
    pub rt: Arc<External>,
    pub edges: Vec<EdgeEntry>,
    /// Addresses answered on the wire (outside and floating), by owning edge.
    pub wire4: FastMap<Ipv4Addr, EdgeIdx>,
    pub wire6: FastMap<Ipv6Addr, EdgeIdx>,
    routed4: Vec<(Ipv4Cidr, EdgeIdx)>,
    routed6: Vec<(Ipv6Cidr, EdgeIdx)>,
    /// Whether any edge's filter takes cache hints (else the reader's look-ahead is skipped).
    pub hints: bool,
}

impl ExtEntry {
    /// The edge holding public address `ip` (on the wire, or in a routed subnet).
    pub fn owner(&self, ip: IpAddr) -> Option<EdgeIdx> {
        match ip {
            IpAddr::V4(a) => self.wire4.get(&a).copied().or_else(|| {
                self.routed4
                    .iter()
                    .find(|(c, _)| c.contains(a))
                    .map(|(_, e)| *e)
            }),
            IpAddr::V6(a) => self.wire6.get(&a).copied().or_else(|| {
                self.routed6
                    .iter()
                    .find(|(c, _)| c.contains(a))
                    .map(|(_, e)| *e)
            }),
        }
    }
}

pub struct PortEntry {
    pub cfg: PortConfig,
    pub net: NetIdx,
    pub link_local: Ipv6Addr,
    pub rt: Arc<PortRuntime>,
    /// Policies attached to the port, in order.
    pub policies: Vec<PolicyIdx>,
    /// The port is its network's security appliance: it forwards other hosts' packets, so
    /// its IP sources are not checked against its own addresses (its MAC still is).
    pub appliance: bool,
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
    policies: Vec<Vec<Rule>>,
    /// The external network, if the switch has one.
    pub ext: Option<ExtEntry>,
}

impl Tables {
    /// Builds tables from validated configs. `runtime` supplies each port's live state (kept
    /// across rebuilds so counters and connected rings survive reconfiguration); `uplink`
    /// supplies each network's open TAP, if any.
    pub fn build<'a>(
        nets: impl IntoIterator<Item = &'a NetworkConfig>,
        ports: impl IntoIterator<Item = &'a PortConfig>,
        mut runtime: impl FnMut(&PortConfig) -> Arc<PortRuntime>,
        mut uplink: impl FnMut(&NetworkConfig) -> Option<Arc<PortRuntime>>,
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
                policies: Vec::new(),
                edge: None,
                appliance: None,
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
                policies: Vec::new(),
                appliance: false,
            });
        }
        Ok(t)
    }

    /// Compiles `policies` into the tables, attached in the order given. A policy naming a
    /// network or port the tables lack is an error, unless `skip_orphans` (used while
    /// `apply` moves from one whole configuration to the next, which was checked whole).
    pub fn with_policies(
        mut self,
        policies: &[PolicyConfig],
        skip_orphans: bool,
    ) -> Result<Tables, ConfigError> {
        let mut seen: HashMap<&str, ()> = HashMap::new();
        for pc in policies {
            if seen.insert(&pc.id, ()).is_some() {
                return Err(ConfigError::Policy {
                    id: pc.id.clone(),
                    reason: "duplicate id".into(),
                });
            }
            let (rules, scope) = match self.compile_one(pc) {
                Ok(r) => r,
                Err(_) if skip_orphans => continue,
                Err(e) => return Err(e),
            };
            let idx = self.policies.len() as PolicyIdx;
            let list = match scope {
                Ok(ni) => &mut self.nets[ni as usize].policies,
                Err(pi) => &mut self.ports[pi as usize].policies,
            };
            if list.len() >= MAX_ATTACHED {
                return Err(ConfigError::Policy {
                    id: pc.id.clone(),
                    reason: format!("more than {MAX_ATTACHED} policies on its scope"),
                });
            }
            list.push(idx);
            self.policies.push(rules);
        }
        Ok(self)
    }

    /// Checks `cfg` against the tables' networks: every network an edge names exists (unless
    /// `skip_orphans`, while `apply` walks between two checked configurations: then missing
    /// ones, and ones that still have an uplink, are left out), has an IPv4 gateway, and has no uplink
    /// TAP (off-network traffic goes to one place), and its firewall rules and translations
    /// are valid. Returns each edge's network indexes.
    pub fn check_external(
        &self,
        cfg: &ExternalConfig,
        skip_orphans: bool,
    ) -> Result<Vec<Vec<NetIdx>>, ConfigError> {
        cfg.validate()?;
        let bad = |i: usize, why: String| ConfigError::External {
            field: format!("edges[{i}].networks"),
            reason: why,
        };
        let mut out = Vec::with_capacity(cfg.edges.len());
        for (i, e) in cfg.edges.iter().enumerate() {
            crate::datapath::firewall::check_edge(i, e)?;
            let mut nets = Vec::new();
            for id in &e.networks {
                let Some(ni) = self.net_by_id(id) else {
                    if skip_orphans {
                        continue;
                    }
                    return Err(bad(i, format!("network {id:?} not found")));
                };
                let n = &self.net(ni).cfg;
                if n.uplink.is_some() && skip_orphans {
                    continue;
                }
                if n.uplink.is_some() {
                    return Err(bad(i, format!("network {id:?} has an uplink TAP")));
                }
                if n.gateway4.is_none() && n.gateway6.is_none() {
                    return Err(bad(i, format!("network {id:?} has no gateway")));
                }
                nets.push(ni);
            }
            for (j, a) in e.appliances.iter().enumerate() {
                let field = |f: &str| format!("edges[{i}].appliances[{j}].{f}");
                let Some(ni) = self.net_by_id(&a.network).filter(|n| nets.contains(n)) else {
                    if skip_orphans {
                        continue;
                    }
                    return Err(ConfigError::External {
                        field: field("network"),
                        reason: format!("{:?} is not one of the edge's networks", a.network),
                    });
                };
                let Some(p) = &a.port else { continue };
                let on_it = self.port_by_id(p).is_some_and(|pi| self.port(pi).net == ni);
                if !on_it && !skip_orphans {
                    return Err(ConfigError::External {
                        field: field("port"),
                        reason: format!("port {p:?} is not on network {:?}", a.network),
                    });
                }
            }
            out.push(nets);
        }
        Ok(out)
    }

    /// Attaches the external network: `rt` is its open port, `edge_rt` each tenant's live
    /// edge state (kept across rebuilds).
    pub fn with_external(
        mut self,
        cfg: &ExternalConfig,
        rt: Arc<External>,
        mut edge_rt: impl FnMut(&EdgeConfig) -> Arc<EdgeRuntime>,
        skip_orphans: bool,
    ) -> Result<Tables, ConfigError> {
        let nets = self.check_external(cfg, skip_orphans)?;
        let mut x = ExtEntry {
            cfg: cfg.clone(),
            rt,
            edges: Vec::with_capacity(cfg.edges.len()),
            wire4: FastMap::default(),
            wire6: FastMap::default(),
            routed4: Vec::new(),
            routed6: Vec::new(),
            hints: false,
        };
        for (e, nets) in cfg.edges.iter().zip(nets) {
            let ei = x.edges.len() as EdgeIdx;
            for &ni in &nets {
                self.nets[ni as usize].edge = Some(ei);
            }
            x.wire4.insert(e.outside4, ei);
            for f in &e.floating4 {
                x.wire4.insert(*f, ei);
            }
            if let Some(o) = e.outside6 {
                x.wire6.insert(o, ei);
            }
            for a in &e.appliances {
                let Some(ni) = self.net_by_id(&a.network).filter(|n| nets.contains(n)) else {
                    continue; // left out while `apply` walks (checked above otherwise)
                };
                let pi = a
                    .port
                    .as_deref()
                    .and_then(|p| self.port_by_id(p))
                    .filter(|&pi| self.port(pi).net == ni);
                if let Some(pi) = pi {
                    self.ports[pi as usize].appliance = true;
                }
                self.nets[ni as usize].appliance = Some(pi);
            }
            x.routed4.extend(e.routed4.iter().map(|c| (*c, ei)));
            x.routed6.extend(e.routed6.iter().map(|c| (*c, ei)));
            let rt = edge_rt(e);
            x.hints |= rt.takes_hints();
            x.edges.push(EdgeEntry {
                cfg: e.clone(),
                rt,
                nets,
            });
        }
        self.ext = Some(x);
        Ok(self)
    }

    /// The compiled rules and where they attach: `Ok(network)` or `Err(port)`.
    #[allow(clippy::type_complexity)]
    fn compile_one(
        &self,
        pc: &PolicyConfig,
    ) -> Result<(Vec<Rule>, Result<NetIdx, PortIdx>), ConfigError> {
        let rules = crate::policy::compile(pc, |id| self.port_by_id(id))?;
        let missing = |what: &str, name: &str| ConfigError::Policy {
            id: pc.id.clone(),
            reason: format!("{what} {name:?} not found"),
        };
        let list = match (&pc.scope.network, &pc.scope.port) {
            (Some(n), _) => Ok(self.net_by_id(n).ok_or_else(|| missing("network", n))?),
            (None, Some(p)) => Err(self.port_by_id(p).ok_or_else(|| missing("port", p))?),
            (None, None) => return Err(missing("scope", "")),
        };
        Ok((rules, list))
    }

    /// Whether any policy is attached anywhere: with none, the policy stage is skipped.
    #[inline]
    pub fn has_policies(&self) -> bool {
        !self.policies.is_empty()
    }

    /// The rules of policy `i`.
    pub fn rules(&self, i: PolicyIdx) -> &[Rule] {
        &self.policies[i as usize]
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
