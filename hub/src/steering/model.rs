//! The steering model: which spoke answers for which client network.
//!
//! No I/O and no clock of its own: every call is given `now`, so tests run
//! on made-up time. Round-trip samples come in per client prefix (an IPv4
//! /24 or IPv6 /48 by default) and spoke, from the spokes' own client
//! connections and from client probes; each (prefix, spoke) keeps an
//! exponentially smoothed RTT. An answer for a prefix is its fastest
//! eligible spoke, but once a prefix has an answer it moves only to a spoke
//! that is faster by both an absolute and a relative margin, so noisy
//! samples do not make answers flap. Without measurements, operator hints
//! (a prefix of any length → preferred spokes, in order) decide, and the
//! hub itself is the last answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use ferry_common::prefix::Prefix;

/// Where a sample came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The kernel's RTT of client connections a spoke accepted.
    SpokeObserved,
    /// A client timed `GET /v1/probe` at the spoke and reported it.
    ClientProbe,
}

/// The model's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Prefix length client IPv4 addresses are grouped by.
    pub v4_prefix: u8,
    /// Prefix length client IPv6 addresses are grouped by.
    pub v6_prefix: u8,
    /// A new answer must be at least this much faster, in milliseconds…
    pub switch_min_ms: f64,
    /// …and at least this fraction faster (1/3: two thirds of the time).
    pub switch_min_fraction: f64,
    /// Weight of a new sample in the smoothed RTT (0 to 1).
    pub smoothing: f64,
    /// Samples older than this no longer count.
    pub sample_ttl: Duration,
    /// Prefixes kept at most; the least recently measured go first.
    pub max_prefixes: usize,
    /// Operator hints: prefix → preferred spokes, most preferred first.
    pub hints: Vec<(Prefix, Vec<String>)>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            v4_prefix: 24,
            v6_prefix: 48,
            switch_min_ms: 10.0,
            switch_min_fraction: 1.0 / 3.0,
            smoothing: 0.25,
            sample_ttl: Duration::from_secs(600),
            max_prefixes: 100_000,
            hints: Vec::new(),
        }
    }
}

/// Samples outside this range are refused as implausible (milliseconds:
/// from the kernel's resolution of 1 µs, seen on loopback, to 10 s).
pub const PLAUSIBLE_RTT_MS: std::ops::RangeInclusive<f64> = 0.001..=10_000.0;

/// Why a sample was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Not a number, negative, zero or over ten seconds.
    Implausible,
}

#[derive(Debug, Clone)]
struct Rtt {
    smoothed_ms: f64,
    /// Samples since the value last started afresh, by source.
    observed: u64,
    probed: u64,
    last: Instant,
}

impl Rtt {
    fn samples(&self) -> u64 {
        self.observed + self.probed
    }
}

#[derive(Debug, Default)]
struct PrefixState {
    rtts: HashMap<Arc<str>, Rtt>,
    answer: Option<Arc<str>>,
    last_sample: Option<Instant>,
}

/// How an answer was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// From measured RTTs.
    Measured,
    /// From an operator hint.
    Hint,
    /// No eligible spoke is known for the client: the hub answers.
    Hub,
}

impl Basis {
    /// `measured`, `hint` or `hub`.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Measured => "measured",
            Basis::Hint => "hint",
            Basis::Hub => "hub",
        }
    }
}

/// The answer for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The spoke, or `None` for the hub.
    pub spoke: Option<Arc<str>>,
    /// How it was chosen.
    pub basis: Basis,
    /// The prefix length the answer holds for (the ECS scope).
    pub scope: u8,
    /// Whether this answer differs from the prefix's previous one.
    pub switched: bool,
}

/// One spoke's standing for a prefix, for `GET /v1/steering`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpokeView {
    /// The spoke.
    pub spoke: Arc<str>,
    /// Smoothed RTT, milliseconds.
    pub rtt_ms: f64,
    /// Samples from the spoke's own client connections.
    pub observed_samples: u64,
    /// Samples from client probes.
    pub probe_samples: u64,
    /// Age of the newest sample.
    pub age: Duration,
}

/// One prefix, for `GET /v1/steering`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixView {
    /// The client network.
    pub prefix: Prefix,
    /// Its spokes, fastest first (stale samples left out).
    pub spokes: Vec<SpokeView>,
    /// The answer it was last given, if any.
    pub answer: Option<Arc<str>>,
}

/// The steering model.
#[derive(Debug)]
pub struct Model {
    settings: Settings,
    prefixes: HashMap<Prefix, PrefixState>,
}

