//! The streams of forwarded requests: each carries one request head and
//! its body from the spoke, is answered by the hub's own router, and
//! carries the answer back. A stream that does not start with a request,
//! or whose head is not HTTP, is reset; the tunnel goes on.

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_common::body::Body;
use ferry_common::http_server::ClientAddr;
use ferry_common::link::{RecvHalf, SendHalf};
use ferry_common::proto::head::HeadError;
use ferry_common::proto::{Frame, RequestHead, ResponseHead};
use ferry_common::tunnel_io::{FrameReader, SendBodyError, body_from_frames, close, send_body};

use crate::api::{self, AppState};

/// Marks a request that arrived through a spoke's tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaSpoke(pub String);

/// Marks a request the spoke made on its own behalf (no client address in
/// its head), as opposed to one it forwarded for a client. Only these may
/// use the internal routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpokeOwn;

/// Answers one forwarded request with the hub's router.
pub(super) async fn forward(
    state: Arc<AppState>,
    spoke: String,
    remote: SocketAddr,
    mut send: SendHalf,
    recv: RecvHalf,
    max_frame: usize,
) {
    let _stream = state.metrics.stream();
    let mut reader = FrameReader::new(recv, max_frame);
    let head = match reader.next().await {
        Ok(Some(Frame::Request(h))) => h,
        Ok(other) => {
            tracing::warn!(frame = ?other.map(|f| format!("{f:?}").chars().take(80).collect::<String>()), "a stream did not start with a request; resetting it");
            send.reset(close::STREAM_MALFORMED);
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "malformed frame; resetting the stream");
            send.reset(close::STREAM_MALFORMED);
            reader.get_mut().stop(close::STREAM_MALFORMED);
            return;
        }
    };
    let req = match build_request(head, remote, &spoke, reader) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "unusable forwarded request; resetting the stream");
            send.reset(close::STREAM_MALFORMED);
            return;
        }
    };
    let resp = api::handle(state, req).await;
    if let Err(e) = send_response(&mut send, resp, max_frame).await {
        tracing::debug!(error = %e, "the spoke went away while the answer was sent");
        send.reset(close::STREAM_MALFORMED);
    }
}

/// The request a head describes, its body read from the stream's frames,
/// marked with the client's address (the spoke's own address for the
/// spoke's own calls) and with the spoke it came through.
fn build_request(
    head: RequestHead,
    remote: SocketAddr,
    spoke: &str,
    reader: FrameReader<RecvHalf>,
) -> Result<http::Request<Body>, HeadError> {
    let client = head.client_addr.as_deref().map(str::parse::<SocketAddr>);
    let own = client.is_none();
    let mut req = head.into_request(body_from_frames(reader, "the request body"))?;
    let client = client.and_then(Result::ok).unwrap_or(remote);
    req.extensions_mut().insert(ClientAddr(client));
    req.extensions_mut().insert(ViaSpoke(spoke.to_owned()));
    if own {
        req.extensions_mut().insert(SpokeOwn);
    }
    Ok(req)
}

async fn send_response(
    send: &mut SendHalf,
    resp: http::Response<Body>,
    max_frame: usize,
) -> Result<(), SendBodyError> {
    let (parts, body) = resp.into_parts();
    send.send_frame(&Frame::Response(ResponseHead::from_parts(&parts)))
        .await?;
    send_body(send, body, max_frame).await?;
    send.finish();
    Ok(())
}
