//! The benchmark's own HTTP/1.1 client: one connection per transfer, bodies
//! discarded as they arrive, uploads streamed from one buffer in memory, and
//! a closed-loop load generator for small requests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// Servers that speak HTTPS, and the TLS configuration to reach them with
/// (the HTTPS scenario's spoke and nginx); every other address is plain.
static TLS: Mutex<Vec<(SocketAddr, Arc<rustls::ClientConfig>)>> = Mutex::new(Vec::new());

/// Connections to `addr` use TLS with `config` from now on.
pub fn use_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) {
    TLS.lock().expect("poisoned").push((addr, config));
}

fn tls_for(addr: SocketAddr) -> Option<Arc<rustls::ClientConfig>> {
    let known = TLS.lock().expect("poisoned");
    known
        .iter()
        .find(|(a, _)| *a == addr)
        .map(|(_, c)| c.clone())
}

/// Opens one HTTP/1.1 connection (over TLS to the servers [`use_tls`]
/// named).
async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Body>> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let Some(config) = tls_for(addr) else {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        return Ok(send);
    };
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with {addr}"))?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// What to ask for.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where.
    pub addr: SocketAddr,
    /// The request path, with the query.
    pub path: String,
    /// A bearer token, for ferry.
    pub token: Option<String>,
}

impl Target {
    fn request(&self, method: Method) -> http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(&self.path)
            .header(http::header::HOST, self.addr.to_string());
        if let Some(t) = &self.token {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b
    }
}

/// GETs `path` from `addr` on a new connection; the body as text.
pub async fn get_text(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut send = connect(addr).await?;
    let req = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(empty())?;
    let resp = send.send_request(req).await?;
    if resp.status() != StatusCode::OK {
        bail!("GET {path} answered {}", resp.status());
    }
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Downloads `target` on a new connection and returns the bytes received.
pub async fn download(target: &Target) -> anyhow::Result<u64> {
    let mut send = connect(target.addr).await?;
    let resp = send
        .send_request(target.request(Method::GET).body(empty())?)
        .await?;
    if resp.status() != StatusCode::OK {
        bail!("GET {} answered {}", target.path, resp.status());
    }
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            got += data.len() as u64;
        }
    }
    Ok(got)
}

/// Uploads `size` bytes, `block` repeated, to `target` on a new connection,
/// with `headers` added. Returns the status.
pub async fn upload(
    target: &Target,
    size: u64,
    block: Bytes,
    headers: &[(&str, String)],
) -> anyhow::Result<StatusCode> {
    let mut send = connect(target.addr).await?;
    let stream = futures_util::stream::unfold(size, move |left| {
        let block = block.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(block.len() as u64);
            Some((
                Ok::<_, BoxError>(Frame::data(block.slice(..n as usize))),
                left - n,
            ))
        }
    });
    let mut req = target
        .request(Method::PUT)
        .header(http::header::CONTENT_LENGTH, size);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = send
        .send_request(req.body(BodyExt::boxed(StreamBody::new(stream)))?)
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        let said = String::from_utf8_lossy(&body[..body.len().min(1024)]);
        bail!("PUT {} answered {status}: {said}", target.path);
    }
    Ok(status)
}

