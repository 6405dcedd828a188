//! `GET /v1/probe`: the smallest answer a node gives, which clients time to
//! measure their round trip to each spoke (and report to the hub for
//! steering). No credentials, no body, never cached; browsers may time it
//! from any origin.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, empty};

/// The answer to a probe.
pub fn response() -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert("timing-allow-origin", HeaderValue::from_static("*"));
    resp
}
