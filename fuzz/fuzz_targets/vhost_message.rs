//! One vhost-user message with fuzzer-chosen descriptors (memfds of any size, sealed or not;
//! eventfds) through the relay's checks: whatever is accepted must be safe to map.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hostel_switch::fuzzing::vhost_message(data);
});
