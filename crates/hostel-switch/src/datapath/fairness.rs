//! Fair use of a receiver's RX ring by several senders.
//!
//! Every port has its own worker thread and pays for copying its frames into receivers'
//! rings, so CPU is shared by the scheduler; what senders compete for is the receiver's
//! posted RX buffers. A sender polling its TX ring as fast as it can would take every buffer
//! a slow receiver posts, and another sender's frames would find none. So while a receiver
//! is contended (a second sender used it within [`CONTENTION_WINDOW_NS`]) and offers less
//! than half its ring, one sender's batch may take at most half of what it offers
//! ([`crate::datapath::exec::RxSink::fair_share`]); the rest is dropped as `rx_fair_share`.
//! A heavy sender then always leaves buffers, and in steady state still gets all the
//! receiver re-posts beyond that. A lone sender is never rationed: there is nobody to be
//! fair to, and dropping frames the receiver has room for would only cost it (TCP) loss.

use std::sync::atomic::{AtomicU64, Ordering};

/// How long a receiver counts as contended after a second sender used it: long enough to
/// cover a light sender's next frame (a ping, a keep-alive), short enough that a sender
/// left alone is soon unrationed.
pub const CONTENTION_WINDOW_NS: u64 = 1_000_000_000;

/// Which sender used a receiver last and until when it counts as contended. Senders only
/// read it unless the sender changes, so a lone sender does not write a shared line.
#[derive(Debug, Default)]
pub struct RxContention {
    last_sender: AtomicU64,
    contended_until: AtomicU64,
}

impl RxContention {
    /// Records that `sender` (a port key, never 0) delivers now and says whether the
    /// receiver is contended. The clock is read only while the receiver is or was contended,
    /// so a lone sender neither reads it nor writes the shared line. Relaxed: a stale view
    /// only shifts the window by a batch.
    pub fn note(&self, sender: u64, now: impl FnOnce() -> u64) -> bool {
        let last = self.last_sender.load(Ordering::Relaxed);
        if last != sender {
            self.last_sender.store(sender, Ordering::Relaxed);
            if last != 0 {
                let until = now().saturating_add(CONTENTION_WINDOW_NS).max(1);
                self.contended_until.store(until, Ordering::Relaxed);
                return true;
            }
        }
        let until = self.contended_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if now() < until {
            return true;
        }
        // Expired: back to the clock-free path until a second sender shows up again.
        self.contended_until.store(0, Ordering::Relaxed);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contention_needs_a_second_sender_and_expires() {
        let c = RxContention::default();
        let never = || -> u64 { panic!("a lone sender read the clock") };
        assert!(!c.note(1, never));
        assert!(!c.note(1, never));
        assert!(c.note(2, || 30), "a second sender is contention");
        assert!(c.note(1, || 40));
        assert!(c.note(1, || 30 + CONTENTION_WINDOW_NS - 1));
        assert!(!c.note(1, || 40 + CONTENTION_WINDOW_NS + 40));
        assert!(!c.note(1, never), "an expired window still reads the clock");
    }
}
