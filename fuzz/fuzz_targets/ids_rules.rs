//! Hostile rule text: loading never panics, and whatever loads runs on a few packets.
#![no_main]

use hostel_ids::packet::{decode, Link};
use hostel_ids::{Classifications, Config, Engine, RuleSet, Vars};

const PACKETS: &[&[u8]] = &[
    // IPv4 TCP SYN-less segment with "GET / HTTP/1.0", UDP DNS-ish, ICMP echo.
    b"\x45\x00\x00\x36\x00\x01\x40\x00\x40\x06\x00\x00\x0a\x00\x00\x05\x5d\xb8\xd8\x22\x9c\x40\x00\x50\x00\x00\x00\x01\x00\x00\x00\x00\x50\x18\xff\xff\x00\x00\x00\x00GET / HTTP/1.0",
    b"\x45\x00\x00\x24\x00\x01\x40\x00\x40\x11\x00\x00\x0a\x00\x00\x05\x5d\xb8\xd8\x22\x14\xe9\x00\x35\x00\x10\x00\x00\x04evil\x03com\x00",
    b"\x45\x00\x00\x20\x00\x01\x40\x00\x05\x01\x00\x00\x0a\x00\x00\x05\x5d\xb8\xd8\x22\x08\x00\x00\x00\x00\x01\x00\x01ping",
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut set = RuleSet::default();
    let _ = set.load(&text, &Vars::default(), &Classifications::default());
    let mut engine = Engine::new(set, Config::default());
    for (i, p) in PACKETS.iter().enumerate() {
        if let Some(p) = decode(Link::RawIp, p) {
            let _ = engine.inspect(std::time::Duration::from_secs(i as u64), &p);
        }
    }
});
