//! Whether a connection is idle, measured in requests: it is idle while
//! no request is in flight, from the moment the last one ended (or the
//! connection was accepted). A request is in flight from its head's
//! arrival until its response body has been sent or dropped, so a long
//! download or upload is never idle, and keep-alive pings, which are no
//! requests, never make a connection busy.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct State {
    /// Requests in flight.
    in_flight: usize,
    /// When the last one ended (or the connection began).
    idle_since: Instant,
}

/// The requests of one connection.
#[derive(Debug)]
pub(super) struct Activity {
    state: watch::Sender<State>,
}

impl Activity {
    /// A connection with nothing in flight yet, idle from now.
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: watch::Sender::new(State {
                in_flight: 0,
                idle_since: Instant::now(),
            }),
        })
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.state.send_modify(|s| s.in_flight += 1);
        InFlight(self.clone())
    }

    /// Returns once no request has been in flight for `timeout`, counting
    /// from `not_before` at the earliest.
    pub(super) async fn idle_for(&self, timeout: Duration, not_before: Instant) {
        let mut changes = self.state.subscribe();
        loop {
            let state = *changes.borrow_and_update();
            if state.in_flight > 0 {
                // The sender lives as long as `self`: this never fails.
                let _ = changes.changed().await;
                continue;
            }
            let deadline = state.idle_since.max(not_before) + timeout;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = changes.changed() => {}
            }
        }
    }
}

/// A request in flight; dropping it ends it.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.send_modify(|s| {
            s.in_flight -= 1;
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
        });
    }
}

/// A response body that keeps its request in flight until it is sent
/// whole or dropped.
#[derive(Debug)]
pub(super) struct InFlightBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> InFlightBody<B> {
    /// `inner`, keeping `in_flight` until it ends.
    pub(super) fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: HttpBody + Unpin> HttpBody for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(10);

    /// Whether `activity` counts as idle for [`IDLE`] by `after` from now.
    async fn idle_within(activity: &Activity, after: Duration) -> bool {
        tokio::time::timeout(after, activity.idle_for(IDLE, Instant::now()))
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_requests_is_idle_after_the_timeout() {
        let activity = Activity::new();
        assert!(!idle_within(&activity, IDLE - Duration::from_secs(1)).await);
        let activity = Activity::new();
        assert!(idle_within(&activity, IDLE + Duration::from_millis(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_idle_and_its_end_starts_the_clock() {
        let activity = Activity::new();
        let request = activity.begin();
        assert!(!idle_within(&activity, IDLE * 5).await);
        let body = InFlightBody::new(http_body_util::Empty::<bytes::Bytes>::new(), request);
        assert!(!idle_within(&activity, IDLE * 2).await);
        // The response is sent: idle from now, not from the first request.
        drop(body);
        let ended = Instant::now();
        let waiting = activity.idle_for(IDLE, Instant::now());
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(IDLE / 2, &mut waiting).await.is_err(),
            "idle too early"
        );
        // A second request during the wait restarts it once it ends.
        let second = activity.begin();
        assert!(
            tokio::time::timeout(IDLE, &mut waiting).await.is_err(),
            "idle while in flight"
        );
        drop(second);
        let again = Instant::now();
        waiting.await;
        assert!(Instant::now() >= again + IDLE);
        assert!(Instant::now() > ended + IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn counting_starts_no_earlier_than_asked() {
        let activity = Activity::new();
        tokio::time::sleep(IDLE * 3).await;
        // Idle for long already; from now on, it takes the timeout again.
        let start = Instant::now();
        activity.idle_for(IDLE, start).await;
        assert_eq!(Instant::now(), start + IDLE);
    }
}
