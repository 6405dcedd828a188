//! Requests to the hub through the tunnel: forwarded client requests, and
//! the spoke's own calls (grants, metadata, completion reports), one QUIC
//! stream each.

use std::sync::Arc;

use bytes::Bytes;
use ferry_common::body::{Body, full};
use ferry_common::http_server::ClientAddr;
use ferry_common::problem::{ErrorCode, Problem};
use ferry_common::proto::{Frame, RequestHead};
use ferry_common::tunnel_io::{FrameReader, body_from_frames, close};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;

use crate::metrics::Metrics;
use crate::tunnel::TunnelHandle;

/// Largest answer to the spoke's own calls.
const MAX_CALL_ANSWER: usize = 4 * 1024 * 1024;

/// Header fields that describe one connection, not the message: never
/// forwarded (RFC 9110 §7.6.1).
pub fn hop_by_hop(name: &HeaderName) -> bool {
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

/// The problem answered when the hub cannot be reached.
pub fn unreachable(detail: impl Into<String>) -> Problem {
    Problem::new(ErrorCode::HubUnreachable, detail)
}

/// Sends requests to the hub.
#[derive(Debug, Clone)]
pub struct HubClient {
    /// The tunnel.
    pub tunnel: TunnelHandle,
    /// Largest frame payload.
    pub max_frame: usize,
    /// The spoke's metrics.
    pub metrics: Arc<Metrics>,
}

impl HubClient {
    /// Sends `req` to the hub and returns its answer, body streaming.
    /// A request with a [`ClientAddr`] is a client's; without, the spoke's own.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, Problem> {
        let conn = self
            .tunnel
            .current()
            .ok_or_else(|| unreachable("the tunnel to the hub is down"))?;
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| unreachable(format!("the tunnel failed: {e}")))?;
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
        send.send_frame(&Frame::Request(head))
            .await
            .map_err(|e| unreachable(format!("the tunnel failed: {e}")))?;
        // The body goes up while the answer is awaited: the hub may answer
        // (401, 404) before reading it.
        let max = self.max_frame;
        tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(mut data) = f.into_data() {
                            while !data.is_empty() {
                                let piece = data.split_to(data.len().min(max));
                                if send.send_frame(&Frame::Data(piece)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Err(_) => {
                        // The client went away: tell the hub the body is broken.
                        send.reset(close::STREAM_MALFORMED);
                        return;
                    }
                }
            }
            if send.send_frame(&Frame::End).await.is_ok() {
                send.finish();
            }
        });
        let mut reader = FrameReader::new(recv, max);
        let head = match reader.next().await {
            Ok(Some(Frame::Response(h))) => h,
            Ok(_) => return Err(unreachable("the hub sent no answer")),
            Err(e) => return Err(unreachable(format!("the hub's answer failed: {e}"))),
        };
        let mut resp = Response::new(ferry_common::body::empty());
        *resp.status_mut() = StatusCode::from_u16(head.status)
            .map_err(|_| unreachable("the hub sent a bad status"))?;
        for (k, v) in head.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v))
                && !hop_by_hop(&k)
            {
                resp.headers_mut().append(k, v);
            }
        }
        *resp.body_mut() = body_from_frames(reader, "the hub's answer");
        Ok(resp)
    }

    /// The spoke's own JSON call: `POST path` with `body`, optionally on
    /// behalf of a client's `authorization`. Returns the status and body.
    pub async fn call(
        &self,
        path: &str,
        authorization: Option<&HeaderValue>,
        body: &impl serde::Serialize,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), Problem> {
        self.call_with(path, authorization, None, body).await
    }

    /// [`HubClient::call`] for a client known by its principal only (see
    /// `ferry_common::principal`).
    pub async fn call_as(
        &self,
        path: &str,
        principal: Option<&str>,
        body: &impl serde::Serialize,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), Problem> {
        self.call_with(path, None, principal, body).await
    }

    async fn call_with(
        &self,
        path: &str,
        authorization: Option<&HeaderValue>,
        principal: Option<&str>,
        body: &impl serde::Serialize,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), Problem> {
        let mut req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(serde_json::to_vec(body).expect("calls serialise")))
            .expect("a valid request");
        if let Some(a) = authorization {
            req.headers_mut().insert(header::AUTHORIZATION, a.clone());
        }
        if let Some(id) =
            ferry_common::request_id::current().and_then(|id| HeaderValue::from_str(&id).ok())
        {
            req.headers_mut()
                .insert(ferry_common::request_id::HEADER, id);
        }
        if let Some(p) = principal.and_then(|p| HeaderValue::from_str(p).ok()) {
            req.headers_mut().insert(ferry_common::principal::HEADER, p);
        }
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let mut body = body;
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| unreachable(format!("the hub's answer failed: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > MAX_CALL_ANSWER {
                    return Err(unreachable("the hub's answer is too large"));
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok((parts.status, parts.headers, Bytes::from(bytes)))
    }
}
