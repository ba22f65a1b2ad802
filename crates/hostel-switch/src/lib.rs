//! hostel-switch: the hypervisor's datapath, a vhost-user-net backend serving every VM NIC
//! on the host from one process.
//!
//! Each virtual NIC is a Unix socket the switch listens on; QEMU connects to it as the
//! vhost-user frontend. Frames are switched inside a tenant network by destination IP,
//! copied once from the sender's TX buffers into the receiver's RX buffers with the
//! virtio-net header (and so TSO/checksum offload) carried across; everything else goes to
//! the network's uplink TAP, or through the tenant's edge router out of the external
//! network's host interface. The switch answers ARP, NDP and DHCPv4 itself, drops spoofed
//! sources, enforces per-port rate limits ([`PortLimits`]), and counts every drop per port
//! under a [`DropReason`].
//!
//! # Module map
//! The protocol and config types live in [`hostel_switch_proto`] (so the daemon links no
//! datapath); this crate re-exports them at the same paths.
//! - [`types`], [`config`]: addresses and the networks/ports the daemon programs; a port's
//!   kind ([`PortKind`]: a vhost-user NIC or an existing host TAP).
//! - [`policy`]: policy stages (ACL rules with pass/drop/mirror verdicts) per network or port.
//! - [`tables`]: immutable lookup tables and compiled policies, swapped atomically on every
//!   change.
//! - [`packet`]: frame parser and the ARP/NDP/DHCPv4 replies the switch builds itself.
//! - [`datapath`]: the stage pipeline ([`datapath::pipeline`]: parse → anti-spoof →
//!   network lookup → destination lookup → unspecified-source check → policy stages → uplink
//!   hooks), ports ([`datapath::port`]: one runtime for every kind) and the one delivery path
//!   ([`datapath::forward`], [`datapath::exec`]), storm control ([`datapath::ratelimit`]:
//!   per-port token buckets) and its execution on virtio rings (RX delivery, TX batches)
//!   through [`hostel_virtq`]: rings and guest memory through host pointers resolved once per
//!   batch, bounded descriptor chains.
//! - [`stats`]: per-port counters with one [`stats::DropReason`] per drop.
//! - [`vhost`]: vhost-user backend glue, per-port socket listeners, and the message relay
//!   that papers over QEMU's SET_VRING_ENABLE ordering and vets every descriptor a frontend
//!   hands over ([`hostel_vhost::vet`]: memory that could fault the switch, eventfds that could
//!   spin or block it).
//! - [`uplink`]: TAP devices (a network's uplink, TAP ports) and their reader threads.
//! - [`afpacket`], [`external`]: the external network's port on a host interface (AF_PACKET
//!   with a TPACKET_V3 ring) and its reader; the tenants' edge routers between their
//!   networks and it are [`datapath::edge`], with the [`datapath::edge::EdgeFilter`] hook,
//!   which [`datapath::firewall`] fills with each tenant's `hostel-firewall`;
//!   [`edge_bench`] drives that path for `bench-edge`.
//! - [`switch`]: the control-plane object ([`Switch`]); [`control`]: its JSON-lines socket.
//! - [`mod@run`]: the blocking entry point used by `hostel switch`.
//!
//! # Running
//! [`run()`] takes [`RunOptions`]:
//! - `control_socket`: Unix socket path for the control protocol (see [`control`] for the
//!   requests: add/remove network, add/remove port, set_limits, set_policies, apply,
//!   show_config, stats, shutdown).
//! - `config`: optional JSON file holding a [`SwitchConfig`] applied at start.
//!
//! It blocks until a `shutdown` request arrives on the control socket, then removes every
//! port socket and uplink. Logging goes through `tracing`; the caller installs a subscriber.
//!
//! # QEMU side
//! Guest memory must be shareable (`-object memory-backend-memfd,...,share=on`, on microvm
//! `-M microvm,memory-backend=...`), virtio-mmio must be modern
//! (`-global virtio-mmio.force-legacy=false`), and the NIC is
//! `-chardev socket,id=n0,path=SOCK[,reconnect=1] -netdev vhost-user,id=net0,chardev=n0
//! -device virtio-net-device,netdev=net0,mac=MAC` with MAC equal to the port's `mac`.
//! The switch re-accepts on the same socket after a disconnect, so `reconnect=1` survives a
//! switch restart once the daemon has re-sent the tables.

pub mod afpacket;
pub mod config;
pub mod control;
pub mod datapath;
#[doc(hidden)]
pub mod edge_bench;
pub mod error;
pub mod external;
pub mod fuzzing;
pub mod packet;
pub mod policy;
pub mod run;
pub mod stats;
pub mod switch;
pub mod tables;
pub mod types;
pub mod uplink;
pub mod vhost;

#[cfg(test)]
mod edge_tests;
#[cfg(test)]
mod tap_port_tests;
#[cfg(test)]
mod uplink_tests;

pub use config::{NetworkConfig, PortConfig, PortKind, PortLimits, RateLimit, SwitchConfig};
pub use error::{ConfigError, LimitError, SwitchError};
pub use policy::{Action, IpCidr, PolicyConfig, PolicyScope, RuleConfig};
pub use run::{run, RunOptions};
pub use stats::{DropReason, StatsSnapshot};
pub use switch::{PortStatus, Switch, SwitchStats};
pub use types::{AddrParseError, Ipv4Cidr, Ipv6Cidr, MacAddr};

pub use hostel_switch_proto;
