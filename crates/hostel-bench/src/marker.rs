//! Watching a guest's output for a marker (`HOSTEL-READY`, the getty's `login:`) and telling
//! when it arrived: on a stream read to its end, or in a console log file QEMU is still
//! writing. Every benchmark that times a guest by its console does it the same way, so their
//! times are observed alike.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a byte stream is in its search for a marker that may straddle two reads.
#[derive(Debug, Default)]
pub struct MarkerScan {
    tail: Vec<u8>,
}

impl MarkerScan {
    /// Feeds the next chunk; true once the marker has been seen.
    pub fn feed(&mut self, chunk: &[u8], marker: &[u8]) -> bool {
        self.tail.extend_from_slice(chunk);
        if self.tail.windows(marker.len()).any(|w| w == marker) {
            return true;
        }
        let keep = marker.len().saturating_sub(1).min(self.tail.len());
        self.tail.drain(..self.tail.len() - keep);
        false
    }
}

/// Reads `r` on a thread and reports the instant `marker` arrived, then keeps draining so a
/// writer (a child's stdout) never blocks on a full pipe.
pub fn watch_reader(mut r: impl Read + Send + 'static, marker: &'static [u8]) -> Receiver<Instant> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut scan = MarkerScan::default();
        let mut seen = false;
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            if !seen && scan.feed(&buf[..n], marker) {
                seen = true;
                let _ = tx.send(Instant::now());
            }
        }
    });
    rx
}

/// Polls a console log file (which may not exist yet) for `marker` every `every`, until it
/// is found or `stop` is set; reports the instant it appeared.
pub fn watch_file(
    path: PathBuf,
    marker: &'static [u8],
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Receiver<Instant> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut scan = MarkerScan::default();
        let mut file = None;
        let mut buf = [0u8; 8192];
        while !stop.load(Ordering::Relaxed) {
            if file.is_none() {
                file = std::fs::File::open(&path).ok();
            }
            if let Some(f) = file.as_mut() {
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if scan.feed(&buf[..n], marker) {
                        let _ = tx.send(Instant::now());
                        return;
                    }
                }
            }
            std::thread::sleep(every);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    const READY: &[u8] = b"HOSTEL-READY";

    #[test]
    fn marker_found_across_chunk_boundaries() {
        let mut s = MarkerScan::default();
        assert!(!s.feed(b"boot noise HOSTEL-RE", READY));
        assert!(s.feed(b"ADY\r\n", READY));
        let mut s = MarkerScan::default();
        assert!(!s.feed(b"HOSTEL-", READY));
        assert!(!s.feed(b"", READY));
        assert!(!s.feed(b"EXIT 0", READY));
    }

    #[test]
    fn file_watched_before_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let stop = Arc::new(AtomicBool::new(false));
        let rx = watch_file(
            path.clone(),
            b"login:",
            Duration::from_millis(5),
            stop.clone(),
        );
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "Debian GNU/Linux 12 hostel ttyS0\n\nhostel log").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        // The rest of the prompt in a later write, as a guest's console output comes.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"in: ").unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        stop.store(true, Ordering::Relaxed);
    }
}
