//! Per-NIC rate limits: the operator's ceiling, the tenant's own limits within it, and the
//! effective limits the switch enforces (per field the lower of the two; absent means
//! unlimited). The switch's `PortLimits` has the same shape; the store keeps its own type
//! so it does not depend on the switch crate.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Largest rate or burst accepted: the switch's own bound (2^40), so whatever the store
/// accepts the switch takes.
pub const MAX_NIC_LIMIT: u64 = 1 << 40;

/// One traffic class's packet and byte buckets. `None`: no limit on that field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_per_sec: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_sec: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_packets: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_bytes: Option<u64>,
}

/// A NIC's limits on what its guest sends: `total`, broadcast/multicast (`flood`) and
/// unicast to addresses no VM of the network owns (`unknown`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicLimits {
    #[serde(default)]
    pub total: RateLimit,
    #[serde(default)]
    pub flood: RateLimit,
    #[serde(default)]
    pub unknown: RateLimit,
}

/// Error field names, `limits.<class>.<field>`: static so they fit [`StoreError::Invalid`].
const FIELD_NAMES: [[&str; 4]; 3] = [
    [
        "limits.total.packets_per_sec",
        "limits.total.bytes_per_sec",
        "limits.total.burst_packets",
        "limits.total.burst_bytes",
    ],
    [
        "limits.flood.packets_per_sec",
        "limits.flood.bytes_per_sec",
        "limits.flood.burst_packets",
        "limits.flood.burst_bytes",
    ],
    [
        "limits.unknown.packets_per_sec",
        "limits.unknown.bytes_per_sec",
        "limits.unknown.burst_packets",
        "limits.unknown.burst_bytes",
    ],
];

impl RateLimit {
    fn fields(&self) -> [Option<u64>; 4] {
        [
            self.packets_per_sec,
            self.bytes_per_sec,
            self.burst_packets,
            self.burst_bytes,
        ]
    }

