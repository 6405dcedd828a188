//! Requests to the hub through the tunnel: forwarded client requests, and
//! the spoke's own calls (grants, metadata, completion reports), one
//! stream each. The messages are `ferry_common::proto`'s heads and
//! `ferry_common::contract`'s calls, the same types the hub reads.

use bytes::Bytes;
use ferry_common::body::{Body, full};
use ferry_common::contract::InternalCall;
use ferry_common::http_server::ClientAddr;
use ferry_common::problem::{ErrorCode, Problem};
use ferry_common::proto::head::TooLarge;
use ferry_common::proto::{Frame, RequestHead};
use ferry_common::tunnel_io::{FrameReader, SendBodyError, body_from_frames, close, send_body};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;

use crate::tunnel::TunnelHandle;

/// Largest answer to the spoke's own calls.
const MAX_CALL_ANSWER: usize = 4 * 1024 * 1024;

/// The problem answered when the hub cannot be reached.
pub fn unreachable(detail: impl Into<String>) -> Problem {
    Problem::new(ErrorCode::HubUnreachable, detail)
}

/// On whose behalf the spoke makes one of its own calls.
#[derive(Debug, Clone, Copy)]
pub enum OnBehalf<'a> {
    /// A client, by its `Authorization` (the hub checks it: grants).
    Client(&'a HeaderValue),
    /// A client request the hub granted: the grant's token (which also
    /// carries the client's principal, so its next reads through any hub
    /// see what the call records).
    Grant(&'a str),
    /// A completion report under a grant, with its id, which the hub
    /// records so that a report delivered twice is applied once.
    Report {
        /// The grant's token.
        grant: &'a str,
        /// The report's id.
        id: &'a str,
    },
    /// Nobody but the spoke: the call carries what the hub checks
    /// (`s3_authorize`, a client's signed head).
    Spoke,
}

/// The hub's answer to one of the spoke's own calls.
#[derive(Debug)]
pub struct CallAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Its header fields.
    pub headers: http::HeaderMap,
    /// Its body, whole.
    pub body: Bytes,
}

/// Sends requests to the hub.
#[derive(Debug, Clone)]
pub struct HubClient {
    /// The tunnel.
    pub tunnel: TunnelHandle,
    /// Largest frame payload.
    pub max_frame: usize,
}

impl HubClient {
    /// Sends `req` to the hub and returns its answer, body streaming.
    /// A request with a [`ClientAddr`] is a client's; without, the spoke's own.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, Problem> {
        let (mut parts, body) = req.into_parts();
        // A body the client ended with its head is said to be empty, whatever
        // the method: the tunnel's frames cannot tell the hub that before
        // they end (a signed S3 request, say, needs its length up front).
        if http_body::Body::is_end_stream(&body)
            && !parts.headers.contains_key(header::CONTENT_LENGTH)
            && !parts.headers.contains_key(header::TRANSFER_ENCODING)
        {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, http::HeaderValue::from_static("0"));
        }
        let client = parts
            .extensions
            .get::<ClientAddr>()
            .map(|c| c.0.to_string());
        let head = RequestHead::from_parts(&parts, client);
        // What the hub's decoder would refuse is the client's to fix.
        head.fits(self.max_frame).map_err(|e| match e {
            TooLarge::Uri => Problem::new(ErrorCode::UriTooLong, e.to_string()),
            TooLarge::Headers => Problem::new(ErrorCode::HeadersTooLarge, e.to_string()),
        })?;
        let conn = self
            .tunnel
            .current()
            .ok_or_else(|| unreachable("the tunnel to the hub is down"))?;
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| unreachable(format!("the tunnel failed: {e}")))?;
        send.send_frame(&Frame::Request(head))
            .await
            .map_err(|e| unreachable(format!("the tunnel failed: {e}")))?;
        // The body goes up while the answer is awaited: the hub may answer
        // (401, 404) before reading it.
        let max = self.max_frame;
        tokio::spawn(async move {
            match send_body(&mut send, body, max).await {
                Ok(()) => send.finish(),
                // The client went away: tell the hub the body is broken.
                Err(SendBodyError::Body(_)) => send.reset(close::STREAM_MALFORMED),
                Err(SendBodyError::Stream(_)) => {}
            }
        });
        let mut reader = FrameReader::new(recv, max);
        let head = match reader.next().await {
            Ok(Some(Frame::Response(h))) => h,
            Ok(_) => return Err(unreachable("the hub sent no answer")),
            Err(e) => return Err(unreachable(format!("the hub's answer failed: {e}"))),
        };
        head.into_response(body_from_frames(reader, "the hub's answer"))
            .map_err(|e| unreachable(format!("the hub's answer is not HTTP: {e}")))
    }

    /// One of the spoke's own calls: `POST` of `body` as JSON to `call`'s
    /// path, on `behalf` of a client; the whole answer.
    pub async fn call(
        &self,
        call: InternalCall,
        behalf: OnBehalf<'_>,
        body: &impl serde::Serialize,
    ) -> Result<CallAnswer, Problem> {
        let mut req = Request::post(call.path())
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(serde_json::to_vec(body).expect("calls serialise")))
            .expect("a valid request");
        match behalf {
            OnBehalf::Client(authorization) => {
                req.headers_mut()
                    .insert(header::AUTHORIZATION, authorization.clone());
            }
            OnBehalf::Grant(token) => {
                if let Ok(v) = HeaderValue::from_str(token) {
                    req.headers_mut()
                        .insert(ferry_common::contract::GRANT_HEADER, v);
                }
            }
            OnBehalf::Report { grant, id } => {
                if let Ok(v) = HeaderValue::from_str(grant) {
                    req.headers_mut()
                        .insert(ferry_common::contract::GRANT_HEADER, v);
                }
                if let Ok(v) = HeaderValue::from_str(id) {
                    req.headers_mut()
                        .insert(ferry_common::contract::REPORT_ID_HEADER, v);
                }
            }
            OnBehalf::Spoke => {}
        }
        if let Some(id) =
            ferry_common::request_id::current().and_then(|id| HeaderValue::from_str(&id).ok())
        {
            req.headers_mut()
                .insert(ferry_common::request_id::HEADER, id);
        }
        let (parts, mut body) = self.send(req).await?.into_parts();
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
        Ok(CallAnswer {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(bytes),
        })
    }
}
