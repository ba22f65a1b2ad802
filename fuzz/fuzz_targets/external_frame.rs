//! The external network's untrusted inputs: ring block headers, frames from the wire, and
//! tenant frames through the edge.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hostel_switch::fuzzing::external_frame(data);
});
