//! `hostel vm exec`: a command in the guest through its agent, output to stdout/stderr as
//! it arrives from the daemon, and the command's exit status as the CLI's.

use super::invalid;
use anyhow::{Context, Result};
use base64::Engine as _;
use clap::Args;
use hostel_api::{ExecEvent, ExecVm, VmClient, MAX_EXEC_ARGV_BYTES};
use std::io::{BufRead, BufReader, Read, Write};

/// The most stdin `exec` passes (it travels in the request body, whose limit is 64 KiB).
const MAX_STDIN: usize = 46 * 1024;
/// The longest NDJSON line accepted from the daemon (a 1 MiB chunk in base64 and framing).
const MAX_LINE: u64 = 2 << 20;

#[derive(Args, Debug)]
pub struct ExecArgs {
    name: String,
    /// An environment variable for the command; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The directory to run in.
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Seconds until the command is killed (the daemon's default is 300).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Pass this command's standard input to the command (at most 46 KiB); without it the
    /// command's stdin is empty.
    #[arg(long, short = 'i')]
    stdin: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Runs the command; returns its exit status (128+signal when killed, 255 when the agent
/// failed after it started).
pub fn main(vms: &VmClient<'_>, a: ExecArgs) -> Result<i32> {
    if a.command.iter().map(|c| c.len() + 1).sum::<usize>() > MAX_EXEC_ARGV_BYTES {
        return Err(invalid(
            Some("command"),
            format!("command line over {MAX_EXEC_ARGV_BYTES} bytes"),
        ));
    }
    let stdin_b64 = if a.stdin {
        let mut buf = Vec::new();
        std::io::stdin()
            .lock()
            .take(MAX_STDIN as u64 + 1)
            .read_to_end(&mut buf)?;
        if buf.len() > MAX_STDIN {
            return Err(invalid(
                Some("stdin_b64"),
                format!("standard input over {MAX_STDIN} bytes"),
            ));
        }
        Some(base64::engine::general_purpose::STANDARD.encode(buf))
    } else {
        None
    };
    let body = ExecVm {
        command: a.command,
        env: a.env,
        cwd: a.cwd,
        stdin_b64,
        timeout_secs: a.timeout,
    };
    let mut r = BufReader::new(vms.exec(&a.name, &body)?);
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut r).take(MAX_LINE).read_until(b'\n', &mut line)?;
        if n == 0 {
            anyhow::bail!("the daemon ended the exec stream without the command's exit status");
        }
        let ev: ExecEvent =
            serde_json::from_slice(&line).context("a malformed line in the exec stream")?;
        let b64 = base64::engine::general_purpose::STANDARD;
        match ev {
            ExecEvent::Stdout(d) => {
                out.write_all(&b64.decode(d)?)?;
                out.flush()?;
            }
            ExecEvent::Stderr(d) => {
                err.write_all(&b64.decode(d)?)?;
                err.flush()?;
            }
            ExecEvent::Exit { code, signal } => {
                return Ok(match (code, signal) {
                    (Some(c), _) => c,
                    (None, Some(s)) => 128 + s,
                    (None, None) => 255,
                })
            }
            ExecEvent::Error(m) => {
                writeln!(err, "hostel: error: {m}")?;
                return Ok(255);
            }
        }
    }
}
