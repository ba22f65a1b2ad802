//! Each tenant's alerts, also as a file: `<state-dir>/ids/<tenant-id>/eve.json`, one EVE line
//! per alert, appended once a second from the switch's alert ring. The sequence number read
//! up to is kept beside it (`eve.cursor`, written after the lines are appended), so a daemon
//! killed in between writes some lines twice at worst and loses none the switch still holds.
//! A restarted switch numbers its alerts from 1 again: a cursor above the switch's newest is
//! reset. The same loop re-installs every tenant's rules on a switch process it has not
//! seen before (the watchdog restarts a killed switch with its tables, not its rules).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::adapters::ids::IdsAdapter;

fn tenant_dir(state: &Path, tenant: &str) -> PathBuf {
    state.join("ids").join(tenant)
}

fn read_cursor(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("eve.cursor"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Appends `lines` to the tenant's file and records `next`.
fn append(dir: &Path, lines: &[serde_json::Value], next: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if !lines.is_empty() {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("eve.json"))?;
        let mut buf = Vec::new();
        for l in lines {
            buf.extend_from_slice(l.to_string().as_bytes());
            buf.push(b'\n');
        }
        f.write_all(&buf)?;
        f.sync_data()?;
    }
    let tmp = dir.join("eve.cursor.tmp");
    std::fs::write(&tmp, next.to_string())?;
    std::fs::rename(tmp, dir.join("eve.cursor"))
}

/// One pass over `tenants`: their new alerts appended to their files.
pub async fn pass<A: IdsAdapter>(state: &Path, switch: &A, tenants: &[String]) {
    for t in tenants {
        let dir = tenant_dir(state, t);
        let mut after = read_cursor(&dir);
        let Ok(mut got) = switch.ids_alerts(t, after).await else {
            continue;
        };
        if got.next < after {
            after = 0;
            match switch.ids_alerts(t, after).await {
                Ok(g) => got = g,
                Err(_) => continue,
            }
        }
        if got.next == after {
            continue;
        }
        let (d, lines, next) = (dir.clone(), got.alerts, got.next);
        let r = tokio::task::spawn_blocking(move || append(&d, &lines, next)).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(dir = %dir.display(), error = %e, "IDS alerts not written");
        }
    }
}

/// Installs every tenant's detection on a switch process that has not had it yet (one the
/// watchdog restarted, or the one found at daemon start). Returns whether it is done; a
/// switch that could not be reached is tried again on the next tick.
async fn restore(ctx: &crate::Ctx) -> bool {
    let dir = super::ids::operator_rules_dir(ctx.layout.root());
    let Ok(operator) =
        tokio::task::spawn_blocking(move || super::ids::read_operator_rules(&dir)).await
    else {
        return false;
    };
    match super::ids::IdsService::new(&ctx.store, ctx, operator)
        .restore_all()
        .await
    {
        Ok(n) => {
            if n > 0 {
                tracing::info!(tenants = n, "intrusion detection installed on the switch");
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "intrusion detection not restored yet");
            false
        }
    }
}

/// Runs [`pass`] every second for the tenants with detection settings, and gives a switch
/// process it has not seen before (the watchdog's restart of a killed one) every tenant's
/// rules again: a switch keeps them in memory only.
pub async fn run(ctx: Arc<crate::Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut restored = None;
    loop {
        tick.tick().await;
        let now = ctx.switch.instance();
        if now.is_some() && now != restored && restore(&ctx).await {
            restored = now;
        }
        let tenants = ctx
            .db(|store| store.list_ids())
            .await
            .map(|v| {
                v.into_iter()
                    .filter(|(_, s)| !s.networks.is_empty())
                    .map(|(t, _)| t.to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !tenants.is_empty() {
            pass(ctx.layout.root(), ctx.as_ref(), &tenants).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::switch_link::LinkError;
    use hostel_switch_proto::ids::{IdsAlerts, IdsLoadReport, IdsSpec};
    use std::sync::Mutex;

    /// A switch ring holding alerts 1..=n (n settable: a restart resets it).
    struct Ring(Mutex<u64>);

    impl IdsAdapter for Ring {
        async fn set_ids(&self, _: &str, _: Option<IdsSpec>) -> Result<IdsLoadReport, LinkError> {
            Ok(IdsLoadReport::default())
        }
        async fn ids_alerts(&self, _: &str, after: u64) -> Result<IdsAlerts, LinkError> {
            let n = *self.0.lock().unwrap();
            Ok(IdsAlerts {
                alerts: (after + 1..=n)
                    .map(|i| serde_json::json!({"event_type": "alert", "n": i}))
                    .collect(),
                next: n,
                lost: 0,
            })
        }
    }

    fn lines(state: &Path) -> Vec<u64> {
        std::fs::read_to_string(state.join("ids/t1/eve.json"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn alerts_are_appended_once_and_a_restarted_switch_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring(Mutex::new(3));
        let t = vec!["t1".to_string()];
        pass(dir.path(), &ring, &t).await;
        pass(dir.path(), &ring, &t).await;
        assert_eq!(lines(dir.path()), vec![1, 2, 3], "each alert once");
        *ring.0.lock().unwrap() = 5;
        pass(dir.path(), &ring, &t).await;
        assert_eq!(lines(dir.path()), vec![1, 2, 3, 4, 5]);
        *ring.0.lock().unwrap() = 2; // the switch restarted and alerted twice since
        pass(dir.path(), &ring, &t).await;
        assert_eq!(lines(dir.path()), vec![1, 2, 3, 4, 5, 1, 2]);
        assert_eq!(read_cursor(&dir.path().join("ids/t1")), 2);
    }
}
