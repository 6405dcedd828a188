//! The hub's authoritative DNS server for the steering zone, on UDP and
//! TCP at one address.
//!
//! It runs on a thread of its own with a single-threaded runtime: a query
//! is answered start to finish in the task that read it, with no hand-off
//! between threads, which at a hundred thousand queries a second costs more
//! than the answer itself. The wire format is hickory's (`hickory-proto`);
//! the serving loops are ferry's, because hickory's server spawns a task and
//! sends through a channel for every UDP query. [`answer`] decides what to
//! say, [`limit`] how often to say it to one source.

pub mod answer;
pub mod limit;
pub mod metrics;
#[cfg(test)]
mod tests;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferry_common::source_limit::SourceLimit;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DnsConfig;
use answer::Responder;
use limit::RateLimiter;
use metrics::Transport;

/// The DNS server's sockets, on one port (see [`crate::listeners`]).
#[derive(Debug)]
pub struct DnsSockets {
    /// Queries over UDP.
    pub udp: std::net::UdpSocket,
    /// Queries over TCP.
    pub tcp: std::net::TcpListener,
}

impl DnsSockets {
    /// The UDP socket's address (the same port as TCP's, unless a service
    /// manager passed sockets on two).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Starts the server on a thread of its own; it stops when `shutdown`
/// fires, and the thread ends after that.
pub fn spawn(
    sockets: DnsSockets,
    responder: Arc<Responder>,
    cfg: DnsConfig,
    limits: Arc<limit::LimitSettings>,
    shutdown: CancellationToken,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the DNS runtime")?;
    let thread = std::thread::Builder::new()
        .name("ferry-dns".into())
        .spawn(move || {
            runtime.block_on(async move {
                let udp = match UdpSocket::from_std(sockets.udp) {
                    Ok(s) => s,
                    Err(e) => return tracing::error!(error = %e, "DNS: cannot use the UDP socket"),
                };
                let tcp = match TcpListener::from_std(sockets.tcp) {
                    Ok(s) => s,
                    Err(e) => {
                        return tracing::error!(error = %e, "DNS: cannot use the TCP listener");
                    }
                };
                let limiter = Some(RateLimiter::with_settings(
                    &cfg.rate_limit,
                    limits,
                    Instant::now(),
                ));
                let per_source = SourceLimit::new(
                    cfg.max_tcp_connections_per_source,
                    responder.metrics().tcp_refused.clone(),
                );
                let tcp_task = tokio::spawn(serve_tcp(
                    tcp,
                    responder.clone(),
                    TcpLimits {
                        connections: cfg.max_tcp_connections,
                        per_source,
                        idle: Duration::from_secs(cfg.tcp_idle_timeout_secs),
                    },
                    shutdown.clone(),
                ));
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = serve_udp(&udp, &responder, limiter) => {}
                }
                let _ = tcp_task.await;
            });
        })
        .context("cannot start the DNS thread")?;
    Ok(thread)
}

/// Queries answered before their answers are sent.
const BATCH: usize = 32;

/// Answers datagrams until the caller drops the future. What has arrived
/// is read (up to [`BATCH`] queries), answered, and only then sent, answers
/// back to back: the askers then find several answers at each wake-up
/// instead of one.
async fn serve_udp(socket: &UdpSocket, responder: &Responder, mut limiter: Option<RateLimiter>) {
    let mut packet = vec![0u8; 4096];
    let mut answers: Vec<(Vec<u8>, SocketAddr)> = (0..BATCH)
        .map(|_| {
            (
                Vec::with_capacity(1500),
                SocketAddr::from(([0, 0, 0, 0], 0)),
            )
        })
        .collect();
    loop {
        if socket.readable().await.is_err() {
            continue;
        }
        let mut ready = 0;
        while ready < BATCH {
            let (n, source) = match socket.try_recv_from(&mut packet) {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on
                    // Linux; they concern that peer only.
                    tracing::debug!(error = %e, "DNS: UDP receive failed");
                    continue;
                }
            };
            let (out, to) = &mut answers[ready];
            if responder.respond(
                &packet[..n],
                source.ip(),
                Transport::udp,
                limiter.as_mut(),
                out,
            ) {
                *to = source;
                ready += 1;
            }
        }
        for (out, to) in &answers[..ready] {
            let sent = match socket.try_send_to(out, *to) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    socket.send_to(out, *to).await
                }
                other => other,
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, destination = %to, "DNS: UDP send failed");
            }
        }
    }
}

/// The bounds of DNS over TCP.
struct TcpLimits {
    /// Connections open at once.
    connections: usize,
    /// Connections one source may hold open.
    per_source: Arc<SourceLimit>,
    /// A connection with no query for this long is closed.
    idle: Duration,
}

/// Accepts DNS-over-TCP connections until `shutdown`; each takes one of
/// the permits and one of its source's slots (or is closed at once when
/// its source holds its share), and is closed when idle.
async fn serve_tcp(
    listener: TcpListener,
    responder: Arc<Responder>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.connections));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "DNS: TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = limits.per_source.admit(peer.ip()) else {
            tracing::debug!(client.addr = %peer, "DNS: refused a TCP connection: its source holds its share");
            continue;
        };
        let (responder, shutdown, idle) = (responder.clone(), shutdown.clone(), limits.idle);
        tracker.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tcp_connection(stream, peer, &responder, idle) => {}
            }
            drop(slot);
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Answers the length-prefixed messages of one connection (RFC 1035
/// §4.2.2) until it closes, breaks the framing or stays idle.
async fn tcp_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    responder: &Responder,
    idle: Duration,
) {
    let _ = stream.set_nodelay(true);
    let mut packet = Vec::new();
    let mut out = Vec::with_capacity(1500);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let len = usize::from(u16::from_be_bytes(len));
        packet.resize(len, 0);
        match tokio::time::timeout(idle, stream.read_exact(&mut packet)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        if !responder.respond(&packet, peer.ip(), Transport::tcp, None, &mut out) {
            // Not a query (or not even a header): the stream is not DNS.
            return;
        }
        let Ok(n) = u16::try_from(out.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&out);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
