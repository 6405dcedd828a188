//! The hub's configuration file (`hub.toml`).
//!
//! Every section rejects unknown keys; defaults are given on each field; the
//! [`Validate`] pass reports every semantic problem at once with its key.

mod postgres_url;
mod steering;

pub use postgres_url::{PostgresUrlError, check_postgres_url, with_password};
pub use steering::{DnsConfig, HintConfig, RateLimitConfig, SteeringConfig, valid_dns_name};

use std::path::PathBuf;

use ferry_common::config::{Problems, Validate, check_absolute};
use ferry_common::listener::ApiConfig;
use ferry_common::operator_listener::MetricsConfig;
use ferry_common::provider::ProviderPolicy;
use ferry_common::telemetry::LogConfig;
use serde::Deserialize;

/// The whole hub configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Absolute directory for the hub's state: the SQLite database and the
    /// tunnel certificate authority (`tunnel-ca/`). Created at start if missing.
    pub state_dir: PathBuf,
    /// The client-facing HTTP API listener.
    pub api: ApiConfig,
    /// The operator listener: `/metrics`, `/healthz`, `/readyz`. Default
    /// `listen = "127.0.0.1:9460"`.
    #[serde(default = "defaults::metrics")]
    pub metrics: MetricsConfig,
    /// The metadata store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Where the master key that encrypts provider credentials comes from.
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// Which storage providers tenants may connect, and within which limits.
    #[serde(default)]
    pub providers: ProvidersConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The file this configuration was read from (set by the binary, not
    /// a key): re-read on SIGHUP.
    #[serde(skip)]
    pub path: Option<PathBuf>,
    /// The QUIC endpoint spokes connect to; absent, the hub takes no spokes.
    pub tunnel: Option<TunnelConfig>,
    /// The authoritative DNS server of the steering zone; absent, the hub
    /// answers no DNS.
    pub dns: Option<DnsConfig>,
    /// How clients are steered to spokes.
    #[serde(default)]
    pub steering: SteeringConfig,
    /// The metadata index and its scans of providers.
    #[serde(default)]
    pub index: IndexConfig,
    /// Resumable uploads (tus and the IETF draft).
    #[serde(default)]
    pub uploads: UploadsConfig,
    /// The activity feed.
    #[serde(default)]
    pub events: EventsConfig,
    /// Webhook deliveries.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// Accounts' quotas and limits where the admin API set none (each
    /// member unset or 0: no limit).
    #[serde(default)]
    pub limits: crate::store::limits::Limits,
}

/// The `[webhooks]` section: how this hub sends accounts' webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Whether this hub sends deliveries (default true). A hub that does
    /// not still records them; another hub sharing the store sends them.
    #[serde(default = "defaults::yes")]
    pub send: bool,
    /// Allow endpoints on loopback, private, link-local and the other
    /// internal addresses (default false), as
    /// `providers.remote.allow_private_endpoints` does for providers.
    #[serde(default)]
    pub allow_private_endpoints: bool,
    /// Seconds before the second, third… attempt of a delivery (default
    /// the Standard Webhooks schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
    /// 10 h); each is varied by ±20 %. After the last, the delivery fails.
    #[serde(default = "defaults::webhook_schedule")]
    pub retry_schedule_secs: Vec<u64>,
    /// Seconds one attempt may take, connecting included (default 15).
    #[serde(default = "defaults::webhook_timeout_secs")]
    pub timeout_secs: u64,
    /// Deliveries this hub sends at once (default 16).
    #[serde(default = "defaults::webhook_concurrency")]
    pub concurrency: usize,
    /// Days delivered and failed deliveries stay in the log (default 30).
    #[serde(default = "defaults::webhook_log_days")]
    pub log_retention_days: f64,
    /// Seconds a rotated secret still signs beside the new one (default
    /// 86400).
    #[serde(default = "defaults::webhook_rotation_secs")]
    pub rotation_overlap_secs: u64,
    /// The most endpoints an account may have (default 20).
    #[serde(default = "defaults::webhook_max_endpoints")]
    pub max_endpoints_per_account: i64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            send: true,
            allow_private_endpoints: false,
            retry_schedule_secs: defaults::webhook_schedule(),
            timeout_secs: defaults::webhook_timeout_secs(),
            concurrency: defaults::webhook_concurrency(),
            log_retention_days: defaults::webhook_log_days(),
            rotation_overlap_secs: defaults::webhook_rotation_secs(),
            max_endpoints_per_account: defaults::webhook_max_endpoints(),
        }
    }
}

