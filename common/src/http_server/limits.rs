//! The listener's limits: connections open at once (in all and per
//! source), the request head's size, the idle and handshake timeouts and
//! the drain's grace period.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::source_limit::SourceLimit;

/// The most connections open at once, changeable while serving: more
/// are allowed at once; fewer once enough connections have closed.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    pub(super) permits: Arc<Semaphore>,
    target: Arc<std::sync::Mutex<usize>>,
}

impl ConnectionLimit {
    /// A limit of `n` connections.
    pub fn new(n: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(n)),
            target: Arc::new(std::sync::Mutex::new(n)),
        }
    }

    /// The limit now.
    pub fn get(&self) -> usize {
        *self.target.lock().expect("limit poisoned")
    }

    /// Sets the limit to `n` (at least 1). Lowering it waits, in a task
    /// of the runtime, for connections to close; none is cut.
    pub fn set(&self, n: usize) {
        let n = n.max(1);
        let mut target = self.target.lock().expect("limit poisoned");
        if n > *target {
            self.permits.add_permits(n - *target);
        } else if n < *target {
            let fewer = u32::try_from(*target - n).unwrap_or(u32::MAX);
            let permits = self.permits.clone();
            tokio::spawn(async move {
                if let Ok(p) = permits.acquire_many_owned(fewer).await {
                    p.forget();
                }
            });
        }
        *target = n;
    }
}

/// Limits on the listener, from configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections open at once; further clients wait in the backlog.
    pub connections: ConnectionLimit,
    /// Most connections one source (a host) may hold open; one more is
    /// closed as soon as it is accepted, so other sources are still served.
    pub per_source: Arc<SourceLimit>,
    /// Largest request head (request line and header fields) accepted.
    pub max_header_bytes: usize,
    /// Most bytes one read of an HTTP/1 connection takes.
    pub read_buffer_bytes: usize,
    /// A connection with no request in flight for this long is closed
    /// gracefully, whatever keep-alive pings do; one whose request moves
    /// no bytes either way for this long is cut.
    pub idle_timeout: Duration,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Told the kernel's round-trip time of client connections (a spoke's
    /// steering samples); `None` samples nothing.
    pub rtt_sink: Option<RttSink>,
}

/// Receives `(client address, kernel RTT)` of each accepted connection,
/// read when it is accepted: the round trip of its TCP handshake.
#[derive(Clone)]
pub struct RttSink(pub Arc<dyn Fn(IpAddr, Duration) + Send + Sync>);

impl std::fmt::Debug for RttSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RttSink")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_connection_limit_grows_at_once_and_shrinks_as_connections_close() {
        let limit = ConnectionLimit::new(2);
        let a = limit.permits.clone().acquire_owned().await.unwrap();
        let b = limit.permits.clone().acquire_owned().await.unwrap();
        assert_eq!(limit.permits.available_permits(), 0);
        limit.set(3);
        assert_eq!(limit.get(), 3);
        assert_eq!(limit.permits.available_permits(), 1);
        // Down to 1 while three are allowed and two held: nothing is cut;
        // the permits go as connections close.
        limit.set(1);
        assert_eq!(limit.get(), 1);
        drop(a);
        drop(b);
        for _ in 0..100 {
            if limit.permits.available_permits() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(limit.permits.available_permits(), 1);
        limit.set(0);
        assert_eq!(limit.get(), 1, "never below one");
    }
}
