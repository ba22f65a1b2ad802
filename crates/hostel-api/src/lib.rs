//! hostel's REST API as both sides see it: the JSON request and response types (with their
//! OpenAPI schemas) and [`Client`], the typed client the CLI uses. The server lives in
//! `hostel-daemon`; keeping the types here lets the CLI build without the daemon.
//!
//! Conventions: every path is under `/v1`; `Authorization: Bearer <token>`; a tenant token
//! sees only its own tenant (anything else is 404, never 403); the operator names a tenant
//! with `?tenant=NAME` on VM routes. Errors are `{"error": {"code", "message", "field"}}`.

#![forbid(unsafe_code)]

mod agent;
mod client;
mod edge;
mod edge_client;
mod ids;
mod limits;
mod storage;
pub mod tls;
mod types;
mod vps;

pub use agent::*;
pub use client::{Client, ClientError, PulledFile, VmClient};
pub use edge::*;
pub use ids::*;
pub use limits::*;
pub use storage::*;
pub use types::*;
pub use vps::*;
