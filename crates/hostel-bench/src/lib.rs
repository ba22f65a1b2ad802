//! Benchmarks of hostel against the plain commands people would otherwise use.
//!
//! Everything a benchmark measures lives here, the binaries only parse flags and print, so
//! the parsing of `/proc` and the statistics are unit-tested without booting anything.

pub mod api_bench;
pub mod api_daemon;
pub mod api_report;
pub mod boot;
pub mod command_line;
pub mod contender;
pub mod exec_bench;
pub mod exec_report;
pub mod images_bench;
pub mod images_report;
pub mod machine;
pub mod marker;
pub mod memory;
pub mod net_e2e;
pub mod net_host;
pub mod net_report;
pub mod nft_net;
pub mod nft_policy;
pub mod report;
pub mod stats;
pub mod table;
