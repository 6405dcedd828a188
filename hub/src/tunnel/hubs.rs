//! The hubs sharing this hub's store: each announces where its tunnels
//! are, and every hub tells its spokes the list (in `welcome`, at
//! enrolment, and in a notice when it changes).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_common::proto::{HubAddrs, MAX_HUBS, Notice, NoticeKind};
use tokio_util::sync::CancellationToken;

use super::Registry;
use crate::api::AppState;

/// How often a hub says it is up, and reads who else is.
const HUB_ANNOUNCE_EVERY: Duration = Duration::from_secs(3);
/// A hub not heard from for this long is left out of the list.
pub const HUB_GONE_AFTER_MS: i64 = 30_000;

/// The hubs sharing this hub's store (this one included), as spokes
/// should know them: each hub announces its tunnel addresses in the store,
/// and tells its spokes the list in `welcome` and at enrolment.
#[derive(Debug)]
pub struct HubList {
    id: String,
    me: Option<HubAddrs>,
    known: Mutex<Vec<HubAddrs>>,
}

impl HubList {
    /// The list of a hub called `id` whose tunnels are at `me` (`None`:
    /// it cannot tell, so it is left out).
    pub fn new(id: String, me: Option<HubAddrs>) -> Self {
        let known = Mutex::new(me.clone().into_iter().collect());
        Self { id, me, known }
    }

    /// This hub's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where this hub takes tunnels, as it announces it (`None`: it cannot
    /// tell).
    pub fn me(&self) -> Option<&HubAddrs> {
        self.me.as_ref()
    }

    /// The hubs known now.
    pub fn current(&self) -> Vec<HubAddrs> {
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
            .filter_map(|h| {
                Some(HubAddrs {
                    tunnel_addr: h.tunnel_addr.parse().ok()?,
                    tunnel_tcp_addr: h.tunnel_tcp_addr.parse().ok()?,
                    id: h.id,
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
        if total > MAX_HUBS {
            // This hub stays in its own list.
            if let Some(i) = hubs.iter().position(|h| h.id == self.id)
                && i >= MAX_HUBS
            {
                hubs.swap(i, MAX_HUBS - 1);
            }
            hubs.truncate(MAX_HUBS);
        }
        let mut known = self.known.lock().expect("hub list poisoned");
        if *known == hubs {
            return false;
        }
        *known = hubs;
        if total > MAX_HUBS {
            tracing::warn!(
                hubs = total,
                max = MAX_HUBS,
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
                    ..Notice::new(NoticeKind::Hubs, "the hubs changed")
                });
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(HUB_ANNOUNCE_EVERY) => {}
            }
        }
    }
}
