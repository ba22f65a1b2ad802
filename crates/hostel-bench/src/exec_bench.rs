//! `bench-exec`'s measurements on one Debian VM: `hostel vm exec NAME -- CMD` against
//! `ssh debian@VM CMD` (key authentication, a new connection each time), alternating which
//! goes first in each round. Round trip: `true`. Throughput: `head -c 200M /dev/zero`, its
//! output counted as it arrives.

use crate::images_bench::{ssh, HostelSide};
use crate::stats::Summary;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Bytes the throughput command writes (`head -c 200M`).
pub const THROUGHPUT_BYTES: u64 = 200 << 20;
pub const THROUGHPUT_CMD: &str = "head -c 200M /dev/zero";

/// The samples of one contender.
#[derive(Debug, Default, Clone)]
pub struct Side {
    /// Round trips of `true`, milliseconds.
    pub round_trip_ms: Vec<f64>,
    /// MB/s (10^6 bytes) of the throughput command's output.
    pub throughput_mbps: Vec<f64>,
    pub failures: usize,
}

impl Side {
    pub fn round_trip(&self) -> Option<Summary> {
        Summary::of(&self.round_trip_ms)
    }
    pub fn throughput(&self) -> Option<Summary> {
        Summary::of(&self.throughput_mbps)
    }
}

/// The two ways in, on VM `vm` of `side`.
pub struct Contenders<'a> {
    pub side: &'a HostelSide,
    pub vm: &'a str,
    pub key: &'a Path,
}

impl Contenders<'_> {
    /// `hostel vm exec VM -- argv`.
    pub fn exec_command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new(&self.side.hostel);
        c.args(["vm", "exec", self.vm, "--timeout", "600", "--"])
            .args(argv)
            .env("HOSTEL_URL", &self.side.url)
            .env("HOSTEL_TOKEN", &self.side.token)
            .stdin(Stdio::null());
        c
    }

    fn ssh_command(&self, cmd: &str) -> Command {
        ssh(&self.side.ns, self.key, cmd)
    }

    fn command(&self, exec: bool, cmd: &str) -> Command {
        if exec {
            let argv: Vec<&str> = cmd.split_whitespace().collect();
            self.exec_command(&argv)
        } else {
            self.ssh_command(cmd)
        }
    }

    /// One `true`: the wall time of the whole command, ms.
    pub fn round_trip(&self, exec: bool) -> Result<f64> {
        let t = Instant::now();
        let out = self
            .command(exec, "true")
            .output()
            .context("running the command")?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if !out.status.success() {
            bail!(
                "`true` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(ms)
    }

    /// One throughput run: every byte of stdout read and counted; MB/s over the whole
    /// command, from its start to its exit.
    pub fn throughput(&self, exec: bool) -> Result<f64> {
        let t = Instant::now();
        let mut child = self
            .command(exec, THROUGHPUT_CMD)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the command")?;
        let mut out = child.stdout.take().context("no stdout")?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let r = out.read(&mut buf)?;
            if r == 0 {
                break;
            }
            n += r as u64;
        }
        let status = child.wait()?;
        let secs = t.elapsed().as_secs_f64();
        if !status.success() || n != THROUGHPUT_BYTES {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            bail!("{THROUGHPUT_CMD}: {status}, {n} bytes: {err}");
        }
        Ok(n as f64 / 1e6 / secs)
    }
}

/// `rounds` round trips and `tp_rounds` throughput runs of each, alternating which side
/// goes first; failures are counted, not fatal.
pub fn run(c: &Contenders<'_>, rounds: usize, tp_rounds: usize) -> (Side, Side) {
    let (mut exec, mut ssh) = (Side::default(), Side::default());
    for round in 0..rounds {
        for is_exec in [round % 2 == 0, round % 2 != 0] {
            let s = if is_exec { &mut exec } else { &mut ssh };
            match c.round_trip(is_exec) {
                Ok(ms) => s.round_trip_ms.push(ms),
                Err(e) => {
                    eprintln!("round trip ({}): FAILED: {e:#}", name(is_exec));
                    s.failures += 1;
                }
            }
        }
    }
    for round in 0..tp_rounds {
        for is_exec in [round % 2 == 0, round % 2 != 0] {
            let s = if is_exec { &mut exec } else { &mut ssh };
            match c.throughput(is_exec) {
                Ok(v) => {
                    eprintln!(
                        "throughput round {} {}: {v:.1} MB/s",
                        round + 1,
                        name(is_exec)
                    );
                    s.throughput_mbps.push(v)
                }
                Err(e) => {
                    eprintln!("throughput ({}): FAILED: {e:#}", name(is_exec));
                    s.failures += 1;
                }
            }
        }
    }
    (exec, ssh)
}

fn name(exec: bool) -> &'static str {
    if exec {
        "hostel vm exec"
    } else {
        "ssh"
    }
}

/// Waits for the VM's agent to answer (exec of `true` succeeds), up to `deadline`.
pub fn wait_agent(c: &Contenders<'_>, deadline: Instant) -> Result<()> {
    loop {
        if c.round_trip(true).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the VM's guest agent did not answer in time");
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
