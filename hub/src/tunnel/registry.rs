//! The spokes connected now: each live tunnel's link, what its spoke
//! announced and last reported, and the notices waiting for it. A newer
//! tunnel from the same spoke replaces the older one after a grace.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_common::proto::{Heartbeat, Notice, SteeringAnnounce};
use ferry_common::tunnel_io::close;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a tunnel replaced by a newer one from the same spoke stays open
/// for the requests still on it.
const REPLACED_GRACE: Duration = Duration::from_secs(5);

/// The longest a replaced tunnel stays open for the requests still on it.
pub(super) const REPLACED_DRAIN: Duration = Duration::from_secs(600);

/// The hub's handle on one tunnel, whatever its transport.
#[derive(Debug, Clone)]
pub enum PeerLink {
    /// QUIC.
    Quic(quinn::Connection),
    /// HTTP/2 over TLS on TCP; cancelling ends the connection.
    Tcp(CancellationToken),
}

impl PeerLink {
    /// Closes the tunnel; the peer sees `code` where the transport carries one.
    pub(super) fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Self::Quic(c) => c.close(code.into(), reason),
            Self::Tcp(cancel) => cancel.cancel(),
        }
    }

    /// The smoothed round-trip time QUIC measures; zero on TCP.
    pub(super) fn rtt(&self) -> Duration {
        match self {
            Self::Quic(c) => c.rtt(),
            Self::Tcp(_) => Duration::ZERO,
        }
    }

    /// Waits until the tunnel has ended, whoever ended it.
    pub(super) async fn closed(&self) {
        match self {
            Self::Quic(c) => {
                c.closed().await;
            }
            Self::Tcp(cancel) => cancel.cancelled().await,
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
    /// Who opened it: its certificate and software.
    identity: Identity,
    draining: bool,
    /// The requests the spoke forwards on it, while they run.
    requests: tokio_util::task::TaskTracker,
}

/// What a tunnel's spoke is: its certificate (the SHA-256 a later check
/// compares, and when it expires) and the software version it said.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The SHA-256 of the certificate the tunnel was opened with.
    pub cert_sha256: Vec<u8>,
    /// When that certificate stops being valid, Unix seconds.
    pub cert_expires_at: Option<i64>,
    /// The spoke's software version, as its hello said (made printable).
    pub software: String,
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
    /// The tunnel's smoothed round-trip time, milliseconds (QUIC; `None`
    /// over TCP, which does not measure it).
    pub rtt_ms: Option<u64>,
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
    /// Its software version, as it said.
    pub software: String,
    /// When the certificate it opened the tunnel with expires, Unix
    /// milliseconds.
    pub certificate_expires_at: Option<i64>,
}

/// The spokes connected now, by name.
#[derive(Debug, Default)]
pub struct Registry {
    live: Mutex<HashMap<String, Live>>,
    next_id: AtomicU64,
    /// Woken when a tunnel comes or goes, for steering to look at once.
    changed: tokio::sync::Notify,
}

impl Registry {
    /// Records a new tunnel and returns its id. An older tunnel from the
    /// same spoke is closed after a short grace, so requests on it finish.
    pub(super) fn insert(
        &self,
        name: &str,
        link: PeerLink,
        notices: mpsc::Sender<Notice>,
        announce: Option<SteeringAnnounce>,
        identity: Identity,
        requests: tokio_util::task::TaskTracker,
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
            identity,
            draining: false,
            requests,
        };
        let old = self
            .live
            .lock()
            .expect("registry poisoned")
            .insert(name.to_owned(), live);
        if let Some(old) = old {
            // After the grace, and once the requests still on it are done
            // (a long download forwarded on a TCP tunnel the spoke left for
            // QUIC), at most REPLACED_DRAIN.
            tokio::spawn(async move {
                tokio::time::sleep(REPLACED_GRACE).await;
                let until = Instant::now() + REPLACED_DRAIN;
                while !old.requests.is_empty() && Instant::now() < until {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                old.link
                    .close(close::REPLACED, b"replaced by a newer tunnel");
            });
        }
        self.changed.notify_one();
        id
    }

    /// Forgets a tunnel if it is still the current one; false when a
    /// newer tunnel of the spoke replaced it.
    pub(super) fn remove(&self, name: &str, id: u64) -> bool {
        let mut live = self.live.lock().expect("registry poisoned");
        if live.get(name).is_some_and(|l| l.id == id) {
            live.remove(name);
            drop(live);
            self.changed.notify_one();
            return true;
        }
        !live.contains_key(name)
    }

    /// Returns when a tunnel next comes or goes.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Changes what the registry holds of tunnel `id` of spoke `name`, if
    /// it is still the current one (a replaced tunnel changes nothing).
    fn update(&self, name: &str, id: u64, change: impl FnOnce(&mut Live)) {
        let mut live = self.live.lock().expect("registry poisoned");
        if let Some(l) = live.get_mut(name).filter(|l| l.id == id) {
            change(l);
        }
    }

    /// Records tunnel `id`'s latest heartbeat.
    pub(super) fn heartbeat(&self, name: &str, id: u64, hb: Heartbeat) {
        self.update(name, id, |l| {
            l.last = Some(hb);
            l.last_heard = tokio::time::Instant::now().into_std();
        });
    }

    /// Marks tunnel `id`'s spoke as draining.
    pub(super) fn draining(&self, name: &str, id: u64) {
        self.update(name, id, |l| l.draining = true);
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

    /// Whether spoke `name` has a tunnel to this hub now.
    pub fn is_live(&self, name: &str) -> bool {
        self.live
            .lock()
            .expect("registry poisoned")
            .contains_key(name)
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
                        software: l.identity.software.clone(),
                        certificate_expires_at: l
                            .identity
                            .cert_expires_at
                            .map(|s| s.saturating_mul(1000)),
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
                rtt_ms: (l.link.transport() == "quic").then(|| l.link.rtt().as_millis() as u64),
            })
            .collect()
    }

    /// Closes the tunnel of spoke `name` if it was opened with none of the
    /// certificates `held` (SHA-256; the spoke enrolled again); true if
    /// one was closed.
    pub fn disconnect_other_certificate(&self, name: &str, held: &[&[u8]]) -> bool {
        let mut live = self.live.lock().expect("registry poisoned");
        let Some(l) = live
            .get(name)
            .filter(|l| !held.contains(&l.identity.cert_sha256.as_slice()))
        else {
            return false;
        };
        l.link.close(
            close::REVOKED,
            b"the spoke enrolled again with a new certificate",
        );
        live.remove(name);
        true
    }

    /// The SHA-256 of the certificate spoke `name`'s tunnel was opened
    /// with, while it is connected.
    pub fn certificate_of(&self, name: &str) -> Option<Vec<u8>> {
        let live = self.live.lock().expect("registry poisoned");
        live.get(name).map(|l| l.identity.cert_sha256.clone())
    }

    /// Each connected spoke and the certificate its tunnel was opened with.
    pub(super) fn certificates(&self) -> Vec<(String, Vec<u8>)> {
        self.live
            .lock()
            .expect("registry poisoned")
            .iter()
            .map(|(name, l)| (name.clone(), l.identity.cert_sha256.clone()))
            .collect()
    }
}
