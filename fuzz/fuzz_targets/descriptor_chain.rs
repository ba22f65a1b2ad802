//! The TX path over hostile guest memory: descriptor tables, avail rings and buffers are
//! all fuzzer-controlled, for both the sender and the receiver.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hostel_switch::fuzzing::descriptor_chain(data);
});
