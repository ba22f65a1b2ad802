//! A tenant's stateful edge firewall, as a library the switch calls inline for every IP
//! datagram that crosses the tenant's edge (no I/O, no threads, no clock: the caller passes
//! the time). One [`Firewall`] per tenant, so one tenant's tables, limits and floods never
//! touch another's.
//!
//! Modules: `rule` (the serde model, validation naming the field, evaluation order),
//! `classify` (compiled first-match classifier and the naive reference), `packet` (parsing
//! untrusted datagrams), `conntrack` (the connection table), `state` (connection states,
//! timeouts, TCP transitions), `nat` (floating IPs, source NAT, checksum-preserving
//! rewrites), `reject` (RST / ICMP unreachable), `log` (rate-limited log ring, token bucket),
//! `types` (settings, verdicts, counters), `firewall` (the per-packet pipeline).

//!
//! How the switch calls it, per datagram, with no allocation:
//!
//! ```
//! use hostel_firewall::{Config, Direction, Firewall, PolicySpec, Verdict};
//! let mut fw = Firewall::new(Config::default(), &PolicySpec::default(), &Default::default())
//!     .expect("the default policy is valid");
//! let mut reply = [0u8; 1500];
//! let mut datagram = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 47, 0, 0, 10, 0, 0, 5, 8, 8, 8, 8];
//! let now_ns = 1; // the caller's monotonic clock
//! match fw.process(Direction::Egress, &mut datagram, now_ns, &mut reply) {
//!     Verdict::Accept => {}                      // forward `datagram` (maybe rewritten)
//!     Verdict::Reject { len } => drop(&reply[..len]), // send back where it came from
//!     Verdict::Drop(_reason) => {}               // counted in `fw.stats()`
//! }
//! assert_eq!(fw.stats().accepted, 1, "egress is allowed by default");
//! ```

pub mod bench_policy;
pub mod checksum;
pub mod classify;
pub mod conntrack;
mod firewall;
pub mod log;
pub mod nat;
pub mod packet;
pub mod reject;
pub mod rule;
pub mod state;
pub mod tcpwin;
mod types;

pub use firewall::Firewall;
pub use rule::{Action, DefaultAction, Direction, PolicySpec, RuleError, RuleSpec, Validate};
pub use types::{Config, FirewallError, PolicyChange, RuleStats, Stage, Stats, Verdict};

/// Why a packet was dropped (one counter each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not a well-formed IPv4/IPv6 datagram (length, IHL, truncated transport header...).
    Malformed,
    /// An IPv6 extension-header chain longer than the firewall walks.
    ExtensionChain,
    /// A non-first fragment whose first fragment was not let through.
    Fragment,
    /// A rule with action drop.
    Rule,
    /// A rule with action reject (the reply, if any, is in the caller's buffer).
    Reject,
    /// The direction's default policy.
    Default,
    /// A TCP segment other than a SYN for no tracked connection.
    TcpNoConnection,
    /// A TCP segment that does not fit its connection's state.
    TcpInvalid,
    /// A TCP segment outside its connection's sequence window (see `tcpwin`).
    TcpWindow,
    /// The connection table is full.
    ConntrackFull,
    /// A new connection's tuple collides with a tracked one.
    ConntrackClash,
    /// New half-open TCP connections above the rate limit.
    SynFlood,
    /// No source-NAT port left on the outside address.
    SnatExhausted,
    /// A stateless rule allowed a packet that needs source NAT, which needs a connection.
    SnatNeedsState,
}

impl DropReason {
    pub const ALL: [DropReason; 14] = [
        DropReason::Malformed,
        DropReason::ExtensionChain,
        DropReason::Fragment,
        DropReason::Rule,
        DropReason::Reject,
        DropReason::Default,
        DropReason::TcpNoConnection,
        DropReason::TcpInvalid,
        DropReason::TcpWindow,
        DropReason::ConntrackFull,
        DropReason::ConntrackClash,
        DropReason::SynFlood,
        DropReason::SnatExhausted,
        DropReason::SnatNeedsState,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::ExtensionChain => "extension_chain",
            DropReason::Fragment => "fragment",
            DropReason::Rule => "rule",
            DropReason::Reject => "reject",
            DropReason::Default => "default",
            DropReason::TcpNoConnection => "tcp_no_connection",
            DropReason::TcpInvalid => "tcp_invalid",
            DropReason::TcpWindow => "tcp_window",
            DropReason::ConntrackFull => "conntrack_full",
            DropReason::ConntrackClash => "conntrack_clash",
            DropReason::SynFlood => "syn_flood",
            DropReason::SnatExhausted => "snat_exhausted",
            DropReason::SnatNeedsState => "snat_needs_state",
        }
    }
}

#[cfg(test)]
mod tests;
