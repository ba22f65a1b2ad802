//! What the daemon programs into the switch: networks and ports; defined in
//! [`hostel_switch_proto::config`] so the daemon can use them without the datapath.

pub use hostel_switch_proto::config::{
    NetworkConfig, PortConfig, PortKind, PortLimits, RateLimit, SwitchConfig, DEFAULT_BURST_MS,
    MAX_LIMIT,
};