impl WebhooksConfig {
    /// What the sender and the API run with.
    pub fn settings(&self) -> crate::webhooks::Settings {
        use std::time::Duration;
        crate::webhooks::Settings {
            schedule: self
                .retry_schedule_secs
                .iter()
                .map(|&s| Duration::from_secs(s))
                .collect(),
            timeout: Duration::from_secs(self.timeout_secs),
            concurrency: self.concurrency,
            policy: ferry_common::provider::endpoint::EndpointPolicy {
                allow_private: self.allow_private_endpoints,
            },
            log_retention: Duration::from_secs_f64(self.log_retention_days.max(0.0) * 86_400.0),
            rotation_overlap: Duration::from_secs(self.rotation_overlap_secs),
            max_endpoints: self.max_endpoints_per_account,
        }
    }

    fn validate(&self, p: &mut Problems) {
        if self.retry_schedule_secs.len() > 20 {
            p.add(
                "webhooks.retry_schedule_secs",
                "must have at most 20 delays",
            );
        }
        if self
            .retry_schedule_secs
            .iter()
            .any(|&s| s == 0 || s > 7 * 86_400)
        {
            p.add(
                "webhooks.retry_schedule_secs",
                "each delay must be 1 second to 7 days",
            );
        }
        if !(1..=60).contains(&self.timeout_secs) {
            p.add("webhooks.timeout_secs", "must be 1 to 60");
        }
        if !(1..=1024).contains(&self.concurrency) {
            p.add("webhooks.concurrency", "must be 1 to 1024");
        }
        if !(self.log_retention_days > 0.0 && self.log_retention_days <= 3650.0) {
            p.add(
                "webhooks.log_retention_days",
                "must be more than 0 and at most 3650",
            );
        }
        if self.rotation_overlap_secs > 30 * 86_400 {
            p.add("webhooks.rotation_overlap_secs", "must be at most 30 days");
        }
        if !(1..=1000).contains(&self.max_endpoints_per_account) {
            p.add("webhooks.max_endpoints_per_account", "must be 1 to 1000");
        }
    }
}

/// The `[events]` section: how long the activity feed keeps its events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Days an event is kept (default 90; fractions are taken; 0 keeps
    /// them forever). A cursor standing before events removed since gets
    /// `410 cursor_expired`.
    #[serde(default = "defaults::event_retention_days")]
    pub retention_days: f64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retention_days: defaults::event_retention_days(),
        }
    }
}

impl EventsConfig {
    /// How long an event is kept; `None`: forever.
    pub fn retention(&self) -> Option<std::time::Duration> {
        (self.retention_days > 0.0)
            .then(|| std::time::Duration::from_secs_f64(self.retention_days * 86_400.0))
    }
}

