//! Latency-based steering: which spoke each client network is sent to.
//!
//! [`model`] is pure (no I/O, a clock it is given). [`Steering`] wraps it
//! for the hub: it takes samples from heartbeats and client reports, keeps
//! the set of spokes DNS may answer (tunnel up, heartbeat fresh, not
//! draining, under capacity, with public addresses), refreshed from the
//! tunnel registry every [`REFRESH_EVERY`], and answers DNS queries. Its
//! clock is tokio's, so tests can pause it.

pub mod budget;
pub mod exchange;
pub mod metrics;
pub mod model;
mod target;
mod view;

use target::same_announce;
pub use target::{Eligibility, SpokeTarget};
pub use view::{ClientAnswer, PrefixEntry, Samples, SpokeEntry, SteeringView};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_common::prefix::Prefix;
use ferry_common::proto::PrefixRtt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::SteeringConfig;
use crate::tunnel::{LiveSteering, Registry};
use metrics::{SampleResult, SampleSource, SteeringMetrics};
use model::{Basis, Model, Source};

/// How often the eligible spokes are recomputed from the tunnel registry:
/// a spoke that drains or loses its tunnel leaves the answers this soon.
pub const REFRESH_EVERY: Duration = Duration::from_millis(200);
/// How often stale samples are dropped.
const EXPIRE_EVERY: Duration = Duration::from_secs(30);

/// The clock: tokio's, so that a paused test clock holds here too.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The answer for one client.
#[derive(Debug, Clone)]
pub struct Steered {
    /// The spoke, or `None` for the hub.
    pub target: Option<Arc<SpokeTarget>>,
    /// The prefix length the answer holds for (the ECS scope).
    pub scope: u8,
    /// How it was chosen.
    pub basis: Basis,
}

/// What became of a client's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReportOutcome {
    /// Samples taken into the model.
    pub accepted: usize,
    /// Samples for spokes that are not connected, which count for nothing.
    pub ignored: usize,
}

/// A connected spoke as steering knows it.
#[derive(Debug, Clone)]
struct Known {
    /// Its addresses, when it announced any.
    target: Option<Arc<SpokeTarget>>,
    standing: Eligibility,
}

#[derive(Debug)]
struct Inner {
    model: Model,
    /// Every connected spoke.
    spokes: HashMap<Arc<str>, Known>,
}

impl Inner {
    fn eligible(&self, spoke: &str) -> Option<&Arc<SpokeTarget>> {
        self.spokes
            .get(spoke)
            .filter(|k| k.standing == Eligibility::Eligible)
            .and_then(|k| k.target.as_ref())
    }
}

/// The hub's steering state, shared by the API, the tunnels and DNS.
#[derive(Debug)]
pub struct Steering {
    inner: Mutex<Inner>,
    stale_after: Duration,
    metrics: SteeringMetrics,
    /// What is shared with the other hubs of the store, when there are.
    exchange: Option<exchange::Exchange>,
}

impl Steering {
    /// Takes a reloaded `[steering]` section: hints, hysteresis, smoothing,
    /// sample lifetime and bounds apply at once; new prefix lengths (false
    /// returned) need a restart.
    pub fn reconfigure(&self, cfg: &SteeringConfig) -> bool {
        let mut inner = self.inner.lock().expect("steering poisoned");
        !inner.model.update_settings(cfg.model_settings())
    }

    /// Steering as configured; a spoke's heartbeat keeps it eligible for
    /// `stale_after`.
    pub fn new(cfg: &SteeringConfig, stale_after: Duration, metrics: SteeringMetrics) -> Self {
        Self {
            inner: Mutex::new(Inner {
                model: Model::new(cfg.model_settings()),
                spokes: HashMap::new(),
            }),
            stale_after,
            metrics,
            exchange: None,
        }
    }

    /// Shares probe samples and the spokes heard with the other hubs of
    /// the store (see [`exchange`]).
    pub fn with_exchange(mut self) -> Self {
        self.exchange = Some(exchange::Exchange::default());
        self
    }

    /// How long a spoke's last heartbeat keeps it eligible.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// How long samples count.
    pub fn sample_ttl(&self) -> Duration {
        self.lock().model.settings().sample_ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("steering state poisoned")
    }

