//! Intrusion detection on a tenant's traffic, as a pure library (no I/O but the replay's file
//! reading, no clock: packet times come from the caller).
//!
//! - `rule` + `keywords` + `payload` + `addr` + `classify`: Suricata's rule language, the supported subset;
//!   `ruleset` loads a file, refusing rules with anything else (sid and keyword named).
//! - `packet`: decoding untrusted frames; `flow`: the bounded flow table, TCP handshake
//!   tracking and in-order reassembly per direction.
//! - `engine`: prefilter, rule checks in precedence order, flowbits, alerts; `threshold`:
//!   threshold and detection_filter counting.
//! - `eve`: alerts as EVE JSON; `replay`: a pcap through the engine.

pub mod addr;
pub mod classify;
pub mod cli;
pub mod engine;
pub mod error;
pub mod eve;
pub mod flow;
pub mod keywords;
pub mod packet;
pub mod payload;
pub mod replay;
pub mod rule;
pub mod ruleset;
mod threshold;

pub use addr::Vars;
pub use classify::Classifications;
pub use engine::{Alert, Config, Engine, Mode, Verdict};
pub use error::{ReplayError, RuleError};
pub use ruleset::{LoadReport, RuleSet};
