//! Intrusion detection's settings, shared by the store, the daemon and the switch.

use serde::{Deserialize, Serialize};

/// Detect raises alerts only; prevent also drops what a `drop`/`reject` rule matched and the
/// rest of that flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdsMode {
    #[default]
    Detect,
    Prevent,
}

/// What a tenant's detector does with a packet it has no time for (its inspection budget for
/// the current second spent): pass it uninspected, or drop it. No other tenant waits either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdsOverload {
    #[default]
    FailOpen,
    FailClosed,
}

impl IdsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IdsMode::Detect => "detect",
            IdsMode::Prevent => "prevent",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "detect" => Some(IdsMode::Detect),
            "prevent" => Some(IdsMode::Prevent),
            _ => None,
        }
    }
}

impl IdsOverload {
    pub fn as_str(self) -> &'static str {
        match self {
            IdsOverload::FailOpen => "fail_open",
            IdsOverload::FailClosed => "fail_closed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fail_open" => Some(IdsOverload::FailOpen),
            "fail_closed" => Some(IdsOverload::FailClosed),
            _ => None,
        }
    }
}
