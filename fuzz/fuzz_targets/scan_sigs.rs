//! Hostile signature text (ClamAV hdb/hsb/ndb, YARA): parsing and compiling never panic, and
//! whatever loads scans a few buffers, whole and streamed (body in hostel-scan's fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hostel_scan::fuzzing::scan_sigs(data);
});