/// `size` bytes of `block` repeated, starting at `from`, as a body.
fn repeated(block: Bytes, from: u64, size: u64) -> Body {
    let stream = futures_util::stream::unfold((from, size), move |(at, left)| {
        let block = block.clone();
        async move {
            if left == 0 {
                return None;
            }
            let start = (at % block.len() as u64) as usize;
            let n = left.min((block.len() - start) as u64) as usize;
            Some((
                Ok::<_, BoxError>(Frame::data(block.slice(start..start + n))),
                (at + n as u64, left - n as u64),
            ))
        }
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// Creates a tus upload of `size` bytes named `name` in `connection`
/// at `addr`: its path.
pub async fn tus_create(
    addr: SocketAddr,
    token: &str,
    connection: &str,
    name: &str,
    size: u64,
) -> anyhow::Result<String> {
    let mut send = connect(addr).await?;
    let target = Target {
        addr,
        path: format!("/v1/connections/{connection}/uploads?path={name}"),
        token: Some(token.to_owned()),
    };
    let resp = send
        .send_request(
            target
                .request(Method::POST)
                .header("tus-resumable", "1.0.0")
                .header("upload-length", size)
                .body(empty())?,
        )
        .await?;
    let status = resp.status();
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    resp.into_body().collect().await?;
    match (status, location) {
        (StatusCode::CREATED, Some(l)) => Ok(l),
        (s, _) => bail!("creating an upload answered {s}"),
    }
}

/// Sends `size` bytes of the upload at `upload` (a path at `addr`) from
/// `offset`, in PATCH requests of `chunk` bytes on one connection, as tus
/// clients do; the offset after the last.
pub async fn tus_patch(
    addr: SocketAddr,
    token: &str,
    upload: &str,
    offset: u64,
    size: u64,
    chunk: u64,
    block: &Bytes,
) -> anyhow::Result<u64> {
    let mut send = connect(addr).await?;
    let target = Target {
        addr,
        path: upload.to_owned(),
        token: Some(token.to_owned()),
    };
    let mut at = offset;
    while at < offset + size {
        let n = chunk.min(offset + size - at);
        send.ready().await?;
        let resp = send
            .send_request(tus_append(&target, at, n).body(repeated(block.clone(), at, n))?)
            .await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        if status != StatusCode::NO_CONTENT {
            bail!("PATCH at {at} answered {status}");
        }
        at += n;
    }
    Ok(at)
}

/// The head of a tus append of `len` bytes at `offset` to `target`.
fn tus_append(target: &Target, offset: u64, len: u64) -> http::request::Builder {
    target
        .request(Method::PATCH)
        .header("tus-resumable", "1.0.0")
        .header(
            http::header::CONTENT_TYPE,
            "application/offset+octet-stream",
        )
        .header("upload-offset", offset)
        .header(http::header::CONTENT_LENGTH, len)
}

/// Starts a PATCH of `size` bytes at `offset` of the upload at `upload`
/// whose body is what the caller sends on the returned channel; the task
/// ends with the answer's status.
pub async fn tus_patch_fed(
    addr: SocketAddr,
    token: &str,
    upload: &str,
    offset: u64,
    size: u64,
) -> anyhow::Result<(
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<anyhow::Result<StatusCode>>,
)> {
    let mut send = connect(addr).await?;
    let target = Target {
        addr,
        path: upload.to_owned(),
        token: Some(token.to_owned()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    let req = tus_append(&target, offset, size).body(BodyExt::boxed(StreamBody::new(stream)))?;
    let task = tokio::spawn(async move { Ok(send.send_request(req).await?.status()) });
    Ok((tx, task))
}

/// Asks the upload at `upload` (a path at `addr`) for its offset.
pub async fn tus_offset(addr: SocketAddr, token: &str, upload: &str) -> anyhow::Result<u64> {
    let mut send = connect(addr).await?;
    let target = Target {
        addr,
        path: upload.to_owned(),
        token: Some(token.to_owned()),
    };
    let resp = send
        .send_request(
            target
                .request(Method::HEAD)
                .header("tus-resumable", "1.0.0")
                .body(empty())?,
        )
        .await?;
    let offset = resp
        .headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    match (resp.status(), offset) {
        (StatusCode::OK, Some(o)) => Ok(o),
        (s, _) => bail!("HEAD {upload} answered {s}"),
    }
}

/// The result of a closed-loop run of small requests.
#[derive(Debug, Clone, Copy)]
pub struct LoadResult {
    /// Requests answered per second.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Requests answered.
    pub requests: usize,
}

/// Runs `conns` connections, each sending GET `target` back to back, for
/// `duration` (after a warm-up of a fifth of it) or until `max_requests`
/// answers, whichever comes first.
pub async fn closed_loop(
    target: &Target,
    conns: usize,
    duration: Duration,
    max_requests: usize,
) -> anyhow::Result<LoadResult> {
    let warmup = duration / 5;
    let started = Instant::now();
    let measure_from = started + warmup;
    let deadline = measure_from + duration;
    let per_conn = max_requests.div_ceil(conns);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let target = target.clone();
        tasks.spawn(async move {
            let mut send = connect(target.addr).await?;
            let mut lat = Vec::with_capacity(per_conn.min(1 << 20));
            let mut first = None;
            let mut last = measure_from;
            while lat.len() < per_conn {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                send.ready().await?;
                let resp = send
                    .send_request(target.request(Method::GET).body(empty())?)
                    .await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                if status != StatusCode::OK {
                    bail!("GET {} answered {status}", target.path);
                }
                let t1 = Instant::now();
                if t0 >= measure_from {
                    first.get_or_insert(t0);
                    last = t1;
                    lat.push(t1 - t0);
                }
            }
            Ok::<_, anyhow::Error>((lat, first.unwrap_or(measure_from), last))
        });
    }
    let mut all = Vec::new();
    let mut begin = deadline;
    let mut end = measure_from;
    while let Some(done) = tasks.join_next().await {
        let (lat, first, last) = done??;
        all.extend(lat);
        begin = begin.min(first);
        end = end.max(last);
    }
    if all.is_empty() {
        bail!("no request was answered in the measured window");
    }
    all.sort_unstable();
    let pct = |p: f64| {
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i].as_secs_f64() * 1000.0
    };
    let window = end.saturating_duration_since(begin).as_secs_f64().max(1e-6);
    Ok(LoadResult {
        rps: all.len() as f64 / window,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        requests: all.len(),
    })
}
