//! Cross-origin requests from browsers (the Fetch standard's CORS), so that
//! a web page — ferry's console on a hub, or an application's own — can
//! call any node's API, the console uploading straight to the nearest
//! spoke.
//!
//! Every route authenticates with an `Authorization: Bearer` credential
//! the page itself attaches; nothing rides on cookies or the client's
//! address. A page from another origin can therefore do nothing it could
//! not do with the same token from anywhere else, so every origin is
//! allowed (`*`, never with credentials), as public APIs that take bearer
//! tokens do.

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use crate::body::{Body, empty};

/// The answer headers a page may read: those of ferry's files, checksums,
/// resumable uploads (tus and the IETF draft) and errors.
const EXPOSED: &str = "location, etag, last-modified, content-length, content-range, \
accept-ranges, retry-after, repr-digest, x-ferry-checksum-crc64nvme, x-request-id, \
tus-resumable, tus-version, tus-extension, tus-max-size, tus-checksum-algorithm, \
upload-offset, upload-length, upload-expires, upload-metadata, upload-defer-length, \
upload-concat, upload-complete, upload-draft-interop-version, upload-limit";

/// What a preflight may ask for.
const METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// How long a browser may keep a preflight's answer.
const MAX_AGE_SECS: &str = "600";

/// The longest `Access-Control-Request-Headers` echoed back.
const MAX_REQUEST_HEADERS: usize = 2048;

/// Answers `req` for the page that may have sent it: a preflight at once
/// (no route sees it), any other request by `answer`, whose response is
/// marked for the page when the request came from one (`Origin`).
pub async fn serve<B, F>(req: Request<B>, answer: impl FnOnce(Request<B>) -> F) -> Response<Body>
where
    F: std::future::Future<Output = Response<Body>>,
{
    if let Some(preflight) = preflight(&req) {
        return preflight;
    }
    let from_page = req.headers().contains_key(header::ORIGIN);
    let mut resp = answer(req).await;
    decorate(from_page, &mut resp);
    resp
}

/// The answer to a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`), or `None` for any other request. A
/// plain `OPTIONS` (tus's discovery) goes on to its route.
fn preflight<B>(req: &Request<B>) -> Option<Response<Body>> {
    let h = req.headers();
    if req.method() != Method::OPTIONS
        || !h.contains_key(header::ORIGIN)
        || !h.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let out = resp.headers_mut();
    allow_origin(out);
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    // The headers asked for, if they are header names: any request header
    // is as harmless from a page as from anywhere else (see above).
    if let Some(asked) = h.get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        && asked.len() <= MAX_REQUEST_HEADERS
        && let Ok(text) = asked.to_str()
        && text
            .split(',')
            .map(str::trim)
            .all(|n| n.is_empty() || http::HeaderName::from_bytes(n.as_bytes()).is_ok())
    {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECS),
    );
    Some(resp)
}

/// Adds the CORS answer headers when the request came from a page
/// (`Origin` present).
fn decorate(from_page: bool, resp: &mut Response<Body>) {
    if !from_page {
        return;
    }
    let out = resp.headers_mut();
    allow_origin(out);
    out.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
}

fn allow_origin(out: &mut HeaderMap) {
    out.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(Method::OPTIONS).uri("/v1/keys");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn a_preflight_is_answered_with_what_it_asked_for() {
        let resp = preflight(&options(&[
            ("origin", "https://console.example"),
            ("access-control-request-method", "PATCH"),
            (
                "access-control-request-headers",
                "authorization, tus-resumable, upload-offset, content-type",
            ),
        ]))
        .expect("a preflight");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], "*");
        assert!(h.get("access-control-allow-credentials").is_none());
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("PATCH")
        );
        assert_eq!(
            h["access-control-allow-headers"],
            "authorization, tus-resumable, upload-offset, content-type"
        );
    }

    #[test]
    fn other_options_requests_go_on_to_their_route() {
        assert!(preflight(&options(&[("tus-resumable", "1.0.0")])).is_none());
        assert!(preflight(&options(&[("origin", "https://a.example")])).is_none());
        let get = Request::get("/")
            .header("origin", "https://a.example")
            .header("access-control-request-method", "GET")
            .body(())
            .unwrap();
        assert!(preflight(&get).is_none());
    }

    #[test]
    fn requested_headers_that_are_not_header_names_are_not_echoed() {
        let resp = preflight(&options(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "x-ok, bad name"),
        ]))
        .unwrap();
        assert!(resp.headers().get("access-control-allow-headers").is_none());
    }

    #[test]
    fn answers_to_pages_say_any_origin_and_what_they_may_read() {
        let mut resp = Response::new(empty());
        decorate(false, &mut resp);
        assert!(resp.headers().is_empty());
        decorate(true, &mut resp);
        assert_eq!(resp.headers()["access-control-allow-origin"], "*");
        let exposed = resp.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap();
        for name in ["location", "upload-offset", "tus-resumable", "etag"] {
            assert!(exposed.contains(name), "{name} in {exposed}");
        }
    }
}
