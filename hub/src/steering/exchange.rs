//! Steering across the hubs of one PostgreSQL store, so that every hub's
//! DNS answers alike.
//!
//! Spokes hold a tunnel to every hub and send each one the same
//! heartbeats, RTT samples included, so most of the steering state reaches
//! every hub on its own. Two things do not: a client's probe report
//! reaches the one hub it was posted to, and a spoke that cannot reach
//! some hub is unknown there. So every [`EXCHANGE_EVERY`] each hub writes
//! to the primary the spokes it hears (with what they announced) and the
//! probe samples it took, and reads what the other hubs wrote: a spoke is
//! eligible at a hub when any hub heard it within `stale_after`, and every
//! hub takes every probe sample. Rows carry the writer's wall clock, so
//! hubs' clocks must agree to well within [`OVERLAP_MS`] (NTP does).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_common::proto::SteeringAnnounce;
use tokio_util::sync::CancellationToken;

use super::Steering;
use crate::store::{Presence, Store, now_ms};
use crate::tunnel::{LiveSteering, Registry};

/// How often a hub writes what it hears and reads what the others heard.
pub const EXCHANGE_EVERY: Duration = Duration::from_secs(1);
/// How far back each read of samples reaches before the previous one: a
/// sample is stamped when it is taken and committed up to a second later,
/// so reads overlap and each sample is taken once by its id.
const OVERLAP_MS: i64 = 10_000;
/// Samples waiting to be written, at most; more are dropped (the hub that
/// took them still has them).
const MAX_OUTBOX: usize = 10_000;
/// Samples read per page, and pages per round.
const PAGE: i64 = 2_000;
const MAX_PAGES: usize = 10;
/// How often old rows are deleted.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// What a hub shares: probe samples to write, and the spokes the other
/// hubs hear.
#[derive(Debug, Default)]
pub struct Exchange {
    /// (spoke, client, rtt_ms, taken at) waiting to be written.
    outbox: Mutex<Vec<(String, String, f64, i64)>>,
    /// The spokes other hubs heard, as last read.
    remote: Mutex<Vec<LiveSteering>>,
}

impl Exchange {
    /// Queues the samples a client reported from `client`.
    pub(super) fn queue(&self, client: IpAddr, samples: Vec<(String, f64)>) {
        if samples.is_empty() {
            return;
        }
        let at = now_ms();
        let mut outbox = self.outbox.lock().expect("outbox poisoned");
        let room = MAX_OUTBOX.saturating_sub(outbox.len());
        if room < samples.len() {
            tracing::warn!(
                dropped = samples.len() - room,
                "probe samples are not being shared fast enough; dropping some"
            );
        }
        let client = client.to_string();
        outbox.extend(
            samples
                .into_iter()
                .take(room)
                .map(|(spoke, ms)| (spoke, client.clone(), ms, at)),
        );
    }

    /// Adds to `live` the spokes only other hubs hear, and takes another
    /// hub's view of a spoke where it heard it more recently.
    pub(super) fn merge_remote(&self, live: &mut Vec<LiveSteering>) {
        let remote = self.remote.lock().expect("remote view poisoned");
        for r in remote.iter() {
            match live.iter_mut().find(|l| l.name == r.name) {
                Some(l) if l.last_heard >= r.last_heard => {}
                Some(l) => *l = r.clone(),
                None => live.push(r.clone()),
            }
        }
    }
}

/// Says once when the exchange starts failing and once when it works
/// again, rather than every second.
#[derive(Debug, Default)]
struct Health {
    failing: bool,
}

impl Health {
    fn saw<T>(&mut self, r: Result<T, crate::store::StoreError>) -> Option<T> {
        match r {
            Ok(v) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("sharing steering state through the store works again");
                }
                Some(v)
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(error = %e, "cannot share steering state through the store; answering from this hub's own view");
                } else {
                    tracing::debug!(error = %e, "steering exchange still failing");
                }
                None
            }
        }
    }
}

/// A local spoke as a row for the other hubs.
fn presence(l: &LiveSteering, now: Instant, wall: i64) -> Presence {
    let age =
        i64::try_from(now.saturating_duration_since(l.last_heard).as_millis()).unwrap_or(i64::MAX);
    Presence {
        spoke: l.name.clone(),
        announce: l
            .announce
            .as_ref()
            .map(|a| serde_json::to_string(a).expect("an announcement serialises")),
        active_transfers: l.active_transfers,
        draining: l.draining,
        heard_at: wall.saturating_sub(age),
        rtt_ms: l.rtt_ms,
    }
}

/// Another hub's row as steering sees a spoke; the freshest row per spoke.
fn remote_view(rows: Vec<Presence>, now: Instant, wall: i64) -> Vec<LiveSteering> {
    let mut by_spoke: HashMap<String, Presence> = HashMap::new();
    for p in rows {
        match by_spoke.get(&p.spoke) {
            Some(seen) if seen.heard_at >= p.heard_at => {}
            _ => {
                by_spoke.insert(p.spoke.clone(), p);
            }
        }
    }
    by_spoke
        .into_values()
        .map(|p| {
            let age = Duration::from_millis(u64::try_from(wall - p.heard_at).unwrap_or(0));
            LiveSteering {
                announce: p
                    .announce
                    .as_deref()
                    .and_then(|a| serde_json::from_str::<SteeringAnnounce>(a).ok()),
                last_heard: now.checked_sub(age).unwrap_or(now),
                active_transfers: p.active_transfers,
                draining: p.draining,
                name: p.spoke,
                // The other hub's tunnel, not this one's.
                rtt_ms: None,
            }
        })
        .collect()
}

