//! The host's TSC rate, handed to TCG guests as `tsc_early_khz=`.
//!
//! Under TCG the guest reads the host's TSC, but a stock kernel calibrates it against the
//! emulated PIT, and on a busy host that calibration fails ("Unable to calibrate against
//! PIT") — microvm has no HPET or PM timer to fall back on, so the boot hangs. Measured
//! here: 2 of 6 boots hung under load without it, 0 of 5 with it. Telling the guest the rate
//! skips the calibration; KVM guests use kvm-clock and need none of this.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The host TSC frequency in kHz, measured once per process (about 5 ms).
pub fn host_tsc_khz() -> Option<u64> {
    static KHZ: OnceLock<Option<u64>> = OnceLock::new();
    *KHZ.get_or_init(measure)
}

#[cfg(target_arch = "x86_64")]
fn measure() -> Option<u64> {
    // Pairs of (TSC, monotonic clock) read back to back; their ratio over an interval is the
    // rate, whatever the scheduler does between the pairs.
    fn sample() -> (u64, Instant) {
        // SAFETY: RDTSC has no preconditions on x86_64.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        (tsc, Instant::now())
    }
    let (t0, i0) = sample();
    std::thread::sleep(Duration::from_millis(5));
    let (t1, i1) = sample();
    let nanos = i1.duration_since(i0).as_nanos() as u64;
    if nanos == 0 || t1 <= t0 {
        return None;
    }
    let khz = (t1 - t0).saturating_mul(1_000_000) / nanos;
    // Anything outside 100 MHz-10 GHz is a broken measurement, not a CPU.
    (100_000..10_000_000).contains(&khz).then_some(khz)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn measures_a_plausible_rate_once() {
        let a = super::host_tsc_khz();
        assert!(a.is_some_and(|k| k > 100_000));
        assert_eq!(a, super::host_tsc_khz());
    }
}
