//! Running the host's helper programs with bounded output and typed failures.

use crate::VpsError;
use std::process::{Command, Stdio};

/// How much of a failing program's stderr goes into the error: enough to read the reason.
const MAX_DETAIL: usize = 2048;

/// Runs `program args…` to its end; its stdout on success, its stderr in the error.
pub fn run(program: &'static str, args: &[&str]) -> Result<String, VpsError> {
    let action = args.join(" ");
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VpsError::Command {
            program,
            action: action.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        truncate(&mut detail);
        if detail.is_empty() {
            detail = out.status.to_string();
        }
        return Err(VpsError::Command {
            program,
            action,
            detail,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn truncate(s: &mut String) {
    if s.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
