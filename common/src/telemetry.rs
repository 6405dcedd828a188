//! Logging set-up shared by the daemons.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The `[log]` section of a daemon's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `info,ferry_hub=debug`. Default
    /// `info`; the `FERRY_LOG` environment variable overrides it.
    #[serde(default = "default_level")]
    pub level: String,
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_level(),
            format: LogFormat::default(),
        }
    }
}

fn default_level() -> String {
    "info".to_owned()
}

impl LogConfig {
    /// Whether `level` is a filter tracing understands.
    pub fn check(&self) -> Result<(), String> {
        EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

type Reload = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Replaces the installed subscriber's filter (see [`reload_level`]).
static RELOAD: std::sync::OnceLock<Reload> = std::sync::OnceLock::new();

/// Installs the global subscriber writing to standard error.
pub fn init(cfg: &LogConfig) {
    let filter = std::env::var("FERRY_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| {
            EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"))
        });
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cfg.format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = RELOAD.set(Box::new(move |f| {
                    handle.reload(f).map_err(|e| e.to_string())
                }));
            }
        }
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = RELOAD.set(Box::new(move |f| {
                    handle.reload(f).map_err(|e| e.to_string())
                }));
            }
        }
    }
}

/// [`reload_level`] for a reloaded configuration, saying in the log what
/// happened.
pub fn apply_reloaded_level(level: &str) {
    match reload_level(level) {
        Ok(true) => tracing::info!(level, "reload: log level set"),
        Ok(false) => tracing::info!("reload: FERRY_LOG is set and keeps the log level"),
        Err(e) => tracing::warn!(error = %e, "reload: the log level was not changed"),
    }
}

/// Sets the log filter to `level` from now on (a reloaded configuration's
/// `[log] level`); `FERRY_LOG`, when set, keeps winning. Returns whether
/// the filter changed.
pub fn reload_level(level: &str) -> Result<bool, String> {
    if std::env::var_os("FERRY_LOG").is_some() {
        return Ok(false);
    }
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    let reload = RELOAD.get().ok_or("logging was not set up by ferry")?;
    reload(filter)?;
    Ok(true)
}
