//! Connections that do nothing cannot starve a node: a connection with no
//! request in flight for `api.idle_timeout_secs` is closed, HTTP/2 ones
//! that only answer the server's keep-alive pings included, while a slow
//! download longer than the timeout goes on; and one source holding
//! `api.max_connections_per_source` connections has its next one closed
//! at once while other sources are served.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_tests::scenarios::tenant;
use ferry_tests::{Api, Hub, HubOptions};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

const IDLE_SECS: u64 = 2;

/// A TCP connection to `to` leaving from `from`.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    socket
        .connect(to)
        .await
        .expect("the listener takes the connection")
}

/// Sends `GET /healthz` over HTTP/1.1 on `tcp` and returns what came back
/// before the server stopped sending (at most 5 s): the answer, or
/// nothing when the connection was closed unanswered.
async fn healthz_on(tcp: &mut TcpStream) -> String {
    let _ = tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: ferry\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"ok\n") {
                    break;
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Opens an HTTP/2 connection (prior knowledge) to `addr`, asks
/// `/healthz` once, and returns a task that ends when the server closes
/// the connection, with the time it took from then.
async fn h2_connection(addr: SocketAddr) -> tokio::task::JoinHandle<Duration> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .expect("an h2 handshake");
    // The client's half answers the server's pings as long as it runs.
    let closed = tokio::spawn(async move {
        let _ = conn.await;
        Instant::now()
    });
    let req = http::Request::get(format!("http://{addr}/healthz"))
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.expect("an answer");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok\n");
    let asked = Instant::now();
    tokio::spawn(async move {
        let _keep = sender;
        closed.await.unwrap() - asked
    })
}

#[tokio::test]
async fn h2_connections_that_only_answer_pings_are_closed_and_free_their_slots() {
    let hub = Hub::start_with(HubOptions {
        api_extra: format!("idle_timeout_secs = {IDLE_SECS}\nmax_connections = 4\n"),
        ..HubOptions::default()
    });
    // Every slot taken by a connection that asks once, then only answers
    // the server's pings (every second).
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(h2_connection(hub.addr).await);
    }
    // A health check waits for a slot: it gets one once the idle ones
    // are closed.
    let health = tokio::time::timeout(
        Duration::from_secs(IDLE_SECS * 5),
        Api::new(hub.url()).get("/healthz").send(),
    )
    .await
    .expect("the health check is answered once idle connections are closed");
    health.expect(200);
    for conn in idle {
        let after = tokio::time::timeout(Duration::from_secs(IDLE_SECS * 5), conn)
            .await
            .expect("the server closes an idle h2 connection despite its pings")
            .unwrap();
        assert!(
            after >= Duration::from_millis(IDLE_SECS * 1000 - 100),
            "closed after {after:?}, before the idle timeout"
        );
    }
    // HTTP/1.1 keep-alive: closed after the timeout too.
    let mut tcp = TcpStream::connect(hub.addr).await.unwrap();
    assert!(healthz_on(&mut tcp).await.starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(IDLE_SECS * 5), tcp.read(&mut buf))
        .await
        .expect("the server closes an idle HTTP/1.1 connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection ends without another byte");
    assert!(started.elapsed() >= Duration::from_millis(IDLE_SECS * 1000 - 100));
}

#[tokio::test]
async fn a_download_longer_than_the_idle_timeout_is_not_idle() {
    let hub = Hub::start_with(HubOptions {
        api_extra: format!("idle_timeout_secs = {IDLE_SECS}\n"),
        ..HubOptions::default()
    });
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let data = ferry_tests::pattern(16 << 20, 7);
    t.api
        .put("/v1/connections/local/files/big.bin")
        .body(data.clone())
        .send()
        .await
        .expect(201);
    let resp = t
        .api
        .get("/v1/connections/local/files/big.bin")
        .send_raw()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    // Read slowly for twice the idle timeout: bytes move, a request is in
    // flight, so nothing is cut.
    let slow_until = Instant::now() + Duration::from_secs(IDLE_SECS * 2);
    while Instant::now() < slow_until {
        let more = got.len() + 1;
        ferry_tests::read_at_least(&mut body, &mut got, more).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ferry_tests::read_rest(&mut body, &mut got, "the download is not cut").await;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "every byte arrives");
}

#[tokio::test]
async fn one_source_cannot_hold_more_than_its_share() {
    let hub = Hub::start_with(HubOptions {
        api_extra: "max_connections = 16\nmax_connections_per_source = 3\n".into(),
        ..HubOptions::default()
    });
    let greedy = Ipv4Addr::new(127, 0, 0, 1);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = connect_from(greedy, hub.addr).await;
        assert!(healthz_on(&mut tcp).await.starts_with("HTTP/1.1 200"));
        held.push(tcp);
    }
    // The fourth is closed unanswered.
    let mut fourth = connect_from(greedy, hub.addr).await;
    assert_eq!(healthz_on(&mut fourth).await, "", "over its share");
    let refused = ferry_tests::metric(
        &hub.metrics_url(),
        "ferry_http_connections_refused_total",
        &[],
    )
    .await;
    assert_eq!(refused, 1.0);
    // Another source is served, health checks included.
    let other = Api::from_source(hub.url(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    other.get("/healthz").send().await.expect(200);
    other.get("/readyz").send().await.expect(200);
    // A connection closed frees a slot for its source.
    drop(held.pop());
    let served = ferry_tests::eventually(Duration::from_secs(5), async || {
        let mut tcp = connect_from(greedy, hub.addr).await;
        healthz_on(&mut tcp).await.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(served, "a freed slot is not given back");
}
