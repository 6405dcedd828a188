//! Response rate limiting for DNS over UDP: a token bucket per source
//! network, so a forged source address cannot turn the server into an
//! amplifier against it. Over the rate, every `slip`-th response is sent
//! truncated (a real client then asks again over TCP, which a forger
//! cannot) and the rest are dropped.
//!
//! The buckets live in a fixed table indexed by a keyed hash of the
//! source network (SipHash under a random key each limiter draws at
//! start, so neither a client nor another hub's operator can tell which
//! networks share a slot): memory is bounded whatever the traffic. A slot
//! is one bucket, whoever lands in it: a network whose slot another one
//! drained shares the drained bucket, so a collision never grants tokens
//! nobody earned, and a source cannot refill its bucket by asking from
//! a second network.

use std::hash::{BuildHasher as _, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::config::RateLimitConfig;

/// Buckets in the table (a power of two).
const SLOTS: usize = 1 << 16;
/// Tokens are counted in thousandths, so refills need no floating point.
const MILLI: u64 = 1000;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Whether any source has landed here yet (an unused slot starts
    /// full).
    used: bool,
    /// Thousandths of a response left.
    tokens: u64,
    /// When it was last refilled, in milliseconds since the limiter began.
    at_ms: u64,
    /// Responses refused since it last had tokens.
    refused: u32,
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Send,
    /// Send it truncated, with no records.
    Slip,
    /// Send nothing.
    Drop,
}

/// The rate, burst and slip in force, shared with the hub so that a
/// reload changes them while the server runs (the grouping prefixes are
/// fixed at start).
#[derive(Debug)]
pub struct LimitSettings {
    rate: AtomicU64,
    burst: AtomicU64,
    slip: AtomicU32,
}

impl LimitSettings {
    /// The settings of `cfg`.
    pub fn new(cfg: &RateLimitConfig) -> Arc<Self> {
        let s = Arc::new(Self {
            rate: AtomicU64::new(0),
            burst: AtomicU64::new(0),
            slip: AtomicU32::new(0),
        });
        s.set(cfg);
        s
    }

    /// Takes `cfg`'s rate, burst and slip (0 turns the limit off).
    pub fn set(&self, cfg: &RateLimitConfig) {
        self.rate
            .store(u64::from(cfg.responses_per_sec), Ordering::Relaxed);
        self.burst.store(
            u64::from(cfg.burst.max(cfg.responses_per_sec)),
            Ordering::Relaxed,
        );
        self.slip.store(cfg.slip, Ordering::Relaxed);
    }
}

/// The limiter; owned by the one task serving UDP.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Vec<Bucket>,
    /// The slot hash's key, drawn at random for each limiter.
    hasher: RandomState,
    settings: Arc<LimitSettings>,
    v4_prefix: u8,
    v6_prefix: u8,
    start: Instant,
}

impl RateLimiter {
    /// A limiter as configured (a rate of 0 sends everything).
    pub fn new(cfg: &RateLimitConfig, start: Instant) -> Self {
        Self::with_settings(cfg, LimitSettings::new(cfg), start)
    }

    /// A limiter grouping sources as `cfg` says, with `settings` that may
    /// change while it runs.
    pub fn with_settings(
        cfg: &RateLimitConfig,
        settings: Arc<LimitSettings>,
        start: Instant,
    ) -> Self {
        Self {
            buckets: vec![Bucket::default(); SLOTS],
            hasher: RandomState::new(),
            settings,
            v4_prefix: cfg.v4_prefix,
            v6_prefix: cfg.v6_prefix,
            start,
        }
    }

