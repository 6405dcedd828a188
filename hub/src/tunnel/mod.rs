//! The hub's end of spoke tunnels: the QUIC endpoint and, for spokes whose
//! UDP is blocked, a TLS-over-TCP listener carrying the same frames on
//! HTTP/2 streams (mutual TLS with the hub's CA on both); the registry of
//! live spokes; and the sessions that answer their streams.

mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_common::proto::{ALPN, Heartbeat, Notice, SteeringAnnounce};
use ferry_common::tunnel_io::close;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::ca::HubCa;
use crate::config::TunnelConfig;

pub use session::{SpokeOwn, ViaSpoke, serve_quic, serve_tcp};

/// How long a tunnel replaced by a newer one from the same spoke stays open
/// for the requests still on it.
const REPLACED_GRACE: Duration = Duration::from_secs(5);

/// The hub's handle on one tunnel, whatever its transport.
#[derive(Debug, Clone)]
pub enum PeerLink {
    /// QUIC.
    Quic(quinn::Connection),
    /// HTTP/2 over TLS on TCP; cancelling ends the connection.
    Tcp(CancellationToken),
}

impl PeerLink {
    fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Self::Quic(c) => c.close(code.into(), reason),
            Self::Tcp(cancel) => cancel.cancel(),
        }
    }

    fn rtt(&self) -> Duration {
        match self {
            Self::Quic(c) => c.rtt(),
            Self::Tcp(_) => Duration::ZERO,
        }
    }

    /// `quic` or `tcp`.
    pub fn transport(&self) -> &'static str {
        match self {
            Self::Quic(_) => "quic",
            Self::Tcp(_) => "tcp",
        }
    }
}

/// A live tunnel.
#[derive(Debug)]
struct Live {
    id: u64,
    link: PeerLink,
    notices: mpsc::Sender<Notice>,
    since: Instant,
    last: Option<Heartbeat>,
    /// When the last heartbeat (or, before any, the hello) arrived.
    last_heard: Instant,
    /// What the spoke announced for steering in its hello.
    announce: Option<SteeringAnnounce>,
    draining: bool,
}

/// What steering needs to know of a connected spoke.
#[derive(Debug, Clone)]
pub struct LiveSteering {
    /// The spoke.
    pub name: String,
    /// Its public addresses, URL and capacity, if it announced them.
    pub announce: Option<SteeringAnnounce>,
    /// When the hub last heard a heartbeat (or the hello).
    pub last_heard: Instant,
    /// Transfers it reported streaming.
    pub active_transfers: u64,
    /// Whether it said it is shutting down.
    pub draining: bool,
}

/// What the registry tells about a connected spoke.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LiveInfo {
    /// `quic`, or `tcp` where UDP is blocked.
    pub transport: &'static str,
    /// Seconds since the tunnel came up.
    pub connected_secs: u64,
    /// Smoothed round-trip time to the spoke, milliseconds (QUIC only).
    pub rtt_ms: u64,
    /// Transfers the spoke reported streaming.
    pub active_transfers: u64,
    /// Content bytes per second it reported.
    pub bytes_per_sec: u64,
    /// Whether it said it is shutting down.
    pub draining: bool,
    /// Its public addresses, URL and capacity for steering.
    pub steering: Option<SteeringAnnounce>,
}

/// The spokes connected now, by name.
#[derive(Debug, Default)]
pub struct Registry {
    live: Mutex<HashMap<String, Live>>,
    next_id: AtomicU64,
}

impl Registry {
    /// Records a new tunnel and returns its id. An older tunnel from the
    /// same spoke is closed after a short grace, so requests on it finish.
    fn insert(
        &self,
        name: &str,
        link: PeerLink,
        notices: mpsc::Sender<Notice>,
        announce: Option<SteeringAnnounce>,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let live = Live {
            id,
            link,
            notices,
            since: Instant::now(),
            last: None,
            last_heard: tokio::time::Instant::now().into_std(),
            announce,
            draining: false,
        };
        let old = self
            .live
            .lock()
            .expect("registry poisoned")
            .insert(name.to_owned(), live);
        if let Some(old) = old {
            tokio::spawn(async move {
                tokio::time::sleep(REPLACED_GRACE).await;
                old.link
                    .close(close::REPLACED, b"replaced by a newer tunnel");
            });
        }
        id
    }

    /// Forgets a tunnel if it is still the current one.
    fn remove(&self, name: &str, id: u64) {
        let mut live = self.live.lock().expect("registry poisoned");
        if live.get(name).is_some_and(|l| l.id == id) {
            live.remove(name);
        }
    }

