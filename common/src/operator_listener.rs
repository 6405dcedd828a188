//! The operator listener (`[metrics]`): `/metrics` for Prometheus, and
//! `/healthz` and `/readyz` for local checks, on an address of its own
//! (loopback unless the operator says otherwise), never on the client
//! listener. The metrics tell how a node is used (request rates, spokes,
//! steering), which is the operator's to see, not every client's.
//!
//! It speaks plain HTTP: keep it on loopback, or on an address only the
//! operator's network reaches (a firewall or security group in front).
//! `/healthz` and `/readyz` answer here as on the client listener, where
//! load balancers keep asking them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::{Body, full};
use crate::config::Problems;
use crate::http_server::{ConnectionLimit, Handler, Limits};
use crate::listener::ApiConfig;
use crate::problem::{ErrorCode, Problem};
use crate::source_limit::SourceLimit;

/// Connections the operator listener takes at once (scrapers and checks).
const MAX_CONNECTIONS: usize = 64;
/// Its idle timeout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Its largest request head.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The `[metrics]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the operator listener, such as `127.0.0.1:9460`; port 0
    /// picks a free port (logged). When a service manager passes the
    /// daemon its sockets, the one named `metrics` is served instead.
    pub listen: SocketAddr,
}

impl MetricsConfig {
    /// A section listening on `127.0.0.1:port` (each daemon's default).
    pub fn on_loopback(port: u16) -> MetricsConfig {
        MetricsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Adds a problem when the operator listener would share the client
    /// listener's address.
    pub fn validate(&self, api: &ApiConfig, p: &mut Problems) {
        if self.listen.port() != 0 && self.listen == api.listen {
            p.add(
                "metrics.listen",
                "must differ from api.listen: metrics are not for clients",
            );
        }
    }
}

/// What the operator listener answers with.
pub struct Answers {
    /// The metrics, as OpenMetrics text.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// Answers `/healthz` and `/readyz` (the daemon's own router).
    pub health: Handler,
}

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Answers")
    }
}

/// The handler of the operator listener: `GET`/`HEAD` of `/metrics`,
/// `/healthz` and `/readyz`; `404 route_not_found` for anything else.
pub fn handler(answers: Answers) -> Handler {
    let answers = Arc::new(answers);
    Arc::new(move |req: Request<Body>| {
        let answers = answers.clone();
        Box::pin(async move {
            match req.uri().path() {
                "/healthz" | "/readyz" => (answers.health)(req).await,
                "/metrics" => metrics(&answers, &req),
                _ => Problem::new(ErrorCode::RouteNotFound, "no route matches this path")
                    .into_response(),
            }
        })
    })
}

fn metrics(answers: &Answers, req: &Request<Body>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Problem::get_or_head_only();
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let (body, kind) = crate::metrics_text::negotiate((answers.metrics)(), accept);
    let mut resp = Response::new(if req.method() == Method::HEAD {
        crate::body::empty()
    } else {
        full(body)
    });
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    resp
}

/// Serves the operator listener on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, answers: Answers, shutdown: CancellationToken) {
    let limits = Limits {
        connections: ConnectionLimit::new(MAX_CONNECTIONS),
        per_source: SourceLimit::new(MAX_CONNECTIONS, Counter::default()),
        max_header_bytes: MAX_HEADER_BYTES,
        read_buffer_bytes: MAX_HEADER_BYTES,
        idle_timeout: IDLE_TIMEOUT,
        handshake_timeout: IDLE_TIMEOUT,
        shutdown_grace: Duration::from_secs(1),
        rtt_sink: None,
    };
    crate::http_server::serve(listener, None, limits, handler(answers), shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    fn answers() -> Answers {
        Answers {
            metrics: Arc::new(|| "# TYPE up gauge\nup 1\n# EOF\n".to_owned()),
            health: Arc::new(|req: Request<Body>| {
                Box::pin(async move {
                    let mut resp = Response::new(full(req.uri().path().to_owned()));
                    *resp.status_mut() = StatusCode::OK;
                    resp
                })
            }),
        }
    }

    async fn ask(method: Method, path: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(crate::body::empty())
            .unwrap();
        let resp = handler(answers())(req).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn it_answers_metrics_and_health_and_nothing_else() {
        let (status, body) = ask(Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("up 1") && !body.contains("# EOF"), "{body}");
        assert_eq!(
            ask(Method::HEAD, "/metrics").await,
            (StatusCode::OK, String::new())
        );
        assert_eq!(
            ask(Method::POST, "/metrics").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            ask(Method::GET, "/healthz").await,
            (StatusCode::OK, "/healthz".into())
        );
        assert_eq!(ask(Method::GET, "/readyz").await.1, "/readyz");
        for other in ["/", "/v1/accounts", "/metrics/x"] {
            assert_eq!(ask(Method::GET, other).await.0, StatusCode::NOT_FOUND);
        }
    }
}
