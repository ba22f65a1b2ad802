//! Hostile frames through the detection engine with a rule set using every keyword: decoding,
//! flow tracking and reassembly never panic. One engine across inputs, so flows build up.
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hostel_ids::packet::{decode, Link};
use hostel_ids::{Classifications, Config, Engine, RuleSet, Vars};

const RULES: &str = r#"alert tcp any any -> any any (msg:"a"; flow:established,to_server; content:"GET"; depth:3; content:"admin"; distance:0; within:40; nocase; sid:1;)
alert tcp any any -> any any (msg:"b"; content:"X-"; pcre:"/^[a-z]+/Ri"; flowbits:set,b; sid:2;)
alert tcp any any -> any any (msg:"c"; content:"PASS"; flowbits:isset,b; sid:3;)
alert udp any any -> any 53 (msg:"d"; content:"|04|evil"; dsize:<512; sid:4;)
alert icmp any any -> any any (msg:"e"; itype:8; ttl:<10; threshold:type limit, track by_src, count 2, seconds 60; sid:5;)
drop tcp any any -> any any (msg:"f"; flags:S,12; detection_filter:track by_dst, count 3, seconds 1; sid:6;)
pass ip any any <> 10.0.0.0/8 any (msg:"g"; content:"ok"; sid:7;)"#;

struct State {
    engine: Engine,
    t: u64,
}

fn state() -> &'static Mutex<State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(|| {
        let mut set = RuleSet::default();
        let report = set.load(RULES, &Vars::default(), &Classifications::default());
        assert!(report.refused.is_empty());
        let config = Config {
            max_flows: 1024,
            stream_depth: 64 * 1024,
            ..Config::default()
        };
        Mutex::new(State {
            engine: Engine::new(set, config),
            t: 0,
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let link = match sel % 3 {
        0 => Link::Ethernet,
        1 => Link::LinuxSll,
        _ => Link::RawIp,
    };
    let Some(p) = decode(link, frame) else {
        return;
    };
    let mut s = state().lock().unwrap_or_else(|e| e.into_inner());
    s.t += 1;
    let ts = Duration::from_millis(s.t);
    let _ = s.engine.inspect(ts, &p);
});
