//! `/console`: the web console's files, built from `console/` when the hub
//! was built (see `build.rs`) and embedded in the binary, so a hub serves
//! them with no network fetch and no files beside it.
//!
//! Every answer carries a strict Content-Security-Policy: scripts and
//! styles from this origin only (the console has no inline script or
//! style), connections to this origin and to the spokes clients may be
//! sent to now (uploads go to the nearest), no framing, no plugins.
//! `index.html` and the download worker are revalidated on every load
//! (their URLs are fixed: the page names the others); the others have
//! their content's hash in their names and are cached for a year. Each is stored compressed with brotli and gzip beside the
//! original, and sent in the best encoding the client takes.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use ferry_common::body::{Body, empty, full};
use ferry_common::problem::{ErrorCode, Problem};

use crate::api::{ApiResult, AppState};

/// One embedded file.
pub(crate) struct Asset {
    name: &'static str,
    body: &'static [u8],
    gzip: Option<&'static [u8]>,
    br: Option<&'static [u8]>,
    etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// The files whose URLs do not change with their content: revalidated on
/// every load.
const REVALIDATED: &[&str] = &["index.html", "download-worker.js"];

/// Whether the console was built into this binary (else `/console` says
/// how to build it).
pub fn built() -> bool {
    BUILT
}

/// The policy for the console's pages, with `spokes` (their API base
/// URLs) allowed as places to connect to.
fn policy(spokes: &[String]) -> String {
    let mut connect = String::from("'self'");
    for url in spokes {
        if let Some(origin) = origin_of(url) {
            connect.push(' ');
            connect.push_str(&origin);
        }
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src {connect}; worker-src 'self'; frame-src 'self'; form-action 'none'; \
frame-ancestors 'none'; base-uri 'none'"
    )
}

/// `scheme://host[:port]` of an `http` or `https` URL, if it is one whose
/// text cannot change the policy it goes into.
fn origin_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = uri.authority()?.as_str();
    if authority.contains('@')
        || !authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    {
        return None;
    }
    Some(format!("{scheme}://{authority}"))
}

/// Whether `accept` (an `Accept-Encoding` value) takes the coding `name`
/// (named, or `*`, and not with `q=0`).
fn takes(accept: Option<&str>, name: &str) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|part| {
            let mut params = part.split(';');
            let coding = params.next().unwrap_or_default().trim();
            let refused = params.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case(name) || coding == "*") && !refused
        })
    })
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Answers `GET`/`HEAD /console…`; `rest` is the path after `/console`.
pub fn serve(state: &Arc<AppState>, rest: &str, req: &Request<Body>) -> ApiResult {
    let name = match rest.trim_start_matches('/') {
        "" => "index.html",
        other => other,
    };
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return Err(Problem::new(
            ErrorCode::RouteNotFound,
            "the console has no such file",
        ));
    };
    let mut resp = Response::new(empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(asset.name)),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if REVALIDATED.contains(&asset.name) {
            "no-cache"
        } else {
            "public, max-age=31536000, immutable"
        }),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    let spokes: Vec<String> = state
        .steering
        .probe_targets()
        .into_iter()
        .map(|(_, url)| url)
        .collect();
    if let Ok(v) = HeaderValue::from_str(&policy(&spokes)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    if unchanged {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    let accept = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok());
    // Brotli, then gzip, where the client takes them.
    let (body, coding) = if let Some(b) = asset.br.filter(|_| takes(accept, "br")) {
        (b, Some("br"))
    } else if let Some(g) = asset.gzip.filter(|_| takes(accept, "gzip")) {
        (g, Some("gzip"))
    } else {
        (asset.body, None)
    };
    let h = resp.headers_mut();
    if let Some(c) = coding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c));
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if req.method() != Method::HEAD {
        *resp.body_mut() = full(bytes::Bytes::from_static(body));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_this_origin_and_the_spokes_only() {
        let p = policy(&[
            "https://fra1.edge.example.com/v1/probe".into(),
            "http://127.0.0.2:8081".into(),
            "javascript:alert(1)".into(),
            "https://evil.example; script-src *".into(),
            "https://user@host.example".into(),
        ]);
        assert!(p.contains("script-src 'self';"), "{p}");
        assert!(
            p.contains("connect-src 'self' https://fra1.edge.example.com http://127.0.0.2:8081;"),
            "{p}"
        );
        assert!(!p.contains("evil") && !p.contains("javascript") && !p.contains('@'));
        assert!(p.contains("frame-ancestors 'none'") && p.contains("default-src 'none'"));
        assert!(
            !p.contains("unsafe"),
            "no unsafe-inline or unsafe-eval: {p}"
        );
    }

    #[test]
    fn encodings_are_taken_as_the_client_says() {
        assert!(takes(Some("gzip, deflate, br, zstd"), "br"));
        assert!(takes(Some("gzip;q=1.0, br;q=0.5"), "br"));
        assert!(!takes(Some("gzip, br;q=0"), "br"));
        assert!(takes(Some("*"), "gzip"));
        assert!(!takes(Some("identity"), "gzip"));
        assert!(!takes(None, "gzip"));
    }

    #[test]
    fn the_index_and_its_script_and_style_are_embedded() {
        let index = ASSETS.iter().find(|a| a.name == "index.html").unwrap();
        let text = std::str::from_utf8(index.body).unwrap();
        if !built() {
            assert!(text.contains("not built"));
            return;
        }
        let script = ASSETS
            .iter()
            .find(|a| a.name.starts_with("app-") && a.name.ends_with(".js"))
            .expect("the script is embedded");
        let script = std::str::from_utf8(script.body).unwrap();
        assert!(
            ASSETS.iter().any(|a| a.name == "download-worker.js")
                && script.contains("/console/download-worker.js"),
            "the download worker is embedded and the script registers it"
        );
        for a in ASSETS.iter().filter(|a| a.name != "index.html") {
            assert!(
                text.contains(&format!("/console/{}", a.name)) || a.name == "download-worker.js",
                "{} named in index.html",
                a.name
            );
            assert!(
                a.br.is_some() && a.gzip.is_some(),
                "{} stored compressed",
                a.name
            );
        }
        assert!(
            !text.contains("<script>") && !text.contains(" style="),
            "no inline script or style"
        );
    }
}
