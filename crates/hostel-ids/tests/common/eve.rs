//! Running both engines on a capture and reducing their EVE output to what the comparisons
//! look at, shared by `replay.rs` and `suricata_keywords.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a comparison looks at: (sid, src, sport, dst, dport) → count.
pub type Summary = BTreeMap<(u64, String, u64, String, u64), usize>;

/// The alerts of an EVE file, counted per (sid, addresses, ports); other event types are left out.
pub fn summarize(eve: &str) -> Summary {
    let mut out = Summary::new();
    for line in eve.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("EVE line is JSON");
        if v["event_type"] != "alert" {
            continue;
        }
        let key = (
            v["alert"]["signature_id"].as_u64().unwrap_or(0),
            v["src_ip"].as_str().unwrap_or("").to_string(),
            v["src_port"].as_u64().unwrap_or(0),
            v["dest_ip"].as_str().unwrap_or("").to_string(),
            v["dest_port"].as_u64().unwrap_or(0),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

/// `hostel-ids replay` on a capture: its EVE lines (stdout) and its report (stderr). A failed
/// run fails the test.
pub fn hostel_replay(rules: &Path, pcap: &Path, extra: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hostel-ids"))
        .arg("replay")
        .arg("--rules")
        .arg(rules)
        .arg("--pcap")
        .arg(pcap)
        .args(extra)
        .output()
        .expect("run hostel-ids");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "replay failed: {stderr}");
    (String::from_utf8(out.stdout).expect("utf-8 EVE"), stderr)
}

/// Suricata 7 in single-threaded offline mode on the same capture and rules: its `eve.json`, or
/// `None` (the caller reports itself skipped) when no `suricata` is installed.
pub fn suricata_eve(dir: &Path, rules: &Path, pcap: &Path, extra: &[&str]) -> Option<String> {
    let Some(suricata) = which("suricata") else {
        eprintln!(
            "skipped: no `suricata` binary (Suricata 7 is in bookworm-backports; \
             scripts/install-suricata.sh installs it)"
        );
        return None;
    };
    let logs = dir.join("suricata-logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let out = Command::new(suricata)
        .arg("-r")
        .arg(pcap)
        .arg("-S")
        .arg(rules)
        .args(["-k", "none", "--runmode", "single"])
        .args(extra)
        .arg("-l")
        .arg(&logs)
        .output()
        .expect("run suricata");
    assert!(
        out.status.success(),
        "suricata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(std::fs::read_to_string(logs.join("eve.json")).expect("eve.json"))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}
