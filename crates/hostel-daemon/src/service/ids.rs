//! A tenant's intrusion detection: its own rules and which of its networks are watched, each
//! change committed with its audit entry, then installed on the switch with the operator's
//! rules (every `.rules` file of `<state-dir>/ids/rules.d/`, for every tenant).
//!
//! Rules are checked here with the engine's own parser (`hostel-ids`, a pure library), so a
//! refused rule is reported with its sid and keyword whether or not the switch is reachable;
//! the rest load. The switch's answer is part of the result, not an error: the settings are
//! committed, and a tenant without an edge on the switch yet (its networks not attached to
//! the external network) gets `pending` until it has one.

use std::path::Path;
use std::sync::Arc;

use hostel_ids::{Classifications, RuleSet, Vars};
use hostel_state::{IdsSettings, NetworkName, NewAuditEntry, Store, TenantId};
use hostel_switch_proto::ids::{IdsAlerts, IdsLoadReport, IdsRefusal, IdsSpec};
use hostel_types::{IdsMode, IdsOverload};

use super::{blocking, DaemonError};
use crate::adapters::ids::IdsAdapter;
use crate::adapters::SyncError;

/// Where the operator's rules live, under the state directory.
pub fn operator_rules_dir(state: &Path) -> std::path::PathBuf {
    state.join("ids").join("rules.d")
}

/// Every `.rules` file of `dir`, in name order, as one text (a missing directory: none).
pub fn read_operator_rules(dir: &Path) -> String {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return String::new();
    };
    let mut files: Vec<_> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rules"))
        .collect();
    files.sort();
    let mut out = String::new();
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(t) => {
                out.push_str(&t);
                out.push('\n');
            }
            Err(e) => tracing::warn!(file = %f.display(), error = %e, "operator rules not read"),
        }
    }
    out
}

/// The watched networks' names, and those of the ones inspected VM to VM too.
type Names = (Vec<NetworkName>, Vec<NetworkName>);

/// A tenant's detection as the API shows it.
#[derive(Debug, Clone)]
pub struct IdsState {
    pub settings: IdsSettings,
    /// The watched networks' names (a network deleted since is left out).
    pub networks: Vec<NetworkName>,
    /// Of those, the ones whose VM-to-VM traffic is inspected too.
    pub intra_networks: Vec<NetworkName>,
    pub tenant_rules: IdsLoadReport,
    pub operator_rules_loaded: usize,
    /// `applied`, `off` or `pending: <why>`.
    pub switch: String,
}

/// What one change writes.
pub enum IdsChange {
    Settings {
        mode: IdsMode,
        overload: IdsOverload,
        networks: Vec<NetworkName>,
        /// Of `networks`, those whose VM-to-VM traffic is inspected too.
        intra_networks: Vec<NetworkName>,
    },
    Rules(String),
}

pub struct IdsService<'a, A> {
    store: &'a Arc<dyn Store>,
    switch: &'a A,
    operator_rules: String,
}

fn check(rules: &str, vars: &Vars) -> IdsLoadReport {
    let mut set = RuleSet::default();
    let r = set.load(rules, vars, &Classifications::default());
    IdsLoadReport {
        loaded: r.loaded,
        refused: r
            .refused
            .into_iter()
            .map(|e| IdsRefusal {
                sid: e.sid,
                keyword: e.keyword,
                reason: e.reason,
            })
            .collect(),
        active: false,
    }
}

impl<'a, A: IdsAdapter> IdsService<'a, A> {
    pub fn new(store: &'a Arc<dyn Store>, switch: &'a A, operator_rules: String) -> Self {
        Self {
            store,
            switch,
            operator_rules,
        }
    }

    /// The tenant's settings and how its rules load (without touching the switch).
    pub async fn show(&self, tenant: TenantId) -> Result<IdsState, DaemonError> {
        let (settings, home, names) = self.load(tenant).await?;
        Ok(self.state(settings, &home, names, "unchanged".into()))
    }

    /// Commits `change` with `audit`, then installs the result on the switch.
    pub async fn change(
        &self,
        tenant: TenantId,
        change: IdsChange,
        audit: NewAuditEntry,
    ) -> Result<IdsState, DaemonError> {
        let t = tenant;
        blocking(self.store, move |store| {
            let mut s = store.get_ids(&t)?;
            match change {
                IdsChange::Settings {
                    mode,
                    overload,
                    networks,
                    intra_networks,
                } => {
                    s.mode = mode;
                    s.overload = overload;
                    s.networks = networks
                        .iter()
                        .map(|n| store.get_network_by_name(&t, n).map(|n| n.id))
                        .collect::<Result<_, _>>()?;
                    s.intra_networks = intra_networks
                        .iter()
                        .map(|n| store.get_network_by_name(&t, n).map(|n| n.id))
                        .collect::<Result<_, _>>()?;
                }
                IdsChange::Rules(r) => s.rules = r,
            }
            store.set_ids(&t, &s, &audit)
        })
        .await?;
        let (settings, home, names) = self.load(tenant).await?;
        let switch = self.install(&tenant, &settings, &home).await;
        Ok(self.state(settings, &home, names, switch))
    }

