//! The `[dns]` and `[steering]` sections of `hub.toml`: the authoritative
//! DNS server for the steering zone, and the model that picks a spoke for
//! each client network.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ferry_common::config::Problems;
use ferry_common::prefix::Prefix;
use serde::Deserialize;

use crate::steering::model::Settings;

/// The `[dns]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Address for DNS on UDP and TCP, such as `0.0.0.0:53`; port 0 picks a
    /// free port (the same one on both, logged).
    pub listen: SocketAddr,
    /// The zone this hub is authoritative for, such as `edge.example.com`,
    /// delegated to the hubs by NS records in its parent zone.
    pub zone: String,
    /// Addresses of this hub's API: answered for `hub.<zone>`, and for
    /// `api.<zone>` when no spoke fits. Default: the `[api]` listen address
    /// when it is a specific one.
    #[serde(default)]
    pub hub_addrs: Vec<IpAddr>,
    /// Names of the zone's name servers (NS records). Default `hub.<zone>`.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// The mailbox in the SOA record, as a DNS name. Default
    /// `hostmaster.<zone>`.
    pub hostmaster: Option<String>,
    /// TTL of every answer, and of negative answers, in seconds. Default 20.
    #[serde(default = "defaults::ttl_secs")]
    pub ttl_secs: u32,
    /// Most DNS-over-TCP connections open at once. Default 256.
    #[serde(default = "defaults::max_tcp_connections")]
    pub max_tcp_connections: usize,
    /// Most DNS-over-TCP connections one source (an IPv4 address or an
    /// IPv6 /64) may hold open; one more is closed as soon as it is
    /// accepted. Default 16.
    #[serde(default = "defaults::max_tcp_connections_per_source")]
    pub max_tcp_connections_per_source: usize,
    /// A DNS-over-TCP connection with no query for this long is closed.
    /// Default 10.
    #[serde(default = "defaults::tcp_idle_timeout_secs")]
    pub tcp_idle_timeout_secs: u64,
    /// Response rate limiting on UDP, per source network.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

/// The `[dns.rate_limit]` section: a token bucket per source network, so the
/// server cannot be used to amplify traffic towards a forged source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// UDP responses per second one source network gets; 0 turns the limit
    /// off. Default 200.
    #[serde(default = "defaults::responses_per_sec")]
    pub responses_per_sec: u32,
    /// Responses a quiet source may send in a burst. Default 400.
    #[serde(default = "defaults::burst")]
    pub burst: u32,
    /// Of the responses over the limit, every `slip`-th is sent truncated
    /// (empty, TC set) so a real client retries over TCP; the rest are
    /// dropped. 0 drops them all. Default 2.
    #[serde(default = "defaults::slip")]
    pub slip: u32,
    /// Prefix length IPv4 sources are grouped by. Default 24.
    #[serde(default = "defaults::rl_v4_prefix")]
    pub v4_prefix: u8,
    /// Prefix length IPv6 sources are grouped by. Default 56.
    #[serde(default = "defaults::rl_v6_prefix")]
    pub v6_prefix: u8,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            responses_per_sec: defaults::responses_per_sec(),
            burst: defaults::burst(),
            slip: defaults::slip(),
            v4_prefix: defaults::rl_v4_prefix(),
            v6_prefix: defaults::rl_v6_prefix(),
        }
    }
}

/// The `[steering]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteeringConfig {
    /// Prefix length client IPv4 addresses are grouped by. Default 24.
    #[serde(default = "defaults::v4_prefix")]
    pub v4_prefix: u8,
    /// Prefix length client IPv6 addresses are grouped by. Default 48.
    #[serde(default = "defaults::v6_prefix")]
    pub v6_prefix: u8,
    /// An answer moves to another spoke only if that one is at least this
    /// many milliseconds faster… Default 10.
    #[serde(default = "defaults::switch_min_ms")]
    pub switch_min_ms: f64,
    /// …and at least this fraction faster. Default 0.333 (a third).
    #[serde(default = "defaults::switch_min_fraction")]
    pub switch_min_fraction: f64,
    /// Weight of a new sample in a smoothed RTT, from 0.01 to 1. Default 0.25.
    #[serde(default = "defaults::smoothing")]
    pub smoothing: f64,
    /// Samples older than this no longer count, in seconds. Default 600.
    #[serde(default = "defaults::sample_ttl_secs")]
    pub sample_ttl_secs: u64,
    /// Client networks remembered at most; the least recently measured go
    /// first. Default 100000.
    #[serde(default = "defaults::max_prefixes")]
    pub max_prefixes: usize,
    /// Client networks one spoke's samples of itself may hold at once.
    /// Default 20000.
    #[serde(default = "defaults::spoke_max_networks")]
    pub spoke_max_networks: usize,
    /// New client networks one spoke's samples of itself may add per
    /// minute. Default 1200.
    #[serde(default = "defaults::spoke_new_networks_per_min")]
    pub spoke_new_networks_per_min: u32,
    /// A spoke whose last heartbeat is older than this leaves the answers,
    /// in milliseconds. Default 2.5 heartbeat intervals.
    pub stale_after_ms: Option<u64>,
    /// Operator hints, used for networks with no measurements.
    #[serde(default)]
    pub hints: Vec<HintConfig>,
}

