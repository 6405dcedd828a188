//! Holds a tunnel to every hub: those configured (primary first), those
//! saved from the last run, and each one a hub lists later (saved for the
//! next start); keeps each up, reconnecting after a jittered backoff, and
//! publishes its link for the rest of the spoke.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferry_common::proto::HubAddrs;
use ferry_common::tunnel_io::close;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::connector::{Connector, Control, TunnelError};
use super::session::{Ended, Signals, session};
use super::{Publisher, Shared, TunnelHandle};
use crate::config::{HubTarget, SpokeConfig};
use crate::identity::Identity;

/// How long a link replaced by a better one stays open at least.
const SWITCH_GRACE: Duration = Duration::from_secs(5);
/// How long a replaced link stays open at most for the requests still on
/// it (a long download on the TCP tunnel the spoke left for QUIC).
const SWITCH_DRAIN: Duration = Duration::from_secs(600);

/// What one tunnel learned about the hubs (nothing, when an attempt to
/// connect failed).
#[derive(Debug)]
pub struct Learned {
    /// The tunnel's index.
    pub(super) target: usize,
    /// The address it dials (a message from a tunnel that ended, whose
    /// place went to another, is told apart by it).
    pub(super) quic: SocketAddr,
    /// The id of the hub at its other end.
    pub(super) hub_id: Option<String>,
    /// Every hub of that hub's store (empty: the hub did not say).
    pub(super) hubs: Vec<HubAddrs>,
}

/// One tunnel [`hold`] runs.
struct Held {
    target: HubTarget,
    /// The hub's id, once known.
    id: Option<String>,
    /// Whether it connected or failed to at least once.
    tried: bool,
    /// Stops this tunnel alone.
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Holds a tunnel to every hub until `shared.shutdown`: those configured
/// (primary first), those saved from the last run, and each one a hub
/// lists later, which is saved for the next start. A hub reached under
/// two addresses keeps one tunnel, the one listed first: hubs not in the
/// configuration wait until each configured one has answered with its id
/// (or failed to connect once), so a hub configured under one address and
/// listed under another is known for the same.
pub async fn hold(
    cfg: Arc<SpokeConfig>,
    identity: Identity,
    handle: TunnelHandle,
    shared: Shared,
    mut learned: mpsc::UnboundedReceiver<Learned>,
) -> anyhow::Result<()> {
    let mut held: Vec<Held> = Vec::new();
    let configured = cfg.hub.targets().len();
    // A learned tunnel closed for good leaves its place to the next learned
    // one (never a configured hub's place, which keeps the order requests
    // go in), so that closing duplicates never adds up.
    let spawn = |held: &mut Vec<Held>, quic: SocketAddr, tcp: SocketAddr, id: Option<String>| {
        let index = (configured..held.len())
            .find(|&i| held[i].stop.is_cancelled() && held[i].task.is_finished())
            .unwrap_or(held.len());
        let target = HubTarget { index, quic, tcp };
        shared.client_rtts.ensure_hubs(held.len().max(index + 1));
        let stop = shared.shutdown.child_token();
        let task = tokio::spawn(run(
            cfg.clone(),
            target,
            identity.clone(),
            handle.add_at(index),
            Shared {
                shutdown: stop.clone(),
                ..shared.clone()
            },
        ));
        let entry = Held {
            target,
            id,
            tried: false,
            stop,
            task,
        };
        match held.get_mut(index) {
            Some(slot) => *slot = entry,
            None => held.push(entry),
        }
    };
    // Whether a tunnel held reaches hub `h` already: by its id, by the
    // address dialled, or by the address the list gives for the id it
    // reaches (a hub dialled through NAT or a relay, or restarted with a
    // new id at its old address, is one machine: one tunnel).
    let holds = |held: &[Held], list: &[HubAddrs], h: &HubAddrs| {
        held.iter().filter(|t| !t.stop.is_cancelled()).any(|t| {
            t.id.as_deref() == Some(&h.id)
                || t.target.quic == h.tunnel_addr
                || t.id.as_ref().is_some_and(|id| {
                    list.iter()
                        .any(|l| &l.id == id && l.tunnel_addr == h.tunnel_addr)
                })
        })
    };
    for t in cfg.hub.targets() {
        spawn(&mut held, t.quic, t.tcp, None);
    }
    let mut pending: Vec<HubAddrs> = identity.hubs.clone();
    loop {
        let l = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            l = learned.recv() => match l {
                Some(l) => l,
                None => break,
            },
        };
        if held[l.target].target.quic != l.quic {
            continue;
        }
        held[l.target].tried = true;
        if let Some(id) = l.hub_id {
            held[l.target].id = Some(id.clone());
            // The same hub under another address: keep the first.
            let same: Vec<usize> = (0..held.len())
                .filter(|&i| !held[i].stop.is_cancelled() && held[i].id.as_deref() == Some(&id))
                .collect();
            for &i in same.iter().skip(1) {
                tracing::info!(hub = %held[i].target.quic, hub.id = %id, "a second address of a hub this spoke holds a tunnel to: closing it");
                held[i].stop.cancel();
            }
        }
        if !l.hubs.is_empty() {
            if let Err(e) = crate::identity::save_hubs(&cfg.state_dir, &l.hubs) {
                tracing::warn!(error = %e, "could not keep the list of hubs");
            }
            pending = l.hubs;
        }
        if pending.is_empty() || !held[..configured].iter().all(|h| h.tried) {
            continue;
        }
        let list = std::mem::take(&mut pending);
        for h in &list {
            if holds(&held, &list, h) {
                continue;
            }
            if held.iter().filter(|t| !t.stop.is_cancelled()).count() >= MAX_TUNNELS {
                tracing::warn!(hub = %h.tunnel_addr, "too many hubs: not opening a tunnel");
                continue;
            }
            tracing::info!(hub = %h.tunnel_addr, hub.id = %h.id, "a hub this spoke holds no tunnel to: opening one");
            spawn(
                &mut held,
                h.tunnel_addr,
                h.tunnel_tcp_addr,
                Some(h.id.clone()),
            );
        }
    }
    shared.shutdown.cancel();
    let mut result = Ok(());
    for h in held {
        let r = h.task.await.context("a tunnel task failed").and_then(|r| r);
        if result.is_ok() {
            result = r;
        }
    }
    result
}

