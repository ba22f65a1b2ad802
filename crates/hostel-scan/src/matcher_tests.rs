//! The matcher's syntax, target types and work bound on small buffers.

use super::*;
use crate::sigs::body::parse_ndb_line;

fn set(lines: &[&str]) -> BodySet {
    let sigs = lines.iter().map(|l| parse_ndb_line(l).unwrap()).collect();
    let (s, refused) = BodySet::compile(sigs);
    assert!(refused.is_empty(), "{refused:?}");
    s
}

fn hits(s: &BodySet, data: &[u8]) -> Vec<(String, u64)> {
    let w = Window {
        base: 0,
        file_len: Some(data.len() as u64),
        kind: FileKind::sniff(data),
        end_after: 0,
        start_before: usize::MAX,
    };
    let mut found = vec![false; s.len()];
    let mut out = Vec::new();
    let mut budget = BUDGET_FIXED;
    assert!(s.scan(data, &w, &mut found, &mut budget, |i, at| out
        .push((s.name(i).to_string(), at))));
    out.sort();
    out
}

#[test]
fn wildcards_jumps_alternatives_offsets() {
    let s = set(&[
        "Nib:0:*:787841?2??44",
        "Jump:0:*:4142{2-3}4546",
        "Star:0:*:7878*7979",
        "Alt:0:*:(5a|5b5b)6162",
        "Not:0:*:6364!(65|66)67",
        "At2:0:2:4142",
        "Eof:0:EOF-2:7979",
        "Late:0:EOF-2,0:4142",
    ]);
    let data = b"xxABxDxyABzzEFxxxxxx[Zab][[ab]cdhgxxyy";
    let got = hits(&s, data);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Alt", "At2", "Eof", "Jump", "Nib", "Not", "Star"]);
    assert!(got.contains(&("Jump".into(), 8)));
    // Not: `cde` has an excluded byte, `cdhg`... `!(65|66)` wants one byte then `g`.
    assert!(hits(&s, b"cdeg").is_empty());
}

#[test]
fn target_types_gate_on_the_file_kind() {
    let s = set(&[
        "Pe:1:*:4b45524e454c",
        "Elf:6:*:4b45524e454c",
        "Any:0:*:4b45524e454c",
    ]);
    let mut pe = b"MZ".to_vec();
    pe.resize(0x40, 0);
    pe[0x3c] = 0x40;
    pe.extend_from_slice(b"PE\0\0 KERNEL");
    let names = |d: &[u8]| hits(&s, d).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(&pe), ["Any", "Pe"]);
    assert_eq!(names(b"\x7fELF KERNEL"), ["Any", "Elf"]);
    // MZ without a PE header is not PE.
    assert_eq!(names(b"MZ KERNEL"), ["Any"]);
}

#[test]
fn hostile_input_is_bounded() {
    let s = set(&["Slow:0:*:6162*6364{5-9}7a7a"]);
    let data = b"ab".repeat(1 << 20);
    let w = Window {
        base: 0,
        file_len: None,
        kind: FileKind::Unknown,
        end_after: 0,
        start_before: usize::MAX,
    };
    let mut budget = BUDGET_FIXED;
    let mut found = vec![false];
    let complete = s.scan(&data, &w, &mut found, &mut budget, |_, _| {});
    assert!(!complete, "a quadratic search must hit the budget");
    assert_eq!(budget, 0);
}
