//! Latency-based steering: which spoke each client network is sent to.
//!
//! [`model`] is pure (no I/O, a clock it is given). [`Steering`] wraps it
//! for the hub: it takes samples from heartbeats and client reports, keeps
//! the set of spokes DNS may answer (tunnel up, heartbeat fresh, not
//! draining, under capacity, with public addresses), refreshed from the
//! tunnel registry every [`REFRESH_EVERY`], and answers DNS queries. Its
//! clock is tokio's, so tests can pause it.

pub mod exchange;
pub mod metrics;
pub mod model;
mod view;

pub use view::{ClientAnswer, PrefixEntry, Samples, SpokeEntry, SteeringView};

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_common::prefix::Prefix;
use ferry_common::proto::{PrefixRtt, SteeringAnnounce};
use prometheus_client::metrics::counter::Counter;
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

/// Whether DNS may answer a connected spoke, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Eligibility {
    /// It may be answered.
    Eligible,
    /// Its last heartbeat is older than `steering.stale_after_ms`.
    StaleHeartbeat,
    /// It said it is shutting down.
    Draining,
    /// It streams as many transfers as its configured capacity.
    OverCapacity,
    /// It announced no public address, so there is nothing to answer.
    NoAddresses,
}

/// A spoke DNS may answer, with what the answer needs.
#[derive(Debug)]
pub struct SpokeTarget {
    /// Its name.
    pub name: Arc<str>,
    /// Its public IPv4 addresses (A answers).
    pub v4: Vec<Ipv4Addr>,
    /// Its public IPv6 addresses (AAAA answers).
    pub v6: Vec<Ipv6Addr>,
    /// The URL clients probe it at.
    pub probe_url: String,
    /// DNS answers given with it.
    pub answers: Counter,
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
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut live = registry
                .as_ref()
                .map(|r| r.steering_view())
                .unwrap_or_default();
            if let Some(x) = &self.exchange {
                x.merge_remote(&mut live);
            }
            self.refresh(live);
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

impl SpokeTarget {
    fn new(name: Arc<str>, a: &SteeringAnnounce, answers: Counter) -> Self {
        Self {
            v4: a
                .public_addrs
                .iter()
                .filter_map(|ip| match ip {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                })
                .collect(),
            v6: a
                .public_addrs
                .iter()
                .filter_map(|ip| match ip {
                    IpAddr::V6(v6) => Some(*v6),
                    IpAddr::V4(_) => None,
                })
                .collect(),
            probe_url: probe_url(a),
            answers,
            name,
        }
    }
}

fn probe_url(a: &SteeringAnnounce) -> String {
    format!("{}/v1/probe", a.public_url.trim_end_matches('/'))
}

fn same_announce(t: &SpokeTarget, a: &SteeringAnnounce) -> bool {
    let addrs =
        t.v4.iter()
            .map(|v| IpAddr::V4(*v))
            .chain(t.v6.iter().map(|v| IpAddr::V6(*v)));
    addrs.eq(a
        .public_addrs
        .iter()
        .copied()
        .filter(IpAddr::is_ipv4)
        .chain(a.public_addrs.iter().copied().filter(IpAddr::is_ipv6)))
        && t.probe_url == probe_url(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steering(stale_ms: u64) -> Steering {
        let mut registry = prometheus_client::registry::Registry::default();
        Steering::new(
            &SteeringConfig::default(),
            Duration::from_millis(stale_ms),
            SteeringMetrics::register(&mut registry),
        )
    }

    fn live(name: &str, addr: &str, heard: Instant) -> LiveSteering {
        LiveSteering {
            name: name.into(),
            announce: Some(SteeringAnnounce {
                public_addrs: vec![addr.parse().unwrap()],
                public_url: format!("http://{addr}:8080/"),
                capacity_transfers: 10,
            }),
            last_heard: heard,
            active_transfers: 0,
            draining: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn answered(s: &Steering, client: &str) -> Option<String> {
        s.answer(ip(client)).target.map(|t| t.name.to_string())
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_spoke_leaves_the_answers_once_its_heartbeat_is_stale() {
        let s = steering(2500);
        let t0 = now();
        s.refresh(vec![
            live("fra1", "192.0.2.1", t0),
            live("ams1", "192.0.2.2", t0),
        ]);
        let client = "198.51.100.7";
        let report = |pairs: &[(&str, f64)]| {
            let v: Vec<(String, f64)> = pairs.iter().map(|(a, b)| ((*a).into(), *b)).collect();
            s.observe_report(ip(client), &v)
        };
        assert_eq!(
            report(&[("fra1", 5.0), ("ams1", 40.0), ("nope", 1.0)]),
            ReportOutcome {
                accepted: 2,
                ignored: 1
            }
        );
        assert_eq!(answered(&s, client).as_deref(), Some("fra1"));
        assert_eq!(s.probe_targets()[0].1, "http://192.0.2.2:8080/v1/probe");

        // ams1 keeps sending heartbeats, fra1 goes silent.
        for _ in 0..12 {
            tokio::time::advance(Duration::from_millis(250)).await;
            s.refresh(vec![
                live("fra1", "192.0.2.1", t0),
                live("ams1", "192.0.2.2", now()),
            ]);
        }
        assert_eq!(s.status("fra1"), Some(Eligibility::StaleHeartbeat));
        assert_eq!(answered(&s, client).as_deref(), Some("ams1"));
        // Heard from again: back, and hysteresis moves the answer back only
        // because fra1 is clearly faster.
        s.refresh(vec![
            live("fra1", "192.0.2.1", now()),
            live("ams1", "192.0.2.2", now()),
        ]);
        assert_eq!(answered(&s, client).as_deref(), Some("fra1"));
    }

    #[tokio::test(start_paused = true)]
    async fn draining_full_and_addressless_spokes_are_not_answered() {
        let s = steering(2500);
        let t = now();
        let mut draining = live("a", "192.0.2.1", t);
        draining.draining = true;
        let mut full = live("b", "192.0.2.2", t);
        full.active_transfers = 10;
        let mut bare = live("c", "192.0.2.3", t);
        bare.announce.as_mut().unwrap().public_addrs.clear();
        let mut silent = live("d", "192.0.2.4", t);
        silent.announce = None;
        s.refresh(vec![
            draining,
            full,
            bare,
            silent,
            live("e", "2001:db8::5", t),
        ]);
        assert_eq!(s.status("a"), Some(Eligibility::Draining));
        assert_eq!(s.status("b"), Some(Eligibility::OverCapacity));
        assert_eq!(s.status("c"), Some(Eligibility::NoAddresses));
        assert_eq!(s.status("d"), Some(Eligibility::NoAddresses));
        assert_eq!(s.status("e"), Some(Eligibility::Eligible));
        assert_eq!(s.status("f"), None);
        let client = ip("203.0.113.9");
        let samples: Vec<(String, f64)> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| ((*n).to_owned(), 10.0))
            .collect();
        s.observe_report(client, &samples);
        let got = s.answer(client);
        let target = got.target.expect("e is eligible");
        assert_eq!(
            (&*target.name, target.v6.len(), target.v4.len()),
            ("e", 1, 0)
        );
        assert_eq!((got.scope, got.basis), (24, Basis::Measured));
    }

    #[tokio::test(start_paused = true)]
    async fn hysteresis_holds_under_noisy_reports_on_a_paused_clock() {
        let s = steering(2500);
        let client = "192.0.2.10";
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut noise = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        let mut moves = 0;
        let mut last = None;
        for _ in 0..600 {
            tokio::time::advance(Duration::from_millis(500)).await;
            let t = now();
            s.refresh(vec![live("a", "192.0.2.1", t), live("b", "192.0.2.2", t)]);
            // 40 ms and 36 ms, each sample ±10 ms: never a third apart on
            // average, so at most one move, and never back and forth.
            s.observe_report(
                ip(client),
                &[
                    ("a".into(), 40.0 + 10.0 * noise()),
                    ("b".into(), 36.0 + 10.0 * noise()),
                ],
            );
            let now_answer = answered(&s, client);
            if last.is_some() && now_answer != last {
                moves += 1;
            }
            last = now_answer;
        }
        assert!(moves <= 1, "the answer moved {moves} times");
    }
}
