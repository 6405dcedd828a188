//! The hub's configuration file (`hub.toml`).
//!
//! Every section rejects unknown keys; defaults are given on each field; the
//! [`Validate`] pass reports every semantic problem at once with its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_common::config::{Problems, Validate};
use ferry_common::http_server::Limits;
use ferry_common::provider::ProviderPolicy;
use ferry_common::telemetry::LogConfig;
use serde::Deserialize;

/// The whole hub configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Absolute directory for the hub's state: the SQLite database and, later,
    /// the hub's certificate authority. Created at start if missing.
    pub state_dir: PathBuf,
    /// The client-facing HTTP API listener.
    pub api: ApiConfig,
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
}

/// The `[api]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on, such as `0.0.0.0:443`; port 0 picks a free port
    /// (the bound address is logged).
    pub listen: SocketAddr,
    /// Serve plain HTTP without TLS. Only for loopback and local development;
    /// exactly one of `plain_http = true` and `[api.tls]` must be given.
    #[serde(default)]
    pub plain_http: bool,
    /// TLS certificate and key.
    pub tls: Option<TlsConfig>,
    /// Most client connections open at once. Default 10000.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Largest request head (request line and header fields), in bytes.
    /// Default 65536; from 8192 to 1048576.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// A connection with no bytes moving either way for this long is closed.
    /// Default 120.
    #[serde(default = "defaults::idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Time allowed for a TLS handshake. Default 10.
    #[serde(default = "defaults::handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
    /// Largest JSON request body, in bytes (file uploads have no limit of
    /// ferry's own). Default 1048576.
    #[serde(default = "defaults::max_json_body_bytes")]
    pub max_json_body_bytes: usize,
    /// On shutdown, time in-flight requests get to finish. Default 30.
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
}

/// The `[api.tls]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the files are checked for changes; a changed pair is loaded
    /// without a restart. Default 30.
    #[serde(default = "defaults::reload_interval_secs")]
    pub reload_interval_secs: u64,
}

/// The metadata store backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// One SQLite file in the state directory (the default).
    #[default]
    Sqlite,
}

/// The `[store]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (the default; PostgreSQL comes with multi-hub support).
    #[serde(default)]
    pub backend: StoreBackend,
    /// The SQLite file. Default `<state_dir>/hub.db`.
    pub sqlite_path: Option<PathBuf>,
    /// Connections in the store's pool. Default 8.
    #[serde(default = "defaults::store_pool_size")]
    pub pool_size: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::default(),
            sqlite_path: None,
            pool_size: defaults::store_pool_size(),
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
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn max_header_bytes() -> usize {
        64 * 1024
    }
    pub fn idle_timeout_secs() -> u64 {
        120
    }
    pub fn handshake_timeout_secs() -> u64 {
        10
    }
    pub fn max_json_body_bytes() -> usize {
        1024 * 1024
    }
    pub fn shutdown_grace_secs() -> u64 {
        30
    }
    pub fn reload_interval_secs() -> u64 {
        30
    }
    pub fn store_pool_size() -> u32 {
        8
    }
    pub fn master_key_env() -> String {
        "FERRY_MASTER_KEY".to_owned()
    }
}

fn check_absolute(problems: &mut Problems, key: &str, path: &Path) {
    if !path.is_absolute() {
        problems.add(
            key,
            format!("must be an absolute path, not '{}'", path.display()),
        );
    }
}

impl Validate for HubConfig {
    fn validate(&self, p: &mut Problems) {
        check_absolute(p, "state_dir", &self.state_dir);
        let api = &self.api;
        match (&api.tls, api.plain_http) {
            (None, false) => p.add("api.tls", "is required unless api.plain_http = true"),
            (Some(_), true) => p.add("api.plain_http", "cannot be true when [api.tls] is given"),
            _ => {}
        }
        if let Some(tls) = &api.tls {
            check_absolute(p, "api.tls.cert_file", &tls.cert_file);
            check_absolute(p, "api.tls.key_file", &tls.key_file);
            if tls.reload_interval_secs == 0 {
                p.add("api.tls.reload_interval_secs", "must be at least 1");
            }
        }
        if api.max_connections == 0 {
            p.add("api.max_connections", "must be at least 1");
        }
        if !(8192..=1024 * 1024).contains(&api.max_header_bytes) {
            p.add("api.max_header_bytes", "must be from 8192 to 1048576");
        }
        if api.idle_timeout_secs == 0 {
            p.add("api.idle_timeout_secs", "must be at least 1");
        }
        if api.handshake_timeout_secs == 0 {
            p.add("api.handshake_timeout_secs", "must be at least 1");
        }
        if api.max_json_body_bytes < 1024 {
            p.add("api.max_json_body_bytes", "must be at least 1024");
        }
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
        if let Err(e) = self.log.check() {
            p.add("log.level", e);
        }
    }
}

impl HubConfig {
    /// The SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.store
            .sqlite_path
            .clone()
            .unwrap_or_else(|| self.state_dir.join("hub.db"))
    }

    /// The listener limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.api.max_connections,
            max_header_bytes: self.api.max_header_bytes,
            idle_timeout: Duration::from_secs(self.api.idle_timeout_secs),
            handshake_timeout: Duration::from_secs(self.api.handshake_timeout_secs),
            shutdown_grace: Duration::from_secs(self.api.shutdown_grace_secs),
        }
    }

    /// The provider policy.
    pub fn provider_policy(&self) -> ProviderPolicy {
        ProviderPolicy {
            fs_allowed_roots: self.providers.fs.allowed_roots.clone(),
            memory_enabled: self.providers.memory.enabled,
        }
    }
}
