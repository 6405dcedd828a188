//! Frames over a byte stream (a QUIC stream, or TLS over TCP): a reader
//! that decodes as bytes arrive and a writer, both bounded by the decoder's
//! frame limit; HTTP bodies to and from `Data` frames, the same way on both
//! ends; and the QUIC socket and transport settings both ends share.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::proto::{Decoder, Frame, ProtoError};

/// A message body read from `Data` frames until `End`, as the frames
/// arrive; a missing `End` or a stray frame fails the body with `what`.
pub fn body_from_frames<R>(mut reader: FrameReader<R>, what: &'static str) -> crate::body::Body
where
    R: AsyncRead + Unpin + Send + 'static,
{
    use http_body_util::BodyExt as _;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, crate::body::BoxError>>(8);
    tokio::spawn(async move {
        loop {
            let item = match reader.next().await {
                Ok(Some(Frame::Data(b))) => Ok(b),
                Ok(Some(Frame::End)) => return,
                Ok(None) => Err(format!("{what} ended without its end frame").into()),
                Ok(Some(_)) => Err(format!("unexpected frame in {what}").into()),
                Err(e) => Err(crate::body::BoxError::from(e)),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|item| (item.map(http_body::Frame::data), rx))
    });
    http_body_util::StreamBody::new(frames).boxed_unsync()
}

/// Why a body could not be sent as frames.
#[derive(Debug, thiserror::Error)]
pub enum SendBodyError {
    /// The body itself failed (its sender went away): the peer must not
    /// take what was sent for a whole body, so the stream is reset.
    #[error("the body failed: {0}")]
    Body(crate::body::BoxError),
    /// The stream failed: the peer went away.
    #[error("the stream failed: {0}")]
    Stream(#[from] std::io::Error),
}

/// Sends `body` on `send` as `Data` frames of at most `max_frame` bytes,
/// then `End`, as the body's bytes arrive (never more than one frame
/// buffered); the caller finishes or resets the stream.
pub async fn send_body(
    send: &mut crate::link::SendHalf,
    mut body: crate::body::Body,
    max_frame: usize,
) -> Result<(), SendBodyError> {
    use http_body_util::BodyExt as _;
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame.map_err(SendBodyError::Body)?.into_data() else {
            continue;
        };
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(max_frame.max(1)));
            send.send_frame(&Frame::Data(piece)).await?;
        }
    }
    send.send_frame(&Frame::End).await?;
    Ok(())
}

/// UDP socket buffer size for QUIC endpoints: the kernel default drops
/// datagrams under load.
pub const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Why reading or writing frames failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    /// The stream failed or closed mid-frame.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a bad frame.
    #[error("protocol error: {0}")]
    Proto(#[from] ProtoError),
    /// The stream ended in the middle of a frame.
    #[error("the stream ended inside a frame")]
    Truncated,
}

/// Decodes frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    decoder: Decoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames of at most `max_frame` payload bytes from `inner`.
    pub fn new(inner: R, max_frame: usize) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(16 * 1024),
            decoder: Decoder::new(max_frame),
        }
    }

    /// The next frame; `Ok(None)` when the stream ended cleanly between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameIoError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            let want = self.decoder.needed(&self.buf)?.max(1);
            self.buf.reserve(want.min(256 * 1024));
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameIoError::Truncated)
                };
            }
        }
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Writes one frame to any byte stream (tests and raw QUIC streams); the
/// tunnel's own streams use [`crate::link::SendHalf::send_frame`], which
/// does not copy the payload.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
) -> Result<(), std::io::Error> {
    w.write_all(&frame.to_bytes()).await
}

