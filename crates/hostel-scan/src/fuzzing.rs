//! The `scan_sigs` fuzz target's body (`fuzz/fuzz_targets/scan_sigs.rs`), also run on
//! mutated signatures by `tests/fuzz_smoke.rs` on stable: hostile signature text never
//! panics the parsers or the compiler, and whatever loads scans a few buffers (whole, and
//! streamed in two pieces) within its budget.

use crate::sigs::{SigSources, EICAR};
use crate::{Engine, StreamMatcher};

const SAMPLES: &[&[u8]] = &[
    EICAR,
    b"MZP\0\x02\0\0\0KERNEL32.DLL\0\0ExitProcess\0USER32.DLL\0CLAMessageBoxA",
    b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    b"",
];

/// First byte: the file type; the rest: its text.
pub fn scan_sigs(data: &[u8]) {
    let Some((&kind, text)) = data.split_first() else {
        return;
    };
    let ext = match kind % 4 {
        0 => "hdb",
        1 => "hsb",
        2 => "ndb",
        _ => "yar",
    };
    let text = String::from_utf8_lossy(text);
    let mut src = SigSources::builtin();
    src.add_text("fuzz", ext, &text);
    let engine = Engine::compile(src);
    for s in SAMPLES {
        let whole = engine.scan_bytes(s);
        let mut m = StreamMatcher::new(&engine, None, 4096);
        let mut out = Vec::new();
        let mid = s.len() / 2;
        m.feed(&s[..mid], &mut out);
        m.feed(&s[mid..], &mut out);
        // EICAR is built in: always found, whole or in halves.
        if *s == EICAR {
            assert!(whole
                .findings
                .iter()
                .any(|f| f.signature == crate::sigs::EICAR_NAME));
            assert!(out.iter().any(|f| f.signature == crate::sigs::EICAR_NAME));
        }
    }
}