    fn heartbeat(&self, name: &str, hb: Heartbeat) {
        if let Some(l) = self.live.lock().expect("registry poisoned").get_mut(name) {
            l.last = Some(hb);
            l.last_heard = tokio::time::Instant::now().into_std();
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
                l.link.close(close::REVOKED, why.as_bytes());
                true
            }
            None => false,
        }
    }

    /// Sends `notice` to every connected spoke on its control stream; best
    /// effort (a spoke that misses it still drops its grants when they
    /// expire).
    pub fn broadcast(&self, notice: Notice) {
        for (name, l) in self.live.lock().expect("registry poisoned").iter() {
            if l.notices.try_send(notice.clone()).is_err() {
                tracing::warn!(spoke.id = %name, "could not queue a notice");
            }
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
                    client_rtts: Vec::new(),
                });
                (
                    name.clone(),
                    LiveInfo {
                        transport: l.link.transport(),
                        connected_secs: l.since.elapsed().as_secs(),
                        rtt_ms: l.link.rtt().as_millis() as u64,
                        active_transfers: hb.active_transfers,
                        bytes_per_sec: hb.bytes_per_sec,
                        draining: l.draining,
                        steering: l.announce.clone(),
                    },
                )
            })
            .collect()
    }

    /// Every connected spoke as steering sees it.
    pub fn steering_view(&self) -> Vec<LiveSteering> {
        self.live
            .lock()
            .expect("registry poisoned")
            .iter()
            .map(|(name, l)| LiveSteering {
                name: name.clone(),
                announce: l.announce.clone(),
                last_heard: l.last_heard,
                active_transfers: l.last.as_ref().map_or(0, |h| h.active_transfers),
                draining: l.draining,
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

/// The TLS configuration of both tunnel listeners: a server certificate
/// fresh from the CA, client certificates required to chain to the CA.
pub fn server_tls(cfg: &TunnelConfig, ca: &HubCa) -> anyhow::Result<rustls::ServerConfig> {
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
    Ok(tls)
}

/// The QUIC endpoint on `socket` (bound, or passed by the service
/// manager, before the hub runs).
pub fn quic_endpoint(
    cfg: &TunnelConfig,
    tls: rustls::ServerConfig,
    socket: std::net::UdpSocket,
) -> anyhow::Result<quinn::Endpoint> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(cfg.limits().transport()));
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

/// How often a hub says it is up, and reads who else is.
const HUB_ANNOUNCE_EVERY: Duration = Duration::from_secs(3);
/// A hub not heard from for this long is left out of the list.
const HUB_GONE_AFTER_MS: i64 = 30_000;

/// The hubs sharing this hub's store (this one included), as spokes
/// should know them: each hub announces its tunnel addresses in the store,
/// and tells its spokes the list in `welcome` and at enrolment.
#[derive(Debug)]
pub struct HubList {
    id: String,
    me: Option<ferry_common::proto::HubAddrs>,
    known: Mutex<Vec<ferry_common::proto::HubAddrs>>,
}

impl HubList {
    /// The list of a hub called `id` whose tunnels are at `me` (`None`:
    /// it cannot tell, so it is left out).
    pub fn new(id: String, me: Option<ferry_common::proto::HubAddrs>) -> Self {
        let known = Mutex::new(me.clone().into_iter().collect());
        Self { id, me, known }
    }

    /// This hub's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The hubs known now.
    pub fn current(&self) -> Vec<ferry_common::proto::HubAddrs> {
        self.known.lock().expect("hub list poisoned").clone()
    }

    /// Announces this hub and reads the others; true when the list changed.
    /// While the primary takes no writes no hub can announce itself, so
    /// the list is kept as it was rather than emptied as rows age.
    async fn refresh(&self, store: &crate::store::Store) -> bool {
        if let Some(me) = &self.me {
            let (q, t) = (me.tunnel_addr.to_string(), me.tunnel_tcp_addr.to_string());
            if let Err(e) = store.announce_hub(&self.id, &q, &t).await {
                tracing::debug!(error = %e, "could not announce this hub in the store");
                return false;
            }
        }
        if !store.writable() {
            return false;
        }
        let rows = match store.live_hubs(HUB_GONE_AFTER_MS).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the hubs from the store");
                return false;
            }
        };
        let mut hubs: Vec<_> = rows
            .into_iter()
            .filter_map(|(id, q, t)| {
                Some(ferry_common::proto::HubAddrs {
                    id,
                    tunnel_addr: q.parse().ok()?,
                    tunnel_tcp_addr: t.parse().ok()?,
                })
            })
            .collect();
        // This hub is in its own list even before its row is readable (a
        // replica behind the primary).
        if let Some(me) = &self.me
            && !hubs.iter().any(|h| h.id == me.id)
        {
            hubs.insert(0, me.clone());
        }
        let total = hubs.len();
        if total > ferry_common::proto::MAX_HUBS {
            // This hub stays in its own list.
            if let Some(i) = hubs.iter().position(|h| h.id == self.id)
                && i >= ferry_common::proto::MAX_HUBS
            {
                hubs.swap(i, ferry_common::proto::MAX_HUBS - 1);
            }
            hubs.truncate(ferry_common::proto::MAX_HUBS);
        }
        let mut known = self.known.lock().expect("hub list poisoned");
        if *known == hubs {
            return false;
        }
        *known = hubs;
        if total > ferry_common::proto::MAX_HUBS {
            tracing::warn!(
                hubs = total,
                max = ferry_common::proto::MAX_HUBS,
                "more hubs share the store than spokes take: telling them of the first ones only"
            );
        }
        true
    }

    /// Keeps the list current until `shutdown`, and tells the connected
    /// spokes when it changes.
    pub async fn keep_current(
        self: Arc<Self>,
        state: Arc<AppState>,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
    ) {
        loop {
            let changed = self.refresh(&state.store).await;
            state.metrics.hubs_known(self.current().len());
            if changed {
                let hubs = self.current();
                tracing::info!(hubs = hubs.len(), "the hubs sharing the store changed");
                registry.broadcast(Notice {
                    hubs,
                    ..Notice::new(ferry_common::proto::NoticeKind::Hubs, "the hubs changed")
                });
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(HUB_ANNOUNCE_EVERY) => {}
            }
        }
    }
}
