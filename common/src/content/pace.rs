//! Provider budgets: when a provider answers `429`/`SlowDown` for a
//! connection, every node starts that connection's transfers at a slower
//! pace for a while, instead of each node finding the limit on its own.
//!
//! The node that got the answer slows the connection down and tells the
//! hub (a spoke through its `slow_down` call, checked against its grant);
//! the hub slows it down too and tells every spoke. While a connection is
//! slowed, a node starts at most [`STARTS_PER_SECOND`] of its transfers a
//! second, in turn; transfers under way are not touched. Each answer
//! slows it for [`SLOW_FOR`] from then.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How long one `429` slows a connection down.
pub const SLOW_FOR: Duration = Duration::from_secs(30);

/// Transfers of a slowed connection a node starts per second.
pub const STARTS_PER_SECOND: u32 = 10;

#[derive(Debug, Clone, Copy)]
struct Slow {
    until: Instant,
    /// When the next transfer may start.
    next: Instant,
}

/// The connections this node has slowed down.
#[derive(Debug, Default)]
pub struct Pacing {
    slowed: Mutex<HashMap<String, Slow>>,
    /// Whether any connection may be slowed: every transfer asks, and
    /// nearly always none is, so the answer needs no lock.
    any: AtomicBool,
    waited: AtomicU64,
}

impl Pacing {
    /// Slows `connection` down until `for_` from now; true when it was not
    /// slowed for as long already (worth telling the others).
    pub fn slow(&self, connection: &str, for_: Duration) -> bool {
        let now = Instant::now();
        let until = now + for_.min(Duration::from_secs(600));
        let mut map = self.slowed.lock().expect("pacing poisoned");
        map.retain(|_, s| s.until > now);
        self.any.store(true, Ordering::Release);
        match map.get_mut(connection) {
            // Told again within the first half of the time: nothing new.
            Some(s) if s.until >= now + for_ / 2 => {
                s.until = s.until.max(until);
                false
            }
            Some(s) => {
                s.until = until;
                true
            }
            None => {
                map.insert(connection.to_owned(), Slow { until, next: now });
                true
            }
        }
    }

    /// How long a transfer of `connection` starting at `now` waits for its
    /// turn (and takes it).
    pub fn turn_at(&self, connection: &str, now: Instant) -> Duration {
        if !self.any.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        let mut map = self.slowed.lock().expect("pacing poisoned");
        let Some(s) = map.get_mut(connection) else {
            return Duration::ZERO;
        };
        if s.until <= now {
            map.remove(connection);
            if map.is_empty() {
                self.any.store(false, Ordering::Release);
            }
            return Duration::ZERO;
        }
        let start = s.next.max(now);
        s.next = start + Duration::from_secs(1) / STARTS_PER_SECOND;
        start - now
    }

    /// Waits for `connection`'s turn to start a transfer.
    pub async fn wait(&self, connection: &str) {
        let wait = self.turn_at(connection, Instant::now());
        if !wait.is_zero() {
            self.waited.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }

    /// Connections slowed down now.
    pub fn slowed(&self) -> usize {
        let now = Instant::now();
        let map = self.slowed.lock().expect("pacing poisoned");
        map.values().filter(|s| s.until > now).count()
    }

    /// Transfers that waited for their turn so far.
    pub fn waited(&self) -> u64 {
        self.waited.load(Ordering::Relaxed)
    }
}

/// A node's pacing metrics: `provider_slowdowns`, `connections_slowed`
/// and `paced_transfers` (the hub's and each spoke's, under their own
/// prefixes).
#[derive(Debug, Clone)]
pub struct PaceMetrics {
    slowdowns: Counter,
    slowed: Gauge,
    paced: Counter,
}

impl PaceMetrics {
    /// Registers them in `registry`: `slowdowns_help` says what one
    /// slowdown is on this node, `node` names it ("this hub").
    pub fn register(registry: &mut Registry, slowdowns_help: &str, node: &str) -> Self {
        let m = PaceMetrics {
            slowdowns: Counter::default(),
            slowed: Gauge::default(),
            paced: Counter::default(),
        };
        registry.register("provider_slowdowns", slowdowns_help, m.slowdowns.clone());
        registry.register(
            "connections_slowed",
            format!("Connections whose transfers {node} starts at a slower pace now"),
            m.slowed.clone(),
        );
        registry.register(
            "paced_transfers",
            format!(
                "Transfers (and appends to resumable uploads) that {node} held back for their turn on a slowed connection"
            ),
            m.paced.clone(),
        );
        m
    }

    /// Counts a connection slowed down.
    pub fn provider_slowed(&self) {
        self.slowdowns.inc();
    }

    /// Takes the figures of `p`: connections slowed down now, transfers
    /// held back so far.
    pub fn observe(&self, p: &Pacing) {
        self.slowed.set(p.slowed() as i64);
        // A maximum, not an addition: scrapes at once must not count twice.
        self.paced.inner().fetch_max(p.waited(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slowed_connection_starts_its_transfers_in_turn_until_the_time_is_up() {
        let p = Pacing::default();
        let now = Instant::now();
        assert_eq!(p.turn_at("con_1", now), Duration::ZERO);
        assert!(p.slow("con_1", SLOW_FOR));
        assert!(
            !p.slow("con_1", SLOW_FOR),
            "told again at once: nothing new"
        );
        assert_eq!(p.slowed(), 1);
        let turns: Vec<Duration> = (0..3).map(|_| p.turn_at("con_1", now)).collect();
        assert!(turns[0] <= Duration::from_millis(1));
        assert!(turns[1] >= Duration::from_millis(99) && turns[2] >= Duration::from_millis(199));
        // Other connections go on.
        assert_eq!(p.turn_at("con_2", now), Duration::ZERO);
        // Past its time, no turns.
        assert_eq!(
            p.turn_at("con_1", now + SLOW_FOR + Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(p.slowed(), 0);
    }
}
