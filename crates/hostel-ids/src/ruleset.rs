//! Loading a rules file: every line parsed on its own; refused rules are reported with their
//! sid and keyword and the rest load.

use crate::addr::Vars;
use crate::classify::Classifications;
use crate::error::RuleError;
use crate::rule::{parse_rule, FlowbitNames, Rule};

/// Rules per set; beyond it lines are refused (the set's memory stays bounded).
pub const MAX_RULES: usize = 100_000;

#[derive(Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub bits: FlowbitNames,
}

/// What a load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: usize,
    pub refused: Vec<RuleError>,
}

impl RuleSet {
    /// Adds the rules of `text` (one per line, `\` continues a line, `#` comments).
    pub fn load(&mut self, text: &str, vars: &Vars, classes: &Classifications) -> LoadReport {
        let mut report = LoadReport::default();
        let mut pending = String::new();
        for raw in text.lines() {
            let line = raw.trim();
            if let Some(head) = line.strip_suffix('\\') {
                if pending.len() < crate::rule::MAX_RULE_LEN {
                    pending.push_str(head);
                }
                continue;
            }
            pending.push_str(line);
            let full = std::mem::take(&mut pending);
            let full = full.trim();
            if full.is_empty() || full.starts_with('#') {
                continue;
            }
            if self.rules.len() >= MAX_RULES {
                report
                    .refused
                    .push(RuleError::new("rules", "more rules than the set may hold"));
                continue;
            }
            match parse_rule(full, vars, classes, &mut self.bits) {
                Ok(r) => {
                    if self.rules.iter().any(|o| o.sid == r.sid && o.gid == r.gid) {
                        report.refused.push(RuleError {
                            sid: r.sid,
                            keyword: "sid".into(),
                            reason: "duplicate sid".into(),
                        });
                    } else {
                        self.rules.push(r);
                        report.loaded += 1;
                    }
                }
                Err(e) => report.refused.push(e),
            }
        }
        report
    }
}
