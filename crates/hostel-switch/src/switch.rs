//! The switch as a library object: the control plane that owns configuration, port
//! listeners and uplinks, and republishes the datapath tables on every change.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::config::{NetworkConfig, PortConfig, PortLimits, SwitchConfig};
use crate::datapath::pipeline::Pipeline;
use crate::datapath::port::PortRuntime;
use crate::datapath::Core;
use crate::error::{ConfigError, SwitchError};
use crate::stats::StatsSnapshot;
use crate::tables::Tables;
use crate::uplink::Uplink;
use crate::vhost::server::PortServer;

/// Counters of every port and uplink, keyed by id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SwitchStats {
    pub ports: BTreeMap<String, PortStatus>,
    pub uplinks: BTreeMap<String, StatsSnapshot>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortStatus {
    pub network: String,
    pub connected: bool,
    #[serde(flatten)]
    pub stats: StatsSnapshot,
}

struct UplinkHandle {
    uplink: Arc<Uplink>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    nets: Vec<NetworkConfig>,
    ports: Vec<PortConfig>,
    runtimes: HashMap<String, Arc<PortRuntime>>,
    servers: HashMap<String, PortServer>,
    uplinks: HashMap<String, UplinkHandle>,
}

pub struct Switch {
    core: Arc<Core>,
    state: Mutex<State>,
}

impl Switch {
    pub fn new() -> Arc<Switch> {
        Self::with_pipeline(Pipeline::new())
    }

