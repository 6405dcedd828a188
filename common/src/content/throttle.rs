//! Bandwidth limits: one shared bucket per account and direction on each
//! node, which every transfer of that account there draws from.
//!
//! A bucket lends rather than refuses: a chunk takes its bytes at once,
//! and when that leaves the bucket in debt the stream waits until the debt
//! would be paid at the account's rate before it passes the chunk on. So
//! however many transfers share the bucket, together they move the rate,
//! each in turn, and a single transfer is held to it as well. The debt a
//! chunk may leave is bounded by the chunk (the streams' chunks are at most
//! a few MiB), and a bucket starts with a tenth of a second of credit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};

/// Bytes per second an account may move through one node, each way;
/// `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLimits {
    /// Uploads (into providers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_bytes_per_second: Option<u64>,
    /// Downloads (to clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_bytes_per_second: Option<u64>,
}

/// The credit a bucket holds at most, in seconds of its rate.
const BURST: f64 = 0.1;

/// One account's bucket for one direction.
#[derive(Debug)]
pub struct Bucket {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Bytes per second.
    rate: f64,
    /// The most credit, in seconds of the rate.
    burst: f64,
    /// Credit (negative: debt), bytes.
    balance: f64,
    last: Instant,
}

impl Bucket {
    /// A bucket of `rate` bytes per second.
    pub fn new(rate: u64) -> Self {
        Self::with_burst(rate, BURST)
    }

    /// A bucket of `rate` units per second holding at most `burst` seconds
    /// of them (and starting full).
    pub fn with_burst(rate: u64, burst: f64) -> Self {
        let rate = rate.max(1) as f64;
        Self {
            state: Mutex::new(State {
                rate,
                burst,
                balance: rate * burst,
                last: Instant::now(),
            }),
        }
    }

    /// Takes `n` if the bucket holds them; otherwise takes nothing and says
    /// how long until it would.
    pub fn try_take_at(&self, n: usize, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().expect("bucket poisoned");
        s.refill(now);
        if s.balance >= n as f64 {
            s.balance -= n as f64;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n as f64 - s.balance) / s.rate))
        }
    }

    /// Sets the rate (units per second).
    pub fn set_rate(&self, rate: u64) {
        self.state.lock().expect("bucket poisoned").rate = rate.max(1) as f64;
    }

    /// Takes `n` bytes; returns how long to wait before passing them on.
    pub fn take_at(&self, n: usize, now: Instant) -> Duration {
        let mut s = self.state.lock().expect("bucket poisoned");
        s.refill(now);
        s.balance -= n as f64;
        if s.balance >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.balance / s.rate)
        }
    }

    /// Takes `n` bytes, waiting until the bucket's debt is paid.
    pub async fn take(&self, n: usize) {
        let wait = self.take_at(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

impl State {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.balance = (self.balance + elapsed * self.rate).min(self.rate * self.burst);
    }
}

/// The buckets of one node, per account and direction.
#[derive(Debug, Default)]
pub struct Throttles {
    buckets: Mutex<HashMap<(String, bool), Arc<Bucket>>>,
}

/// Buckets kept before unused ones are dropped.
const KEEP: usize = 10_000;

impl Throttles {
    /// The account's buckets for `limits`: shared with its other
    /// transfers on this node, their rate set to the limits' (a change of
    /// limit applies to transfers under way too).
    pub fn for_account(&self, account: &str, limits: TransferLimits) -> Throttle {
        let mut map = self.buckets.lock().expect("throttles poisoned");
        if map.len() > KEEP {
            map.retain(|_, b| Arc::strong_count(b) > 1);
        }
        let mut bucket = |upload: bool, rate: Option<u64>| {
            let rate = rate.filter(|&r| r > 0)?;
            let b = map
                .entry((account.to_owned(), upload))
                .or_insert_with(|| Arc::new(Bucket::new(rate)));
            b.set_rate(rate);
            Some(b.clone())
        };
        Throttle {
            up: bucket(true, limits.upload_bytes_per_second),
            down: bucket(false, limits.download_bytes_per_second),
        }
    }
}

/// A transfer's buckets: none where the account has no limit.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    /// For uploads.
    pub up: Option<Arc<Bucket>>,
    /// For downloads.
    pub down: Option<Arc<Bucket>>,
}

/// `stream`, each chunk passed on once `bucket` lets it (as it is, with
/// no bucket).
pub fn throttled<S, E>(
    stream: S,
    bucket: Option<Arc<Bucket>>,
) -> impl Stream<Item = Result<Bytes, E>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Send,
{
    // Without a limit the stream is left as it is: no step per chunk.
    let Some(bucket) = bucket else {
        return stream.left_stream();
    };
    stream
        .then(move |item| {
            let bucket = bucket.clone();
            async move {
                if let Ok(data) = &item {
                    bucket.take(data.len()).await;
                }
                item
            }
        })
        .right_stream()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lends_its_burst_then_holds_streams_to_its_rate() {
        let b = Bucket::new(1_000_000);
        let t0 = Instant::now();
        // A tenth of a second of credit.
        assert_eq!(b.take_at(100_000, t0), Duration::ZERO);
        // In debt: wait until it would be paid.
        assert_eq!(b.take_at(500_000, t0), Duration::from_millis(500));
        // Two streams sharing it: the second waits for both chunks.
        assert_eq!(b.take_at(250_000, t0), Duration::from_millis(750));
        // Time pays the debt at the rate.
        assert_eq!(
            b.take_at(0, t0 + Duration::from_millis(750)),
            Duration::ZERO
        );
        // Credit never grows past the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.take_at(100_000, later), Duration::ZERO);
        assert_eq!(b.take_at(100_000, later), Duration::from_millis(100));
    }

    #[test]
    fn a_refusing_bucket_takes_nothing_it_does_not_hold() {
        let b = Bucket::with_burst(10, 1.0);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(b.try_take_at(1, t0), Ok(()));
        }
        assert_eq!(b.try_take_at(1, t0), Err(Duration::from_millis(100)));
        assert_eq!(b.try_take_at(1, t0 + Duration::from_millis(100)), Ok(()));
    }

    #[test]
    fn accounts_share_their_own_buckets_and_limits_follow_changes() {
        let t = Throttles::default();
        let none = t.for_account("acc_1", TransferLimits::default());
        assert!(none.up.is_none() && none.down.is_none());
        let limits = TransferLimits {
            upload_bytes_per_second: None,
            download_bytes_per_second: Some(1000),
        };
        let a = t.for_account("acc_1", limits);
        let b = t.for_account("acc_1", limits);
        let other = t.for_account("acc_2", limits);
        assert!(Arc::ptr_eq(
            a.down.as_ref().unwrap(),
            b.down.as_ref().unwrap()
        ));
        assert!(!Arc::ptr_eq(
            a.down.as_ref().unwrap(),
            other.down.as_ref().unwrap()
        ));
        assert!(a.up.is_none());
        let faster = t.for_account(
            "acc_1",
            TransferLimits {
                download_bytes_per_second: Some(1_000_000),
                ..limits
            },
        );
        let now = Instant::now();
        let d = faster.down.unwrap();
        d.take_at(1_000_000, now);
        assert!(d.take_at(0, now) <= Duration::from_secs(1));
    }
}
