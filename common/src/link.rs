//! The two transports a tunnel can run on, behind one interface: QUIC
//! streams, or — where UDP is blocked — HTTP/2 streams over TLS on TCP, each
//! carrying the same frames. A stream is a [`SendHalf`] and a [`RecvHalf`];
//! the spoke opens streams, the hub accepts them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;

/// The writing half of a tunnel stream.
#[derive(Debug)]
pub enum SendHalf {
    /// A QUIC stream.
    Quic(quinn::SendStream),
    /// An HTTP/2 stream.
    H2(H2Send),
}

/// The reading half of a tunnel stream.
#[derive(Debug)]
pub enum RecvHalf {
    /// A QUIC stream.
    Quic(quinn::RecvStream),
    /// An HTTP/2 stream.
    H2(H2Recv),
}

impl SendHalf {
    /// Abandons the stream: the peer sees an error, not a clean end.
    pub fn reset(&mut self, code: u32) {
        match self {
            Self::Quic(s) => {
                let _ = s.reset(code.into());
            }
            Self::H2(s) => s.inner.send_reset(h2::Reason::CANCEL),
        }
    }

    /// Ends the stream cleanly.
    pub fn finish(&mut self) {
        match self {
            Self::Quic(s) => {
                let _ = s.finish();
            }
            Self::H2(s) => {
                let _ = s.inner.send_data(Bytes::new(), true);
            }
        }
    }
}

impl SendHalf {
    /// Sends one frame; a payload already in memory is handed to the
    /// transport as it is, not copied behind the header first.
    pub async fn send_frame(&mut self, frame: &crate::proto::Frame) -> io::Result<()> {
        let (header, payload) = frame.parts();
        let header = Bytes::copy_from_slice(&header);
        match self {
            Self::Quic(s) => s
                .write_all_chunks(&mut [header, payload])
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e)),
            Self::H2(s) => {
                s.send_bytes(header).await?;
                s.send_bytes(payload).await
            }
        }
    }
}

impl RecvHalf {
    /// Stops reading; the peer's further writes fail.
    pub fn stop(&mut self, code: u32) {
        if let Self::Quic(r) = self {
            let _ = r.stop(code.into());
        }
    }
}

impl AsyncRead for RecvHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Quic(r) => Pin::new(r).poll_read(cx, buf),
            Self::H2(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

fn h2_err(e: h2::Error) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, e)
}

/// An HTTP/2 stream's sending side, writing only as much as flow control
/// allows (so memory stays bounded).
#[derive(Debug)]
pub struct H2Send {
    inner: h2::SendStream<Bytes>,
}

impl H2Send {
    /// Wraps an HTTP/2 send stream.
    pub fn new(inner: h2::SendStream<Bytes>) -> Self {
        Self { inner }
    }

    /// Sends `data` as flow control allows, without copying it.
    async fn send_bytes(&mut self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            self.inner.reserve_capacity(data.len());
            let n = std::future::poll_fn(|cx| self.inner.poll_capacity(cx))
                .await
                .ok_or(io::ErrorKind::BrokenPipe)?
                .map_err(h2_err)?;
            if n == 0 {
                continue;
            }
            let piece = data.split_to(n.min(data.len()));
            self.inner.send_data(piece, false).map_err(h2_err)?;
        }
        Ok(())
    }
}

/// An HTTP/2 stream's receiving side as a byte stream; capacity is given
/// back as bytes are consumed.
#[derive(Debug)]
pub struct H2Recv {
    inner: h2::RecvStream,
    pending: Bytes,
    _open: Option<OpenStream>,
}

impl H2Recv {
    /// Wraps an HTTP/2 receive stream.
    pub fn new(inner: h2::RecvStream) -> Self {
        Self {
            inner,
            pending: Bytes::new(),
            _open: None,
        }
    }
}

/// Counts a stream its opener still reads as open, until dropped.
#[derive(Debug)]
struct OpenStream(Arc<AtomicUsize>);

impl OpenStream {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for H2Recv {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(self.inner.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(h2_err(e))),
                Some(Ok(data)) => {
                    let _ = self.inner.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
            }
        }
    }
}

/// Why a stream could not be opened on a tunnel: the tunnel is lost, and
/// the request goes through another (or fails with 502).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The QUIC connection is closed or failed.
    #[error("{0}")]
    Quic(#[from] quinn::ConnectionError),
    /// The HTTP/2 connection is closed or failed.
    #[error("{0}")]
    H2(#[from] h2::Error),
    /// The hub answered the new stream with another status than 200.
    #[error("the hub answered {0}")]
    Status(http::StatusCode),
}

/// A spoke's tunnel as it opens streams on it.
#[derive(Debug, Clone)]
pub enum Link {
    /// QUIC.
    Quic(quinn::Connection),
    /// HTTP/2 over TLS on TCP.
    Tcp(TcpLink),
}

/// The HTTP/2 client side of a TCP tunnel.
#[derive(Debug, Clone)]
pub struct TcpLink {
    /// Opens streams.
    pub sender: h2::client::SendRequest<Bytes>,
    /// Fires when the connection ends (or is to be closed).
    pub done: CancellationToken,
    /// Streams opened whose answer is still being read.
    pub open: Arc<AtomicUsize>,
}

impl TcpLink {
    /// The client side of a TCP tunnel on `sender`, ended by `done`.
    pub fn new(sender: h2::client::SendRequest<Bytes>, done: CancellationToken) -> Self {
        Self {
            sender,
            done,
            open: Arc::default(),
        }
    }
}

impl Link {
    /// Opens a stream.
    pub async fn open_bi(&self) -> Result<(SendHalf, RecvHalf), OpenError> {
        match self {
            Link::Quic(c) => {
                let (s, r) = c.open_bi().await?;
                Ok((SendHalf::Quic(s), RecvHalf::Quic(r)))
            }
            Link::Tcp(t) => {
                let mut sender = t.sender.clone().ready().await?;
                let req = http::Request::post("/")
                    .body(())
                    .expect("a fixed request is valid");
                let (resp, send) = sender.send_request(req, false)?;
                let resp = resp.await?;
                if resp.status() != http::StatusCode::OK {
                    return Err(OpenError::Status(resp.status()));
                }
                let mut recv = H2Recv::new(resp.into_body());
                recv._open = Some(OpenStream::new(&t.open));
                Ok((SendHalf::H2(H2Send::new(send)), RecvHalf::H2(recv)))
            }
        }
    }

    /// Streams opened on a TCP tunnel whose answer is still being read
    /// (the requests still on it); QUIC tunnels are not counted (0).
    pub fn open_streams(&self) -> usize {
        match self {
            Link::Quic(_) => 0,
            Link::Tcp(t) => t.open.load(Ordering::Relaxed),
        }
    }

    /// Whether the tunnel has ended.
    pub fn is_closed(&self) -> bool {
        match self {
            Link::Quic(c) => c.close_reason().is_some(),
            Link::Tcp(t) => t.done.is_cancelled(),
        }
    }

    /// Closes the tunnel.
    pub fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Link::Quic(c) => c.close(code.into(), reason),
            Link::Tcp(t) => t.done.cancel(),
        }
    }

    /// The smoothed round-trip time QUIC measures; zero on TCP.
    pub fn rtt(&self) -> Duration {
        match self {
            Link::Quic(c) => c.rtt(),
            Link::Tcp(_) => Duration::ZERO,
        }
    }

    /// `quic` or `tcp`.
    pub fn transport(&self) -> &'static str {
        match self {
            Link::Quic(_) => "quic",
            Link::Tcp(_) => "tcp",
        }
    }
}
