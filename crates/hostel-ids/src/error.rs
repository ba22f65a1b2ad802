//! Why a rule was refused: its sid (when it got that far) and the keyword or part named.

/// A refused rule. `sid` is 0 when the rule text broke before its `sid` could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule sid {sid}: `{keyword}`: {reason}")]
pub struct RuleError {
    pub sid: u32,
    /// The keyword, or the header part (`action`, `protocol`, `source`, ...), at fault.
    pub keyword: String,
    pub reason: String,
}

impl RuleError {
    pub(crate) fn new(keyword: &str, reason: impl Into<String>) -> Self {
        RuleError {
            sid: 0,
            keyword: keyword.chars().take(64).collect(),
            reason: reason.into(),
        }
    }
}

/// Errors reading a capture.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("capture {path}: {source}")]
    Pcap {
        path: String,
        source: pcap_file::PcapError,
    },
    #[error(
        "capture {path}: link type {linktype:?} is not supported (Ethernet, Linux SLL, raw IP are)"
    )]
    LinkType { path: String, linktype: String },
    #[error("variable `{0}`: expected NAME=VALUE")]
    Var(String),
}
