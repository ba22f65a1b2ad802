//! hostel-switch-proto: what the daemon and the switch say to each other, without the
//! datapath. The daemon links only this crate; the switch (`hostel-switch`) re-exports all
//! of it at the same paths.
//!
//! - [`types`]: MAC addresses and IPv4/IPv6 prefixes, serialized in their text forms.
//! - [`config`]: the networks and ports the daemon programs, and their validation.
//! - [`external`]: the external network on a host interface and the per-tenant edges.
//! - [`firewall`]: a tenant firewall's rule model (`PolicySpec`), validated by `hostel-firewall`.
//! - [`policy`]: policy stages (ACL rules with pass/drop/mirror verdicts) as configured.
//! - [`stats`]: the counter snapshots `stats` answers, one [`DropReason`] per drop.
//! - [`control`]: the JSON-lines requests and responses, and a blocking [`control::Client`].
//! - [`error`]: the errors for configurations the switch refuses.

#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod error;
pub mod external;
pub mod firewall;
pub mod ids;
pub mod policy;
pub mod stats;
pub mod types;

pub use config::{NetworkConfig, PortConfig, PortKind, PortLimits, RateLimit, SwitchConfig};
pub use control::{Client, Request, Response};
pub use error::{ConfigError, LimitError};
pub use external::{ApplianceConfig, EdgeConfig, ExternalConfig, FloatingIp};
pub use firewall::PolicySpec;
pub use policy::{Action, IpCidr, PolicyConfig, PolicyScope, RuleConfig};
pub use stats::{
    DropReason, FirewallLogEntry, FirewallStats, PortStatus, RuleHits, StatsSnapshot, SwitchStats,
};
pub use types::{AddrParseError, Ipv4Cidr, Ipv6Cidr, MacAddr};