/// The `[index]` section: the metadata index and how it is kept current
/// with the providers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// Whether this hub scans providers at all (default true). A hub that
    /// does not still indexes ferry's own writes; with several hubs, the
    /// others scan.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Seconds between full scans of a connection's provider, unless the
    /// connection says otherwise (default 60; 0: only the first scan,
    /// which builds the index).
    #[serde(default = "defaults::index_scan_interval_secs")]
    pub scan_interval_secs: u64,
    /// The most listing requests a second a scan sends to one
    /// connection's provider (default 10).
    #[serde(default = "defaults::index_requests_per_second")]
    pub requests_per_second: u32,
    /// How long a hub's hold on a connection's scans lasts unrenewed, in
    /// seconds (default 30): after a hub is lost, another takes its
    /// connections over within this.
    #[serde(default = "defaults::index_lease_secs")]
    pub lease_secs: u64,
    /// A change younger than this many milliseconds is left for a later
    /// look (default 300), so that ferry's own commit of it, which may
    /// still be on its way from a spoke, is not taken for a change made
    /// outside ferry.
    #[serde(default = "defaults::index_settle_ms")]
    pub settle_ms: u64,
    /// Whether `fs` connections' folders are watched through the kernel's
    /// notifications (default true), for changes within a second.
    #[serde(default = "defaults::yes")]
    pub notify: bool,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            scan_interval_secs: defaults::index_scan_interval_secs(),
            requests_per_second: defaults::index_requests_per_second(),
            lease_secs: defaults::index_lease_secs(),
            settle_ms: defaults::index_settle_ms(),
            notify: true,
        }
    }
}

impl IndexConfig {
    /// What the indexer runs with.
    pub fn settings(&self) -> crate::indexer::IndexSettings {
        crate::indexer::IndexSettings {
            scan_interval_secs: self.scan_interval_secs,
            lease_secs: self.lease_secs,
            requests_per_second: self.requests_per_second,
            settle_ms: self.settle_ms,
            notify: self.notify,
        }
    }
}

/// The `[uploads]` section: resumable-upload sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadsConfig {
    /// How long a session lives after its last append, in seconds
    /// (default 86400, one day): an upload left longer is discarded,
    /// its staged parts removed.
    #[serde(default = "defaults::upload_expiry_secs")]
    pub expiry_secs: u64,
    /// The largest upload, in bytes (`Tus-Max-Size`; default 5 TiB, the
    /// largest object S3 takes).
    #[serde(default = "defaults::upload_max_size_bytes")]
    pub max_size_bytes: u64,
    /// How often expired sessions are swept, in seconds (default 60).
    #[serde(default = "defaults::upload_sweep_secs")]
    pub sweep_interval_secs: u64,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        Self {
            expiry_secs: defaults::upload_expiry_secs(),
            max_size_bytes: defaults::upload_max_size_bytes(),
            sweep_interval_secs: defaults::upload_sweep_secs(),
        }
    }
}

