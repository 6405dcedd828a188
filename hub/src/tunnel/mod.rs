//! The hub's end of spoke tunnels: the QUIC endpoint (mutual TLS with the
//! hub's CA), the registry of live spokes, and the sessions that answer
//! their streams.

mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_common::proto::{ALPN, Frame, Heartbeat, Notice};
use ferry_common::tunnel_io::{bind_udp, close, write_frame};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::ca::HubCa;
use crate::config::TunnelConfig;

pub use session::{SpokeOwn, ViaSpoke, serve};

/// A live tunnel.
#[derive(Debug)]
struct Live {
    conn: quinn::Connection,
    since: Instant,
    last: Option<Heartbeat>,
    draining: bool,
}

/// What the registry tells about a connected spoke.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LiveInfo {
    /// Seconds since the tunnel came up.
    pub connected_secs: u64,
    /// Smoothed round-trip time to the spoke, milliseconds.
    pub rtt_ms: u64,
    /// Transfers the spoke reported streaming.
    pub active_transfers: u64,
    /// Content bytes per second it reported.
    pub bytes_per_sec: u64,
    /// Whether it said it is shutting down.
    pub draining: bool,
}

/// The spokes connected now, by name.
#[derive(Debug, Default)]
pub struct Registry {
    live: Mutex<HashMap<String, Live>>,
}

impl Registry {
    /// Records a new tunnel, closing an older one from the same spoke.
    fn insert(&self, name: &str, conn: quinn::Connection) {
        let old = self.live.lock().expect("registry poisoned").insert(
            name.to_owned(),
            Live {
                conn,
                since: Instant::now(),
                last: None,
                draining: false,
            },
        );
        if let Some(old) = old {
            old.conn
                .close(close::REPLACED.into(), b"replaced by a newer tunnel");
        }
    }

    /// Forgets a tunnel if it is still the current one.
    fn remove(&self, name: &str, conn: &quinn::Connection) {
        let mut live = self.live.lock().expect("registry poisoned");
        if live
            .get(name)
            .is_some_and(|l| l.conn.stable_id() == conn.stable_id())
        {
            live.remove(name);
        }
    }

    fn heartbeat(&self, name: &str, hb: Heartbeat) {
        if let Some(l) = self.live.lock().expect("registry poisoned").get_mut(name) {
            l.last = Some(hb);
        }
    }

    fn draining(&self, name: &str) {
        if let Some(l) = self.live.lock().expect("registry poisoned").get_mut(name) {
            l.draining = true;
        }
    }

    /// Closes a spoke's tunnel at once; true if it was connected.
    pub fn disconnect(&self, name: &str, why: &str) -> bool {
        let live = self.live.lock().expect("registry poisoned").remove(name);
        match live {
            Some(l) => {
                l.conn.close(close::REVOKED.into(), why.as_bytes());
                true
            }
            None => false,
        }
    }

    /// Sends `notice` to every connected spoke, each on a stream of its
    /// own; best effort (a spoke that misses it still drops its grants
    /// when they expire).
    pub fn broadcast(&self, notice: Notice) {
        let conns: Vec<(String, quinn::Connection)> = self
            .live
            .lock()
            .expect("registry poisoned")
            .iter()
            .map(|(n, l)| (n.clone(), l.conn.clone()))
            .collect();
        for (name, conn) in conns {
            let frame = Frame::Notice(notice.clone());
            tokio::spawn(async move {
                let sent = async {
                    let (mut send, _recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
                    write_frame(&mut send, &frame)
                        .await
                        .map_err(|e| e.to_string())?;
                    send.finish().map_err(|e| e.to_string())
                };
                if let Err(e) = sent.await {
                    tracing::warn!(spoke.id = %name, error = %e, "could not send a notice");
                }
            });
        }
    }

    /// The live spokes' state.
    pub fn snapshot(&self) -> HashMap<String, LiveInfo> {
        self.live
            .lock()
            .expect("registry poisoned")
            .iter()
            .map(|(name, l)| {
                let hb = l.last.clone().unwrap_or(Heartbeat {
                    seq: 0,
                    active_transfers: 0,
                    bytes_per_sec: 0,
                });
                (
                    name.clone(),
                    LiveInfo {
                        connected_secs: l.since.elapsed().as_secs(),
                        rtt_ms: l.conn.rtt().as_millis() as u64,
                        active_transfers: hb.active_transfers,
                        bytes_per_sec: hb.bytes_per_sec,
                        draining: l.draining,
                    },
                )
            })
            .collect()
    }

    fn names(&self) -> Vec<String> {
        self.live
            .lock()
            .expect("registry poisoned")
            .keys()
            .cloned()
            .collect()
    }
}

/// Binds the tunnel endpoint: QUIC on UDP, a server certificate fresh from
/// the CA, and client certificates required to chain to the CA.
pub fn bind(cfg: &TunnelConfig, ca: &HubCa) -> anyhow::Result<quinn::Endpoint> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert, key) = ca.issue_server(&cfg.server_name)?;
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone())?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(cfg.limits().transport()));
    let socket = bind_udp(cfg.listen)?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

/// Closes the tunnels of spokes revoked elsewhere (by `ferry-hub spoke
/// revoke` on the same database) within `every`.
pub async fn sweep_revoked(
    state: Arc<AppState>,
    registry: Arc<Registry>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        for name in registry.names() {
            if let Ok(true) = state.store.spoke_revoked(&name).await {
                tracing::info!(spoke.id = %name, "closing the tunnel of a revoked spoke");
                registry.disconnect(&name, "revoked");
            }
        }
    }
}
