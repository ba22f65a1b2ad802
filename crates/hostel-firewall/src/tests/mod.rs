//! Unit tests of the whole pipeline, with datagrams built by hand and checksums verified by an
//! independent (naive) computation.

mod build;
mod hostile;
mod nat;
mod rules;
mod state;

/// The switch moves a tenant's firewall between threads (never shares it).
#[test]
fn firewall_is_send() {
    fn send<T: Send>() {}
    send::<crate::Firewall>();
}
