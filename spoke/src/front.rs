//! The spoke's HTTP front. Health, readiness and the probe are answered
//! here (metrics only on the operator listener, `[metrics]`);
//! `GET`, `HEAD` and `PUT` of files, resumable uploads' bytes and S3
//! object reads, writes and parts stream directly with the provider (the
//! data path); every other API request is forwarded to the hub through the
//! tunnel and answered by the hub's own router.

use std::sync::Arc;

use ferry_common::body::{Body, full};
use ferry_common::content::files;
use ferry_common::contract::GrantOp;
use ferry_common::problem::{ErrorCode, Problem};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use percent_encoding::percent_decode_str;

use crate::data_path::{DataPath, Decision, SpokeHost};
use crate::hub_client::HubClient;
use crate::metrics::{MethodLabel, Metrics, SpokeRoute};
use crate::uploads::SpokeUploads;
use ferry_common::uploads;

/// What the front needs.
#[derive(Debug)]
pub struct Front {
    /// Requests to the hub.
    pub hub: HubClient,
    /// The direct data path.
    pub data: Arc<DataPath>,
    /// The spoke's metrics.
    pub metrics: Arc<Metrics>,
    /// The S3 door's host names (`api.s3_domains`).
    pub s3_hosts: ferry_common::s3_door::Hosts,
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

/// A path segment percent-decoded; `None` when it is not UTF-8 then.
fn decode(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// `(connection, path)` of a file route, decoded; `None` for anything else
/// (including paths that do not decode: the hub answers those).
fn file_route(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/v1/connections/")?;
    let (conn, tail) = rest.split_once('/').filter(|(c, _)| !c.is_empty())?;
    let file = tail.strip_prefix("files/")?;
    Some((decode(conn)?, decode(file)?))
}

/// A resumable-upload request whose bytes stream here.
#[derive(Debug, PartialEq, Eq)]
enum UploadRoute {
    /// `PATCH /v1/uploads/{id}`.
    Append(String),
    /// `POST /v1/connections/{conn}/uploads` with a first chunk; the
    /// object's path from the query, if it names one.
    Create(String, Option<String>),
}

/// The upload route of a request that carries upload bytes, if it is one.
/// Creations without a body (but for a final upload's), status,
/// termination and `OPTIONS` carry none and go to the hub.
fn upload_route(req: &Request<Body>) -> Option<UploadRoute> {
    let path = req.uri().path();
    if req.method() == Method::PATCH {
        let id = path.strip_prefix("/v1/uploads/")?;
        return (!id.is_empty() && !id.contains('/'))
            .then(|| decode(id))
            .flatten()
            .map(UploadRoute::Append);
    }
    // A final upload (tus concatenation) is put together where it is
    // created, so the spoke takes it too.
    let joins = req
        .headers()
        .get("upload-concat")
        .is_some_and(|v| v.as_bytes().starts_with(b"final"));
    if req.method() != Method::POST || !(uploads::serve::carries_body(req) || joins) {
        return None;
    }
    let conn = path
        .strip_prefix("/v1/connections/")?
        .strip_suffix("/uploads")?;
    if conn.is_empty() || conn.contains('/') {
        return None;
    }
    let query = req.uri().query().unwrap_or("");
    // The first `path=`, as the hub reads it.
    let named = match query.split('&').find_map(|pair| pair.strip_prefix("path=")) {
        Some(v) => Some(decode(&v.replace('+', " "))?),
        None => None,
    };
    Some(UploadRoute::Create(decode(conn)?, named))
}

/// Answers one request, counting it by route, method and status, in a
/// span with its request id (kept from the request, else made here),
/// which goes on to the hub with the request and back to the client.
pub async fn handle(front: Arc<Front>, mut req: Request<Body>) -> Response<Body> {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    let method = MethodLabel::from(req.method());
    let id = ferry_common::request_id::for_request(req.headers());
    let header = HeaderValue::from_str(&id).ok();
    if let Some(v) = &header {
        req.headers_mut()
            .insert(ferry_common::request_id::HEADER, v.clone());
    }
    let mut resp = ferry_common::cors::serve(req, |req| async {
        let span = tracing::info_span!("request", request.id = %id);
        tracing::debug!(parent: &span, method = %req.method(), path = req.uri().path(), "request");
        let (route, resp) =
            ferry_common::request_id::scope(Arc::from(id), route_and_answer(&front, req))
                .instrument(span.clone())
                .await;
        front
            .metrics
            .request(route, method, resp.status().as_u16(), started.elapsed());
        tracing::debug!(parent: &span, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "answered");
        resp
    })
    .await;
    if let Some(v) = header {
        resp.headers_mut()
            .insert(ferry_common::request_id::HEADER, v);
    }
    resp
}

async fn route_and_answer(
    front: &Arc<Front>,
    mut req: Request<Body>,
) -> (SpokeRoute, Response<Body>) {
    let path = req.uri().path();
    let local_route = match path {
        "/healthz" => Some(SpokeRoute::healthz),
        "/readyz" => Some(SpokeRoute::readyz),
        "/v1/probe" => Some(SpokeRoute::probe),
        _ => None,
    };
    if let Some(route) = local_route {
        return (route, local(front, req));
    }
    if path.starts_with("/internal/") {
        // The hub's routes for spokes are never a client's to call.
        let refused = Problem::new(ErrorCode::RouteNotFound, "no route matches this path");
        return (SpokeRoute::internal, refused.into_response());
    }
    if ferry_common::s3_door::speaks_s3(&req) {
        match crate::s3::serve(&front.data, &front.s3_hosts, req).await {
            Ok(resp) => return (SpokeRoute::s3, resp),
            Err(back) => req = back,
        }
    } else if let Some(auth) = req.headers().get(header::AUTHORIZATION).cloned()
        && let Some(upload) = upload_route(&req)
    {
        let host = Arc::new(SpokeUploads::new(front.data.clone(), auth));
        let served = match upload {
            // Boxed: an upload's future is large.
            UploadRoute::Append(id) => Box::pin(uploads::serve::patch(host, &id, req)).await,
            UploadRoute::Create(conn, path) => {
                Box::pin(uploads::serve::create(host, &conn, path.as_deref(), req)).await
            }
        };
        match served {
            Ok(resp) => return (SpokeRoute::upload, resp),
            // A provider only the hub reaches: the hub takes it whole.
            Err(back) => req = back,
        }
    }
    let path = req.uri().path();
    let content = matches!(*req.method(), Method::GET | Method::HEAD | Method::PUT);
    if content
        && let Some((conn, file)) = file_route(path)
        && let Some(auth) = req.headers().get(header::AUTHORIZATION).cloned()
    {
        let op = if *req.method() == Method::PUT {
            GrantOp::Write
        } else {
            GrantOp::Read
        };
        match front.data.decide(&auth, &conn, &file, op).await {
            Decision::Serve(target, granted) => {
                let host = Arc::new(SpokeHost::new(front.data.clone(), granted));
                let resp = files::serve(host, &target, &file, req)
                    .await
                    .unwrap_or_else(Problem::into_response);
                return (SpokeRoute::file, resp);
            }
            Decision::Answer(resp) => return (SpokeRoute::file, resp),
            Decision::Forward => {}
        }
    }
    front.metrics.forwarded();
    let resp = front
        .hub
        .send(req)
        .await
        .unwrap_or_else(Problem::into_response);
    (SpokeRoute::forwarded, resp)
}

fn local(front: &Front, req: Request<Body>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Problem::get_or_head_only();
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/v1/probe" => ferry_common::probe::response(),
        _ => match front.hub.tunnel.current() {
            Some(_) => text(StatusCode::OK, "ready\n"),
            None => Problem::new(ErrorCode::HubUnreachable, "the tunnel to the hub is down")
                .into_response(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_routes_are_recognised_and_decoded() {
        assert_eq!(
            file_route("/v1/connections/local/files/a%20b/c.txt"),
            Some(("local".into(), "a b/c.txt".into()))
        );
        assert_eq!(file_route("/v1/connections/local/list/a"), None);
        assert_eq!(file_route("/v1/connections/local"), None);
        assert_eq!(file_route("/v1/connections/local/files/%ff"), None);
    }
}
