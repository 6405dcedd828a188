//! The wait before the next attempt to reach a hub: exponential from
//! `tunnel.reconnect_initial_ms` to `tunnel.reconnect_max_secs`, each wait
//! scaled by a random factor so spokes that lost the same hub do not all
//! come back at the same instant.

use std::time::Duration;

/// The wait before the next attempt: doubles from `initial`, capped at `max`.
pub fn next_backoff(previous: Option<Duration>, initial: Duration, max: Duration) -> Duration {
    match previous {
        None => initial,
        Some(p) => (p * 2).min(max),
    }
}

/// `d` scaled into [50 %, 100 %] by `unit` in [0, 1): spreads reconnecting
/// spokes so a restarted hub is not hit by all of them at once.
pub fn jitter(d: Duration, unit: f64) -> Duration {
    d.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// A uniformly random number in [0, 1).
pub fn random_unit() -> f64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// The waits of one tunnel's attempts.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    last: Option<Duration>,
}

impl Backoff {
    /// Waits from `initial` up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            last: None,
        }
    }

    /// The wait before the next attempt, jittered.
    pub fn next_wait(&mut self) -> Duration {
        let next = next_backoff(self.last, self.initial, self.max);
        self.last = Some(next);
        jitter(next, random_unit())
    }

    /// An attempt succeeded: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_jitter_stays_in_range() {
        let (i, m) = (Duration::from_millis(500), Duration::from_secs(30));
        let mut b = None;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let next = next_backoff(b, i, m);
            seen.push(next.as_millis());
            b = Some(next);
        }
        assert_eq!(
            seen,
            vec![
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
        assert_eq!(jitter(Duration::from_secs(10), 0.0), Duration::from_secs(5));
        assert_eq!(
            jitter(Duration::from_secs(10), 1.0),
            Duration::from_secs(10)
        );
        for _ in 0..100 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn a_success_starts_the_waits_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<_> = (0..6).map(|_| b.next_wait()).collect();
        assert!(waits[0] <= Duration::from_millis(100));
        assert!(waits[5] >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }
}