    /// A switch whose pipeline carries extra uplink hooks (firewall, IDS).
    pub fn with_pipeline(p: Pipeline) -> Arc<Switch> {
        Arc::new(Switch {
            core: Core::new(p),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds tables for a candidate configuration; only on success is it committed.
    fn build(
        &self,
        st: &mut State,
        nets: &[NetworkConfig],
        ports: &[PortConfig],
    ) -> Result<Tables, ConfigError> {
        let runtimes = &mut st.runtimes;
        let uplinks = &st.uplinks;
        Tables::build(
            nets,
            ports,
            |p| {
                runtimes
                    .entry(p.id.clone())
                    .or_insert_with(|| PortRuntime::new(&p.id))
                    .clone()
            },
            |n| uplinks.get(&n.id).map(|u| u.uplink.clone()),
        )
    }

    pub fn add_network(&self, cfg: NetworkConfig) -> Result<(), SwitchError> {
        let mut st = self.state();
        if st.nets.iter().any(|n| n.id == cfg.id) {
            return Err(ConfigError::DuplicateNetwork(cfg.id).into());
        }
        let mut nets = st.nets.clone();
        nets.push(cfg.clone());
        let ports = st.ports.clone();
        self.build(&mut st, &nets, &ports)?;
        if let Some(tap) = &cfg.uplink {
            let uplink = Uplink::open(tap, &cfg.id, cfg.gateway_mac)?;
            uplink.set_persistent(true)?;
            let (u2, core) = (uplink.clone(), self.core.clone());
            let name = format!("up-{tap}");
            let thread = std::thread::Builder::new()
                .name(name.chars().take(15).collect())
                .spawn(move || u2.run(core))
                .map_err(|source| SwitchError::Thread { name, source })?;
            st.uplinks.insert(
                cfg.id.clone(),
                UplinkHandle {
                    uplink,
                    thread: Some(thread),
                },
            );
        }
        let t = self.build(&mut st, &nets, &ports)?;
        st.nets = nets;
        self.core.publish(t);
        tracing::info!(network = %cfg.id, "network added");
        Ok(())
    }

    /// Removes the network and deletes its uplink device from the host.
    pub fn remove_network(&self, id: &str) -> Result<(), SwitchError> {
        self.drop_network(id, true)
    }

    fn drop_network(&self, id: &str, delete_uplink: bool) -> Result<(), SwitchError> {
        let mut st = self.state();
        if !st.nets.iter().any(|n| n.id == id) {
            return Err(ConfigError::UnknownNetwork(id.to_string()).into());
        }
        if st.ports.iter().any(|p| p.network == id) {
            return Err(ConfigError::NetworkInUse(id.to_string()).into());
        }
        let nets: Vec<_> = st.nets.iter().filter(|n| n.id != id).cloned().collect();
        let ports = st.ports.clone();
        if let Some(mut u) = st.uplinks.remove(id) {
            if delete_uplink {
                if let Err(e) = u.uplink.set_persistent(false) {
                    tracing::warn!(network = %id, error = %e, "uplink device left behind");
                }
            }
            u.uplink.stop();
            if let Some(t) = u.thread.take() {
                let _ = t.join();
            }
        }
        let t = self.build(&mut st, &nets, &ports)?;
        st.nets = nets;
        self.core.publish(t);
        tracing::info!(network = %id, "network removed");
        Ok(())
    }

    pub fn add_port(&self, cfg: PortConfig) -> Result<(), SwitchError> {
        let mut st = self.state();
        if st.ports.iter().any(|p| p.id == cfg.id) {
            return Err(ConfigError::DuplicatePort(cfg.id).into());
        }
        let nets = st.nets.clone();
        let mut ports = st.ports.clone();
        ports.push(cfg.clone());
        let t = match self.build(&mut st, &nets, &ports) {
            Ok(t) => t,
            Err(e) => {
                st.runtimes.remove(&cfg.id);
                return Err(e.into());
            }
        };
        let rt = st.runtimes[&cfg.id].clone();
        let server = match PortServer::start(self.core.clone(), rt, &cfg.socket) {
            Ok(s) => s,
            Err(e) => {
                st.runtimes.remove(&cfg.id);
                return Err(e);
            }
        };
        st.servers.insert(cfg.id.clone(), server);
        st.ports = ports;
        self.core.publish(t);
        tracing::info!(port = %cfg.id, network = %cfg.network, socket = %cfg.socket.display(), "port added");
        Ok(())
    }

    pub fn remove_port(&self, id: &str) -> Result<(), SwitchError> {
        let mut st = self.state();
        if !st.ports.iter().any(|p| p.id == id) {
            return Err(ConfigError::UnknownPort(id.to_string()).into());
        }
        let nets = st.nets.clone();
        let ports: Vec<_> = st.ports.iter().filter(|p| p.id != id).cloned().collect();
        let t = self.build(&mut st, &nets, &ports)?;
        st.ports = ports;
        self.core.publish(t);
        st.runtimes.remove(id);
        if let Some(s) = st.servers.remove(id) {
            s.stop();
        }
        tracing::info!(port = %id, "port removed");
        Ok(())
    }

    /// Replaces a port's rate limits in place: the guest stays connected and its buckets
    /// keep their level (see [`crate::datapath::ratelimit`]).
    pub fn set_port_limits(&self, id: &str, limits: PortLimits) -> Result<(), SwitchError> {
        let mut st = self.state();
        let Some(i) = st.ports.iter().position(|p| p.id == id) else {
            return Err(ConfigError::UnknownPort(id.to_string()).into());
        };
        let nets = st.nets.clone();
        let mut ports = st.ports.clone();
        ports[i].limits = limits;
        let t = self.build(&mut st, &nets, &ports)?;
        st.ports = ports;
        self.core.publish(t);
        tracing::info!(port = %id, ?limits, "port limits changed");
        Ok(())
    }

    /// Makes the switch match `cfg` exactly: what the daemon sends after a switch restart.
    /// Unchanged ports keep their connections, and so do ports whose only change is their
    /// limits. A configuration the tables refuse is refused before anything changes.
    pub fn apply(&self, cfg: &SwitchConfig) -> Result<(), SwitchError> {
        Tables::build(
            &cfg.networks,
            &cfg.ports,
            |p| PortRuntime::new(&p.id),
            |_| None,
        )?;
        let current = self.config();
        let retuned: Vec<&PortConfig> = cfg
            .ports
            .iter()
            .filter(|p| {
                current
                    .ports
                    .iter()
                    .any(|c| c.id == p.id && c != *p && c.same_but_limits(p))
            })
            .collect();
        for p in &current.ports {
            if !cfg.ports.contains(p) && !retuned.iter().any(|r| r.id == p.id) {
                self.remove_port(&p.id)?;
            }
        }
        for n in &current.networks {
            if !cfg.networks.contains(n) {
                self.remove_network(&n.id)?;
            }
        }
        for n in &cfg.networks {
            if !current.networks.contains(n) {
                self.add_network(n.clone())?;
            }
        }
        for p in &retuned {
            self.set_port_limits(&p.id, p.limits)?;
        }
        for p in &cfg.ports {
            if !current.ports.contains(p) && !retuned.contains(&p) {
                self.add_port(p.clone())?;
            }
        }
        Ok(())
    }

    pub fn config(&self) -> SwitchConfig {
        let st = self.state();
        SwitchConfig {
            networks: st.nets.clone(),
            ports: st.ports.clone(),
        }
    }

    pub fn stats(&self) -> SwitchStats {
        let st = self.state();
        let mut out = SwitchStats::default();
        for p in &st.ports {
            if let Some(rt) = st.runtimes.get(&p.id) {
                out.ports.insert(
                    p.id.clone(),
                    PortStatus {
                        network: p.network.clone(),
                        connected: rt.is_connected(),
                        stats: rt.stats.snapshot(),
                    },
                );
            }
        }
        for (net, u) in &st.uplinks {
            out.uplinks.insert(net.clone(), u.uplink.stats.snapshot());
        }
        out
    }

    pub fn port_stats(&self, id: &str) -> Option<StatsSnapshot> {
        self.state().runtimes.get(id).map(|rt| rt.stats.snapshot())
    }

    /// Stops every listener and uplink (ports first, so no frame is sent to a closed TAP).
    /// Uplink devices stay in the host, configured, for the next switch to reattach.
    pub fn shutdown(&self) {
        let ids: Vec<String> = self.state().ports.iter().map(|p| p.id.clone()).collect();
        for id in ids {
            let _ = self.remove_port(&id);
        }
        let nets: Vec<String> = self.state().nets.iter().map(|n| n.id.clone()).collect();
        for id in nets {
            let _ = self.drop_network(&id, false);
        }
    }
}

#[cfg(test)]
#[path = "switch_tests.rs"]
mod tests;