    fn from_fields(f: [Option<u64>; 4]) -> Self {
        RateLimit {
            packets_per_sec: f[0],
            bytes_per_sec: f[1],
            burst_packets: f[2],
            burst_bytes: f[3],
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.fields().iter().all(Option::is_none)
    }

    /// The fields as a ceiling bounds them: a burst left out is the switch's default for
    /// the rate ([`DEFAULT_BURST_MS`] of it), so a tenant's own burst cannot exceed what
    /// the ceiling's rate alone allows.
    fn as_ceiling(&self) -> [Option<u64>; 4] {
        let [pps, bps, bp, bb] = self.fields();
        [
            pps,
            bps,
            bp.or(pps.map(default_burst)),
            bb.or(bps.map(default_burst)),
        ]
    }
}

/// Bucket depth the switch gives a rate without an explicit burst, in milliseconds of it
/// (the switch's `DEFAULT_BURST_MS`).
pub const DEFAULT_BURST_MS: u64 = 100;

fn default_burst(rate: u64) -> u64 {
    (rate.saturating_mul(DEFAULT_BURST_MS) / 1000).max(1)
}

/// Per field the lower of two limits, where `None` is no limit.
fn lower(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl NicLimits {
    fn classes(&self) -> [RateLimit; 3] {
        [self.total, self.flood, self.unknown]
    }

    pub fn is_unlimited(&self) -> bool {
        self.classes().iter().all(RateLimit::is_unlimited)
    }

    /// Refuses a zero (a limit of nothing is not "unlimited": omit the field), a value
    /// above [`MAX_NIC_LIMIT`], and a burst without its rate (it would limit nothing).
    pub fn validate(&self) -> Result<(), StoreError> {
        for (c, class) in self.classes().iter().enumerate() {
            let f = class.fields();
            for (i, v) in f.iter().enumerate() {
                match v {
                    Some(0) => {
                        return Err(StoreError::invalid(
                            FIELD_NAMES[c][i],
                            "must be at least 1 (leave it out for no limit)",
                        ))
                    }
                    Some(v) if *v > MAX_NIC_LIMIT => {
                        return Err(StoreError::invalid(
                            FIELD_NAMES[c][i],
                            format!("{v} is above the largest limit, {MAX_NIC_LIMIT}"),
                        ))
                    }
                    _ => {}
                }
            }
            // Bursts (fields 2, 3) belong to the rates (fields 0, 1).
            for (burst, rate) in [(2, 0), (3, 1)] {
                if f[burst].is_some() && f[rate].is_none() {
                    return Err(StoreError::invalid(
                        FIELD_NAMES[c][burst],
                        format!("is given without {}", FIELD_NAMES[c][rate]),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Refuses a field above the ceiling's, naming the first such field. A field left out
    /// is not refused: it asks for no limit of the tenant's own, and the ceiling's holds.
    pub fn check_within(&self, ceiling: &NicLimits) -> Result<(), StoreError> {
        for (c, (mine, max)) in self.classes().iter().zip(ceiling.classes()).enumerate() {
            for (i, (v, m)) in mine.fields().iter().zip(max.as_ceiling()).enumerate() {
                let Some(m) = m else { continue };
                match v {
                    Some(v) if *v > m => {
                        return Err(StoreError::invalid(
                            FIELD_NAMES[c][i],
                            format!("{v} is above the operator's ceiling of {m}"),
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// What the switch enforces: per field the lower of the ceiling and the tenant's. A
    /// tenant's own burst is bounded by the ceiling's, explicit or implied by its rate.
    pub fn effective(ceiling: &NicLimits, tenant: &NicLimits) -> NicLimits {
        let class = |c: RateLimit, t: RateLimit| {
            let (explicit, implied, t) = (c.fields(), c.as_ceiling(), t.fields());
            RateLimit::from_fields([0, 1, 2, 3].map(|i| match t[i] {
                Some(_) => lower(implied[i], t[i]),
                None => explicit[i],
            }))
        };
        NicLimits {
            total: class(ceiling.total, tenant.total),
            flood: class(ceiling.flood, tenant.flood),
            unknown: class(ceiling.unknown, tenant.unknown),
        }
    }
}

/// Where a NIC's ceiling comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CeilingSource {
    /// The operator set one on this NIC.
    Nic,
    /// The tenant's default ceiling, for NICs without their own.
    Tenant,
    /// Neither: unlimited.
    None,
}

/// Everything the store knows about one NIC's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NicLimitsRecord {
    /// The operator's ceiling on this NIC, if set.
    pub nic_ceiling: Option<NicLimits>,
    /// The tenant's default ceiling, if set.
    pub tenant_ceiling: Option<NicLimits>,
    /// The tenant's own limits (unlimited by default).
    pub limits: NicLimits,
}

impl NicLimitsRecord {
    /// The ceiling in force: the NIC's own, else the tenant's default, else none.
    pub fn ceiling(&self) -> (NicLimits, CeilingSource) {
        match (self.nic_ceiling, self.tenant_ceiling) {
            (Some(c), _) => (c, CeilingSource::Nic),
            (None, Some(c)) => (c, CeilingSource::Tenant),
            (None, None) => (NicLimits::default(), CeilingSource::None),
        }
    }

    pub fn effective(&self) -> NicLimits {
        NicLimits::effective(&self.ceiling().0, &self.limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pps(n: u64) -> NicLimits {
        NicLimits {
            total: RateLimit {
                packets_per_sec: Some(n),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn zero_huge_and_orphan_bursts_are_refused_by_name() {
        let field = |l: NicLimits| match l.validate() {
            Err(StoreError::Invalid { field, .. }) => field,
            other => panic!("{l:?}: {other:?}"),
        };
        assert_eq!(field(pps(0)), "limits.total.packets_per_sec");
        assert_eq!(
            field(pps(MAX_NIC_LIMIT + 1)),
            "limits.total.packets_per_sec"
        );
        let mut l = NicLimits::default();
        l.flood.burst_bytes = Some(10);
        assert_eq!(field(l), "limits.flood.burst_bytes");
        l.flood.bytes_per_sec = Some(100);
        l.validate().unwrap();
        pps(MAX_NIC_LIMIT).validate().unwrap();
        NicLimits::default().validate().unwrap();
    }

    #[test]
    fn within_the_ceiling_and_effective_is_the_lower_per_field() {
        let mut ceiling = pps(1000);
        ceiling.unknown.bytes_per_sec = Some(5000);
        match pps(1001).check_within(&ceiling) {
            Err(StoreError::Invalid { field, reason }) => {
                assert_eq!(field, "limits.total.packets_per_sec");
                assert!(reason.contains("1000"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        pps(1000).check_within(&ceiling).unwrap();
        // Leaving a field out is asking for no limit of one's own: the ceiling still holds.
        NicLimits::default().check_within(&ceiling).unwrap();
        let mut mine = pps(10);
        mine.flood.packets_per_sec = Some(7);
        mine.check_within(&ceiling).unwrap();
        let eff = NicLimits::effective(&ceiling, &mine);
        assert_eq!(eff.total.packets_per_sec, Some(10));
        assert_eq!(eff.flood.packets_per_sec, Some(7));
        assert_eq!(eff.unknown.bytes_per_sec, Some(5000));
        assert_eq!(eff.total.bytes_per_sec, None);
        assert!(NicLimits::effective(&NicLimits::default(), &NicLimits::default()).is_unlimited());
        // The ceiling's 1000 pps implies a 100-packet burst: a tenant cannot buy a deeper one.
        let mut deep = pps(10);
        deep.total.burst_packets = Some(101);
        match deep.check_within(&ceiling) {
            Err(StoreError::Invalid { field, .. }) => {
                assert_eq!(field, "limits.total.burst_packets")
            }
            other => panic!("{other:?}"),
        }
        deep.total.burst_packets = Some(100);
        deep.check_within(&ceiling).unwrap();
        assert_eq!(
            NicLimits::effective(&ceiling, &deep).total.burst_packets,
            Some(100)
        );
    }

    #[test]
    fn the_nic_ceiling_beats_the_tenant_default() {
        let mut r = NicLimitsRecord {
            nic_ceiling: None,
            tenant_ceiling: Some(pps(50)),
            limits: pps(100),
        };
        assert_eq!(r.ceiling().1, CeilingSource::Tenant);
        assert_eq!(r.effective().total.packets_per_sec, Some(50));
        r.nic_ceiling = Some(pps(500));
        assert_eq!(r.ceiling().1, CeilingSource::Nic);
        assert_eq!(r.effective().total.packets_per_sec, Some(100));
    }

    #[test]
    fn unknown_fields_are_refused_so_a_typo_is_not_unlimited() {
        assert!(serde_json::from_str::<NicLimits>(r#"{"total":{"pps":5}}"#).is_err());
        assert!(serde_json::from_str::<NicLimits>(r#"{"totl":{}}"#).is_err());
        let l: NicLimits = serde_json::from_str(r#"{"flood":{"packets_per_sec":5}}"#).unwrap();
        assert_eq!(l.flood.packets_per_sec, Some(5));
    }
}