    /// The tenant's alerts on the switch after sequence number `after`.
    pub async fn alerts(&self, tenant: TenantId, after: u64) -> Result<IdsAlerts, DaemonError> {
        self.switch
            .ids_alerts(&tenant.to_string(), after)
            .await
            .map_err(|e| DaemonError::Switch(SyncError::Link(e)))
    }

    /// Settings, the `HOME_NET` of the tenant's networks, and the watched networks' names.
    async fn load(
        &self,
        tenant: TenantId,
    ) -> Result<(IdsSettings, Option<String>, Names), DaemonError> {
        let (settings, nets) = blocking(self.store, move |store| {
            Ok::<_, DaemonError>((store.get_ids(&tenant)?, store.list_networks(&tenant)?))
        })
        .await?;
        let mut cidrs: Vec<String> = Vec::new();
        for n in &nets {
            cidrs.push(n.subnet4.to_string());
            if let Some(p) = n.subnet6 {
                cidrs.push(p.to_string());
            }
        }
        let home = (!cidrs.is_empty()).then(|| format!("[{}]", cidrs.join(",")));
        let names_of = |ids: &[hostel_state::NetworkId]| -> Vec<NetworkName> {
            ids.iter()
                .filter_map(|id| nets.iter().find(|n| &n.id == id).map(|n| n.name.clone()))
                .collect()
        };
        let names = (
            names_of(&settings.networks),
            names_of(&settings.intra_networks),
        );
        Ok((settings, home, names))
    }

    fn state(
        &self,
        settings: IdsSettings,
        home: &Option<String>,
        (networks, intra_networks): Names,
        switch: String,
    ) -> IdsState {
        let mut vars = Vars::default();
        if let Some(h) = home {
            vars.set("HOME_NET", h);
        }
        IdsState {
            tenant_rules: check(&settings.rules, &vars),
            operator_rules_loaded: check(&self.operator_rules, &vars).loaded,
            settings,
            networks,
            intra_networks,
            switch,
        }
    }

    /// Installs every watching tenant's detection again: a restarted switch comes back with
    /// its tables (the watchdog's apply) but without any tenant's rules, which are not part
    /// of its config (a table apply would otherwise recompile every tenant's rules each
    /// time). Returns how many tenants were installed; `Err` when the switch could not be
    /// reached for one of them, so the caller tries again.
    pub async fn restore_all(&self) -> Result<usize, DaemonError> {
        let all = blocking(self.store, |store| store.list_ids()).await?;
        let mut n = 0;
        for (tenant, s) in all {
            if s.networks.is_empty() {
                continue;
            }
            let (settings, home, _) = self.load(tenant).await?;
            self.switch
                .set_ids(&tenant.to_string(), self.spec(&settings, &home))
                .await
                .map_err(|e| DaemonError::Switch(SyncError::Link(e)))?;
            n += 1;
        }
        Ok(n)
    }

    /// What the switch is given for `s` (`None`: detection off).
    fn spec(&self, s: &IdsSettings, home: &Option<String>) -> Option<IdsSpec> {
        (!s.networks.is_empty()).then(|| IdsSpec {
            networks: s.networks.iter().map(ToString::to_string).collect(),
            intra_networks: s.intra_networks.iter().map(ToString::to_string).collect(),
            mode: s.mode,
            overload: s.overload,
            rules: format!("{}\n{}", self.operator_rules, s.rules),
            vars: home
                .iter()
                .map(|v| ("HOME_NET".to_string(), v.clone()))
                .collect(),
            stream_depth: None,
            budget_us_per_sec: None,
        })
    }

    async fn install(&self, tenant: &TenantId, s: &IdsSettings, home: &Option<String>) -> String {
        let spec = self.spec(s, home);
        let on = spec.is_some();
        match self.switch.set_ids(&tenant.to_string(), spec).await {
            Ok(r) if r.active => "applied".into(),
            Ok(_) if on => "pending: the tenant has no edge on the switch yet; detection \
                            starts when its networks reach the external network"
                .into(),
            Ok(_) => "off".into(),
            Err(e) => format!("pending: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
