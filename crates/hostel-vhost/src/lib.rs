//! vhost-user serving shared by hostel's backends (the switch's guest NICs, the storage
//! process's guest disks).
//!
//! - [`server`]: one listener thread per socket; each accepted frontend is served until it
//!   disconnects, then the next is accepted (QEMU's `reconnect=` finds the backend again
//!   after either side restarts).
//! - [`proxy`]: the relay every connection passes through before the vhost-user library sees
//!   it, where the descriptors a frontend hands over are vetted ([`vet`]).
//! - [`exit_events`]: the worker exit eventfds the library leaks, closed when a session ends.
//!
//! Why a crate of its own: the vetting is what keeps a hostile frontend from faulting or
//! stalling a backend shared by every tenant; one implementation serves both backends, so a
//! fix to it protects both.

pub mod exit_events;
pub mod proxy;
pub mod server;
pub mod vet;

pub use exit_events::ExitEvents;
pub use server::{Device, Server, ServerError};
