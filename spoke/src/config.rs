//! The spoke's configuration file (`spoke.toml`). Same discipline as the
//! hub's: unknown keys rejected, every problem reported with its key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferry_common::config::{Problems, Validate, check_absolute};
use ferry_common::listener::ApiConfig;
use ferry_common::operator_listener::MetricsConfig;
use ferry_common::telemetry::LogConfig;
use ferry_common::tunnel_io::TransportLimits;
use serde::Deserialize;

/// The whole spoke configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpokeConfig {
    /// The spoke's name, as the operator added it on the hub (`ferry-hub
    /// spoke add NAME`).
    pub name: String,
    /// Absolute directory for the spoke's identity (its private key, its
    /// certificate and the hub's CA) and its report journal (completion
    /// reports the hub has not taken yet).
    pub state_dir: PathBuf,
    /// The client-facing HTTP API listener (same keys as the hub's `[api]`).
    pub api: ApiConfig,
    /// The operator listener: `/metrics`, `/healthz`, `/readyz`. Default
    /// `listen = "127.0.0.1:9461"`.
    #[serde(default = "defaults::metrics")]
    pub metrics: MetricsConfig,
    /// The hub this spoke belongs to.
    pub hub: HubLink,
    /// Tunnel tuning.
    #[serde(default)]
    pub tunnel: TunnelTuning,
    /// What the hub's DNS needs to send clients here.
    #[serde(default)]
    pub steering: SteeringSection,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The file this configuration was read from (set by the binary, not
    /// a key): re-read on SIGHUP.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// The `[hub]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubLink {
    /// The hub's HTTP API, used once to enrol, such as `https://hub.example.com`.
    pub api_url: String,
    /// PEM file of the CA that signed the hub API's TLS certificate; default
    /// the public web roots.
    pub api_ca_file: Option<PathBuf>,
    /// The hub's tunnel address (UDP for QUIC), such as `203.0.113.7:7443`.
    pub tunnel_addr: SocketAddr,
    /// The hub's TLS-over-TCP tunnel address, used when QUIC cannot get
    /// through (UDP blocked). Default: the same address as `tunnel_addr`.
    pub tunnel_tcp_addr: Option<SocketAddr>,
    /// Further hubs sharing the first one's metadata and CA. The spoke holds
    /// a tunnel to each (hot standby) and uses the first that is up, so a
    /// failover costs no handshake.
    #[serde(default)]
    pub standby: Vec<StandbyHub>,
}

/// A `[[hub.standby]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyHub {
    /// Its tunnel address (UDP for QUIC).
    pub tunnel_addr: SocketAddr,
    /// Its TLS-over-TCP tunnel address; default the same as `tunnel_addr`.
    pub tunnel_tcp_addr: Option<SocketAddr>,
}

/// One hub a spoke holds a tunnel to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubTarget {
    /// 0 for the primary, then the standbys in order.
    pub index: usize,
    /// QUIC address.
    pub quic: SocketAddr,
    /// TLS-over-TCP address.
    pub tcp: SocketAddr,
}

impl HubLink {
    /// Every hub to hold a tunnel to, primary first.
    pub fn targets(&self) -> Vec<HubTarget> {
        let primary = HubTarget {
            index: 0,
            quic: self.tunnel_addr,
            tcp: self.tunnel_tcp_addr.unwrap_or(self.tunnel_addr),
        };
        std::iter::once(primary)
            .chain(self.standby.iter().enumerate().map(|(i, s)| HubTarget {
                index: i + 1,
                quic: s.tunnel_addr,
                tcp: s.tunnel_tcp_addr.unwrap_or(s.tunnel_addr),
            }))
            .collect()
    }
}

/// The `[steering]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteeringSection {
    /// Addresses clients reach this spoke's API at, which the hub's DNS
    /// answers with. Default: the `[api]` listen address when it is a
    /// specific one; with `0.0.0.0` or `::` and no addresses here, the hub
    /// never steers clients to this spoke.
    #[serde(default)]
    pub public_addrs: Vec<std::net::IpAddr>,
    /// The API's base URL as clients reach it, such as
    /// `https://fra1.edge.example.com`, where they time `GET /v1/probe`.
    /// Default: `http(s)://<first public address>:<listen port>`.
    pub public_url: Option<String>,
    /// Transfers this spoke streams before steering sends new clients
    /// elsewhere; 0 for no limit. Default 1000.
    #[serde(default = "defaults::capacity_transfers")]
    pub capacity_transfers: u64,
    /// Report the kernel's round-trip time of client connections to the hub
    /// with each heartbeat. Default true.
    #[serde(default = "defaults::observe_client_rtt")]
    pub observe_client_rtt: bool,
}

