//! Unit tests of the whole pipeline, with datagrams built by hand and checksums verified by an
//! independent (naive) computation.

mod build;
mod hostile;
mod nat;
mod rules;
mod state;
