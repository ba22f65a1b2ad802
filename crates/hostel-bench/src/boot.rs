//! One measured boot: spawn, watch the console on the child's stdout, sample memory at the
//! guest's marker, wait for the process to end.

use crate::contender::{Contender, GUEST_SCRIPT};
use crate::memory::{self, MemSample};
use base64::Engine as _;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// A boot that takes longer than this is stuck, not slow (the slowest seen here is ~15 s).
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// How long QEMU may take to write its pid file after the guest is already talking.
const PIDFILE_WAIT: Duration = Duration::from_secs(2);

/// What one boot measured; times are seconds from spawn.
#[derive(Debug, Clone, Default)]
pub struct BootSample {
    /// Spawn to the `HOSTEL-READY` line.
    pub ready_s: f64,
    /// Spawn to process exit, minus the guest's sampling pause: what a `hostel.run` command
    /// that does nothing would take end to end.
    pub exit_s: f64,
    /// `HOSTEL-EXIT` line to process exit: power-off and VMM teardown.
    pub poweroff_s: f64,
    /// The guest's uptime when its command started: kernel plus init, on the guest's clock.
    pub guest_uptime_s: f64,
    /// Host time before the guest's clock started: VMM start-up, firmware, kernel loading
    /// and decompression.
    pub pre_kernel_s: f64,
    /// The QEMU process while the guest sat idle.
    pub qemu: MemSample,
    /// The spawned process itself when it is not QEMU (`hostel run`), in KiB.
    pub wrapper_rss_kib: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("spawning {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("no {what} within {secs} s; last output:\n{tail}")]
    Timeout {
        what: &'static str,
        secs: u64,
        tail: String,
    },
    #[error("the process ended before {what} (status {status}); last output:\n{tail}")]
    Ended {
        what: &'static str,
        status: String,
        tail: String,
    },
    #[error("QEMU's pid file {0} did not appear")]
    NoPidfile(String),
    #[error("sampling memory: {0}")]
    Memory(#[from] memory::MemError),
    #[error("guest reported a bad uptime line: {0:?}")]
    BadUptime(String),
}

/// What the reader and waiter threads report, each stamped when it happened.
enum Event {
    Line(Instant, String),
    Exited(Instant, std::process::ExitStatus),
}

/// Boots `who` once with the benchmark's guest script and measures it.
pub fn run_once(who: &Contender, guest_dir: &Path) -> Result<BootSample, BootError> {
    let script = base64::engine::general_purpose::STANDARD.encode(GUEST_SCRIPT);
    let run_dir = tempfile::Builder::new()
        .prefix("hostel-bench-")
        .tempdir()
        .map_err(|source| BootError::Spawn {
            cmd: "tempdir".into(),
            source,
        })?;
    let mut cmd = who.command(guest_dir, &script, run_dir.path());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| BootError::Spawn {
        cmd: format!("{cmd:?}"),
        source,
    })?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    spawn_reader(child.stdout.take(), tx.clone());
    let stderr = child.stderr.take();
    let stderr_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    spawn_waiter(child, tx);

    let mut watch = Watch {
        rx,
        start,
        tail: Vec::new(),
        exited: None,
    };
    let result = measure(who, pid, run_dir.path(), &mut watch);
    if result.is_err() {
        kill_all(pid, who, run_dir.path());
        // Reap, so the next boot does not share the host with this one.
        watch.reap(Duration::from_secs(10));
        let err = stderr_thread.join().unwrap_or_default();
        return result.map_err(|e| with_stderr(e, &err));
    }
    result
}

fn measure(
    who: &Contender,
    pid: i32,
    run_dir: &Path,
    w: &mut Watch,
) -> Result<BootSample, BootError> {
    let mut s = BootSample::default();
    let ready = w.until(|l| l.contains("HOSTEL-READY"), "HOSTEL-READY", BOOT_TIMEOUT)?;
    s.ready_s = w.secs(ready);

    let (at, line) = w.until_line(|l| l.contains("HOSTEL-BENCH-UPTIME "), "uptime line")?;
    s.guest_uptime_s = parse_uptime(&line)?;
    s.pre_kernel_s = w.secs(at) - s.guest_uptime_s;

    let sample_at = w.until(
        |l| l.contains("HOSTEL-BENCH-SAMPLE"),
        "sample marker",
        BOOT_TIMEOUT,
    )?;
    let qemu_pid = if who.spawns_qemu_directly() {
        pid
    } else {
        s.wrapper_rss_kib = Some(memory::rss_kib(pid)?);
        wait_pidfile(&run_dir.join("qemu.pid"))?
    };
    s.qemu = memory::sample(qemu_pid, &who.guest_ram())?;

    let resume_at = w.until(
        |l| l.contains("HOSTEL-BENCH-RESUME"),
        "resume marker",
        BOOT_TIMEOUT,
    )?;
    let pause = resume_at.duration_since(sample_at).as_secs_f64();
    let exit_line = w.until(|l| l.contains("HOSTEL-EXIT"), "HOSTEL-EXIT", BOOT_TIMEOUT)?;
    let exited = w.until_exit(BOOT_TIMEOUT)?;
    s.poweroff_s = exited.duration_since(exit_line).as_secs_f64();
    s.exit_s = w.secs(exited) - pause;
    Ok(s)
}

/// The child's console, as a stream of stamped events, plus the last lines for errors.
struct Watch {
    rx: Receiver<Event>,
    start: Instant,
    tail: Vec<String>,
    exited: Option<(Instant, std::process::ExitStatus)>,
}

impl Watch {
    fn secs(&self, at: Instant) -> f64 {
        at.duration_since(self.start).as_secs_f64()
    }

