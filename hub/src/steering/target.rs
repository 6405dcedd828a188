//! The spokes DNS may answer: whether a connected spoke may be answered
//! ([`Eligibility`]), and what an answer with it needs ([`SpokeTarget`]: its
//! public addresses and the URL clients probe it at), built from what the
//! spoke announced.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ferry_common::proto::SteeringAnnounce;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

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

impl SpokeTarget {
    /// The target `name` announced with `a`, counting its answers in
    /// `answers`.
    pub(super) fn new(name: Arc<str>, a: &SteeringAnnounce, answers: Counter) -> Self {
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

/// Where clients probe the spoke that announced `a`; empty when it has
/// no URL the operator allowed.
fn probe_url(a: &SteeringAnnounce) -> String {
    if a.public_url.is_empty() {
        return String::new();
    }
    format!("{}/v1/probe", a.public_url.trim_end_matches('/'))
}

/// Whether `t` is what `a` announces: the same addresses and probe URL.
pub(super) fn same_announce(t: &SpokeTarget, a: &SteeringAnnounce) -> bool {
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
