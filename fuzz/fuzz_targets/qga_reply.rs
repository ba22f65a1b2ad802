//! The guest agent's client reading whatever a hostile guest sends on its channel (sync
//! replies, every call's reply): no panic, no hang, every accepted value within bounds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hostel_engine::agent::fuzzing::qga_reply(data);
});
