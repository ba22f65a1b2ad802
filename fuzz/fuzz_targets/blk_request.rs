//! virtio-blk request parsing over fuzzer-controlled descriptor chains and guest memory
//! (headers, discard segments): no panic, and every accepted request within the disk.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hostel_storage::fuzzing::blk_request(data);
});
