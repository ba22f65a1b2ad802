//! Loading rules: refusals name the sid and the keyword, the rest load and are counted;
//! hostile rule text never panics and costs bounded time.

use std::time::{Duration, Instant};

use hostel_ids::{Classifications, RuleSet, Vars};

fn load(text: &str) -> (usize, Vec<(u32, String)>) {
    let mut set = RuleSet::default();
    let r = set.load(text, &Vars::default(), &Classifications::default());
    (
        r.loaded,
        r.refused.into_iter().map(|e| (e.sid, e.keyword)).collect(),
    )
}

#[test]
fn refusals_name_sid_and_keyword_and_the_rest_load() {
    let text = r#"
# a comment, then good and bad rules
alert tcp any any -> any 80 (msg:"ok"; content:"a"; sid:1;)
alert http any any -> any any (msg:"app proto"; sid:2;)
alert tcp any any -> any any (msg:"buffer"; content:"x"; http_uri; sid:3;)
alert tcp any any -> any any (msg:"byte_test"; byte_test:4,>,1,0; sid:4;)
alert tcp any any -> any any (msg:"pcre flag"; pcre:"/x/U"; sid:5;)
alert tcp any any -> any any (msg:"lookbehind"; pcre:"/(?<=a)b/"; sid:6;)
alert tcp any any -> any any (msg:"flow opt"; flow:stream_only; sid:7;)
alert tcp any any -> any any (msg:"class"; classtype:no-such-class; sid:8;)
alert tcp $NOPE any -> any any (msg:"var"; sid:9;)
alert tcp any any -> any any (msg:"sticky"; http.uri; content:"x"; sid:10;)
alert tcp any any -> any any (msg:"depth small"; content:"abcdef"; depth:2; sid:11;)
alert tcp any any -> any any (msg:"nocase alone"; nocase; sid:12;)
alert tcp any any -> any any (msg:"flowbits op"; flowbits:toggle,x; sid:13;)
alert tcp any any -> any any (msg:"threshold part"; threshold:type limit, track by_rule, count 1, seconds 1; sid:14;)
alert tcp any any -> any any (msg:"dup"; content:"b"; sid:1;)
reject udp any any -> any 53 (msg:"ok2"; content:"c"; dsize:<100; sid:15; rev:3; metadata:created_at 2024; reference:url,example.com; priority:2; gid:1;)
alert tcp any any -> any any (msg:"no sid"; content:"x";)
"#;
    let (loaded, refused) = load(text);
    assert_eq!(loaded, 2);
    let expect: &[(u32, &str)] = &[
        (2, "protocol"),
        (3, "http_uri"),
        (4, "byte_test"),
        (5, "pcre"),
        (6, "pcre"),
        (7, "flow"),
        (8, "classtype"),
        (9, "source"),
        (10, "http.uri"),
        (11, "depth"),
        (12, "nocase"),
        (13, "flowbits"),
        (14, "threshold"),
        (1, "sid"),
        (0, "sid"),
    ];
    let got: Vec<(u32, &str)> = refused.iter().map(|(s, k)| (*s, k.as_str())).collect();
    assert_eq!(got, expect);
}

#[test]
fn continuation_lines_and_custom_variables() {
    let mut vars = Vars::default();
    vars.set("MAIL", "[192.0.2.25,192.0.2.26]");
    let mut set = RuleSet::default();
    let r = set.load(
        "alert tcp any any -> $MAIL 25 \\\n (msg:\"gtube\"; content:\"XJS*C4JDBQADN1\"; sid:500;)",
        &vars,
        &Classifications::default(),
    );
    assert_eq!((r.loaded, r.refused.len()), (1, 0));
}

/// xorshift: deterministic "random" input without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    r#"alert tcp $HOME_NET any -> $EXTERNAL_NET [80,443,8000:8100] (msg:"x"; flow:established,to_server; content:"GET"; depth:3; content:"|2f 2e 2e|"; distance:0; within:50; pcre:"/a+b*c/Ri"; flowbits:set,x; threshold:type both, track by_src, count 3, seconds 60; sid:1; rev:1; classtype:web-application-attack;)"#,
    r#"drop udp ![10.0.0.0/8,!10.1.0.0/16] !53 <> any any (msg:"y"; content:!"abc"; nocase; dsize:10<>20; ttl:>3; sid:2;)"#,
    r#"alert icmp any any -> any any (msg:"z"; itype:8; icode:0; flags:S+,12; detection_filter:track by_dst, count 5, seconds 10; sid:3;)"#,
];

