//! Frame parser, switching pipeline and ARP/NDP/DHCP responders on arbitrary frames.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hostel_switch::fuzzing::frame(data);
});