/// The `[tunnel]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// UDP address for QUIC tunnels from spokes, such as `0.0.0.0:7443`;
    /// port 0 picks a free port (logged).
    pub listen: std::net::SocketAddr,
    /// TCP address for tunnels of spokes whose UDP is blocked (the same
    /// frames over TLS on TCP). Default: the same address and port as
    /// `listen` (with port 0, the port UDP got).
    pub tcp_listen: Option<std::net::SocketAddr>,
    /// Where spokes reach this hub's QUIC endpoint, told to the spokes of
    /// every hub sharing its store so they keep a tunnel to it. Default:
    /// `listen` when it is a specific address.
    pub public_addr: Option<std::net::SocketAddr>,
    /// Where spokes reach the TLS-over-TCP tunnel. Default `public_addr`,
    /// else `tcp_listen`'s address.
    pub public_tcp_addr: Option<std::net::SocketAddr>,
    /// Name in the tunnel's server certificate, which spokes check. Default
    /// `ferry-hub`.
    #[serde(default = "tunnel_defaults::server_name")]
    pub server_name: String,
    /// How often spokes send a heartbeat. Default 1: a heartbeat that does
    /// not come keeps a spoke in DNS answers for at most
    /// `steering.stale_after_ms` (2.5 intervals).
    #[serde(default = "tunnel_defaults::heartbeat_interval_secs")]
    pub heartbeat_interval_secs: u64,
    /// A tunnel silent for this long is dead. Default 20.
    #[serde(default = "ferry_common::tunnel_io::defaults::idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Largest frame payload accepted, in bytes. Default 1048576.
    #[serde(default = "ferry_common::tunnel_io::defaults::max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Flow-control window of one stream, in bytes. Default 4194304.
    #[serde(default = "ferry_common::tunnel_io::defaults::stream_window_bytes")]
    pub stream_window_bytes: u32,
    /// Flow-control window of one tunnel, in bytes. Default 16777216.
    #[serde(default = "ferry_common::tunnel_io::defaults::connection_window_bytes")]
    pub connection_window_bytes: u32,
    /// Requests a spoke may have open at once on one tunnel. Default 1024.
    #[serde(default = "tunnel_defaults::max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// Tunnels open at once on each transport (QUIC, TCP), handshakes
    /// included; further spokes wait in the backlog. Default 4096.
    #[serde(default = "tunnel_defaults::max_tunnels")]
    pub max_tunnels: usize,
    /// How long spokes may use a grant (an account's right to stream with
    /// one connection) before asking again; also how long a revoked key or
    /// deleted connection keeps working at a spoke. Default 30.
    #[serde(default = "tunnel_defaults::grant_ttl_secs")]
    pub grant_ttl_secs: u64,
    /// How long after a grant was made a spoke may still report under it
    /// (a transfer started under it may take long, and reports wait in the
    /// spoke's queue while no hub is reachable); later reports are refused.
    /// Default 86400, at least `grant_ttl_secs`.
    #[serde(default = "tunnel_defaults::report_window_secs")]
    pub report_window_secs: u64,
    /// How long a join token from `ferry-hub spoke add` stays valid. Default 3600.
    #[serde(default = "tunnel_defaults::join_token_ttl_secs")]
    pub join_token_ttl_secs: u64,
    /// How long the certificates the tunnel CA signs for spokes (at
    /// enrolment and renewal) are valid; spokes renew theirs at two thirds
    /// of it. Default 31536000 (365 days), at least 30.
    #[serde(default = "tunnel_defaults::spoke_cert_lifetime_secs")]
    pub spoke_cert_lifetime_secs: u64,
}

mod tunnel_defaults {
    pub fn server_name() -> String {
        "ferry-hub".to_owned()
    }
    pub fn heartbeat_interval_secs() -> u64 {
        1
    }
    pub fn max_concurrent_streams() -> u32 {
        1024
    }
    pub fn max_tunnels() -> usize {
        4096
    }
    pub fn grant_ttl_secs() -> u64 {
        30
    }
    pub fn report_window_secs() -> u64 {
        86_400
    }
    pub fn spoke_cert_lifetime_secs() -> u64 {
        365 * 86_400
    }
    pub fn join_token_ttl_secs() -> u64 {
        3600
    }
}