impl Default for SteeringConfig {
    fn default() -> Self {
        Self {
            v4_prefix: defaults::v4_prefix(),
            v6_prefix: defaults::v6_prefix(),
            switch_min_ms: defaults::switch_min_ms(),
            switch_min_fraction: defaults::switch_min_fraction(),
            smoothing: defaults::smoothing(),
            sample_ttl_secs: defaults::sample_ttl_secs(),
            max_prefixes: defaults::max_prefixes(),
            spoke_max_networks: defaults::spoke_max_networks(),
            spoke_new_networks_per_min: defaults::spoke_new_networks_per_min(),
            stale_after_ms: None,
            hints: Vec::new(),
        }
    }
}

/// A `[[steering.hints]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HintConfig {
    /// The client network, such as `10.0.0.0/8` (host bits zero).
    pub prefix: Prefix,
    /// Spokes for it, most preferred first; the first eligible one answers.
    pub spokes: Vec<String>,
}

mod defaults {
    pub fn ttl_secs() -> u32 {
        20
    }
    pub fn max_tcp_connections() -> usize {
        256
    }
    pub fn max_tcp_connections_per_source() -> usize {
        16
    }
    pub fn tcp_idle_timeout_secs() -> u64 {
        10
    }
    pub fn responses_per_sec() -> u32 {
        200
    }
    pub fn burst() -> u32 {
        400
    }
    pub fn slip() -> u32 {
        2
    }
    pub fn rl_v4_prefix() -> u8 {
        24
    }
    pub fn rl_v6_prefix() -> u8 {
        56
    }
    pub fn v4_prefix() -> u8 {
        24
    }
    pub fn v6_prefix() -> u8 {
        48
    }
    pub fn switch_min_ms() -> f64 {
        10.0
    }
    pub fn switch_min_fraction() -> f64 {
        1.0 / 3.0
    }
    pub fn smoothing() -> f64 {
        0.25
    }
    pub fn sample_ttl_secs() -> u64 {
        600
    }
    pub fn max_prefixes() -> usize {
        100_000
    }
    pub fn spoke_max_networks() -> usize {
        20_000
    }
    pub fn spoke_new_networks_per_min() -> u32 {
        1_200
    }
}

/// Whether `name` is a DNS name of labels of letters, digits, `-` and `_`
/// (each 1 to 63 bytes, 253 in all), with or without the final dot.
pub fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl DnsConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        if !valid_dns_name(&self.zone) {
            p.add(
                "dns.zone",
                "must be a DNS name such as edge.example.com (letters, digits, '-', dots)",
            );
        }
        for (i, ns) in self.nameservers.iter().enumerate() {
            if !valid_dns_name(ns) {
                p.add(format!("dns.nameservers[{i}]"), "must be a DNS name");
            }
        }
        if let Some(h) = &self.hostmaster
            && !valid_dns_name(h)
        {
            p.add(
                "dns.hostmaster",
                "must be a mailbox written as a DNS name, such as hostmaster.example.com",
            );
        }
        if self.hub_addrs.len() > ferry_common::proto::MAX_PUBLIC_ADDRS {
            p.add("dns.hub_addrs", "must list at most 16 addresses");
        }
        for (i, a) in self.hub_addrs.iter().enumerate() {
            if a.is_unspecified() || a.is_multicast() {
                p.add(
                    format!("dns.hub_addrs[{i}]"),
                    "must be an address clients can reach, not unspecified or multicast",
                );
            }
        }
        if !(1..=86_400).contains(&self.ttl_secs) {
            p.add("dns.ttl_secs", "must be from 1 to 86400");
        }
        if self.max_tcp_connections == 0 {
            p.add("dns.max_tcp_connections", "must be at least 1");
        }
        if self.max_tcp_connections_per_source == 0 {
            p.add("dns.max_tcp_connections_per_source", "must be at least 1");
        }
        if !(1..=300).contains(&self.tcp_idle_timeout_secs) {
            p.add("dns.tcp_idle_timeout_secs", "must be from 1 to 300");
        }
        let rl = &self.rate_limit;
        if rl.responses_per_sec > 0 && rl.burst < rl.responses_per_sec {
            p.add(
                "dns.rate_limit.burst",
                "must be at least dns.rate_limit.responses_per_sec",
            );
        }
        if rl.v4_prefix > 32 {
            p.add("dns.rate_limit.v4_prefix", "must be at most 32");
        }
        if rl.v6_prefix > 128 {
            p.add("dns.rate_limit.v6_prefix", "must be at most 128");
        }
    }
}