/// A UDP socket for a QUIC endpoint with large buffers.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER_BYTES) {
        tracing::warn!(error = %e, "cannot raise the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER_BYTES) {
        tracing::warn!(error = %e, "cannot raise the UDP send buffer");
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The defaults of the `[tunnel]` keys both daemons have, so the two ends
/// agree unless an operator says otherwise.
pub mod defaults {
    /// `max_frame_bytes`: 1 MiB.
    pub fn max_frame_bytes() -> usize {
        1024 * 1024
    }
    /// `stream_window_bytes`: 4 MiB.
    pub fn stream_window_bytes() -> u32 {
        4 * 1024 * 1024
    }
    /// `connection_window_bytes`: 16 MiB.
    pub fn connection_window_bytes() -> u32 {
        16 * 1024 * 1024
    }
    /// `idle_timeout_secs`: 20.
    pub fn idle_timeout_secs() -> u64 {
        20
    }
}

/// Checks the `[tunnel]` frame and window keys both daemons have.
pub fn check_windows(
    max_frame_bytes: usize,
    stream_window_bytes: u32,
    connection_window_bytes: u32,
    p: &mut crate::config::Problems,
) {
    if !(16 * 1024..=16 * 1024 * 1024).contains(&max_frame_bytes) {
        p.add("tunnel.max_frame_bytes", "must be from 16384 to 16777216");
    }
    if stream_window_bytes < 64 * 1024 {
        p.add("tunnel.stream_window_bytes", "must be at least 65536");
    }
    if connection_window_bytes < stream_window_bytes {
        p.add(
            "tunnel.connection_window_bytes",
            "must be at least tunnel.stream_window_bytes",
        );
    }
}

/// Transport settings both ends of a tunnel use.
#[derive(Debug, Clone, Copy)]
pub struct TransportLimits {
    /// Flow-control window of one stream.
    pub stream_window_bytes: u32,
    /// Flow-control window of the whole connection.
    pub connection_window_bytes: u32,
    /// Streams the peer may have open at once.
    pub max_concurrent_streams: u32,
    /// A silent connection is dead after this long.
    pub idle_timeout: Duration,
    /// QUIC keep-alive (PING) interval.
    pub keep_alive: Duration,
}

impl TransportLimits {
    /// The quinn transport configuration.
    pub fn transport(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.stream_receive_window(quinn::VarInt::from_u32(self.stream_window_bytes))
            .receive_window(quinn::VarInt::from_u32(self.connection_window_bytes))
            .send_window(u64::from(self.connection_window_bytes))
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(self.max_concurrent_streams))
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(self.idle_timeout).expect("idle timeouts are small"),
            ));
        t
    }
}

/// QUIC application close codes.
pub mod close {
    /// Normal shutdown.
    pub const SHUTDOWN: u32 = 0;
    /// The spoke is unknown or revoked.
    pub const REVOKED: u32 = 1;
    /// A protocol violation on the control stream.
    pub const PROTOCOL: u32 = 2;
    /// Replaced by a newer tunnel from the same spoke.
    pub const REPLACED: u32 = 3;
    /// QUIC stream reset code for a malformed frame.
    pub const STREAM_MALFORMED: u32 = 0x10;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Frame;

    #[tokio::test]
    async fn frames_cross_a_pipe_and_limits_hold() {
        let (mut a, b) = tokio::io::duplex(64);
        let frames = vec![Frame::Data(bytes::Bytes::from(vec![7u8; 1000])), Frame::End];
        let sent = frames.clone();
        let writer = tokio::spawn(async move {
            for f in &sent {
                write_frame(&mut a, f).await.unwrap();
            }
        });
        let mut r = FrameReader::new(b, 4096);
        assert_eq!(r.next().await.unwrap(), Some(frames[0].clone()));
        assert_eq!(r.next().await.unwrap(), Some(Frame::End));
        writer.await.unwrap();
        assert!(r.next().await.unwrap().is_none());

        let (mut a, b) = tokio::io::duplex(64);
        tokio::spawn(
            async move { write_frame(&mut a, &Frame::Data(vec![0u8; 5000].into())).await },
        );
        let mut r = FrameReader::new(b, 4096);
        assert!(matches!(
            r.next().await,
            Err(FrameIoError::Proto(ProtoError::TooLarge { .. }))
        ));
    }
}
