//! The spoke's HTTP front: health, readiness and metrics answered here;
//! every API request forwarded to the hub through the tunnel, one QUIC
//! stream each, and answered by the hub's own router.

use std::sync::Arc;

use bytes::Bytes;
use ferry_common::body::{Body, BoxError, full};
use ferry_common::http_server::ClientAddr;
use ferry_common::problem::{ErrorCode, Problem};
use ferry_common::proto::{Frame, RequestHead};
use ferry_common::tunnel_io::{FrameReader, close, write_frame};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, StreamBody};

use crate::metrics::Metrics;
use crate::tunnel::TunnelHandle;

/// What the front needs.
#[derive(Debug)]
pub struct Front {
    /// The tunnel to the hub.
    pub tunnel: TunnelHandle,
    /// The spoke's metrics.
    pub metrics: Arc<Metrics>,
    /// Largest frame payload.
    pub max_frame: usize,
}

/// Header fields that describe one connection, not the message: never
/// forwarded (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Answers one request.
pub async fn handle(front: Arc<Front>, req: Request<Body>) -> Response<Body> {
    let local = matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics");
    if local && req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        let mut resp =
            Problem::new(ErrorCode::MethodNotAllowed, "allowed: GET, HEAD").into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match front.tunnel.current() {
            Some(_) => text(StatusCode::OK, "ready\n"),
            None => Problem::new(ErrorCode::HubUnreachable, "the tunnel to the hub is down")
                .into_response(),
        },
        "/metrics" => {
            let mut resp = Response::new(full(front.metrics.encode()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        _ => forward(&front, req)
            .await
            .unwrap_or_else(Problem::into_response),
    }
}

fn unreachable(detail: impl Into<String>) -> Problem {
    Problem::new(ErrorCode::HubUnreachable, detail)
}

async fn forward(front: &Front, req: Request<Body>) -> Result<Response<Body>, Problem> {
    let conn = front
        .tunnel
        .current()
        .ok_or_else(|| unreachable("the tunnel to the hub is down"))?;
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| unreachable(format!("the tunnel failed: {e}")))?;
    front.metrics.forwarded();
    let (parts, mut body) = req.into_parts();
    let head = RequestHead {
        method: parts.method.as_str().to_owned(),
        uri: parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned(),
        headers: parts
            .headers
            .iter()
            .filter(|(k, _)| !hop_by_hop(k))
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        client_addr: parts
            .extensions
            .get::<ClientAddr>()
            .map(|c| c.0.to_string()),
    };
    write_frame(&mut send, &Frame::Request(head))
        .await
        .map_err(|e| unreachable(format!("the tunnel failed: {e}")))?;
    // The body goes up while the answer is awaited: the hub may answer
    // (401, 404) before reading it.
    let max = front.max_frame;
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(mut data) = f.into_data() {
                        while !data.is_empty() {
                            let piece = data.split_to(data.len().min(max));
                            if write_frame(&mut send, &Frame::Data(piece)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Err(_) => {
                    // The client went away: tell the hub the body is broken.
                    let _ = send.reset(close::STREAM_MALFORMED.into());
                    return;
                }
            }
        }
        if write_frame(&mut send, &Frame::End).await.is_ok() {
            let _ = send.finish();
        }
    });
    let mut reader = FrameReader::new(recv, max);
    let head = match reader.next().await {
        Ok(Some(Frame::Response(h))) => h,
        Ok(other) => {
            return Err(unreachable(format!(
                "the hub sent no answer ({:?})",
                other.map(|f| format!("{f:?}").chars().take(40).collect::<String>())
            )));
        }
        Err(e) => return Err(unreachable(format!("the hub's answer failed: {e}"))),
    };
    let mut resp = Response::new(ferry_common::body::empty());
    *resp.status_mut() =
        StatusCode::from_u16(head.status).map_err(|_| unreachable("the hub sent a bad status"))?;
    for (k, v) in head.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v))
            && !hop_by_hop(&k)
        {
            resp.headers_mut().append(k, v);
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(8);
    tokio::spawn(async move {
        loop {
            let item = match reader.next().await {
                Ok(Some(Frame::Data(b))) => Ok(b),
                Ok(Some(Frame::End)) => return,
                Ok(None) => Err("the hub's answer ended early".into()),
                Ok(Some(_)) => Err("unexpected frame in the hub's answer".into()),
                Err(e) => Err(BoxError::from(e)),
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
    *resp.body_mut() = StreamBody::new(frames).boxed_unsync();
    Ok(resp)
}
