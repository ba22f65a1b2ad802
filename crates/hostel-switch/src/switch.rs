//! The switch as a library object: the control plane that owns configuration, port
//! listeners and uplinks, and republishes the datapath tables on every change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::config::{NetworkConfig, PortConfig, PortKind, PortLimits, SwitchConfig};
use crate::datapath::edge::{pass_filters, EdgeRuntime, FilterFactory};
use crate::datapath::pipeline::Pipeline;
use crate::datapath::port::PortRuntime;
use crate::datapath::Core;
use crate::error::{ConfigError, SwitchError};
use crate::external::ExternalHandle;
use crate::policy::PolicyConfig;
pub use crate::stats::{PortStatus, StatsSnapshot, SwitchStats};
use crate::tables::Tables;
use crate::uplink::{self, Role, TapDev, Uplink};
use crate::vhost::server::PortServer;
use hostel_switch_proto::ids::{IdsAlerts, IdsLoadReport, IdsSpec};
use hostel_switch_proto::{ExternalConfig, FirewallLogEntry, PolicySpec};

/// A TAP (uplink or port) and its reader thread.
struct UplinkHandle {
    uplink: Arc<PortRuntime>,
    thread: Option<JoinHandle<()>>,
}

impl UplinkHandle {
    fn spawn(rt: Arc<PortRuntime>, core: Arc<Core>, role: Role) -> Result<Self, SwitchError> {
        let name = format!("tap-{}", rt.id);
        let r2 = rt.clone();
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || uplink::run(r2, core, role))
            .map_err(|source| SwitchError::Thread { name, source })?;
        Ok(UplinkHandle {
            uplink: rt,
            thread: Some(thread),
        })
    }

    fn dev(&self) -> Option<&Arc<TapDev>> {
        self.uplink.tap_dev()
    }

    fn stop(mut self) {
        if let Some(d) = self.dev() {
            d.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Default)]
struct State {
    nets: Vec<NetworkConfig>,
    ports: Vec<PortConfig>,
    runtimes: HashMap<String, Arc<PortRuntime>>,
    servers: HashMap<String, PortServer>,
    /// TAP ports' readers, by port id.
    taps: HashMap<String, UplinkHandle>,
    uplinks: HashMap<String, UplinkHandle>,
    policies: Vec<PolicyConfig>,
    /// Set while `apply` walks from one checked configuration to the next: a policy whose
    /// network or port is not there yet (or any more) is left out until it is.
    in_apply: bool,
    external: Option<ExternalConfig>,
    ext: Option<ExternalHandle>,
    /// Each tenant's edge (its filter's state), by tenant.
    edges: HashMap<String, Arc<EdgeRuntime>>,
    /// Each tenant's intrusion detection, installed again on an edge made anew.
    ids: HashMap<String, IdsSpec>,
}

pub struct Switch {
    core: Arc<Core>,
    state: Mutex<State>,
    filters: FilterFactory,
}

impl Switch {
    pub fn new() -> Arc<Switch> {
        Self::with_pipeline(Pipeline::new())
    }

    /// A switch whose pipeline carries extra uplink hooks (firewall, IDS).
    pub fn with_pipeline(p: Pipeline) -> Arc<Switch> {
        Self::with_edge_filters(p, pass_filters())
    }

