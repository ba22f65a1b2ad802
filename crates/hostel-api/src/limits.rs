//! Per-NIC rate limits: what a tenant sets on its VM's NIC, the operator's ceiling over it,
//! and what the switch enforces (per field the lower of the two; a field left out is no
//! limit). Limits apply to what the guest sends.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Largest rate or burst the API takes (2^40).
pub const MAX_RATE: u64 = 1 << 40;

/// One traffic class's token buckets. Unknown field names are refused, so a misspelt
/// limit cannot pass as "no limit".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    /// Frames per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_099_511_627_776_u64)]
    pub packets_per_sec: Option<u64>,
    /// Frame bytes (Ethernet header onwards) per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_099_511_627_776_u64)]
    pub bytes_per_sec: Option<u64>,
    /// Bucket depth in frames (default: 100 ms of the rate); needs `packets_per_sec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_099_511_627_776_u64)]
    pub burst_packets: Option<u64>,
    /// Bucket depth in bytes (default: 100 ms of the rate); needs `bytes_per_sec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_099_511_627_776_u64)]
    pub burst_bytes: Option<u64>,
}

/// A NIC's limits in three classes: everything it sends (`total`), its broadcast and
/// multicast (`flood`), and its unicast to addresses no VM of the network has (`unknown`,
/// i.e. what leaves by the uplink).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicLimitsBody {
    #[serde(default)]
    pub total: RateLimitBody,
    #[serde(default)]
    pub flood: RateLimitBody,
    #[serde(default)]
    pub unknown: RateLimitBody,
}

/// One NIC's limits: the tenant's own, the ceiling in force and where it comes from, and
/// what the switch enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NicLimitsView {
    pub vm: String,
    pub nic: u32,
    /// What the tenant set.
    pub limits: NicLimitsBody,
    /// The operator's ceiling in force.
    pub ceiling: NicLimitsBody,
    /// `nic` (set on this NIC), `tenant` (the tenant's default) or `none`.
    pub ceiling_source: String,
    /// Per field the lower of `limits` and `ceiling`: what the switch enforces.
    pub effective: NicLimitsBody,
}

/// A tenant's default NIC ceiling, for its NICs without one of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantNicCeilingView {
    pub tenant: String,
    /// `null`: none (NICs without their own ceiling are limited only by their tenant's
    /// own limits).
    pub ceiling: Option<NicLimitsBody>,
}