impl Model {
    /// An empty model.
    pub fn new(settings: Settings) -> Model {
        Model {
            settings,
            prefixes: HashMap::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Takes new settings, keeping the prefix lengths (measurements are
    /// stored per prefix: new lengths need a restart). Returns whether the
    /// new settings asked for other prefix lengths.
    pub fn update_settings(&mut self, mut settings: Settings) -> bool {
        let kept = (self.settings.v4_prefix, self.settings.v6_prefix);
        let asked = (settings.v4_prefix, settings.v6_prefix);
        settings.v4_prefix = kept.0;
        settings.v6_prefix = kept.1;
        self.settings = settings;
        kept != asked
    }

    /// The prefix `addr` is grouped in.
    pub fn prefix_of(&self, addr: IpAddr) -> Prefix {
        let len = match addr {
            IpAddr::V4(_) => self.settings.v4_prefix,
            IpAddr::V6(_) => self.settings.v6_prefix,
        };
        Prefix::new(addr, len)
    }

    /// Takes one RTT sample of `spoke` for clients in `client`'s prefix.
    pub fn observe(
        &mut self,
        now: Instant,
        client: IpAddr,
        spoke: &str,
        rtt_ms: f64,
        source: Source,
    ) -> Result<(), Rejected> {
        if !rtt_ms.is_finite() || !PLAUSIBLE_RTT_MS.contains(&rtt_ms) {
            return Err(Rejected::Implausible);
        }
        let prefix = self.prefix_of(client);
        if !self.prefixes.contains_key(&prefix) && self.prefixes.len() >= self.settings.max_prefixes
        {
            self.make_room(now);
        }
        let ttl = self.settings.sample_ttl;
        let alpha = self.settings.smoothing;
        let state = self.prefixes.entry(prefix).or_default();
        state.last_sample = Some(now);
        if !state.rtts.contains_key(spoke) {
            let fresh = Rtt {
                smoothed_ms: rtt_ms,
                observed: 0,
                probed: 0,
                last: now,
            };
            state.rtts.insert(Arc::from(spoke), fresh);
        }
        let rtt = state.rtts.get_mut(spoke).expect("inserted above");
        // A value gone stale starts over rather than dragging the old mean.
        if rtt.samples() == 0 || now.saturating_duration_since(rtt.last) > ttl {
            rtt.smoothed_ms = rtt_ms;
            rtt.observed = 0;
            rtt.probed = 0;
        } else {
            rtt.smoothed_ms += alpha * (rtt_ms - rtt.smoothed_ms);
        }
        match source {
            Source::SpokeObserved => rtt.observed += 1,
            Source::ClientProbe => rtt.probed += 1,
        }
        rtt.last = now;
        Ok(())
    }

    /// Frees room for a new prefix: expired ones go first, then the least
    /// recently measured hundredth, so a full table costs one pass per
    /// hundred new prefixes rather than one per prefix.
    fn make_room(&mut self, now: Instant) {
        self.expire(now);
        let max = self.settings.max_prefixes;
        if self.prefixes.len() < max {
            return;
        }
        let mut ages: Vec<(Option<Instant>, Prefix)> = self
            .prefixes
            .iter()
            .map(|(p, s)| (s.last_sample, *p))
            .collect();
        let drop = (max / 100).max(1).min(ages.len());
        ages.select_nth_unstable(drop - 1);
        for (_, p) in &ages[..drop] {
            self.prefixes.remove(p);
        }
    }

    /// The answer for `client` among the spokes `eligible` accepts.
    pub fn answer(
        &mut self,
        now: Instant,
        client: IpAddr,
        eligible: &dyn Fn(&str) -> bool,
    ) -> Answer {
        let prefix = self.prefix_of(client);
        let scope = prefix.bits();
        let ttl = self.settings.sample_ttl;
        let (min_ms, min_fraction) = (
            self.settings.switch_min_ms,
            self.settings.switch_min_fraction,
        );
        let measured = self.prefixes.get_mut(&prefix).and_then(|state| {
            let fresh = |r: &Rtt| now.saturating_duration_since(r.last) <= ttl;
            let best = state
                .rtts
                .iter()
                .filter(|(s, r)| fresh(r) && eligible(s))
                .min_by(|a, b| {
                    a.1.smoothed_ms
                        .total_cmp(&b.1.smoothed_ms)
                        .then(a.0.cmp(b.0))
                })
                .map(|(s, r)| (s, r.smoothed_ms))?;
            let current = state.answer.as_ref().and_then(|s| {
                let r = state.rtts.get(s)?;
                (fresh(r) && eligible(s)).then_some((s, r.smoothed_ms))
            });
            let chosen = match current {
                Some((cur, cur_ms)) if cur != best.0 => {
                    let faster = cur_ms - best.1;
                    if faster >= min_ms && faster >= min_fraction * cur_ms {
                        best.0
                    } else {
                        cur
                    }
                }
                Some((cur, _)) => cur,
                None => best.0,
            }
            .clone();
            let switched = state.answer.as_ref() != Some(&chosen);
            if switched {
                state.answer = Some(chosen.clone());
            }
            Some((chosen, switched))
        });
        if let Some((spoke, switched)) = measured {
            return Answer {
                spoke: Some(spoke),
                basis: Basis::Measured,
                scope,
                switched,
            };
        }
        let hinted = self
            .settings
            .hints
            .iter()
            .filter(|(p, _)| p.contains(client))
            .max_by_key(|(p, _)| p.bits())
            .and_then(|(_, spokes)| spokes.iter().find(|s| eligible(s)))
            .map(|s| Arc::<str>::from(s.as_str()));
        let (spoke, basis) = match hinted {
            Some(s) => (Some(s), Basis::Hint),
            None => (None, Basis::Hub),
        };
        // Remember the fallback as the prefix's answer only where the
        // prefix is known, so hysteresis applies from its first measurement
        // on; an unknown prefix gets no state.
        let switched = match self.prefixes.get_mut(&prefix) {
            Some(state) => {
                let switched = state.answer != spoke;
                state.answer = spoke.clone();
                switched
            }
            None => false,
        };
        Answer {
            spoke,
            basis,
            scope,
            switched,
        }
    }

    /// Forgets a spoke everywhere (revoked or removed).
    pub fn forget_spoke(&mut self, spoke: &str) {
        for state in self.prefixes.values_mut() {
            state.rtts.remove(spoke);
            if state.answer.as_deref() == Some(spoke) {
                state.answer = None;
            }
        }
    }

    /// Drops samples older than the sample lifetime, and prefixes left
    /// with none.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.settings.sample_ttl;
        self.prefixes.retain(|_, s| {
            s.rtts
                .retain(|_, r| now.saturating_duration_since(r.last) <= ttl);
            !s.rtts.is_empty()
        });
    }

    /// Prefixes known now.
    pub fn prefix_count(&self) -> usize {
        self.prefixes.len()
    }

    /// The map as it stands, prefixes in order.
    pub fn snapshot(&self, now: Instant) -> Vec<PrefixView> {
        let ttl = self.settings.sample_ttl;
        let mut out: Vec<PrefixView> = self
            .prefixes
            .iter()
            .map(|(prefix, state)| {
                let mut spokes: Vec<SpokeView> = state
                    .rtts
                    .iter()
                    .filter(|(_, r)| now.saturating_duration_since(r.last) <= ttl)
                    .map(|(s, r)| SpokeView {
                        spoke: s.clone(),
                        rtt_ms: r.smoothed_ms,
                        observed_samples: r.observed,
                        probe_samples: r.probed,
                        age: now.saturating_duration_since(r.last),
                    })
                    .collect();
                spokes.sort_by(|a, b| a.rtt_ms.total_cmp(&b.rtt_ms).then(a.spoke.cmp(&b.spoke)));
                PrefixView {
                    prefix: *prefix,
                    spokes,
                    answer: state.answer.clone(),
                }
            })
            .collect();
        out.sort_by_key(|p| p.prefix);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn all(_: &str) -> bool {
        true
    }

    /// A deterministic noise source: values in -1..1.
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
    }

    #[test]
    fn the_fastest_eligible_spoke_answers_per_prefix() {
        let t0 = Instant::now();
        let mut m = Model::new(Settings::default());
        m.observe(t0, ip("192.0.2.10"), "fra1", 12.0, Source::ClientProbe)
            .unwrap();
        m.observe(t0, ip("192.0.2.11"), "ams1", 30.0, Source::SpokeObserved)
            .unwrap();
        m.observe(t0, ip("198.51.100.1"), "fra1", 40.0, Source::ClientProbe)
            .unwrap();
        m.observe(t0, ip("198.51.100.2"), "ams1", 9.0, Source::ClientProbe)
            .unwrap();

        let a = m.answer(t0, ip("192.0.2.200"), &all);
        assert_eq!(a.spoke.as_deref(), Some("fra1"));
        assert_eq!((a.basis, a.scope, a.switched), (Basis::Measured, 24, true));
        let b = m.answer(t0, ip("198.51.100.99"), &all);
        assert_eq!(b.spoke.as_deref(), Some("ams1"));
        // Asked again: the same answer, not a switch.
        assert!(!m.answer(t0, ip("192.0.2.1"), &all).switched);
        // fra1 not eligible (tunnel down): the next fastest, at once.
        let c = m.answer(t0, ip("192.0.2.1"), &|s: &str| s != "fra1");
        assert_eq!(c.spoke.as_deref(), Some("ams1"));
        assert!(c.switched);
    }

    #[test]
    fn noisy_samples_do_not_make_answers_flap() {
        let t0 = Instant::now();
        let mut m = Model::new(Settings::default());
        let client = ip("203.0.113.5");
        let mut noise = Noise(7);
        // Two spokes at 30 ms and 26 ms, each sample ±8 ms. The answer may
        // start on either and move once, to the faster, when noise opens
        // the margin; it must never go back and forth.
        let mut answers: Vec<Arc<str>> = Vec::new();
        for i in 0..2000u64 {
            let now = t0 + Duration::from_millis(100 * i);
            m.observe(
                now,
                client,
                "a",
                30.0 + 8.0 * noise.next(),
                Source::SpokeObserved,
            )
            .unwrap();
            m.observe(
                now,
                client,
                "b",
                26.0 + 8.0 * noise.next(),
                Source::SpokeObserved,
            )
            .unwrap();
            let a = m.answer(now, client, &all);
            if a.switched {
                answers.push(a.spoke.unwrap());
            }
        }
        assert!(answers.len() <= 2, "the answer flapped: {answers:?}");
        assert_eq!(answers.last().map(|s| &**s), Some("b"), "{answers:?}");

        // Now b becomes clearly faster (a third and 10 ms): the answer moves.
        let mut m = Model::new(Settings::default());
        let t1 = t0;
        m.observe(t1, client, "a", 30.0, Source::ClientProbe)
            .unwrap();
        assert_eq!(m.answer(t1, client, &all).spoke.as_deref(), Some("a"));
        m.observe(t1, client, "b", 25.0, Source::ClientProbe)
            .unwrap();
        assert_eq!(
            m.answer(t1, client, &all).spoke.as_deref(),
            Some("a"),
            "5 ms faster is not enough"
        );
        for i in 1..40u64 {
            let now = t1 + Duration::from_secs(i);
            m.observe(now, client, "b", 15.0, Source::ClientProbe)
                .unwrap();
            m.observe(now, client, "a", 30.0, Source::ClientProbe)
                .unwrap();
        }
        let moved = m.answer(t1 + Duration::from_secs(40), client, &all);
        assert_eq!(moved.spoke.as_deref(), Some("b"));
        assert!(moved.switched);
    }

    #[test]
    fn both_margins_are_needed() {
        let t0 = Instant::now();
        let client = ip("192.0.2.1");
        // 100 ms → 85 ms: 15 ms faster but not a third.
        let mut m = Model::new(Settings::default());
        m.observe(t0, client, "a", 100.0, Source::ClientProbe)
            .unwrap();
        m.answer(t0, client, &all);
        m.observe(t0, client, "b", 85.0, Source::ClientProbe)
            .unwrap();
        assert_eq!(m.answer(t0, client, &all).spoke.as_deref(), Some("a"));
        // 12 ms → 6 ms: half the time but only 6 ms.
        let mut m = Model::new(Settings::default());
        m.observe(t0, client, "a", 12.0, Source::ClientProbe)
            .unwrap();
        m.answer(t0, client, &all);
        m.observe(t0, client, "b", 6.0, Source::ClientProbe)
            .unwrap();
        assert_eq!(m.answer(t0, client, &all).spoke.as_deref(), Some("a"));
        // 45 ms → 30 ms: both.
        let mut m = Model::new(Settings::default());
        m.observe(t0, client, "a", 45.0, Source::ClientProbe)
            .unwrap();
        m.answer(t0, client, &all);
        m.observe(t0, client, "b", 30.0, Source::ClientProbe)
            .unwrap();
        assert_eq!(m.answer(t0, client, &all).spoke.as_deref(), Some("b"));
    }

    #[test]
    fn hints_then_the_hub_answer_without_measurements() {
        let t0 = Instant::now();
        let settings = Settings {
            hints: vec![
                (
                    Prefix::parse("10.0.0.0/8").unwrap(),
                    vec!["fra1".into(), "ams1".into()],
                ),
                (Prefix::parse("10.9.0.0/16").unwrap(), vec!["lhr1".into()]),
            ],
            ..Settings::default()
        };
        let mut m = Model::new(settings);
        let a = m.answer(t0, ip("10.1.2.3"), &all);
        assert_eq!((a.spoke.as_deref(), a.basis), (Some("fra1"), Basis::Hint));
        // The most specific hint wins.
        assert_eq!(
            m.answer(t0, ip("10.9.1.1"), &all).spoke.as_deref(),
            Some("lhr1")
        );
        // The first eligible spoke of the hint.
        let b = m.answer(t0, ip("10.1.2.3"), &|s: &str| s == "ams1");
        assert_eq!(b.spoke.as_deref(), Some("ams1"));
        // No hint covers it, or none of its spokes is eligible: the hub.
        let c = m.answer(t0, ip("192.0.2.1"), &all);
        assert_eq!((c.spoke, c.basis), (None, Basis::Hub));
        let d = m.answer(t0, ip("10.9.1.1"), &|s: &str| s != "lhr1");
        assert_eq!((d.spoke, d.basis), (None, Basis::Hub));
        // Unknown prefixes leave no state behind.
        assert_eq!(m.prefix_count(), 0);
    }

    #[test]
    fn stale_samples_stop_counting_and_expire() {
        let t0 = Instant::now();
        let settings = Settings {
            sample_ttl: Duration::from_secs(60),
            hints: vec![(Prefix::parse("0.0.0.0/0").unwrap(), vec!["hint".into()])],
            ..Settings::default()
        };
        let mut m = Model::new(settings);
        let client = ip("192.0.2.1");
        m.observe(t0, client, "a", 20.0, Source::ClientProbe)
            .unwrap();
        assert_eq!(m.answer(t0, client, &all).basis, Basis::Measured);
        let later = t0 + Duration::from_secs(61);
        let a = m.answer(later, client, &all);
        assert_eq!((a.spoke.as_deref(), a.basis), (Some("hint"), Basis::Hint));
        // A new sample after a long gap starts the average afresh.
        m.observe(later, client, "a", 80.0, Source::ClientProbe)
            .unwrap();
        let view = m.snapshot(later);
        assert_eq!(view[0].spokes[0].rtt_ms, 80.0);
        assert_eq!(view[0].spokes[0].probe_samples, 1);
        m.expire(later + Duration::from_secs(61));
        assert_eq!(m.prefix_count(), 0);
    }

    #[test]
    fn implausible_samples_are_refused_and_prefixes_are_bounded() {
        let t0 = Instant::now();
        let mut m = Model::new(Settings {
            max_prefixes: 3,
            ..Settings::default()
        });
        let c = ip("192.0.2.1");
        for bad in [f64::NAN, f64::INFINITY, -1.0, 0.0, 20_000.0] {
            assert_eq!(
                m.observe(t0, c, "a", bad, Source::ClientProbe),
                Err(Rejected::Implausible)
            );
        }
        assert_eq!(m.prefix_count(), 0);
        for i in 0..5u64 {
            let client = IpAddr::V4(Ipv4Addr::new(10, 0, i as u8, 1));
            m.observe(
                t0 + Duration::from_secs(i),
                client,
                "a",
                10.0,
                Source::ClientProbe,
            )
            .unwrap();
        }
        assert_eq!(m.prefix_count(), 3);
        let kept: Vec<String> = m
            .snapshot(t0 + Duration::from_secs(5))
            .iter()
            .map(|p| p.prefix.to_string())
            .collect();
        assert_eq!(kept, ["10.0.2.0/24", "10.0.3.0/24", "10.0.4.0/24"]);
    }

    #[test]
    fn a_forgotten_spoke_leaves_every_answer() {
        let t0 = Instant::now();
        let mut m = Model::new(Settings::default());
        let c = ip("2001:db8:5::1");
        m.observe(t0, c, "a", 5.0, Source::SpokeObserved).unwrap();
        m.observe(t0, c, "b", 50.0, Source::SpokeObserved).unwrap();
        let first = m.answer(t0, c, &all);
        assert_eq!((first.spoke.as_deref(), first.scope), (Some("a"), 48));
        m.forget_spoke("a");
        assert_eq!(m.answer(t0, c, &all).spoke.as_deref(), Some("b"));
        assert!(m.snapshot(t0)[0].spokes.iter().all(|s| &*s.spoke != "a"));
    }
}