impl TunnelConfig {
    fn validate(&self, p: &mut Problems) {
        if self.server_name.is_empty() || self.server_name.len() > 253 {
            p.add(
                "tunnel.server_name",
                "must be a DNS name of 1 to 253 characters",
            );
        }
        if self.heartbeat_interval_secs == 0 {
            p.add("tunnel.heartbeat_interval_secs", "must be at least 1");
        }
        if self.idle_timeout_secs > 3600 {
            p.add("tunnel.idle_timeout_secs", "must be at most 3600");
        }
        if self.heartbeat_interval_secs > 600 {
            p.add("tunnel.heartbeat_interval_secs", "must be at most 600");
        }
        if self.idle_timeout_secs <= self.heartbeat_interval_secs {
            p.add(
                "tunnel.idle_timeout_secs",
                "must be longer than tunnel.heartbeat_interval_secs",
            );
        }
        ferry_common::tunnel_io::check_windows(
            self.max_frame_bytes,
            self.stream_window_bytes,
            self.connection_window_bytes,
            p,
        );
        if self.max_tunnels == 0 {
            p.add("tunnel.max_tunnels", "must be at least 1");
        }
        if self.max_concurrent_streams == 0 {
            p.add("tunnel.max_concurrent_streams", "must be at least 1");
        }
        if self.report_window_secs < self.grant_ttl_secs || self.report_window_secs > 30 * 86_400 {
            p.add(
                "tunnel.report_window_secs",
                "must be from tunnel.grant_ttl_secs to 2592000 (30 days)",
            );
        }
        // No longer than the CA's own ten years; long enough that renewing
        // at two thirds leaves the spoke time to reach a hub.
        if !(30..=3650 * 86_400).contains(&self.spoke_cert_lifetime_secs) {
            p.add(
                "tunnel.spoke_cert_lifetime_secs",
                "must be from 30 to 315360000 (ten years)",
            );
        }
        if !(1..=3600).contains(&self.grant_ttl_secs) {
            p.add("tunnel.grant_ttl_secs", "must be from 1 to 3600");
        }
        if self.join_token_ttl_secs == 0 {
            p.add("tunnel.join_token_ttl_secs", "must be at least 1");
        }
        for (key, addr) in [
            ("tunnel.public_addr", self.public_addr),
            ("tunnel.public_tcp_addr", self.public_tcp_addr),
        ] {
            if let Some(a) = addr
                && (a.ip().is_unspecified() || a.port() == 0)
            {
                p.add(
                    key,
                    "must be an address and port spokes can reach, not 0.0.0.0, :: or port 0",
                );
            }
        }
    }

    /// The transport limits of tunnels.
    pub fn limits(&self) -> ferry_common::tunnel_io::TransportLimits {
        ferry_common::tunnel_io::TransportLimits {
            stream_window_bytes: self.stream_window_bytes,
            connection_window_bytes: self.connection_window_bytes,
            max_concurrent_streams: self.max_concurrent_streams,
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
            keep_alive: std::time::Duration::from_secs(self.heartbeat_interval_secs),
        }
    }
}

/// The metadata store backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// One SQLite file in the state directory (the default).
    #[default]
    Sqlite,
    /// PostgreSQL: a primary for writes and, per region, a streaming
    /// replica for reads (several hubs).
    Postgres,
}

/// The `[store]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (the default: one file, one hub) or `postgres` (several
    /// hubs).
    #[serde(default)]
    pub backend: StoreBackend,
    /// The SQLite file. Default `<state_dir>/hub.db`.
    pub sqlite_path: Option<PathBuf>,
    /// Connections in the store's pool (to the PostgreSQL primary). Default 8.
    #[serde(default = "defaults::store_pool_size")]
    pub pool_size: u32,
    /// PostgreSQL: the primary, for writes, as
    /// `postgres://USER@HOST:PORT/DATABASE` (no password in it).
    pub primary_url: Option<String>,
    /// PostgreSQL: this region's streaming replica, for reads. Default none
    /// (everything goes to the primary).
    pub replica_url: Option<String>,
    /// Connections to the replica. Default 8.
    #[serde(default = "defaults::store_pool_size")]
    pub replica_pool_size: u32,
    /// Environment variable holding the database password. Default
    /// `FERRY_STORE_PASSWORD`; it wins over `password_file`.
    #[serde(default = "defaults::store_password_env")]
    pub password_env: String,
    /// File holding the database password, readable by the hub only.
    pub password_file: Option<PathBuf>,
    /// How long getting a database connection may take. Default 5.
    #[serde(default = "defaults::store_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// How long a read waits for the replica to replay the reader's own
    /// write before it reads the primary instead, in milliseconds. Default 500.
    #[serde(default = "defaults::read_your_writes_wait_ms")]
    pub read_your_writes_wait_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::default(),
            sqlite_path: None,
            pool_size: defaults::store_pool_size(),
            primary_url: None,
            replica_url: None,
            replica_pool_size: defaults::store_pool_size(),
            password_env: defaults::store_password_env(),
            password_file: None,
            connect_timeout_secs: defaults::store_connect_timeout_secs(),
            read_your_writes_wait_ms: defaults::read_your_writes_wait_ms(),
        }
    }
}