/// Writes what this hub hears and reads what the others heard, every
/// [`EXCHANGE_EVERY`] until `shutdown`. A store that does not answer
/// leaves the last view in place, where the other hubs' spokes go stale.
pub async fn run(
    steering: Arc<Steering>,
    store: Store,
    registry: Option<Arc<Registry>>,
    hub_id: String,
    shutdown: CancellationToken,
) {
    let Some(x) = steering.exchange.as_ref() else {
        return;
    };
    let stale_ms = i64::try_from(steering.stale_after().as_millis()).unwrap_or(i64::MAX);
    let keep_ms = i64::try_from(steering.sample_ttl().as_millis())
        .unwrap_or(i64::MAX)
        .max(600_000);
    let mut since = now_ms().saturating_sub(keep_ms);
    let mut seen: HashMap<i64, i64> = HashMap::new();
    let mut last_expiry: Option<Instant> = None;
    let mut health = Health::default();
    let mut tick = tokio::time::interval(EXCHANGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (now, wall) = (super::now(), now_ms());
        if let Some(r) = &registry {
            let rows: Vec<Presence> = r
                .steering_view()
                .iter()
                .map(|l| presence(l, now, wall))
                .collect();
            health.saw(store.put_presence(&hub_id, &rows).await);
        }
        let out = std::mem::take(&mut *x.outbox.lock().expect("outbox poisoned"));
        let written = store.add_samples(&hub_id, &out).await;
        if health.saw(written).is_none() {
            // Kept for the next round, ahead of newer samples.
            let mut outbox = x.outbox.lock().expect("outbox poisoned");
            let room = MAX_OUTBOX.saturating_sub(outbox.len());
            outbox.splice(0..0, out.into_iter().take(room));
        }
        if let Some(rows) = health.saw(store.others_presence(&hub_id, wall - stale_ms).await) {
            *x.remote.lock().expect("remote view poisoned") = remote_view(rows, now, wall);
        }
        // Samples from the overlap window on, each taken once.
        let from = since.saturating_sub(OVERLAP_MS);
        let mut cursor = from;
        for _ in 0..MAX_PAGES {
            let Some(page) = health.saw(store.others_samples(&hub_id, cursor, PAGE).await) else {
                break;
            };
            let full = page.len() as i64 == PAGE;
            if let Some(last) = page.last() {
                // Strictly after: rows at the page's last instant that did
                // not fit come back with the next round's overlap.
                cursor = cursor.max(last.at - 1);
            }
            let new: Vec<_> = page
                .into_iter()
                .filter(|s| seen.insert(s.id, s.at).is_none())
                .collect();
            steering.observe_peer(&new);
            if !full {
                break;
            }
        }
        since = wall;
        seen.retain(|_, at| *at > from);
        if last_expiry.is_none_or(|t| now.saturating_duration_since(t) >= EXPIRE_EVERY) {
            last_expiry = Some(now);
            health.saw(store.expire_steering(wall - keep_ms).await);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(name: &str, heard: Instant) -> LiveSteering {
        LiveSteering {
            name: name.into(),
            announce: Some(SteeringAnnounce {
                public_addrs: vec!["192.0.2.7".parse().unwrap()],
                public_url: "http://192.0.2.7:8080".into(),
                capacity_transfers: 4,
            }),
            last_heard: heard,
            active_transfers: 2,
            draining: false,
            rtt_ms: Some(4),
        }
    }

    #[test]
    fn rows_carry_a_spoke_between_hubs_and_the_freshest_view_wins() {
        let now = Instant::now() + Duration::from_secs(60);
        let wall = 1_000_000;
        let row = presence(&live("fra1", now - Duration::from_millis(300)), now, wall);
        assert_eq!(row.heard_at, wall - 300);
        let mut older = row.clone();
        older.heard_at -= 5_000;
        older.draining = true;
        let view = remote_view(vec![older, row], now, wall);
        assert_eq!(view.len(), 1);
        let v = &view[0];
        assert_eq!(now - v.last_heard, Duration::from_millis(300));
        assert!(!v.draining, "the fresher row wins");
        assert_eq!(v.announce, live("fra1", now).announce);

        let x = Exchange::default();
        *x.remote.lock().unwrap() = view;
        // Heard here more recently: the local view stays.
        let mut local = vec![live("fra1", now)];
        x.merge_remote(&mut local);
        assert_eq!(local[0].last_heard, now);
        // Heard here long ago: the other hub's view replaces it.
        let mut local = vec![
            live("fra1", now - Duration::from_secs(30)),
            live("ams1", now),
        ];
        x.merge_remote(&mut local);
        assert_eq!(local[0].last_heard, now - Duration::from_millis(300));
        assert_eq!(local.len(), 2);
        // Not heard here at all: added.
        let mut local = Vec::new();
        x.merge_remote(&mut local);
        assert_eq!(local.len(), 1);
    }

    #[test]
    fn the_outbox_is_bounded() {
        let x = Exchange::default();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..(MAX_OUTBOX / 100 + 5) {
            x.queue(client, (0..100).map(|i| (format!("s{i}"), 10.0)).collect());
        }
        assert_eq!(x.outbox.lock().unwrap().len(), MAX_OUTBOX);
    }
}
