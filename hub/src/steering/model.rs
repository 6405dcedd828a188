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

use super::budget::{self, Budgets, OUTLIER_RUN, SETTLED_SAMPLES};

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
    /// How far one spoke's samples of itself may move the map.
    pub spoke_limits: budget::Limits,
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
            spoke_limits: budget::Limits::default(),
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
    /// A spoke's sample of itself, a factor of four off its settled
    /// estimate (see `budget`).
    Outlier,
    /// A spoke's sample of itself for a network it may not add now.
    OverBudget,
}

#[derive(Debug, Clone)]
struct Rtt {
    smoothed_ms: f64,
    /// Samples since the value last started afresh, by source.
    observed: u64,
    probed: u64,
    last: Instant,
    /// Outliers of the spoke's own in a row.
    outliers: u8,
    /// Whether the spoke's own sample made this estimate, and it counts
    /// in the spoke's budget.
    budgeted: bool,
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
    budgets: Budgets,
}

impl Model {
    /// An empty model.
    pub fn new(settings: Settings) -> Model {
        Model {
            settings,
            prefixes: HashMap::new(),
            budgets: Budgets::default(),
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
        let own = source == Source::SpokeObserved;
        let fresh = |r: &Rtt| now.saturating_duration_since(r.last) <= ttl;
        let known = self
            .prefixes
            .get(&prefix)
            .and_then(|s| s.rtts.get(spoke))
            .filter(|r| fresh(r));
        let mut budgeted = false;
        if own {
            match known {
                None => {
                    let name: Arc<str> = Arc::from(spoke);
                    let present = self
                        .prefixes
                        .get(&prefix)
                        .is_some_and(|s| s.rtts.get(spoke).is_some_and(|r| r.budgeted));
                    if !present {
                        if !self
                            .budgets
                            .take_new(&name, now, self.settings.spoke_limits)
                        {
                            return Err(Rejected::OverBudget);
                        }
                        budgeted = true;
                    }
                }
                Some(r)
                    if r.samples() >= SETTLED_SAMPLES
                        && budget::outlier(r.smoothed_ms, rtt_ms)
                        && r.outliers + 1 < OUTLIER_RUN =>
                {
                    let state = self.prefixes.get_mut(&prefix).expect("known above");
                    let r = state.rtts.get_mut(spoke).expect("known above");
                    r.outliers += 1;
                    return Err(Rejected::Outlier);
                }
                Some(_) => {}
            }
        }
        if !self.prefixes.contains_key(&prefix) && self.prefixes.len() >= self.settings.max_prefixes
        {
            self.make_room(now);
        }
        let state = self.prefixes.entry(prefix).or_default();
        state.last_sample = Some(now);
        if !state.rtts.contains_key(spoke) {
            let fresh = Rtt {
                smoothed_ms: rtt_ms,
                observed: 0,
                probed: 0,
                last: now,
                outliers: 0,
                budgeted: false,
            };
            state.rtts.insert(Arc::from(spoke), fresh);
        }
        let rtt = state.rtts.get_mut(spoke).expect("inserted above");
        rtt.budgeted |= budgeted;
        // A value gone stale, or a run of outliers, starts over rather
        // than dragging the old mean.
        let restart =
            rtt.outliers + 1 >= OUTLIER_RUN && own && budget::outlier(rtt.smoothed_ms, rtt_ms);
        if rtt.samples() == 0 || now.saturating_duration_since(rtt.last) > ttl || restart {
            rtt.smoothed_ms = rtt_ms;
            rtt.observed = 0;
            rtt.probed = 0;
        } else {
            rtt.smoothed_ms += alpha * (rtt_ms - rtt.smoothed_ms);
        }
        if own {
            rtt.outliers = 0;
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
            if let Some(state) = self.prefixes.remove(p) {
                for (spoke, r) in &state.rtts {
                    if r.budgeted {
                        self.budgets.released(spoke);
                    }
                }
            }
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
        self.budgets.forget(spoke);
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
        let budgets = &mut self.budgets;
        self.prefixes.retain(|_, s| {
            s.rtts.retain(|spoke, r| {
                let keep = now.saturating_duration_since(r.last) <= ttl;
                if !keep && r.budgeted {
                    budgets.released(spoke);
                }
                keep
            });
            !s.rtts.is_empty()
        });
    }

    /// Client networks `spoke`'s own samples hold now.
    pub fn networks_held(&self, spoke: &str) -> usize {
        self.budgets.held(spoke)
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
mod tests;
