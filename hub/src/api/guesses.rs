//! Slowing down wrong guesses of the admin token, per source.
//!
//! A source (an IPv4 address, or an IPv6 /64: what one host holds) may
//! send a wrong admin token [`FREE_FAILURES`] times; after that it waits
//! before its next try: one second after the next failure, doubling with
//! each further one, up to [`MAX_DELAY`]. While it waits, every request
//! from it that carries a bearer token to an admin route is answered
//! `429 too_many_attempts` with `Retry-After`, without the token being
//! looked at, so waiting is the only way on. The right token clears the
//! source's count; a source that stops failing is forgotten
//! [`FORGET_AFTER`] after its last failure.
//!
//! Memory is bounded: at most [`MAX_SOURCES`] sources are tracked. When the
//! table is full, forgotten sources are swept out, and if none is, the one
//! whose last failure is oldest makes room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_common::source_limit::SourceKey;

/// Wrong tokens a source may send before it has to wait.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait between two tries.
pub const MAX_DELAY: Duration = Duration::from_secs(300);
/// How long after its last failure a source is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(900);
/// The most sources tracked at once.
pub const MAX_SOURCES: usize = 16_384;

/// One source's failures.
#[derive(Debug, Clone, Copy)]
struct Failures {
    /// Wrong tokens since its last right one (or since it was forgotten).
    count: u32,
    /// When the last one came.
    last: Instant,
}

impl Failures {
    /// Until when the source must wait.
    fn wait_until(&self) -> Instant {
        let over = self.count.saturating_sub(FREE_FAILURES);
        if over == 0 {
            return self.last;
        }
        let delay = Duration::from_secs(1u64 << (over - 1).min(20)).min(MAX_DELAY);
        self.last + delay
    }
}

/// The failures of every source that failed lately.
#[derive(Debug, Default)]
pub struct WrongGuesses {
    sources: Mutex<HashMap<SourceKey, Failures>>,
}

/// The source's host; `None` (no address known) counts as `::`.
fn source_key(source: Option<IpAddr>) -> SourceKey {
    SourceKey::of(source.unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)))
}

impl WrongGuesses {
    /// How long `source` must still wait before its next try, if it must.
    pub fn wait(&self, source: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let sources = self.sources.lock().expect("guesses poisoned");
        let until = sources.get(&source_key(source))?.wait_until();
        (until > now).then(|| until - now)
    }

    /// Notes a wrong token from `source` at `now`.
    pub fn failed(&self, source: Option<IpAddr>, now: Instant) {
        let key = source_key(source);
        let mut sources = self.sources.lock().expect("guesses poisoned");
        if !sources.contains_key(&key) && sources.len() >= MAX_SOURCES {
            sources.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
            if sources.len() >= MAX_SOURCES
                && let Some(oldest) = sources.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k)
            {
                sources.remove(&oldest);
            }
        }
        let entry = sources.entry(key).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(entry.last) >= FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
    }

    /// Notes the right token from `source`: its failures are forgotten.
    pub fn succeeded(&self, source: Option<IpAddr>) {
        let mut sources = self.sources.lock().expect("guesses poisoned");
        sources.remove(&source_key(source));
    }

    /// How many sources are tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.sources.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_wait_doubles_after_the_free_failures_and_is_capped() {
        let guesses = WrongGuesses::default();
        let t0 = Instant::now();
        let src = ip("192.0.2.7");
        for _ in 0..FREE_FAILURES {
            guesses.failed(src, t0);
            assert_eq!(guesses.wait(src, t0), None);
        }
        let mut expected = Duration::from_secs(1);
        for _ in 0..12 {
            guesses.failed(src, t0);
            assert_eq!(guesses.wait(src, t0), Some(expected));
            assert_eq!(guesses.wait(src, t0 + expected), None);
            expected = (expected * 2).min(MAX_DELAY);
        }
        assert_eq!(guesses.wait(src, t0), Some(MAX_DELAY));
        // Another host is not slowed down; the same IPv6 /64 is one source.
        assert_eq!(guesses.wait(ip("192.0.2.8"), t0), None);
        let v6 = ip("2001:db8:1:2::1");
        for _ in 0..=FREE_FAILURES {
            guesses.failed(v6, t0);
        }
        assert!(guesses.wait(ip("2001:db8:1:2:ffff::9"), t0).is_some());
        assert_eq!(guesses.wait(ip("2001:db8:1:3::1"), t0), None);
        // A v4 client on a dual-stack socket is its v4 address.
        assert!(guesses.wait(ip("::ffff:192.0.2.7"), t0).is_some());
    }

    #[test]
    fn the_right_token_and_time_clear_the_count() {
        let guesses = WrongGuesses::default();
        let t0 = Instant::now();
        let src = ip("198.51.100.1");
        for _ in 0..=FREE_FAILURES {
            guesses.failed(src, t0);
        }
        assert!(guesses.wait(src, t0).is_some());
        guesses.succeeded(src);
        assert_eq!(guesses.wait(src, t0), None);
        for _ in 0..=FREE_FAILURES {
            guesses.failed(src, t0);
        }
        // Long after the last failure, the count starts again.
        let later = t0 + FORGET_AFTER;
        guesses.failed(src, later);
        assert_eq!(guesses.wait(src, later), None);
    }

    #[test]
    fn memory_is_bounded_by_the_table() {
        let guesses = WrongGuesses::default();
        let t0 = Instant::now();
        let hot = ip("203.0.113.9");
        for _ in 0..=FREE_FAILURES {
            guesses.failed(hot, t0 + Duration::from_secs(1));
        }
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            guesses.failed(Some(IpAddr::V4(a)), t0);
        }
        assert_eq!(guesses.tracked(), MAX_SOURCES);
        // The oldest entries made room; the latest failer is still held.
        assert!(
            guesses
                .wait(hot, t0 + Duration::from_millis(1500))
                .is_some()
        );
    }
}
