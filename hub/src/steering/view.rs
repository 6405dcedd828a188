//! `GET /v1/steering`: the map as the operator sees it.

use std::net::IpAddr;

use ferry_common::prefix::Prefix;
use serde::Serialize;

use super::{Steering, now};

impl Steering {
    /// The map for `GET /v1/steering`: at most `limit` prefixes, or only
    /// the one `client` is in (with the answer it would get now).
    pub fn view(&self, client: Option<IpAddr>, limit: usize) -> SteeringView {
        let answer = client.map(|c| {
            let s = self.answer(c);
            ClientAnswer {
                client: c,
                spoke: s.target.map(|t| t.name.to_string()),
                basis: s.basis.as_str(),
                scope: s.scope,
            }
        });
        let now = now();
        let inner = self.lock();
        let mut eligible: Vec<String> = inner
            .spokes
            .keys()
            .filter(|k| inner.eligible(k).is_some())
            .map(|k| k.to_string())
            .collect();
        eligible.sort();
        let all = inner.model.snapshot(now);
        let total = all.len();
        let wanted = client.map(|c| inner.model.prefix_of(c));
        let prefixes = all
            .into_iter()
            .filter(|p| wanted.is_none_or(|w| w == p.prefix))
            .take(limit)
            .map(|p| PrefixEntry {
                prefix: p.prefix,
                answer: p.answer.map(|a| a.to_string()),
                spokes: p
                    .spokes
                    .into_iter()
                    .map(|s| SpokeEntry {
                        eligible: inner.eligible(&s.spoke).is_some(),
                        spoke: s.spoke.to_string(),
                        rtt_ms: (s.rtt_ms * 1000.0).round() / 1000.0,
                        samples: Samples {
                            spoke: s.observed_samples,
                            probe: s.probe_samples,
                        },
                        age_secs: s.age.as_secs(),
                    })
                    .collect(),
            })
            .collect();
        let settings = inner.model.settings();
        SteeringView {
            v4_prefix: settings.v4_prefix,
            v6_prefix: settings.v6_prefix,
            switch_min_ms: settings.switch_min_ms,
            switch_min_fraction: settings.switch_min_fraction,
            eligible,
            prefix_count: total,
            prefixes,
            client: answer,
        }
    }
}

/// `GET /v1/steering`.
#[derive(Debug, Serialize)]
pub struct SteeringView {
    /// Prefix length IPv4 clients are grouped by.
    pub v4_prefix: u8,
    /// Prefix length IPv6 clients are grouped by.
    pub v6_prefix: u8,
    /// Hysteresis: the absolute margin, in milliseconds.
    pub switch_min_ms: f64,
    /// Hysteresis: the relative margin.
    pub switch_min_fraction: f64,
    /// The spokes DNS may answer now.
    pub eligible: Vec<String>,
    /// Client networks with measurements, in all.
    pub prefix_count: usize,
    /// Client networks (in address order), each with its spokes.
    pub prefixes: Vec<PrefixEntry>,
    /// With `?client=`, the answer that client gets now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientAnswer>,
}

/// One client network in [`SteeringView`].
#[derive(Debug, Serialize)]
pub struct PrefixEntry {
    /// The network.
    pub prefix: Prefix,
    /// The spoke it was last answered with (`null` for the hub, or when it
    /// has not been asked yet).
    pub answer: Option<String>,
    /// Its spokes, fastest first.
    pub spokes: Vec<SpokeEntry>,
}

/// One spoke of a client network.
#[derive(Debug, Serialize)]
pub struct SpokeEntry {
    /// The spoke.
    pub spoke: String,
    /// Smoothed RTT, in milliseconds.
    pub rtt_ms: f64,
    /// Samples taken since the value last started afresh.
    pub samples: Samples,
    /// Seconds since the newest sample.
    pub age_secs: u64,
    /// Whether DNS may answer it now.
    pub eligible: bool,
}

/// Sample counts by source.
#[derive(Debug, Serialize)]
pub struct Samples {
    /// From the spoke's own client connections.
    pub spoke: u64,
    /// From client probe reports.
    pub probe: u64,
}

/// The answer one client gets now.
#[derive(Debug, Serialize)]
pub struct ClientAnswer {
    /// The client address asked about.
    pub client: IpAddr,
    /// The spoke, or `null` for the hub.
    pub spoke: Option<String>,
    /// `measured`, `hint` or `hub`.
    pub basis: &'static str,
    /// The prefix length the answer holds for.
    pub scope: u8,
}