/// The most tunnels a spoke holds, configured and learned.
const MAX_TUNNELS: usize = 2 * ferry_common::proto::MAX_HUBS;

/// Keeps a tunnel to one hub up until `shutdown`. When `draining` fires
/// first, the hub is told (so it stops sending clients here) while the
/// tunnel stays up for the requests still in flight.
async fn run(
    cfg: Arc<SpokeConfig>,
    target: HubTarget,
    identity: Identity,
    publish: Publisher,
    shared: Shared,
) -> anyhow::Result<()> {
    let connector = Connector::new(cfg.clone(), identity, target, &shared)?;
    let Shared {
        metrics,
        draining,
        shutdown,
        on_notice,
        ..
    } = shared;
    let hub = target.index;
    let mut backoff = Backoff::new(
        Duration::from_millis(cfg.tunnel.reconnect_initial_ms),
        Duration::from_secs(cfg.tunnel.reconnect_max_secs),
    );
    let mut ready: Option<Control> = None;
    loop {
        let attempt = async {
            let control = match ready.take() {
                Some(c) => c,
                None => connector.connect().await?,
            };
            backoff.reset();
            let link = control.link.clone();
            // Publish before announcing: whoever reads "tunnel up" can use it.
            publish.publish(Some(link.clone()));
            metrics.tunnel_up(hub, link.transport(), true);
            // The address this tunnel went to: QUIC's, or the TCP fallback's.
            let addr = match link {
                ferry_common::link::Link::Tcp(_) => target.tcp,
                ferry_common::link::Link::Quic(_) => target.quic,
            };
            tracing::info!(hub = %addr, hub.index = hub, transport = link.transport(), "tunnel up");
            let signals = Signals {
                metrics: &metrics,
                draining: &draining,
                shutdown: &shutdown,
                on_notice: &*on_notice,
                connector: &connector,
            };
            let result = session(control, &signals).await;
            metrics.tunnel_up(hub, link.transport(), false);
            if !matches!(result, Ok(Ended::Switch(_))) {
                publish.publish(None);
            } else {
                // Let requests still on the old link finish, then close it.
                tokio::spawn(async move {
                    tokio::time::sleep(SWITCH_GRACE).await;
                    let until = tokio::time::Instant::now() + SWITCH_DRAIN;
                    if link.open_streams() > 0 {
                        tracing::info!(
                            requests = link.open_streams(),
                            "the replaced tunnel stays open for the requests still on it"
                        );
                    }
                    while link.open_streams() > 0 && tokio::time::Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    link.close(close::REPLACED, b"moved to a better transport");
                    tracing::info!("closed the replaced tunnel");
                });
            }
            result
        };
        let outcome = tokio::select! {
            r = attempt => r,
            _ = shutdown.cancelled() => Ok(Ended::Stopped),
        };
        if shutdown.is_cancelled() {
            // Stopped in the middle of a session: it is down now.
            publish.publish(None);
            for transport in ["quic", "tcp"] {
                metrics.tunnel_up(hub, transport, false);
            }
            break;
        }
        let err = match outcome {
            Ok(Ended::Switch(control)) => {
                tracing::info!("QUIC works again: moving the tunnel back to QUIC");
                ready = Some(control);
                continue;
            }
            Ok(Ended::Stopped) => TunnelError::Lost("closed".into()),
            Err(e) => e,
        };
        metrics.reconnect(err.cause());
        connector.learn(None, Vec::new());
        let wait = backoff.next_wait();
        tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64, "tunnel down");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    connector
        .endpoint
        .close(close::SHUTDOWN.into(), b"spoke shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), connector.endpoint.wait_idle()).await;
    Ok(())
}
