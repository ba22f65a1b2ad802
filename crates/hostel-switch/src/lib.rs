//! hostel-switch: the hypervisor's datapath, a vhost-user-net backend serving every VM NIC
//! on the host from one process.
//!
//! # Module map
//! - [`types`], [`config`]: addresses and the networks/ports the daemon programs.
//! - [`tables`]: immutable lookup tables, swapped atomically on every change.
//! - [`packet`]: frame parser and the ARP/NDP/DHCPv4 replies the switch builds itself.
//! - [`datapath`]: the stage pipeline ([`datapath::pipeline`]: parse → anti-spoof →
//!   network lookup → destination lookup → uplink hooks) and its execution on virtio rings
//!   (descriptor chains, RX delivery, TX batches).
//! - [`stats`]: per-port counters with one [`stats::DropReason`] per drop.
//! - [`vhost`]: vhost-user backend glue and per-port socket listeners.
//! - [`uplink`]: the per-network TAP device and its reader thread.
//! - [`switch`]: the control-plane object ([`Switch`]); [`control`]: its JSON-lines socket.
//! - [`run`]: the blocking entry point used by `hostel switch`.
//! - [`driver`]: a guest-side split-ring driver for tests, the bench tool and fuzzing.
//!
//! # Running
//! [`run()`] takes [`RunOptions`]:
//! - `control_socket`: Unix socket path for the control protocol (see [`control`]).
//! - `config`: optional JSON file holding a [`SwitchConfig`] applied at start.
//!
//! It blocks until a `shutdown` request arrives on the control socket.

pub mod config;
pub mod control;
pub mod datapath;
pub mod driver;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod packet;
pub mod run;
pub mod stats;
pub mod switch;
pub mod tables;
pub mod types;
pub mod uplink;
pub mod vhost;

#[cfg(test)]
mod uplink_tests;

pub use config::{NetworkConfig, PortConfig, SwitchConfig};
pub use error::{ConfigError, SwitchError};
pub use run::{run, RunOptions};
pub use stats::{DropReason, StatsSnapshot};
pub use switch::{Switch, SwitchStats};
pub use types::{Ipv4Cidr, Ipv6Cidr, MacAddr};