    fn until(
        &mut self,
        want: impl Fn(&str) -> bool,
        what: &'static str,
        limit: Duration,
    ) -> Result<Instant, BootError> {
        self.until_full(want, what, limit).map(|(at, _)| at)
    }

    fn until_line(
        &mut self,
        want: impl Fn(&str) -> bool,
        what: &'static str,
    ) -> Result<(Instant, String), BootError> {
        self.until_full(want, what, BOOT_TIMEOUT)
    }

    fn until_full(
        &mut self,
        want: impl Fn(&str) -> bool,
        what: &'static str,
        limit: Duration,
    ) -> Result<(Instant, String), BootError> {
        let deadline = self.start + limit;
        loop {
            if let Some((_, status)) = self.exited {
                return Err(BootError::Ended {
                    what,
                    status: status.to_string(),
                    tail: self.tail.join("\n"),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Event::Line(at, line)) => {
                    if want(&line) {
                        return Ok((at, line));
                    }
                    self.remember(line);
                }
                Ok(Event::Exited(at, status)) => self.exited = Some((at, status)),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return Err(BootError::Timeout {
                        what,
                        secs: limit.as_secs(),
                        tail: self.tail.join("\n"),
                    })
                }
            }
        }
    }

    fn until_exit(&mut self, limit: Duration) -> Result<Instant, BootError> {
        let deadline = self.start + limit;
        while self.exited.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Event::Line(_, line)) => self.remember(line),
                Ok(Event::Exited(at, status)) => self.exited = Some((at, status)),
                Err(_) => {
                    return Err(BootError::Timeout {
                        what: "process exit",
                        secs: limit.as_secs(),
                        tail: self.tail.join("\n"),
                    })
                }
            }
        }
        Ok(self.exited.map(|(at, _)| at).unwrap_or_else(Instant::now))
    }

    /// Waits (bounded, from now) for a killed process to be reaped.
    fn reap(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.exited.is_none() {
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Event::Exited(at, status)) => self.exited = Some((at, status)),
                Ok(Event::Line(..)) => {}
                Err(_) => return,
            }
        }
    }

    fn remember(&mut self, line: String) {
        const KEEP: usize = 15;
        if self.tail.len() == KEEP {
            self.tail.remove(0);
        }
        self.tail.push(line);
    }
}

fn spawn_reader(stdout: Option<std::process::ChildStdout>, tx: Sender<Event>) {
    let Some(out) = stdout else { return };
    std::thread::spawn(move || {
        // Console output is bytes, not necessarily UTF-8; split on '\n' and drop the '\r'.
        let mut r = BufReader::new(out);
        let mut buf = Vec::new();
        while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let at = Instant::now();
            let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
            buf.clear();
            if tx.send(Event::Line(at, line)).is_err() {
                break;
            }
        }
    });
}

fn spawn_waiter(mut child: Child, tx: Sender<Event>) {
    std::thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = tx.send(Event::Exited(Instant::now(), status));
        }
    });
}

fn parse_uptime(line: &str) -> Result<f64, BootError> {
    line.split_whitespace()
        .skip_while(|w| *w != "HOSTEL-BENCH-UPTIME")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| BootError::BadUptime(line.to_owned()))
}

fn wait_pidfile(path: &Path) -> Result<i32, BootError> {
    let deadline = Instant::now() + PIDFILE_WAIT;
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            return Err(BootError::NoPidfile(path.display().to_string()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops a failed boot: the spawned process and, for hostel, the QEMU it started (which
/// would die with hostel anyway, but not before the next boot began).
fn kill_all(pid: i32, who: &Contender, run_dir: &Path) {
    if !who.spawns_qemu_directly() {
        if let Ok(qemu) = wait_pidfile(&run_dir.join("qemu.pid")) {
            // SAFETY: kill(2) with a pid we read from our own VM's pid file.
            unsafe { libc::kill(qemu, libc::SIGKILL) };
        }
    }
    // SAFETY: kill(2) on our own child, not yet reaped (the waiter thread reaps it).
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn with_stderr(e: BootError, stderr: &str) -> BootError {
    let stderr = stderr.trim();
    match e {
        BootError::Ended { what, status, tail } if !stderr.is_empty() => BootError::Ended {
            what,
            status,
            tail: format!("{tail}\n[stderr]\n{stderr}"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_uptime;

    #[test]
    fn uptime_line_is_parsed_even_after_kernel_noise() {
        assert_eq!(parse_uptime("HOSTEL-BENCH-UPTIME 1.23").unwrap(), 1.23);
        assert_eq!(
            parse_uptime("[ 1.0] x HOSTEL-BENCH-UPTIME 0.50").unwrap(),
            0.5
        );
        assert!(parse_uptime("HOSTEL-BENCH-UPTIME").is_err());
    }
}
