//! Threshold and detection_filter state: Suricata's counting per (sid, gid, tracked address),
//! in a bounded table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::engine::Counters;
use crate::rule::ThresholdKind;

pub(crate) struct ThresholdEntry {
    start: Duration,
    count: u32,
}

/// Suricata's threshold arithmetic (detect-engine-threshold.c), per (sid, gid, tracked ip).
#[allow(clippy::too_many_arguments)]
pub(crate) fn threshold_allows(
    table: &mut HashMap<(u32, u32, IpAddr), ThresholdEntry>,
    max: usize,
    counters: &mut Counters,
    key: (u32, u32, IpAddr),
    kind: ThresholdKind,
    count: u32,
    seconds: u32,
    ts: Duration,
) -> bool {
    let window = Duration::from_secs(u64::from(seconds));
    let Some(e) = table.get_mut(&key) else {
        if table.len() >= max {
            // Full: fail open (alert), counted.
            counters.threshold_table_full += 1;
            return true;
        }
        table.insert(
            key,
            ThresholdEntry {
                start: ts,
                count: 1,
            },
        );
        return match kind {
            ThresholdKind::Limit => true,
            ThresholdKind::Threshold | ThresholdKind::Both => count <= 1,
            ThresholdKind::DetectionFilter => count == 0,
        };
    };
    let within = ts.saturating_sub(e.start) < window;
    if !within {
        e.start = ts;
        e.count = 1;
        return match kind {
            ThresholdKind::Limit => true,
            ThresholdKind::Threshold | ThresholdKind::Both => count <= 1,
            ThresholdKind::DetectionFilter => count == 0,
        };
    }
    e.count = e.count.saturating_add(1);
    match kind {
        ThresholdKind::Limit => e.count <= count,
        ThresholdKind::Threshold => {
            if e.count >= count {
                e.count = 0;
                true
            } else {
                false
            }
        }
        ThresholdKind::Both => e.count == count,
        ThresholdKind::DetectionFilter => e.count > count,
    }
}
