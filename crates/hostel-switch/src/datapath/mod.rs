//! The switching datapath: decision pipeline (pure) and its execution on virtio rings.

pub mod decide;
pub mod edge;
pub mod exec;
pub mod fairness;
pub mod firewall;
pub mod forward;
pub mod ids;
pub mod ids_intra;
pub mod local;
pub mod neigh;
pub mod pipeline;
pub mod port;
pub mod ratelimit;
pub mod rx;
pub mod tx;
pub mod vnet;

// Storm control and anti-spoofing over real rings.
#[cfg(test)]
mod spoof_tests;
#[cfg(test)]
mod storm_tests;
// Policy stages (pass, drop, mirror) over real rings.
#[cfg(test)]
mod policy_tests;

use std::sync::{Arc, PoisonError, RwLock};

use crate::tables::Tables;
use pipeline::Pipeline;

/// What every worker thread shares: the current tables and the pipeline.
pub struct Core {
    tables: RwLock<Arc<Tables>>,
    pub pipeline: Pipeline,
}

impl Core {
    pub fn new(pipeline: Pipeline) -> Arc<Core> {
        Arc::new(Core {
            tables: RwLock::new(Arc::new(Tables::default())),
            pipeline,
        })
    }

    /// A snapshot for one batch (one uncontended read lock and a reference-count bump).
    pub fn tables(&self) -> Arc<Tables> {
        self.tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn publish(&self, t: Tables) {
        *self.tables.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(t);
    }
}

#[cfg(test)]
pub(crate) mod flow_tests;
#[cfg(test)]
pub(crate) mod hostile_tests;
#[cfg(test)]
pub(crate) mod tests;