    /// The prefix lengths clients are grouped by (IPv4, IPv6).
    pub fn client_prefixes(&self) -> (u8, u8) {
        let inner = self.lock();
        let s = inner.model.settings();
        (s.v4_prefix, s.v6_prefix)
    }

    /// Recomputes which connected spokes DNS may answer.
    pub fn refresh(&self, live: Vec<LiveSteering>) {
        let now = now();
        let mut inner = self.lock();
        let mut spokes = HashMap::with_capacity(live.len());
        let mut eligible = 0;
        for l in live {
            let name: Arc<str> = Arc::from(l.name.as_str());
            let standing = self.standing(&l, now);
            let target = l
                .announce
                .as_ref()
                .filter(|a| !a.public_addrs.is_empty())
                .map(|a| {
                    // Keep the target (and its counter) while it stays the same.
                    match inner.spokes.get(&name).and_then(|k| k.target.as_ref()) {
                        Some(t) if same_announce(t, a) => t.clone(),
                        _ => Arc::new(SpokeTarget::new(
                            name.clone(),
                            a,
                            self.metrics.answers(&name),
                        )),
                    }
                });
            if standing == Eligibility::Eligible {
                eligible += 1;
            }
            spokes.insert(name, Known { target, standing });
        }
        self.metrics.eligible.set(eligible);
        inner.spokes = spokes;
    }

    fn standing(&self, l: &LiveSteering, now: Instant) -> Eligibility {
        let Some(a) = &l.announce else {
            return Eligibility::NoAddresses;
        };
        if l.draining {
            Eligibility::Draining
        } else if now.saturating_duration_since(l.last_heard) > self.stale_after {
            Eligibility::StaleHeartbeat
        } else if a.public_addrs.is_empty() {
            Eligibility::NoAddresses
        } else if a.capacity_transfers > 0 && l.active_transfers >= a.capacity_transfers {
            Eligibility::OverCapacity
        } else {
            Eligibility::Eligible
        }
    }

    /// The answer for a client at `client`.
    pub fn answer(&self, client: IpAddr) -> Steered {
        let now = now();
        let mut guard = self.lock();
        let Inner { model, spokes } = &mut *guard;
        let a = model.answer(now, client, &|s| {
            spokes
                .get(s)
                .is_some_and(|k| k.standing == Eligibility::Eligible && k.target.is_some())
        });
        if a.switched {
            self.metrics.switches.inc();
        }
        Steered {
            target: a
                .spoke
                .and_then(|s| spokes.get(&s).and_then(|k| k.target.clone())),
            scope: a.scope,
            basis: a.basis,
        }
    }

