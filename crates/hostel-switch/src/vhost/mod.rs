//! vhost-user glue: one backend instance per connected guest NIC, one listener thread per
//! port socket (from `hostel-vhost`, shared with the storage backend).

pub mod backend;
pub mod server;
