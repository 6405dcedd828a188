//! Reading the rest of a request body that a handler refused to read.
//!
//! A handler may answer before it has read the request's body: a `423`
//! for a resumable upload another node is writing, a `401` for a `PUT`
//! without a key, a `413`. HTTP/1.1 then leaves the client still sending
//! while the server has answered; hyper drains what it already holds and
//! closes the connection's read side, and a client that writes its whole
//! body before it reads the answer sees its write fail (`EPIPE`, or a reset
//! that may even discard the answer) instead of the answer it was sent.
//! Like nginx's lingering close, the body a handler drops unread is read
//! on in the background, discarded, for a bounded time and size: the client
//! finishes its request and reads the answer, and a connection whose body
//! ended in time is kept for the next request.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

/// The longest a dropped body is read on.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// The most bytes of a dropped body read on; past them the connection is
/// closed, as hyper would have done at once.
pub const LINGER_BYTES: u64 = 64 << 20;

/// An HTTP/1 request body that is read on in the background if dropped
/// before its end.
///
/// Not one the client has not begun to send: a request with
/// `Expect: 100-continue` whose body nobody read. Reading it would make
/// hyper send `100 Continue` after the final answer, and a client that
/// took the answer and sends no body would have its next request read as
/// this one's body. Left unread, it is not known whether the client will
/// send it: the answer closes the connection ([`Lingering::ended`]).
#[derive(Debug)]
pub struct Lingering {
    inner: Option<Incoming>,
    /// The client waits for `100 Continue` before sending the body.
    expects_continue: bool,
    /// The handler has asked for the body.
    polled: bool,
    /// Whether the body has been read to its end.
    ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Lingering {
    /// Wraps `body`, whose request asked for `100 Continue` when
    /// `expects_continue`.
    pub fn new(body: Incoming, expects_continue: bool) -> Self {
        let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(body.is_end_stream()));
        Self {
            inner: Some(body),
            expects_continue,
            polled: false,
            ended,
        }
    }

    /// Whether the body has been read to its end, as it goes: a request
    /// with `Expect: 100-continue` answered before its body ended must
    /// close its connection, since the client may send the body or not.
    pub fn ended(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.ended.clone()
    }
}

impl http_body::Body for Lingering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.polled = true;
        let polled = match self.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        };
        if matches!(polled, Poll::Ready(None))
            || self.inner.as_ref().is_some_and(Incoming::is_end_stream)
        {
            self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if body.is_end_stream() || (self.expects_continue && !self.polled) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let drained = tokio::time::timeout(LINGER_TIME, discard(body, LINGER_BYTES)).await;
            if matches!(drained, Ok(true)) {
                tracing::debug!("read on a request body its handler left, to its end");
            } else {
                // The client sees its connection closed while it sends.
                tracing::info!(
                    secs = LINGER_TIME.as_secs(),
                    bytes = LINGER_BYTES,
                    "closed a connection: the request body its handler left did not end in time or size"
                );
            }
        });
    }
}

/// Reads `body` to its end, at most `limit` bytes: whether it ended.
async fn discard(mut body: Incoming, limit: u64) -> bool {
    let mut read = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                read += f.data_ref().map_or(0, |d| d.len() as u64);
                if read > limit {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}
