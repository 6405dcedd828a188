//! How far a spoke's word about itself may move steering. A spoke reports
//! the RTTs of its own client connections; an enrolled spoke that lies
//! could claim to be nearest to every network. Its own samples therefore:
//!
//! - hold at most [`Limits::max_networks`] client networks at once, and
//!   add new ones at most [`Limits::new_networks_per_min`] a minute (a
//!   bucket that refills steadily), so one spoke can neither take over the
//!   map nor push the other spokes' measurements out of its bounded table;
//! - are outliers when, against an estimate of at least three samples,
//!   they are below a quarter or above four times it: refused, unless
//!   [`OUTLIER_RUN`] of them come in a row (a route really changed), which
//!   starts the estimate afresh.
//!
//! Client probes are the clients' own measurements, authenticated by their
//! keys and bounded where they are taken; they are not budgeted here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Outliers in a row that are taken as a real change.
pub const OUTLIER_RUN: u8 = 10;

/// Samples an estimate needs before outliers are judged against it.
pub const SETTLED_SAMPLES: u64 = 3;

/// The limits on one spoke's own samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Client networks one spoke's own samples may hold at once.
    pub max_networks: usize,
    /// New client networks one spoke's own samples may add per minute.
    pub new_networks_per_min: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_networks: 20_000,
            new_networks_per_min: 1_200,
        }
    }
}

/// Whether a sample is an outlier against a settled estimate of
/// `smoothed_ms`.
pub fn outlier(smoothed_ms: f64, rtt_ms: f64) -> bool {
    rtt_ms < smoothed_ms / 4.0 || rtt_ms > smoothed_ms * 4.0
}

#[derive(Debug, Clone, Copy)]
struct Spoke {
    /// Networks holding an estimate from this spoke's own samples.
    held: usize,
    /// New networks it may still add now.
    tokens: f64,
    refilled: Instant,
}

/// Each spoke's networks and its bucket of new ones.
#[derive(Debug, Default)]
pub struct Budgets {
    spokes: HashMap<Arc<str>, Spoke>,
}

impl Budgets {
    /// Whether `spoke` may add one more network at `now`; if so, it is
    /// counted.
    pub fn take_new(&mut self, spoke: &Arc<str>, now: Instant, limits: Limits) -> bool {
        let burst = f64::from(limits.new_networks_per_min);
        let entry = self.spokes.entry(spoke.clone()).or_insert(Spoke {
            held: 0,
            tokens: burst,
            refilled: now,
        });
        let minutes = now.saturating_duration_since(entry.refilled).as_secs_f64() / 60.0;
        entry.tokens = (entry.tokens + minutes * burst).min(burst);
        entry.refilled = now;
        if entry.held >= limits.max_networks || entry.tokens < 1.0 {
            return false;
        }
        entry.tokens -= 1.0;
        entry.held += 1;
        true
    }

    /// `spoke`'s estimate for a network is gone (expired, evicted, or
    /// the spoke forgotten).
    pub fn released(&mut self, spoke: &str) {
        if let Some(s) = self.spokes.get_mut(spoke) {
            s.held = s.held.saturating_sub(1);
        }
    }

    /// Forgets `spoke` altogether.
    pub fn forget(&mut self, spoke: &str) {
        self.spokes.remove(spoke);
    }

    /// Networks `spoke`'s own samples hold now.
    pub fn held(&self, spoke: &str) -> usize {
        self.spokes.get(spoke).map_or(0, |s| s.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn new_networks_come_at_the_bucket_rate_up_to_the_cap() {
        let limits = Limits {
            max_networks: 100,
            new_networks_per_min: 10,
        };
        let spoke: Arc<str> = Arc::from("fra1");
        let mut b = Budgets::default();
        let t0 = Instant::now();
        let taken = (0..50).filter(|_| b.take_new(&spoke, t0, limits)).count();
        assert_eq!(taken, 10, "the burst");
        // Six seconds bring one more.
        assert!(b.take_new(&spoke, t0 + Duration::from_secs(6), limits));
        assert!(!b.take_new(&spoke, t0 + Duration::from_secs(6), limits));
        // However long it waits, it holds at most the cap.
        let mut t = t0;
        for _ in 0..200 {
            t += Duration::from_secs(60);
            b.take_new(&spoke, t, limits);
        }
        assert_eq!(b.held("fra1"), 100);
        b.released("fra1");
        assert!(b.take_new(&spoke, t + Duration::from_secs(60), limits));
        assert_eq!(b.held("ams1"), 0, "another spoke has its own budget");
    }

    #[test]
    fn outliers_are_a_factor_of_four_away() {
        assert!(!outlier(20.0, 5.0));
        assert!(outlier(20.0, 4.9));
        assert!(!outlier(20.0, 80.0));
        assert!(outlier(20.0, 80.1));
    }
}