    /// Takes the client RTTs a spoke observed, from its heartbeat.
    pub fn observe_spoke(&self, spoke: &str, rtts: &[PrefixRtt]) {
        if rtts.is_empty() {
            return;
        }
        let now = now();
        let (mut accepted, mut rejected) = (0, 0);
        let mut inner = self.lock();
        for r in rtts {
            let taken = Prefix::parse(&r.prefix).ok().is_some_and(|p| {
                let ms = f64::from(r.rtt_us) / 1000.0;
                inner
                    .model
                    .observe(now, p.addr(), spoke, ms, Source::SpokeObserved)
                    .is_ok()
            });
            if taken {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        self.metrics.prefixes.set(inner.model.prefix_count() as i64);
        drop(inner);
        self.metrics
            .samples(SampleSource::spoke, SampleResult::accepted, accepted);
        self.metrics
            .samples(SampleSource::spoke, SampleResult::rejected, rejected);
    }

    /// Takes a client's probe report: `(spoke, rtt_ms)` pairs measured from
    /// `client`. The values must have been checked as plausible already.
    pub fn observe_report(&self, client: IpAddr, samples: &[(String, f64)]) -> ReportOutcome {
        let now = now();
        let mut out = ReportOutcome {
            accepted: 0,
            ignored: 0,
        };
        let mut inner = self.lock();
        let mut shared = Vec::new();
        for (spoke, ms) in samples {
            let known = inner.spokes.contains_key(spoke.as_str());
            if known
                && inner
                    .model
                    .observe(now, client, spoke, *ms, Source::ClientProbe)
                    .is_ok()
            {
                out.accepted += 1;
                shared.push((spoke.clone(), *ms));
            } else {
                out.ignored += 1;
            }
        }
        if let Some(x) = &self.exchange {
            x.queue(client, shared);
        }
        self.metrics.prefixes.set(inner.model.prefix_count() as i64);
        drop(inner);
        self.metrics.samples(
            SampleSource::probe,
            SampleResult::accepted,
            out.accepted as u64,
        );
        self.metrics.samples(
            SampleSource::probe,
            SampleResult::rejected,
            out.ignored as u64,
        );
        out
    }

    /// Takes the probe samples other hubs took, read from the store.
    pub fn observe_peer(&self, samples: &[crate::store::SharedSample]) {
        if samples.is_empty() {
            return;
        }
        let now = now();
        let (mut accepted, mut rejected) = (0u64, 0u64);
        let mut inner = self.lock();
        for s in samples {
            let taken = s.client.parse::<IpAddr>().is_ok_and(|client| {
                inner.spokes.contains_key(s.spoke.as_str())
                    && inner
                        .model
                        .observe(now, client, &s.spoke, s.rtt_ms, Source::ClientProbe)
                        .is_ok()
            });
            if taken {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        self.metrics.prefixes.set(inner.model.prefix_count() as i64);
        drop(inner);
        self.metrics
            .samples(SampleSource::hub, SampleResult::accepted, accepted);
        self.metrics
            .samples(SampleSource::hub, SampleResult::rejected, rejected);
    }

    /// The spokes clients should probe: every one DNS may answer.
    pub fn probe_targets(&self) -> Vec<(Arc<str>, String)> {
        let inner = self.lock();
        let mut out: Vec<_> = inner
            .spokes
            .keys()
            .filter_map(|name| inner.eligible(name))
            .filter(|t| !t.probe_url.is_empty())
            .map(|t| (t.name.clone(), t.probe_url.clone()))
            .collect();
        out.sort();
        out
    }

    /// A connected spoke's standing; `None` when it is not connected.
    pub fn status(&self, spoke: &str) -> Option<Eligibility> {
        self.lock().spokes.get(spoke).map(|k| k.standing)
    }

    /// A connected spoke's addresses, whatever its standing (for
    /// `<spoke>.<zone>`).
    pub fn spoke_target(&self, spoke: &str) -> Option<Arc<SpokeTarget>> {
        self.lock().spokes.get(spoke).and_then(|k| k.target.clone())
    }

    /// Takes the spokes' standing from `registry` (and what the other hubs
    /// hear) now.
    pub fn refresh_from(&self, registry: Option<&Registry>) {
        let mut live = registry.map(|r| r.steering_view()).unwrap_or_default();
        if let Some(x) = &self.exchange {
            x.merge_remote(&mut live);
        }
        self.refresh(live);
    }

    /// A spoke's standing; for a connected spoke the steering loop has
    /// not looked at yet (its tunnel came up a moment ago), looked at now.
    pub fn status_of_connected(
        &self,
        spoke: &str,
        registry: &Registry,
        connected: bool,
    ) -> Option<Eligibility> {
        match self.status(spoke) {
            None if connected => {
                self.refresh_from(Some(registry));
                self.status(spoke)
            }
            s => s,
        }
    }

    /// Keeps the eligible spokes current until `shutdown`: every
    /// [`REFRESH_EVERY`] from `registry` (or with none, when the hub takes
    /// no spokes) and what the other hubs hear, and drops stale samples.
    pub async fn run(
        self: Arc<Self>,
        registry: Option<Arc<Registry>>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_expiry = now();
        loop {
            // Each tick, and at once when a tunnel comes or goes (so that
            // a spoke just connected has its standing at once).
            let changed = async {
                match &registry {
                    Some(r) => r.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                _ = changed => {}
            }
            self.refresh_from(registry.as_deref());
            let t = now();
            if t.saturating_duration_since(last_expiry) >= EXPIRE_EVERY {
                last_expiry = t;
                let mut inner = self.lock();
                inner.model.expire(t);
                self.metrics.prefixes.set(inner.model.prefix_count() as i64);
            }
        }
    }
}

#[cfg(test)]
mod tests;
