//! A small HTTP client for tests, on hyper's own client.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The request body type.
pub type ReqBody = BoxBody<Bytes, BoxError>;

/// A pooled HTTP/1.1 client.
#[derive(Debug, Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, ReqBody>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A new client.
    pub fn new() -> Self {
        Self {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// A client whose connections leave from `source`, so a server sees
    /// it in that client network (any 127.x address on loopback).
    pub fn bound_to(source: std::net::IpAddr) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(source));
        Self {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
        }
    }
}

/// A ferry API at a base URL, optionally with a bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The client.
    pub client: Client,
    /// The bearer token sent with every request.
    pub token: Option<String>,
}

impl Api {
    /// An API at `base`, with no credentials.
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            client: Client::new(),
            token: None,
        }
    }

    /// An API at `base` reached from `source`.
    pub fn from_source(base: impl Into<String>, source: std::net::IpAddr) -> Self {
        Self {
            base: base.into(),
            client: Client::bound_to(source),
            token: None,
        }
    }

    /// The same API with `token` as bearer.
    pub fn as_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// A request to `path` (which starts with `/`).
    pub fn req(&self, method: Method, path: &str) -> Req {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            builder = builder.header("authorization", format!("Bearer {t}"));
        }
        Req {
            client: self.client.clone(),
            builder,
            body: empty(),
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Req {
        self.req(Method::GET, path)
    }

    /// `HEAD path`.
    pub fn head(&self, path: &str) -> Req {
        self.req(Method::HEAD, path)
    }

    /// `PUT path`.
    pub fn put(&self, path: &str) -> Req {
        self.req(Method::PUT, path)
    }

    /// `POST path`.
    pub fn post(&self, path: &str) -> Req {
        self.req(Method::POST, path)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Req {
        self.req(Method::DELETE, path)
    }
}

fn empty() -> ReqBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// A request being built.
#[derive(Debug)]
pub struct Req {
    client: Client,
    builder: http::request::Builder,
    body: ReqBody,
}

impl Req {
    /// Adds a header field.
    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> Self {
        self.builder = self.builder.header(name, value.as_ref());
        self
    }

    /// Replaces the bearer token (or removes it with `None`).
    pub fn bearer(mut self, token: Option<&str>) -> Self {
        if let Some(h) = self.builder.headers_mut() {
            h.remove("authorization");
            if let Some(t) = token {
                h.insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
        }
        self
    }

    /// A JSON body.
    pub fn json(mut self, value: &serde_json::Value) -> Self {
        self.builder = self.builder.header("content-type", "application/json");
        self.body = Full::new(Bytes::from(serde_json::to_vec(value).unwrap()))
            .map_err(|never| match never {})
            .boxed();
        self
    }

    /// A raw body sent in one piece.
    pub fn body(mut self, data: impl Into<Bytes>) -> Self {
        self.body = Full::new(data.into())
            .map_err(|never| match never {})
            .boxed();
        self
    }

    /// A body streamed in chunks of `chunk` bytes, with a Content-Length.
    pub fn body_chunked(mut self, data: Bytes, chunk: usize) -> Self {
        self.builder = self
            .builder
            .header("content-length", data.len().to_string());
        self.body_unsized(data, chunk)
    }

    /// A body streamed in chunks of `chunk` bytes with no Content-Length
    /// (HTTP/1.1 chunked).
    pub fn body_unsized(mut self, data: Bytes, chunk: usize) -> Self {
        let frames = (0..data.len())
            .step_by(chunk.max(1))
            .map(move |i| {
                Ok::<_, BoxError>(Frame::data(data.slice(i..(i + chunk).min(data.len()))))
            })
            .collect::<Vec<_>>();
        self.body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
        self
    }

    /// A body of `total` announced bytes of which only `sent` arrive before
    /// the stream fails, as when a client dies mid-upload.
    pub fn body_truncated(mut self, data: Bytes, total: usize) -> Self {
        self.builder = self.builder.header("content-length", total.to_string());
        let frames = vec![
            Ok::<_, BoxError>(Frame::data(data)),
            Err::<Frame<Bytes>, BoxError>("client gave up".into()),
        ];
        self.body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
        self
    }

    /// A body fed through a channel, for uploads paced by the test; the
    /// request announces `total` bytes.
    pub fn body_channel(mut self, total: usize) -> (Self, tokio::sync::mpsc::Sender<Bytes>) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        self.builder = self.builder.header("content-length", total.to_string());
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
        });
        self.body = StreamBody::new(stream).boxed();
        (self, tx)
    }

    /// Sends the request; the response body stays unread.
    pub async fn send_raw(self) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        let req = self.builder.body(self.body).expect("a valid request");
        self.client.inner.request(req).await
    }

    /// Sends the request and reads the whole response.
    pub async fn send(self) -> Resp {
        let resp = self
            .send_raw()
            .await
            .expect("the request reaches the server");
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .expect("the response body arrives")
            .to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// A response read whole.
#[derive(Debug, Clone)]
pub struct Resp {
    /// The status.
    pub status: StatusCode,
    /// The header fields.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Resp {
    /// The body as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header field as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Asserts the status, showing the body when it differs; returns self.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    /// Asserts a problem+json answer with this status and code.
    #[track_caller]
    pub fn expect_problem(self, status: u16, code: &str) -> Self {
        let resp = self.expect(status);
        if resp.status != StatusCode::NOT_MODIFIED {
            assert_eq!(
                resp.header("content-type").as_deref(),
                Some("application/problem+json")
            );
            let body = resp.json();
            assert_eq!(body["code"], code, "{body}");
            assert_eq!(body["status"], status, "{body}");
        }
        resp
    }
}