impl Default for SteeringSection {
    fn default() -> Self {
        Self {
            public_addrs: Vec::new(),
            public_url: None,
            capacity_transfers: defaults::capacity_transfers(),
            observe_client_rtt: defaults::observe_client_rtt(),
        }
    }
}

impl SpokeConfig {
    /// What to announce to the hub for steering, given the address the API
    /// is bound to; `None` when clients have no address to reach it at.
    pub fn steering_announce(
        &self,
        bound: SocketAddr,
    ) -> Option<ferry_common::proto::SteeringAnnounce> {
        let addrs = if self.steering.public_addrs.is_empty() {
            if bound.ip().is_unspecified() {
                return None;
            }
            vec![bound.ip()]
        } else {
            self.steering.public_addrs.clone()
        };
        let url = match &self.steering.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let scheme = if self.api.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}", SocketAddr::new(addrs[0], bound.port()))
            }
        };
        Some(ferry_common::proto::SteeringAnnounce {
            public_addrs: addrs,
            public_url: url,
            capacity_transfers: self.steering.capacity_transfers,
        })
    }
}

/// The `[tunnel]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelTuning {
    /// Largest frame payload accepted, in bytes. Default 1048576.
    #[serde(default = "ferry_common::tunnel_io::defaults::max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Flow-control window of one stream, in bytes. Default 4194304.
    #[serde(default = "ferry_common::tunnel_io::defaults::stream_window_bytes")]
    pub stream_window_bytes: u32,
    /// Flow-control window of the tunnel, in bytes. Default 16777216.
    #[serde(default = "ferry_common::tunnel_io::defaults::connection_window_bytes")]
    pub connection_window_bytes: u32,
    /// Streams the hub may open towards this spoke at once (QUIC; the hub
    /// opens none today, so this is a ceiling for later use). Default 64.
    #[serde(default = "defaults::max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// A silent tunnel is dead after this long. Default 20.
    #[serde(default = "ferry_common::tunnel_io::defaults::idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// First wait before reconnecting, in milliseconds; doubles per failure,
    /// with jitter. Default 500.
    #[serde(default = "defaults::reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    /// Longest wait between reconnection attempts, in seconds. Default 2,
    /// so a spoke is back within about two seconds of its hub returning,
    /// however long the hub was away.
    #[serde(default = "defaults::reconnect_max_secs")]
    pub reconnect_max_secs: u64,
    /// How long a QUIC handshake may take before the spoke falls back to
    /// TLS over TCP, in milliseconds. Default 3000.
    #[serde(default = "defaults::quic_handshake_timeout_ms")]
    pub quic_handshake_timeout_ms: u64,
    /// While on TCP, how often QUIC is tried again, in seconds; the tunnel
    /// moves back as soon as it works. Default 30.
    #[serde(default = "defaults::quic_retry_secs")]
    pub quic_retry_secs: u64,
    /// Bytes of completion reports the journal may hold waiting for the
    /// hub; above it the spoke refuses new uploads (503) rather than risk
    /// losing a report. Default 268435456 (256 MiB: about a million
    /// reports).
    #[serde(default = "defaults::report_journal_max_bytes")]
    pub report_journal_max_bytes: u64,
}

impl Default for TunnelTuning {
    fn default() -> Self {
        Self {
            max_frame_bytes: ferry_common::tunnel_io::defaults::max_frame_bytes(),
            stream_window_bytes: ferry_common::tunnel_io::defaults::stream_window_bytes(),
            connection_window_bytes: ferry_common::tunnel_io::defaults::connection_window_bytes(),
            max_concurrent_streams: defaults::max_concurrent_streams(),
            idle_timeout_secs: ferry_common::tunnel_io::defaults::idle_timeout_secs(),
            reconnect_initial_ms: defaults::reconnect_initial_ms(),
            reconnect_max_secs: defaults::reconnect_max_secs(),
            quic_handshake_timeout_ms: defaults::quic_handshake_timeout_ms(),
            quic_retry_secs: defaults::quic_retry_secs(),
            report_journal_max_bytes: defaults::report_journal_max_bytes(),
        }
    }
}