const TOKENS: &[&str] = &[
    "(",
    ")",
    ";",
    ":",
    "\"",
    "|",
    "!",
    "[",
    "]",
    ",",
    "$",
    "\\",
    "/",
    "->",
    "<>",
    "any",
    "content",
    "pcre",
    "sid",
    "depth",
    "within",
    "distance",
    "flowbits",
    "threshold",
    "|zz|",
    "$HOME_NET",
    "((((((((",
    "[[[[[[[[[[",
    "\"/(a*)*b{1000}{1000}/\"",
    "65536",
    "-1",
    "4294967296",
    "é",
    "\u{0}",
    "fast_pattern",
    "nocase",
    "dsize:<>",
    "flags:",
    "itype:>",
];

#[test]
fn hostile_rule_text_never_panics_and_stays_bounded() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut lines = Vec::new();
    for i in 0..4000 {
        let mut s: Vec<u8> = SEEDS[i % SEEDS.len()].as_bytes().to_vec();
        match i % 3 {
            // Byte mutations of valid rules.
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(s.len());
                    s[at] = rng.next() as u8;
                }
            }
            // Token splices.
            1 => {
                for _ in 0..1 + rng.below(6) {
                    let at = rng.below(s.len());
                    let t = TOKENS[rng.below(TOKENS.len())];
                    s.splice(at..at, t.bytes());
                }
            }
            // Plain garbage.
            _ => {
                s = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
            }
        }
        lines.push(String::from_utf8_lossy(&s).replace('\n', " "));
    }
    // And a few built to be expensive.
    lines.push(
        "alert tcp any any -> any any (msg:\"big\"; pcre:\"/((a|b|c|d){200}){200}/\"; sid:9;)"
            .into(),
    );
    lines.push(
        "alert tcp any any -> any any (msg:\"rep\"; pcre:\"/a{1000}{1000}{1000}/\"; sid:10;)"
            .into(),
    );
    lines.push(format!(
        "alert tcp {} any -> any any (sid:11;)",
        "[".repeat(10_000)
    ));
    let mut vars = Vars::default();
    vars.set("A", "[$B,$B,$B,$B]");
    vars.set("B", "[$C,$C,$C,$C]");
    vars.set("C", "[$D,$D,$D,$D]");
    vars.set("D", "[$E,$E,$E,$E]");
    vars.set("E", "[$A,$A,$A,$A]");
    lines.push("alert tcp $A any -> any any (sid:12;)".into());
    lines.push(format!(
        "alert tcp any any -> any any ({} sid:13;)",
        "content:\"x\"; ".repeat(5000)
    ));

    let started = Instant::now();
    let mut set = RuleSet::default();
    let report = set.load(&lines.join("\n"), &vars, &Classifications::default());
    let took = started.elapsed();
    assert_eq!(
        report.loaded + report.refused.len(),
        lines.len() - count_skipped(&lines)
    );
    for sid in [9, 10, 11, 12, 13] {
        assert!(
            report.refused.iter().any(|e| e.sid == sid),
            "hostile rule sid {sid} should be refused"
        );
    }
    assert!(took < Duration::from_secs(20), "loading took {took:?}");
    // And the survivors run on packets without panicking.
    let _engine = hostel_ids::Engine::new(set, hostel_ids::Config::default());
}

fn count_skipped(lines: &[String]) -> usize {
    // Lines the loader treats as blank, comments or continuations.
    let mut n = 0;
    let mut cont = false;
    for l in lines {
        let t = l.trim();
        if cont {
            n += 1;
        }
        cont = t.ends_with('\\');
        if !cont && (t.is_empty() || t.starts_with('#')) {
            n += 1;
        }
    }
    n
}
