//! Host admission: the host refuses a VM it cannot hold, with the reason, instead of starting
//! it into swap. Memory and vCPUs committed to VMs that should run are counted against the
//! host's size times an operator-set overcommit ratio.

use hostel_api::HostSettings;
use hostel_state::{DesiredState, NewAuditEntry, SettingKey, Store, VmId};

pub const DEFAULT_SETTINGS: HostSettings = HostSettings {
    memory_overcommit: 1.0,
    cpu_overcommit: 4.0,
};
const MEMORY_KEY: &str = "host.memory_overcommit";
const CPU_KEY: &str = "host.cpu_overcommit";

#[derive(Debug, Clone, Copy)]
pub struct HostSize {
    pub cpus: u32,
    pub memory_mib: u64,
}

impl HostSize {
    pub fn probe() -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_mib: hostel_engine::preflight::host_memory_mib().unwrap_or(0),
        }
    }
}

pub fn load_settings(store: &dyn Store) -> HostSettings {
    let read = |k: &str, default: f64| {
        SettingKey::new(k)
            .ok()
            .and_then(|key| store.get_setting(&key).ok().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    HostSettings {
        memory_overcommit: read(MEMORY_KEY, DEFAULT_SETTINGS.memory_overcommit),
        cpu_overcommit: read(CPU_KEY, DEFAULT_SETTINGS.cpu_overcommit),
    }
}

pub fn validate_settings(s: &HostSettings) -> Result<(), (&'static str, String)> {
    for (field, v) in [
        ("memory_overcommit", s.memory_overcommit),
        ("cpu_overcommit", s.cpu_overcommit),
    ] {
        if !v.is_finite() || !(0.1..=100.0).contains(&v) {
            return Err((field, format!("{v} is outside 0.1-100")));
        }
    }
    Ok(())
}

/// Both ratios and the audit entry, in one transaction.
pub fn save_settings(
    store: &dyn Store,
    s: &HostSettings,
    audit: &NewAuditEntry,
) -> hostel_state::Result<()> {
    store.set_settings(
        &[
            (
                SettingKey::new(MEMORY_KEY)?,
                s.memory_overcommit.to_string(),
            ),
            (SettingKey::new(CPU_KEY)?, s.cpu_overcommit.to_string()),
        ],
        audit,
    )
}

/// Resources already promised to VMs that should be running.
#[derive(Debug, Clone, Copy, Default)]
pub struct Committed {
    pub vcpus: u64,
    pub memory_mib: u64,
}

/// What the VMs that should be running have committed, leaving out `except`: a VM being
/// admitted again must not count against itself.
pub fn committed(store: &dyn Store, except: Option<&VmId>) -> hostel_state::Result<Committed> {
    let mut c = Committed::default();
    for vm in store.list_all_vms()? {
        if Some(&vm.id) != except && vm.desired == DesiredState::Running {
            c.vcpus += u64::from(vm.spec.vcpus());
            c.memory_mib += vm.spec.memory_mib();
        }
    }
    Ok(c)
}

/// Which of the host's limits a VM would break.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CapacityError {
    #[error(
        "host memory: {requested} MiB requested + {committed} MiB committed > {limit} MiB \
         ({host} MiB x overcommit {overcommit})"
    )]
    Memory {
        requested: u64,
        committed: u64,
        limit: u64,
        host: u64,
        overcommit: f64,
    },
    #[error(
        "host vCPUs: {requested} requested + {committed} committed > {limit} \
         ({host} CPUs x overcommit {overcommit})"
    )]
    Vcpus {
        requested: u32,
        committed: u64,
        limit: u64,
        host: u32,
        overcommit: f64,
    },
}

/// Admits a VM of `vcpus`/`memory_mib` on top of `committed`, or says which limit it breaks.
pub fn admit(
    host: HostSize,
    settings: &HostSettings,
    committed: Committed,
    vcpus: u32,
    memory_mib: u64,
) -> Result<(), CapacityError> {
    let mem_limit = (host.memory_mib as f64 * settings.memory_overcommit) as u64;
    if committed.memory_mib + memory_mib > mem_limit {
        return Err(CapacityError::Memory {
            requested: memory_mib,
            committed: committed.memory_mib,
            limit: mem_limit,
            host: host.memory_mib,
            overcommit: settings.memory_overcommit,
        });
    }
    let cpu_limit = (f64::from(host.cpus) * settings.cpu_overcommit) as u64;
    if committed.vcpus + u64::from(vcpus) > cpu_limit {
        return Err(CapacityError::Vcpus {
            requested: vcpus,
            committed: committed.vcpus,
            limit: cpu_limit,
            host: host.cpus,
            overcommit: settings.cpu_overcommit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_within_and_refuses_beyond_the_overcommitted_host() {
        let host = HostSize {
            cpus: 2,
            memory_mib: 1000,
        };
        let s = HostSettings {
            memory_overcommit: 1.5,
            cpu_overcommit: 2.0,
        };
        let c = Committed {
            vcpus: 3,
            memory_mib: 1000,
        };
        assert!(admit(host, &s, c, 1, 500).is_ok());
        let err = admit(host, &s, c, 1, 501).unwrap_err();
        assert!(
            matches!(err, CapacityError::Memory { limit: 1500, .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "host memory: 501 MiB requested + 1000 MiB committed > 1500 MiB \
             (1000 MiB x overcommit 1.5)"
        );
        let err = admit(host, &s, c, 2, 10).unwrap_err();
        assert!(
            matches!(err, CapacityError::Vcpus { limit: 4, .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("host vCPUs"), "{err}");
        assert!(validate_settings(&HostSettings {
            memory_overcommit: f64::NAN,
            cpu_overcommit: 1.0
        })
        .is_err());
    }
}