impl StoreConfig {
    fn validate(&self, p: &mut Problems) {
        let pg = self.backend == StoreBackend::Postgres;
        for (key, url) in [
            ("store.primary_url", &self.primary_url),
            ("store.replica_url", &self.replica_url),
        ] {
            let Some(url) = url else { continue };
            if !pg {
                p.add(key, "is for backend = \"postgres\"");
                continue;
            }
            if let Err(why) = check_postgres_url(url) {
                p.add(key, why.to_string());
            }
        }
        if pg && self.primary_url.is_none() {
            p.add(
                "store.primary_url",
                "is required with backend = \"postgres\"",
            );
        }
        if self.replica_pool_size == 0 {
            p.add("store.replica_pool_size", "must be at least 1");
        }
        if !(1..=300).contains(&self.connect_timeout_secs) {
            p.add("store.connect_timeout_secs", "must be from 1 to 300");
        }
        if self.read_your_writes_wait_ms > 60_000 {
            p.add("store.read_your_writes_wait_ms", "must be at most 60000");
        }
        if let Some(f) = &self.password_file {
            check_absolute(p, "store.password_file", f);
        }
    }

    /// The password for PostgreSQL, from the environment or the file;
    /// `None` when neither gives one (trust or peer authentication).
    pub fn password(&self) -> anyhow::Result<Option<String>> {
        if let Ok(v) = std::env::var(&self.password_env)
            && !v.is_empty()
        {
            return Ok(Some(v));
        }
        match &self.password_file {
            Some(f) => {
                let text = std::fs::read_to_string(f).map_err(|e| {
                    anyhow::anyhow!("cannot read store.password_file {}: {e}", f.display())
                })?;
                Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
            }
            None => Ok(None),
        }
    }
}

/// The `[secrets]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// Environment variable holding the 32-byte master key (base64 or hex).
    /// Default `FERRY_MASTER_KEY`. It wins over `master_key_file`.
    #[serde(default = "defaults::master_key_env")]
    pub master_key_env: String,
    /// File holding the master key (base64 or hex), readable by the hub only.
    pub master_key_file: Option<PathBuf>,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            master_key_env: defaults::master_key_env(),
            master_key_file: None,
        }
    }
}

/// The `[providers]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    /// The local-folder provider.
    #[serde(default)]
    pub fs: FsProviderConfig,
    /// The in-memory provider.
    #[serde(default)]
    pub memory: MemoryProviderConfig,
    /// The network providers (S3, Azure Blob, GCS, WebDAV).
    #[serde(default)]
    pub remote: RemoteProvidersConfig,
}

/// The `[providers.remote]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteProvidersConfig {
    /// The network providers tenants may connect: any of `s3`, `azblob`,
    /// `gcs`, `webdav`. Default all.
    #[serde(default = "defaults::remote_enabled")]
    pub enabled: Vec<String>,
    /// Allow endpoints on loopback, private, link-local or unspecified
    /// addresses and `localhost` (for providers inside your own network).
    /// Default false: a tenant cannot make the hub or a spoke call services
    /// on the networks they run in.
    #[serde(default)]
    pub allow_private_endpoints: bool,
}

impl Default for RemoteProvidersConfig {
    fn default() -> Self {
        Self {
            enabled: defaults::remote_enabled(),
            allow_private_endpoints: false,
        }
    }
}

/// The `[providers.fs]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsProviderConfig {
    /// Absolute directories under which `fs` connections may put their root.
    /// Empty (the default) disables the provider.
    #[serde(default)]
    pub allowed_roots: Vec<PathBuf>,
}

/// The `[providers.memory]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryProviderConfig {
    /// Allow connections that keep files in the hub's memory (lost on
    /// restart; for tests and demos). Default false.
    #[serde(default)]
    pub enabled: bool,
}

