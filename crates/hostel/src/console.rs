//! Relaying a VM's serial console to this terminal, and reading the guest's `HOSTEL-EXIT`
//! report off it on the way past.

use nix::sys::termios::{self, SetArg, Termios};
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Notify;

/// Ctrl-]: the escape key telnet and virsh use; a guest almost never needs it.
pub const ESCAPE: u8 = 0x1d;

pub struct Relay {
    output: tokio::task::JoinHandle<()>,
    escape: Arc<Notify>,
    exit_status: Arc<AtomicI32>,
    _raw: Option<RawTerminal>,
    _idle_writer: Option<tokio::net::unix::OwnedWriteHalf>,
}

const NO_STATUS: i32 = i32::MIN;

impl Relay {
    /// Starts copying console output to stdout, and (when stdin is a terminal) keystrokes to
    /// the console.
    pub fn start(stream: UnixStream) -> Self {
        let (mut rd, mut wr) = stream.into_split();
        let escape = Arc::new(Notify::new());
        let exit_status = Arc::new(AtomicI32::new(NO_STATUS));
        let status = exit_status.clone();
        let output = tokio::spawn(async move {
            let mut out = tokio::io::stdout();
            let mut scan = ExitScanner::default();
            let mut buf = [0u8; 4096];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Some(code) = scan.feed(&buf[..n]) {
                    status.store(code, Ordering::SeqCst);
                }
                if out.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                let _ = out.flush().await;
            }
        });
        // Dropping the write half would shut the socket's sending side, which QEMU takes as
        // the client leaving; hold it for the session even when nothing is typed.
        let mut idle_writer = None;
        let raw = if std::io::stdin().is_terminal() {
            let esc = escape.clone();
            tokio::spawn(async move {
                let mut stdin = tokio::io::stdin();
                let mut buf = [0u8; 256];
                while let Ok(n) = stdin.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if let Some(pos) = buf[..n].iter().position(|&b| b == ESCAPE) {
                        let _ = wr.write_all(&buf[..pos]).await;
                        esc.notify_one();
                        break;
                    }
                    if wr.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            RawTerminal::enter().ok()
        } else {
            idle_writer = Some(wr);
            None
        };
        Relay {
            output,
            escape,
            exit_status,
            _raw: raw,
            _idle_writer: idle_writer,
        }
    }

    pub async fn escape_pressed(&self) {
        self.escape.notified().await
    }

    /// Waits (bounded) for the rest of the output, then returns the guest's reported status.
    pub async fn finish(self) -> Option<i32> {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.output).await;
        match self.exit_status.load(Ordering::SeqCst) {
            NO_STATUS => None,
            n => Some(n),
        }
    }
}

/// Finds `HOSTEL-EXIT <n>` at the start of a console line, across read boundaries.
#[derive(Default)]
struct ExitScanner {
    line: Vec<u8>,
}

impl ExitScanner {
    const MARK: &'static [u8] = b"HOSTEL-EXIT ";

    fn feed(&mut self, bytes: &[u8]) -> Option<i32> {
        let mut found = None;
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if let Some(rest) = self.line.strip_prefix(Self::MARK) {
                    found = std::str::from_utf8(rest)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                }
                self.line.clear();
            } else if self.line.len() < 64 {
                // Only short lines can be the marker; the cap keeps a chatty guest harmless.
                self.line.push(b);
            }
        }
        found.or(None)
    }
}

/// Puts the terminal in raw mode for the session and restores it on drop.
pub(crate) struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    pub(crate) fn enter() -> nix::Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(Self { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::ExitScanner;

    #[test]
    fn scanner_finds_marker_split_across_reads() {
        let mut s = ExitScanner::default();
        assert_eq!(s.feed(b"boot...\r\nHOSTEL-EX"), None);
        assert_eq!(s.feed(b"IT 3\r\n"), Some(3));
        assert_eq!(s.feed(b"echo HOSTEL-EXIT 4\n"), None);
    }
}
