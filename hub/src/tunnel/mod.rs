//! The hub's end of spoke tunnels: the QUIC endpoint and, for spokes whose
//! UDP is blocked, a TLS-over-TCP listener carrying the same frames on
//! HTTP/2 streams (mutual TLS with the hub's CA on both).
//!
//! - [`accept`]: both listeners' accept loops, bounded by
//!   `tunnel.max_tunnels`, the transports' handshakes and who the peer is;
//! - [`session`]: one tunnel's control stream (hello, heartbeats, notices);
//! - [`forward`]: the streams of forwarded requests, answered by the hub's
//!   own router;
//! - [`registry`]: the spokes connected now; [`hubs`]: the hubs sharing the
//!   store, as spokes learn them.

mod accept;
pub mod allowed;
mod forward;
mod hubs;
mod registry;
mod session;

use std::sync::Arc;
use std::time::Duration;

use ferry_common::proto::ALPN;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::ca::HubCa;
use crate::config::TunnelConfig;

pub use accept::{serve_quic, serve_tcp};
pub use forward::{SpokeOwn, ViaSpoke};
pub use hubs::{HUB_GONE_AFTER_MS, HubList};
pub use registry::{LiveInfo, LiveSteering, PeerLink, Registry};

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
/// Connection ids a hub's QUIC endpoint issues: four random bytes and four
/// of an HMAC of them under a key derived from the tunnel CA, so that the
/// same hub restarted (or another sharing the CA) recognises the ids its
/// predecessor issued. A packet for one of them that no connection holds
/// any more (the process that held it was restarted) is then answered
/// with a stateless reset, which the spoke honours at once; quinn's own
/// generator keys its ids with a key of the process, and a restarted hub
/// dropped such packets, leaving spokes to notice only after three missed
/// heartbeats.
struct StableCids(ring::hmac::Key);

impl StableCids {
    fn tag(&self, random: &[u8]) -> [u8; 4] {
        let t = ring::hmac::sign(&self.0, random);
        let mut out = [0u8; 4];
        out.copy_from_slice(&t.as_ref()[..4]);
        out
    }
}

impl quinn::ConnectionIdGenerator for StableCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        use ring::rand::SecureRandom as _;
        let mut cid = [0u8; 8];
        ring::rand::SystemRandom::new()
            .fill(&mut cid[..4])
            .expect("the system's random source works");
        let tag = self.tag(&cid[..4]);
        cid[4..].copy_from_slice(&tag);
        quinn::ConnectionId::new(&cid)
    }

    fn validate(&self, cid: &quinn::ConnectionId) -> Result<(), quinn_proto::InvalidCid> {
        match cid.len() == 8 && self.tag(&cid[..4]) == cid[4..8] {
            true => Ok(()),
            false => Err(quinn_proto::InvalidCid),
        }
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

pub fn quic_endpoint(
    cfg: &TunnelConfig,
    tls: rustls::ServerConfig,
    socket: std::net::UdpSocket,
    reset_key: ring::hmac::Key,
    cid_key: ring::hmac::Key,
) -> anyhow::Result<quinn::Endpoint> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(cfg.limits().transport()));
    let mut endpoint = quinn::EndpointConfig::new(Arc::new(reset_key));
    endpoint.cid_generator(move || Box::new(StableCids(cid_key.clone())));
    Ok(quinn::Endpoint::new(
        endpoint,
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

/// Closes, within `every`, the tunnels of spokes revoked elsewhere (by
/// `ferry-hub spoke revoke` on the same database, or through another hub),
/// and of spokes that enrolled again since their tunnel opened (with the
/// certificate they hold no longer).
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
        for (name, cert) in registry.certificates() {
            match state.store.spoke_certificate(&name, Some(&cert)).await {
                Ok(Some(s)) if !s.revoked && s.holds(&cert) => {}
                Ok(Some(s)) if !s.revoked && s.current.is_some() => {
                    let held: Vec<&[u8]> = [&s.current, &s.previous]
                        .into_iter()
                        .filter_map(|c| c.as_deref())
                        .collect();
                    if registry.disconnect_other_certificate(&name, &held) {
                        tracing::info!(spoke.id = %name, "closed the tunnel of a spoke's earlier certificate: it enrolled again");
                    }
                }
                Ok(_) => {
                    tracing::info!(spoke.id = %name, "closing the tunnel of a revoked spoke");
                    registry.disconnect(&name, "revoked");
                }
                Err(e) => {
                    tracing::debug!(spoke.id = %name, error = %e, "could not check a spoke's standing")
                }
            }
        }
    }
}