mod defaults {
    pub fn metrics() -> ferry_common::operator_listener::MetricsConfig {
        ferry_common::operator_listener::MetricsConfig::on_loopback(9460)
    }
    pub fn store_pool_size() -> u32 {
        8
    }
    pub fn store_password_env() -> String {
        "FERRY_STORE_PASSWORD".to_owned()
    }
    pub fn store_connect_timeout_secs() -> u64 {
        5
    }
    pub fn read_your_writes_wait_ms() -> u64 {
        500
    }
    pub fn master_key_env() -> String {
        "FERRY_MASTER_KEY".to_owned()
    }
    pub fn upload_expiry_secs() -> u64 {
        86_400
    }
    pub fn event_retention_days() -> f64 {
        90.0
    }
    pub fn webhook_schedule() -> Vec<u64> {
        crate::webhooks::DEFAULT_SCHEDULE_SECS.to_vec()
    }
    pub fn webhook_timeout_secs() -> u64 {
        15
    }
    pub fn webhook_concurrency() -> usize {
        16
    }
    pub fn webhook_log_days() -> f64 {
        30.0
    }
    pub fn webhook_rotation_secs() -> u64 {
        86_400
    }
    pub fn webhook_max_endpoints() -> i64 {
        20
    }
    pub fn upload_max_size_bytes() -> u64 {
        5 << 40
    }
    pub fn upload_sweep_secs() -> u64 {
        60
    }
    pub fn yes() -> bool {
        true
    }
    pub fn index_scan_interval_secs() -> u64 {
        60
    }
    pub fn index_requests_per_second() -> u32 {
        10
    }
    pub fn index_lease_secs() -> u64 {
        30
    }
    pub fn index_settle_ms() -> u64 {
        300
    }
    pub fn remote_enabled() -> Vec<String> {
        ferry_common::provider::Remote::ALL
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect()
    }
}

impl Validate for HubConfig {
    fn validate(&self, p: &mut Problems) {
        check_absolute(p, "state_dir", &self.state_dir);
        self.api.validate("api", p);
        self.metrics.validate(&self.api, p);
        if let Some(path) = &self.store.sqlite_path {
            check_absolute(p, "store.sqlite_path", path);
        }
        let db = self.sqlite_path();
        if db.to_string_lossy().contains(['?', '#', '%']) {
            p.add("store.sqlite_path", "must not contain '?', '#' or '%'");
        }
        if self.store.pool_size == 0 {
            p.add("store.pool_size", "must be at least 1");
        }
        self.store.validate(p);
        self.webhooks.validate(p);
        for name in self.limits.negative() {
            p.add(
                format!("limits.{name}"),
                "must not be negative (0: no limit)",
            );
        }
        if self.secrets.master_key_env.is_empty() {
            p.add("secrets.master_key_env", "must not be empty");
        }
        if let Some(file) = &self.secrets.master_key_file {
            check_absolute(p, "secrets.master_key_file", file);
        }
        for (i, root) in self.providers.fs.allowed_roots.iter().enumerate() {
            check_absolute(p, &format!("providers.fs.allowed_roots[{i}]"), root);
            if root.parent().is_none() {
                p.add(
                    format!("providers.fs.allowed_roots[{i}]"),
                    "must not be '/'",
                );
            }
        }
        for (i, name) in self.providers.remote.enabled.iter().enumerate() {
            if !ferry_common::provider::Remote::ALL
                .iter()
                .any(|r| r.as_str() == name)
            {
                p.add(
                    format!("providers.remote.enabled[{i}]"),
                    format!("'{name}' is not one of s3, azblob, gcs, webdav"),
                );
            }
        }
        if let Some(t) = &self.tunnel {
            t.validate(p);
        }
        if let Some(d) = &self.dns {
            d.validate(p);
            if d.hub_addrs.is_empty() && self.api.listen.ip().is_unspecified() {
                p.add(
                    "dns.hub_addrs",
                    "must be set when api.listen is an unspecified address: the DNS server needs this hub's public addresses",
                );
            }
        }
        self.steering
            .validate(self.tunnel.as_ref().map(|t| t.heartbeat_interval_secs), p);
        let days = self.events.retention_days;
        if !(days.is_finite() && (0.0..=36_500.0).contains(&days)) {
            p.add(
                "events.retention_days",
                "must be between 0 (keep forever) and 36500",
            );
        }
        let u = &self.uploads;
        if !(1..=30 * 86_400).contains(&u.expiry_secs) {
            p.add(
                "uploads.expiry_secs",
                "must be between 1 and 2592000 (30 days)",
            );
        }
        if !(1..=i64::MAX as u64).contains(&u.max_size_bytes) {
            p.add("uploads.max_size_bytes", "must be between 1 and 2^63 - 1");
        }
        if !(1..=3600).contains(&u.sweep_interval_secs) {
            p.add("uploads.sweep_interval_secs", "must be between 1 and 3600");
        }
        let x = &self.index;
        if x.scan_interval_secs > 86_400 {
            p.add(
                "index.scan_interval_secs",
                "must be between 0 and 86400 (a day)",
            );
        }
        if !(1..=10_000).contains(&x.requests_per_second) {
            p.add("index.requests_per_second", "must be between 1 and 10000");
        }
        if !(3..=3600).contains(&x.lease_secs) {
            p.add("index.lease_secs", "must be between 3 and 3600");
        }
        if x.settle_ms > 60_000 {
            p.add("index.settle_ms", "must be between 0 and 60000");
        }
        if let Err(e) = self.log.check() {
            p.add("log.level", e.to_string());
        }
    }
}

