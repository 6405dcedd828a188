//! `--bwlimit`: one budget of bytes per second shared by every transfer
//! of a client, up and down, whatever the number of files and streams.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How far ahead of the rate a transfer may run after a pause: a short
/// burst, so that a stream that waited does not then trickle.
const BURST: Duration = Duration::from_millis(100);

/// A byte budget: each caller reserves its bytes' share of time on one
/// schedule and waits until that share begins.
#[derive(Debug)]
pub struct Limiter {
    bytes_per_sec: u64,
    /// When the budget is next free.
    next: Mutex<Instant>,
}

impl Limiter {
    /// A budget of `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// The rate it allows.
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Waits until `n` bytes may move.
    pub async fn take(&self, n: usize) {
        let share = Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
        let start = {
            let mut next = self.next.lock().expect("limiter poisoned");
            let now = Instant::now();
            // Time not used lately is lost, but for a short burst.
            let start = (*next).max(now.checked_sub(BURST).unwrap_or(now));
            *next = start + share;
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_budget_spreads_its_bytes_over_time() {
        let l = Limiter::new(1_000_000);
        let began = Instant::now();
        for _ in 0..30 {
            l.take(10_000).await;
        }
        // 300 kB at 1 MB/s: the last share begins 0.29 s after the first,
        // less the burst allowed at the start. (A lower bound only: a busy
        // machine is slower, never faster.)
        let took = began.elapsed();
        assert!(took >= Duration::from_millis(185), "{took:?}");
    }
}