    /// A switch whose tenant edges run the filters `filters` makes (the firewall).
    pub fn with_edge_filters(p: Pipeline, filters: FilterFactory) -> Arc<Switch> {
        Arc::new(Switch {
            core: Core::new(p),
            state: Mutex::new(State::default()),
            filters,
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
        let t = Tables::build(
            nets,
            ports,
            |p| {
                runtimes
                    .entry(p.id.clone())
                    .or_insert_with(|| PortRuntime::new(&p.id))
                    .clone()
            },
            |n| uplinks.get(&n.id).map(|u| u.uplink.clone()),
        )?
        .with_policies(&st.policies, st.in_apply)?;
        let (Some(cfg), Some(h)) = (&st.external, &st.ext) else {
            return Ok(t);
        };
        let edges = &mut st.edges;
        let filters = &self.filters;
        let ids = &st.ids;
        t.with_external(
            cfg,
            h.ext.clone(),
            |e| {
                edges
                    .entry(e.tenant.clone())
                    .or_insert_with(|| {
                        let rt = EdgeRuntime::new(&e.tenant, filters(e));
                        if let Some(spec) = ids.get(&e.tenant) {
                            rt.ids.set(Some(spec));
                        }
                        Arc::new(rt)
                    })
                    .clone()
            },
            st.in_apply,
        )
    }

    /// Sets (or with `None` removes) the external network and its edges. The interface is
    /// opened anew only when it changes, so the neighbour cache and the tenants' edge state
    /// (their filters') survive other changes; an edge whose tenant is gone loses its
    /// state. A configuration the tables refuse, or an interface that cannot be opened,
    /// changes nothing.
    pub fn set_external(&self, cfg: Option<ExternalConfig>) -> Result<(), SwitchError> {
        let mut st = self.state();
        let same_if = match (&cfg, &st.ext) {
            (Some(c), Some(h)) => c.interface == h.interface,
            _ => false,
        };
        let opened = match &cfg {
            Some(c) if !same_if => {
                let (nets, ports) = (st.nets.clone(), st.ports.clone());
                Tables::build(&nets, &ports, |p| PortRuntime::new(&p.id), |_| None)?
                    .check_external(c, st.in_apply)?;
                Some(ExternalHandle::start(&c.interface, self.core.clone())?)
            }
            _ => None,
        };
        let old_cfg = std::mem::replace(&mut st.external, cfg.clone());
        let old_handle = match (&cfg, opened) {
            (None, _) => st.ext.take(),
            (Some(_), Some(h)) => st.ext.replace(h),
            (Some(_), None) => None,
        };
        let (nets, ports) = (st.nets.clone(), st.ports.clone());
        match self.build(&mut st, &nets, &ports) {
            Ok(t) => {
                self.core.publish(t);
                if let Some(h) = old_handle {
                    h.stop();
                }
                let keep: Vec<&str> = cfg
                    .iter()
                    .flat_map(|c| c.edges.iter().map(|e| e.tenant.as_str()))
                    .collect();
                st.edges.retain(|t, _| keep.contains(&t.as_str()));
                // Edges that existed keep their filters' state; a changed edge gets its new
                // rules and translations in place (already checked with the tables).
                for e in cfg.iter().flat_map(|c| &c.edges) {
                    let before = old_cfg
                        .iter()
                        .flat_map(|c| &c.edges)
                        .find(|o| o.tenant == e.tenant);
                    if before.is_some_and(|b| b != e) {
                        if let Some(rt) = st.edges.get(&e.tenant) {
                            rt.reconfigure(e);
                        }
                    }
                }
                tracing::info!(interface = ?cfg.as_ref().map(|c| &c.interface), "external network set");
                Ok(())
            }
            Err(e) => {
                st.external = old_cfg;
                if let Some(old) = old_handle {
                    if let Some(new) = st.ext.replace(old) {
                        new.stop();
                    }
                } else if !same_if && cfg.is_some() {
                    if let Some(new) = st.ext.take() {
                        new.stop();
                    }
                }
                Err(e.into())
            }
        }
    }

    /// The MAC the external port has learnt for `ip` on the wire.
    pub fn external_neighbor(&self, ip: std::net::IpAddr) -> Option<crate::types::MacAddr> {
        self.state().ext.as_ref().and_then(|h| h.ext.neighbor(ip))
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
            if let Some(d) = uplink.tap_dev() {
                d.set_persistent(true)?;
            }
            let role = Role::Uplink {
                network: cfg.id.clone(),
            };
            let h = UplinkHandle::spawn(uplink, self.core.clone(), role)?;
            st.uplinks.insert(cfg.id.clone(), h);
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
        if let Some(u) = st.uplinks.remove(id) {
            if let (true, Some(d)) = (delete_uplink, u.dev()) {
                if let Err(e) = d.set_persistent(false) {
                    tracing::warn!(network = %id, error = %e, "uplink device left behind");
                }
            }
            u.stop();
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
        // Checked before any device is touched.
        if let Err(e) = self.build(&mut st, &nets, &ports) {
            st.runtimes.remove(&cfg.id);
            return Err(e.into());
        }
        if let PortKind::Tap { device } = &cfg.kind {
            match TapDev::attach(device) {
                Ok(dev) => st
                    .runtimes
                    .insert(cfg.id.clone(), PortRuntime::tap(&cfg.id, dev)),
                Err(e) => {
                    st.runtimes.remove(&cfg.id);
                    return Err(e);
                }
            };
        }
        let t = match self.build(&mut st, &nets, &ports) {
            Ok(t) => t,
            Err(e) => {
                st.runtimes.remove(&cfg.id);
                return Err(e.into());
            }
        };
        let rt = st.runtimes[&cfg.id].clone();
        let started = match &cfg.kind {
            PortKind::VhostUser => PortServer::start(self.core.clone(), rt, &cfg.socket)
                .map(|s| drop(st.servers.insert(cfg.id.clone(), s))),
            PortKind::Tap { .. } => UplinkHandle::spawn(rt, self.core.clone(), Role::Port)
                .map(|h| drop(st.taps.insert(cfg.id.clone(), h))),
        };
        if let Err(e) = started {
            st.runtimes.remove(&cfg.id);
            return Err(e);
        }
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
        if let Some(h) = st.taps.remove(id) {
            h.stop();
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

    /// Replaces every policy at once: the new policies take effect with one table swap, and
    /// a set the tables refuse changes nothing.
    pub fn set_policies(&self, policies: Vec<PolicyConfig>) -> Result<(), SwitchError> {
        let mut st = self.state();
        let old = std::mem::replace(&mut st.policies, policies);
        let (nets, ports) = (st.nets.clone(), st.ports.clone());
        match self.build(&mut st, &nets, &ports) {
            Ok(t) => {
                self.core.publish(t);
                tracing::info!(policies = st.policies.len(), "policies replaced");
                Ok(())
            }
            Err(e) => {
                st.policies = old;
                Err(e.into())
            }
        }
    }

    /// Makes the switch match `cfg` exactly: what the daemon sends after a switch restart.
    /// Unchanged ports keep their connections, and so do ports whose only change is their
    /// limits. A configuration the tables refuse is refused before anything changes.
    pub fn apply(&self, cfg: &SwitchConfig) -> Result<(), SwitchError> {
        let t = Tables::build(
            &cfg.networks,
            &cfg.ports,
            |p| PortRuntime::new(&p.id),
            |_| None,
        )?
        .with_policies(&cfg.policies, false)?;
        if let Some(x) = &cfg.external {
            t.check_external(x, false)?;
        }
        let current = self.config();
        // From here the new policies are in force for whatever part of the new
        // configuration exists, so no port comes up before its policies.
        {
            let mut st = self.state();
            st.in_apply = true;
            st.policies = cfg.policies.clone();
        }
        let r = self.apply_steps(cfg, &current);
        // A policy change alone has no step of its own; after a step that failed, what was
        // reached is published with the policies that fit it, and the error returned.
        let mut st = self.state();
        let (nets, ports) = (st.nets.clone(), st.ports.clone());
        let t = self.build(&mut st, &nets, &ports);
        st.in_apply = false;
        self.core.publish(t?);
        r
    }

    fn apply_steps(&self, cfg: &SwitchConfig, current: &SwitchConfig) -> Result<(), SwitchError> {
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
        if cfg.external != current.external {
            self.set_external(cfg.external.clone())?;
        }
        Ok(())
    }

    /// Replaces one tenant's firewall rules, atomically between two packets, keeping its
    /// connection table except for connections the new rules forbid (cut). The stored
    /// external configuration is updated, so `show_config` and `apply` see the new rules.
    pub fn set_firewall(&self, tenant: &str, policy: PolicySpec) -> Result<(), SwitchError> {
        let mut st = self.state();
        let st = &mut *st;
        let no_edge = |reason: String| ConfigError::External {
            field: "tenant".into(),
            reason,
        };
        let ext = st
            .external
            .as_mut()
            .ok_or_else(|| no_edge("no external network".into()))?;
        let (i, e) = ext
            .edges
            .iter_mut()
            .enumerate()
            .find(|(_, e)| e.tenant == tenant)
            .ok_or_else(|| no_edge(format!("no edge for tenant {tenant:?}")))?;
        let mut candidate = e.clone();
        candidate.policy = policy;
        crate::datapath::firewall::check_edge(i, &candidate)?;
        if let Some(rt) = st.edges.get(tenant) {
            if let Some(Err(err)) = rt.set_policy(&candidate.policy) {
                // Checked above; a refusal here changes nothing either.
                return Err(ConfigError::External {
                    field: format!("edges[{i}].policy"),
                    reason: err.to_string(),
                }
                .into());
            }
        }
        *e = candidate;
        Ok(())
    }

    /// Installs (or with `None` removes) `tenant`'s intrusion detection: rules compiled
    /// first, then swapped in between two packets. Refused rules are in the report; the
    /// others load. A tenant without an edge yet gets it when its edge appears
    /// (`report.active` says which).
    pub fn set_ids(
        &self,
        tenant: &str,
        spec: Option<IdsSpec>,
    ) -> Result<IdsLoadReport, SwitchError> {
        let mut st = self.state();
        let report = match st.edges.get(tenant) {
            Some(rt) => {
                let mut r = rt.ids.set(spec.as_ref());
                r.active = spec.is_some();
                r
            }
            // Kept for the edge the tenant gets later (`build` installs it); compiled here
            // only for the report.
            None => crate::datapath::ids::EdgeIds::default().set(spec.as_ref()),
        };
        match spec {
            Some(s) => st.ids.insert(tenant.to_string(), s),
            None => st.ids.remove(tenant),
        };
        Ok(report)
    }

    /// `tenant`'s alerts after sequence number `after` (EVE records).
    pub fn ids_alerts(&self, tenant: &str, after: u64) -> Option<IdsAlerts> {
        let st = self.state();
        Some(st.edges.get(tenant)?.ids.alerts_after(after))
    }

    /// The firewall log entries of `tenant`'s edge written since the last call.
    pub fn firewall_log(&self, tenant: &str) -> Option<Vec<FirewallLogEntry>> {
        let st = self.state();
        let rt = st.edges.get(tenant)?;
        let mut out = Vec::new();
        rt.drain_log(&mut out);
        Some(out)
    }

    pub fn config(&self) -> SwitchConfig {
        let st = self.state();
        SwitchConfig {
            networks: st.nets.clone(),
            ports: st.ports.clone(),
            policies: st.policies.clone(),
            external: st.external.clone(),
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
        out.external = st.ext.as_ref().map(|h| h.ext.port.stats.snapshot());
        for (tenant, e) in &st.edges {
            out.edges.insert(tenant.clone(), e.stats.snapshot());
            if let Some(f) = e.firewall_stats() {
                out.firewalls.insert(tenant.clone(), f);
            }
            if let Some(i) = e.ids.stats() {
                out.ids.insert(tenant.clone(), i);
            }
        }
        out
    }

    pub fn port_stats(&self, id: &str) -> Option<StatsSnapshot> {
        self.state().runtimes.get(id).map(|rt| rt.stats.snapshot())
    }

    /// Stops every listener and uplink (ports first, so no frame is sent to a closed TAP).
    /// Uplink devices stay in the host, configured, for the next switch to reattach.
    pub fn shutdown(&self) {
        let _ = self.set_external(None);
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