impl HubConfig {
    /// Opens the metadata store this configuration names (applying
    /// pending migrations), with `pool_size` connections to the primary.
    pub async fn open_store(&self, pool_size: u32) -> anyhow::Result<crate::store::Store> {
        use anyhow::Context as _;
        match self.store.backend {
            StoreBackend::Sqlite => {
                let db = self.sqlite_path();
                crate::store::Store::open_sqlite(&db, pool_size)
                    .await
                    .with_context(|| format!("cannot open the metadata store {}", db.display()))
            }
            StoreBackend::Postgres => {
                let password = self.store.password()?;
                let primary = self.store.primary_url.clone().unwrap_or_default();
                let options = crate::store::PostgresOptions {
                    primary_url: with_password(&primary, password.as_deref()),
                    replica_url: self
                        .store
                        .replica_url
                        .as_deref()
                        .map(|u| with_password(u, password.as_deref())),
                    pool_size,
                    replica_pool_size: self.store.replica_pool_size,
                    connect_timeout: std::time::Duration::from_secs(
                        self.store.connect_timeout_secs,
                    ),
                    read_your_writes_wait: std::time::Duration::from_millis(
                        self.store.read_your_writes_wait_ms,
                    ),
                };
                crate::store::Store::open_postgres(&options)
                    .await
                    .with_context(|| format!("cannot open the metadata store at {primary}"))
            }
        }
    }

    /// The SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.store
            .sqlite_path
            .clone()
            .unwrap_or_else(|| self.state_dir.join("hub.db"))
    }

    /// The provider policy.
    pub fn provider_policy(&self) -> ProviderPolicy {
        ProviderPolicy {
            fs_allowed_roots: self.providers.fs.allowed_roots.clone(),
            memory_enabled: self.providers.memory.enabled,
            remote_enabled: ferry_common::provider::Remote::ALL
                .into_iter()
                .filter(|r| {
                    self.providers
                        .remote
                        .enabled
                        .iter()
                        .any(|n| n == r.as_str())
                })
                .collect(),
            endpoints: ferry_common::provider::EndpointPolicy {
                allow_private: self.providers.remote.allow_private_endpoints,
            },
        }
    }
}