mod defaults {
    pub fn report_journal_max_bytes() -> u64 {
        256 << 20
    }
    pub fn metrics() -> ferry_common::operator_listener::MetricsConfig {
        ferry_common::operator_listener::MetricsConfig::on_loopback(9461)
    }
    pub fn capacity_transfers() -> u64 {
        1000
    }
    pub fn observe_client_rtt() -> bool {
        true
    }
    pub fn max_concurrent_streams() -> u32 {
        64
    }
    pub fn reconnect_initial_ms() -> u64 {
        500
    }
    pub fn reconnect_max_secs() -> u64 {
        2
    }
    pub fn quic_handshake_timeout_ms() -> u64 {
        3000
    }
    pub fn quic_retry_secs() -> u64 {
        30
    }
}

impl TunnelTuning {
    /// The transport limits; keep-alive at a third of the idle timeout.
    pub fn limits(&self) -> TransportLimits {
        TransportLimits {
            stream_window_bytes: self.stream_window_bytes,
            connection_window_bytes: self.connection_window_bytes,
            max_concurrent_streams: self.max_concurrent_streams,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            keep_alive: Duration::from_secs((self.idle_timeout_secs / 3).max(1)),
        }
    }
}

impl Validate for SpokeConfig {
    fn validate(&self, p: &mut Problems) {
        if !ferry_common::proto::valid_spoke_name(&self.name) {
            p.add("name", ferry_common::proto::SPOKE_NAME_RULE);
        }
        check_absolute(p, "state_dir", &self.state_dir);
        self.api.validate("api", p);
        self.metrics.validate(&self.api, p);
        if !(self.hub.api_url.starts_with("http://") || self.hub.api_url.starts_with("https://")) {
            p.add("hub.api_url", "must start with http:// or https://");
        }
        if let Some(f) = &self.hub.api_ca_file {
            check_absolute(p, "hub.api_ca_file", f);
        }
        let t = &self.tunnel;
        ferry_common::tunnel_io::check_windows(
            t.max_frame_bytes,
            t.stream_window_bytes,
            t.connection_window_bytes,
            p,
        );
        if !(3..=3600).contains(&t.idle_timeout_secs) {
            p.add("tunnel.idle_timeout_secs", "must be from 3 to 3600");
        }
        if t.reconnect_initial_ms == 0 {
            p.add("tunnel.reconnect_initial_ms", "must be at least 1");
        }
        if t.reconnect_max_secs == 0 || t.reconnect_max_secs * 1000 < t.reconnect_initial_ms {
            p.add(
                "tunnel.reconnect_max_secs",
                "must be at least 1 and not below tunnel.reconnect_initial_ms",
            );
        }
        if t.quic_handshake_timeout_ms < 100 {
            p.add("tunnel.quic_handshake_timeout_ms", "must be at least 100");
        }
        if t.quic_retry_secs == 0 {
            p.add("tunnel.quic_retry_secs", "must be at least 1");
        }
        if t.report_journal_max_bytes < 4096 {
            p.add("tunnel.report_journal_max_bytes", "must be at least 4096");
        }
        let st = &self.steering;
        if st.public_addrs.len() > ferry_common::proto::MAX_PUBLIC_ADDRS {
            p.add("steering.public_addrs", "must list at most 16 addresses");
        }
        for (i, a) in st.public_addrs.iter().enumerate() {
            if a.is_unspecified() || a.is_multicast() {
                p.add(
                    format!("steering.public_addrs[{i}]"),
                    "must be an address clients can reach, not unspecified or multicast",
                );
            }
        }
        if let Some(u) = &st.public_url {
            let ok = (u.starts_with("http://") || u.starts_with("https://"))
                && u.len() <= 1000
                && !u.contains(['?', '#', ' ']);
            if !ok {
                p.add(
                    "steering.public_url",
                    "must be an http:// or https:// base URL with no query, of at most 1000 bytes",
                );
            }
        }
        if let Err(e) = self.log.check() {
            p.add("log.level", e.to_string());
        }
    }
}
