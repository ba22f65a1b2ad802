//! vhost-user glue: one backend instance per connected guest NIC, one listener thread per
//! port socket.

pub mod backend;
pub mod proxy;
pub mod server;
pub mod vet;
