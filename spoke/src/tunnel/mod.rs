//! The spoke's end of its tunnels: one to each hub it knows, over QUIC
//! with the spoke's certificate — or, when QUIC cannot get through (UDP
//! blocked), over TLS on TCP carrying the same frames on HTTP/2 streams.
//!
//! - [`supervisor`]: holds a tunnel to every hub (configured, saved from
//!   the last run, learned), and keeps each one up, reconnecting with
//!   [`backoff`];
//! - [`connector`]: opens one tunnel and exchanges hello and welcome;
//! - [`session`]: runs one tunnel (heartbeats, the hub's notices, moving
//!   back to QUIC from TCP when it works again).
//!
//! The live links are published through a [`TunnelHandle`], which the
//! HTTP front and the data path use to reach a hub.

pub mod backoff;
mod connector;
mod session;
mod supervisor;

use std::sync::Arc;

use ferry_common::link::Link;
use ferry_common::proto::SteeringAnnounce;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::steering::ClientRtts;

pub use supervisor::{Learned, hold};

/// The tunnels as the rest of the spoke sees them: one per hub, in order
/// of preference. Hubs learned while running are added at the end.
#[derive(Debug, Clone)]
pub struct TunnelHandle {
    links: Arc<std::sync::RwLock<Vec<watch::Receiver<Option<Link>>>>>,
    /// Bumped whenever any tunnel comes up or goes down.
    changes: watch::Sender<u64>,
}

impl Default for TunnelHandle {
    fn default() -> Self {
        Self {
            links: Arc::default(),
            changes: watch::Sender::new(0),
        }
    }
}

/// Where one tunnel publishes its link.
#[derive(Debug)]
pub struct Publisher {
    link: watch::Sender<Option<Link>>,
    changes: watch::Sender<u64>,
}

impl Publisher {
    /// The tunnel is up on `link` (`Some`) or down (`None`).
    pub fn publish(&self, link: Option<Link>) {
        self.link.send_replace(link);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl TunnelHandle {
    /// One more tunnel, after the others: where its supervisor publishes.
    pub fn add(&self) -> Publisher {
        let len = self.links.read().expect("tunnel handle poisoned").len();
        self.add_at(len)
    }

    /// The tunnel at `index` (the next after the others, or in the place
    /// of one that ended for good): where its supervisor publishes.
    pub fn add_at(&self, index: usize) -> Publisher {
        let (link, rx) = watch::channel(None);
        let mut links = self.links.write().expect("tunnel handle poisoned");
        match links.get_mut(index) {
            Some(slot) => *slot = rx,
            None => links.push(rx),
        }
        Publisher {
            link,
            changes: self.changes.clone(),
        }
    }

    /// The first live link (the primary hub's when it is up).
    pub fn current(&self) -> Option<Link> {
        self.links
            .read()
            .expect("tunnel handle poisoned")
            .iter()
            .find_map(|rx| rx.borrow().clone().filter(|l| !l.is_closed()))
    }

    /// Waits until some tunnel is up (at once if one is).
    pub async fn wait_up(&self) {
        let mut changes = self.changes.subscribe();
        loop {
            changes.mark_unchanged();
            if self.current().is_some() {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}

/// What every hub's tunnel shares with the rest of the spoke.
#[derive(Clone)]
pub struct Shared {
    /// The spoke's metrics.
    pub metrics: Arc<Metrics>,
    /// Fires when the spoke starts draining.
    pub draining: CancellationToken,
    /// Fires when the tunnel must close.
    pub shutdown: CancellationToken,
    /// Acts on the hub's notices for the data path: cached grants to drop,
    /// providers to slow down.
    pub on_notice: Arc<dyn Fn(&ferry_common::proto::Notice) + Send + Sync>,
    /// What the hub's DNS needs to steer clients here.
    pub announce: Option<SteeringAnnounce>,
    /// Client RTTs for the next heartbeat.
    pub client_rtts: Arc<ClientRtts>,
    /// Where each tunnel says what it learned about the hubs.
    pub learned: mpsc::UnboundedSender<Learned>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_common::link::TcpLink;

    /// A live link over an in-memory HTTP/2 connection.
    async fn link() -> Link {
        let (a, b) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(b)
                .await
                .expect("the server side starts");
            while conn.accept().await.is_some() {}
        });
        let (sender, conn) = h2::client::handshake(a)
            .await
            .expect("the client side starts");
        tokio::spawn(conn);
        Link::Tcp(TcpLink::new(sender, CancellationToken::new()))
    }

    #[tokio::test]
    async fn waiting_for_a_tunnel_ends_when_one_comes_up() {
        let handle = TunnelHandle::default();
        let first = handle.add();
        let second = handle.add();
        let waiting = tokio::spawn({
            let handle = handle.clone();
            async move { handle.wait_up().await }
        });
        first.publish(None);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no tunnel is up yet");
        let link = link().await;
        second.publish(Some(link.clone()));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the wait ends")
            .unwrap();
        assert!(handle.current().is_some());
        // A closed link is not current, and a new wait waits again.
        link.close(0, b"test");
        assert!(handle.current().is_none());
        let again = tokio::spawn({
            let handle = handle.clone();
            async move { handle.wait_up().await }
        });
        tokio::task::yield_now().await;
        assert!(!again.is_finished());
        first.publish(Some(super::tests::link().await));
        tokio::time::timeout(std::time::Duration::from_secs(5), again)
            .await
            .expect("the wait ends")
            .unwrap();
    }
}
