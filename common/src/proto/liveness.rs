//! Heartbeat bookkeeping on both ends of a tunnel, as state machines that
//! are told the time: the spoke's [`Heartbeats`] decides what each tick
//! sends (or that the hub has gone silent), the hub's [`Silence`] when a
//! spoke that sends nothing is gone. A tunnel is dead after
//! [`MISSES_ALLOWED`] intervals without a word, whichever side notices.

use std::time::Duration;

use tokio::time::Instant;

use super::{Heartbeat, PrefixRtt};

/// Heartbeat intervals that may pass in silence before a tunnel is dead.
pub const MISSES_ALLOWED: u32 = 3;

/// What a spoke's heartbeat tick calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beat {
    /// Send this heartbeat.
    Send(Heartbeat),
    /// No acknowledgement for [`MISSES_ALLOWED`] intervals: the tunnel is dead.
    Dead,
}

/// What the spoke reports in each heartbeat, read at the tick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    /// Transfers streaming now.
    pub active_transfers: u64,
    /// Content bytes moved since the spoke started.
    pub content_bytes_total: u64,
    /// Client RTTs gathered since the last heartbeat.
    pub client_rtts: Vec<PrefixRtt>,
}

/// The spoke's side: numbering, load rates and the hub's silence.
#[derive(Debug, Clone)]
pub struct Heartbeats {
    interval: Duration,
    seq: u64,
    last_ack: Instant,
    last_total: u64,
    last_tick: Instant,
}

impl Heartbeats {
    /// Heartbeats every `interval`, starting at `now` with `content_bytes_total`
    /// moved so far.
    pub fn new(interval: Duration, now: Instant, content_bytes_total: u64) -> Self {
        Self {
            interval,
            seq: 0,
            last_ack: now,
            last_total: content_bytes_total,
            last_tick: now,
        }
    }

    /// The interval between ticks.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A tick at `now` with the spoke's `load`.
    pub fn tick(&mut self, now: Instant, load: Load) -> Beat {
        if now.saturating_duration_since(self.last_ack) > self.interval * MISSES_ALLOWED {
            return Beat::Dead;
        }
        self.seq += 1;
        let secs = now
            .saturating_duration_since(self.last_tick)
            .as_secs_f64()
            .max(0.001);
        let moved = load.content_bytes_total.saturating_sub(self.last_total);
        (self.last_total, self.last_tick) = (load.content_bytes_total, now);
        Beat::Send(Heartbeat {
            seq: self.seq,
            active_transfers: load.active_transfers,
            bytes_per_sec: (moved as f64 / secs) as u64,
            client_rtts: load.client_rtts,
        })
    }

    /// The hub acknowledged heartbeat `seq` at `now`; an acknowledgement of
    /// a heartbeat never sent proves nothing and is ignored.
    pub fn acked(&mut self, seq: u64, now: Instant) -> bool {
        if seq == 0 || seq > self.seq {
            return false;
        }
        self.last_ack = now;
        true
    }
}

/// The hub's side: when a spoke that says nothing is gone, even where the
/// transport cannot tell (a TCP tunnel whose peer vanished).
#[derive(Debug, Clone, Copy)]
pub struct Silence {
    limit: Duration,
    last_heard: Instant,
}

impl Silence {
    /// A spoke sending heartbeats every `interval`, last heard at `now`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self {
            limit: interval * MISSES_ALLOWED,
            last_heard: now,
        }
    }

    /// The spoke said something at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// When the spoke is gone unless it says something first.
    pub fn deadline(&self) -> Instant {
        self.last_heard + self.limit
    }

    /// Whether the spoke is gone at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(total: u64) -> Load {
        Load {
            active_transfers: 2,
            content_bytes_total: total,
            client_rtts: vec![],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_spoke_numbers_its_beats_reports_rates_and_notices_a_silent_hub() {
        let second = Duration::from_secs(1);
        let mut beats = Heartbeats::new(second, Instant::now(), 1000);
        tokio::time::advance(second).await;
        let Beat::Send(hb) = beats.tick(Instant::now(), load(3000)) else {
            panic!("the first beat is sent");
        };
        assert_eq!(
            (hb.seq, hb.active_transfers, hb.bytes_per_sec),
            (1, 2, 2000)
        );
        assert!(beats.acked(1, Instant::now()));
        assert!(!beats.acked(7, Instant::now()), "never sent");
        // Three intervals pass unanswered: still alive at exactly three…
        for seq in 2..=4 {
            tokio::time::advance(second).await;
            assert!(
                matches!(beats.tick(Instant::now(), load(3000)), Beat::Send(h) if h.seq == seq)
            );
        }
        // …dead just after.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(beats.tick(Instant::now(), load(3000)), Beat::Dead);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_keeps_the_tunnel_alive() {
        let second = Duration::from_secs(1);
        let mut beats = Heartbeats::new(second, Instant::now(), 0);
        for _ in 0..10 {
            tokio::time::advance(second * 2).await;
            let Beat::Send(hb) = beats.tick(Instant::now(), load(0)) else {
                panic!("acknowledged beats keep it alive");
            };
            assert!(beats.acked(hb.seq, Instant::now()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_hub_gives_a_silent_spoke_three_intervals() {
        let mut silence = Silence::new(Duration::from_secs(1), Instant::now());
        tokio::time::advance(Duration::from_millis(2900)).await;
        assert!(!silence.expired(Instant::now()));
        silence.heard(Instant::now());
        tokio::time::advance(Duration::from_millis(2900)).await;
        assert!(!silence.expired(Instant::now()));
        // A driver sleeping until the deadline wakes exactly then.
        tokio::time::sleep_until(silence.deadline()).await;
        assert!(silence.expired(Instant::now()));
    }
}
