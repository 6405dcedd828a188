//! Logging set-up shared by the daemons.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// Why a log level was refused or not applied.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The level is not a filter tracing understands (`info`,
    /// `info,ferry_hub=debug`, …); the configuration must change before a
    /// retry can help.
    #[error(transparent)]
    BadFilter(#[from] tracing_subscriber::filter::ParseError),
    /// ferry's [`init`] did not install the process's subscriber (as in
    /// tests), so there is no filter to replace; retrying does not help.
    #[error("logging was not set up by ferry")]
    NotInstalled,
    /// The installed subscriber is gone and took no new filter; retrying
    /// does not help.
    #[error(transparent)]
    Reload(#[from] tracing_subscriber::reload::Error),
}

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
    pub fn check(&self) -> Result<(), LogError> {
        EnvFilter::try_new(&self.level)?;
        Ok(())
    }
}

type Reload = Box<dyn Fn(EnvFilter) -> Result<(), tracing_subscriber::reload::Error> + Send + Sync>;

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
                let _ = RELOAD.set(Box::new(move |f| handle.reload(f)));
            }
        }
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = RELOAD.set(Box::new(move |f| handle.reload(f)));
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
pub fn reload_level(level: &str) -> Result<bool, LogError> {
    if std::env::var_os("FERRY_LOG").is_some() {
        return Ok(false);
    }
    let filter = EnvFilter::try_new(level)?;
    let reload = RELOAD.get().ok_or(LogError::NotInstalled)?;
    reload(filter)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_checked_and_only_ferrys_subscriber_is_reloaded() {
        LogConfig::default().check().unwrap();
        let loud = LogConfig {
            level: "info,ferry_hub=loud".into(),
            ..LogConfig::default()
        };
        assert!(matches!(loud.check(), Err(LogError::BadFilter(_))));
        // No test installs ferry's subscriber, so there is nothing to
        // reload; FERRY_LOG, when the environment sets it, wins first.
        match std::env::var_os("FERRY_LOG") {
            Some(_) => assert!(matches!(reload_level("debug"), Ok(false))),
            None => {
                assert!(matches!(reload_level("debug"), Err(LogError::NotInstalled)));
                assert!(matches!(
                    reload_level("ferry_hub=loud"),
                    Err(LogError::BadFilter(_))
                ));
            }
        }
    }
}