    /// The verdict for one response to `source` at `now`.
    pub fn check(&mut self, source: IpAddr, now: Instant) -> Verdict {
        let rate = self.settings.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return Verdict::Send;
        }
        let burst = self.settings.burst.load(Ordering::Relaxed).max(rate);
        let slip = self.settings.slip.load(Ordering::Relaxed);
        let slot = self.slot(source);
        let now_ms = now.saturating_duration_since(self.start).as_millis() as u64;
        let full = burst * MILLI;
        let b = &mut self.buckets[slot];
        if b.used {
            let elapsed = now_ms.saturating_sub(b.at_ms);
            b.tokens = b
                .tokens
                .saturating_add(elapsed.saturating_mul(rate))
                .min(full);
        } else {
            b.used = true;
            b.tokens = full;
        }
        b.at_ms = now_ms;
        if b.tokens >= MILLI {
            b.tokens -= MILLI;
            b.refused = 0;
            return Verdict::Send;
        }
        b.refused = b.refused.wrapping_add(1);
        if slip > 0 && b.refused.is_multiple_of(slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// The slot of `source`'s network in the table.
    fn slot(&self, source: IpAddr) -> usize {
        (self.hasher.hash_one(self.key(source)) as usize) & (SLOTS - 1)
    }

    /// The source network as a number: the masked address, IPv4 in its
    /// IPv6-mapped form (`::ffff:a.b.c.d`), so the families never meet.
    fn key(&self, source: IpAddr) -> u128 {
        // A v4 client on a dual-stack socket belongs to its v4 network.
        let source = match source {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(source, IpAddr::V4),
            v4 => v4,
        };
        match source {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.v4_prefix))
                    .unwrap_or(0);
                (0xffff_u128 << 32) | u128::from(u32::from(a) & mask)
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.v6_prefix))
                    .unwrap_or(0);
                u128::from(a) & mask
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(rate: u32, burst: u32, slip: u32) -> RateLimitConfig {
        RateLimitConfig {
            responses_per_sec: rate,
            burst,
            slip,
            v4_prefix: 24,
            v6_prefix: 56,
        }
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(&cfg(10, 20, 2), t0);
        let src: IpAddr = "192.0.2.1".parse().unwrap();
        let sent = (0..100)
            .filter(|_| l.check(src, t0) == Verdict::Send)
            .count();
        assert_eq!(sent, 20);
        // Over the limit: every second one slips, the rest are dropped.
        let over: Vec<Verdict> = (0..4).map(|_| l.check(src, t0)).collect();
        assert_eq!(over.iter().filter(|v| **v == Verdict::Slip).count(), 2);
        assert!(over.contains(&Verdict::Drop));
        // A second later, ten more.
        let t1 = t0 + Duration::from_secs(1);
        let sent = (0..100)
            .filter(|_| l.check(src, t1) == Verdict::Send)
            .count();
        assert_eq!(sent, 10);
        // The same /24 shares the bucket; another network has its own.
        assert_ne!(l.check("192.0.2.200".parse().unwrap(), t1), Verdict::Send);
        assert_eq!(l.check("192.0.3.1".parse().unwrap(), t1), Verdict::Send);
        assert_eq!(l.check("2001:db8::1".parse().unwrap(), t1), Verdict::Send);
    }

    #[test]
    fn no_slip_drops_everything_over_the_rate_and_zero_rate_is_off() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(&cfg(1, 1, 0), t0);
        let src: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        assert_eq!(l.check(src, t0), Verdict::Send);
        for _ in 0..10 {
            assert_eq!(l.check(src, t0), Verdict::Drop);
        }
        // The same /56, another host: the same bucket.
        assert_eq!(
            l.check("2001:db8:1:ff::9".parse().unwrap(), t0),
            Verdict::Drop
        );
        let mut off = RateLimiter::new(&cfg(0, 0, 2), t0);
        assert!((0..1000).all(|_| off.check(src, t0) == Verdict::Send));
    }

    /// A /24 other than `of`'s whose slot in `l` is the same.
    fn colliding_network(l: &RateLimiter, of: IpAddr) -> IpAddr {
        let target = l.slot(of);
        (1u32..1 << 22)
            .map(|n| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + (n << 8))))
            .find(|net| l.key(*net) != l.key(of) && l.slot(*net) == target)
            .expect("a colliding network among four million")
    }

    #[test]
    fn a_colliding_network_never_gets_tokens_it_did_not_earn() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(&cfg(10, 20, 0), t0);
        let flooded: IpAddr = "192.0.2.1".parse().unwrap();
        let other = colliding_network(&l, flooded);
        assert_eq!(
            (0..50)
                .filter(|_| l.check(flooded, t0) == Verdict::Send)
                .count(),
            20
        );
        // The network sharing the slot finds the bucket as the flood left
        // it: no fresh burst, for it or for the flooded one asking again.
        assert_eq!(l.check(other, t0), Verdict::Drop);
        assert_eq!(l.check(flooded, t0), Verdict::Drop);
        // Time refills the slot for both at the limit's own rate.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.check(other, t1), Verdict::Send);
        assert_eq!(l.check(flooded, t1), Verdict::Drop);
    }

    #[test]
    fn the_slot_hash_is_keyed_for_each_limiter() {
        let t0 = Instant::now();
        let a = RateLimiter::new(&cfg(10, 20, 0), t0);
        let b = RateLimiter::new(&cfg(10, 20, 0), t0);
        let nets: Vec<IpAddr> = (0..64u32)
            .map(|n| IpAddr::V4(std::net::Ipv4Addr::from(0xc000_0200 + (n << 8))))
            .collect();
        let slots = |l: &RateLimiter| nets.iter().map(|n| l.slot(*n)).collect::<Vec<_>>();
        assert_ne!(slots(&a), slots(&b), "two limiters share their hash key");
        // Within one limiter, the slot of a network never changes.
        assert_eq!(slots(&a), slots(&a));
    }

    #[test]
    fn a_v4_client_on_a_dual_stack_socket_is_its_v4_network() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(&cfg(1, 1, 0), t0);
        assert_eq!(
            l.check("::ffff:192.0.2.1".parse().unwrap(), t0),
            Verdict::Send
        );
        assert_eq!(l.check("192.0.2.77".parse().unwrap(), t0), Verdict::Drop);
        assert_eq!(
            l.check("::ffff:198.51.100.1".parse().unwrap(), t0),
            Verdict::Send,
            "another v4 network has its own bucket"
        );
    }

    #[test]
    fn new_settings_apply_while_it_runs() {
        let t0 = Instant::now();
        let settings = LimitSettings::new(&cfg(1, 1, 0));
        let mut l = RateLimiter::with_settings(&cfg(1, 1, 0), settings.clone(), t0);
        let src: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(l.check(src, t0), Verdict::Send);
        assert_eq!(l.check(src, t0), Verdict::Drop);
        // Turned off, everything goes; back on with every answer slipping.
        settings.set(&cfg(0, 0, 0));
        assert!((0..100).all(|_| l.check(src, t0) == Verdict::Send));
        settings.set(&cfg(1, 1, 1));
        let t1 = t0 + std::time::Duration::from_secs(5);
        assert_eq!(l.check(src, t1), Verdict::Send);
        assert_eq!(l.check(src, t1), Verdict::Slip);
    }
}