impl SteeringConfig {
    pub(super) fn validate(&self, heartbeat_interval_secs: Option<u64>, p: &mut Problems) {
        if !(8..=32).contains(&self.v4_prefix) {
            p.add("steering.v4_prefix", "must be from 8 to 32");
        }
        if !(16..=128).contains(&self.v6_prefix) {
            p.add("steering.v6_prefix", "must be from 16 to 128");
        }
        if !(0.0..=10_000.0).contains(&self.switch_min_ms) {
            p.add("steering.switch_min_ms", "must be from 0 to 10000");
        }
        if !(0.0..1.0).contains(&self.switch_min_fraction) {
            p.add(
                "steering.switch_min_fraction",
                "must be at least 0 and below 1",
            );
        }
        if !(0.01..=1.0).contains(&self.smoothing) {
            p.add("steering.smoothing", "must be from 0.01 to 1");
        }
        if !(1..=86_400).contains(&self.sample_ttl_secs) {
            p.add("steering.sample_ttl_secs", "must be from 1 to 86400");
        }
        if !(1..=10_000_000).contains(&self.max_prefixes) {
            p.add("steering.max_prefixes", "must be from 1 to 10000000");
        }
        if !(1..=self.max_prefixes.max(1)).contains(&self.spoke_max_networks) {
            p.add(
                "steering.spoke_max_networks",
                "must be from 1 to steering.max_prefixes",
            );
        }
        if self.spoke_new_networks_per_min == 0 {
            p.add("steering.spoke_new_networks_per_min", "must be at least 1");
        }
        if let (Some(stale), Some(hb)) = (self.stale_after_ms, heartbeat_interval_secs) {
            if stale <= hb * 1000 {
                p.add(
                    "steering.stale_after_ms",
                    "must be longer than tunnel.heartbeat_interval_secs, or every spoke would leave the answers between heartbeats",
                );
            } else if stale > 3 * hb * 1000 {
                p.add(
                    "steering.stale_after_ms",
                    "must be at most three tunnel.heartbeat_interval_secs: a spoke silent for three heartbeats has lost its tunnel and left the answers already, so a longer setting has no effect",
                );
            }
        }
        for (i, h) in self.hints.iter().enumerate() {
            if h.spokes.is_empty() {
                p.add(
                    format!("steering.hints[{i}].spokes"),
                    "must name at least one spoke",
                );
            }
            if h.spokes.iter().any(|s| !crate::store::valid_spoke_name(s)) {
                p.add(
                    format!("steering.hints[{i}].spokes"),
                    "must be spoke names (a-z, 0-9 and '-')",
                );
            }
        }
    }

    /// How long a heartbeat keeps a spoke eligible.
    pub fn stale_after(&self, heartbeat_interval_secs: u64) -> Duration {
        Duration::from_millis(
            self.stale_after_ms
                .unwrap_or(heartbeat_interval_secs * 2500),
        )
    }

    /// The model's settings.
    pub fn model_settings(&self) -> Settings {
        Settings {
            v4_prefix: self.v4_prefix,
            v6_prefix: self.v6_prefix,
            switch_min_ms: self.switch_min_ms,
            switch_min_fraction: self.switch_min_fraction,
            smoothing: self.smoothing,
            sample_ttl: Duration::from_secs(self.sample_ttl_secs),
            max_prefixes: self.max_prefixes,
            spoke_limits: crate::steering::budget::Limits {
                max_networks: self.spoke_max_networks,
                new_networks_per_min: self.spoke_new_networks_per_min,
            },
            hints: self
                .hints
                .iter()
                .map(|h| (h.prefix, h.spokes.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_checked() {
        for good in ["edge.example.com", "edge.example.com.", "a", "x-1.y_z.io"] {
            assert!(valid_dns_name(good), "{good}");
        }
        for bad in ["", ".", "a..b", "-a.b", "a-.b", "a b.c", &"x".repeat(64)] {
            assert!(!valid_dns_name(bad), "{bad}");
        }
    }
}
