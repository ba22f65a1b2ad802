//! A tenant's intrusion detection on the switch: its spec installed (rules compiled by the
//! switch, swapped in between two packets) and its alerts read, through the control socket.

use std::future::Future;

use hostel_switch_proto::ids::{IdsAlerts, IdsLoadReport, IdsSpec};
use hostel_switch_proto::Request;

use super::switch_link::LinkError;

/// The switch as the IDS service sees it (a fake in the service's tests).
pub trait IdsAdapter: Send + Sync {
    /// Installs `spec` for `tenant` (`None`: detection off).
    fn set_ids(
        &self,
        tenant: &str,
        spec: Option<IdsSpec>,
    ) -> impl Future<Output = Result<IdsLoadReport, LinkError>> + Send;
    /// The tenant's alerts after sequence number `after`.
    fn ids_alerts(
        &self,
        tenant: &str,
        after: u64,
    ) -> impl Future<Output = Result<IdsAlerts, LinkError>> + Send;
}

impl IdsAdapter for crate::Ctx {
    async fn set_ids(
        &self,
        tenant: &str,
        spec: Option<IdsSpec>,
    ) -> Result<IdsLoadReport, LinkError> {
        let req = Request::SetIds {
            tenant: tenant.to_string(),
            ids: spec,
        };
        let resp = self.switch.request(&req).await?;
        Ok(resp.ids_load.unwrap_or_default())
    }

    async fn ids_alerts(&self, tenant: &str, after: u64) -> Result<IdsAlerts, LinkError> {
        let req = Request::IdsAlerts {
            tenant: tenant.to_string(),
            after,
        };
        let resp = self.switch.request(&req).await?;
        Ok(resp.ids_alerts.unwrap_or_default())
    }
}
