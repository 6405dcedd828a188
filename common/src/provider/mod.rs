//! The registry of storage providers a connection may use.
//!
//! A connection names a provider (`fs`, `memory`, `s3`, `azblob`, `gcs`,
//! `webdav`) and gives it a JSON configuration. The registry checks that
//! configuration against the operator's limits (an `fs` root must lie under
//! a directory the operator allowed; a network endpoint must not be a
//! private address unless allowed) and builds an OpenDAL [`Operator`] for
//! it. Provider kinds are data, not code paths scattered through the API:
//! adding another OpenDAL service means a variant in [`remote`], its
//! configuration and its cargo feature.

pub mod remote;

pub use remote::{EndpointPolicy, Remote};

use std::path::{Component, Path, PathBuf};

use opendal::Operator;
use serde::Deserialize;

use crate::path::STAGING_DIR;
use crate::problem::ErrorCode;

/// The kinds of provider ferry knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// A folder on the daemon's local file system.
    Fs,
    /// Process memory; contents are lost when the daemon stops (for tests).
    Memory,
    /// A provider reached over the network.
    Remote(Remote),
}

impl ProviderKind {
    /// The provider's name in connections.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fs => "fs",
            Self::Memory => "memory",
            Self::Remote(r) => r.as_str(),
        }
    }

    /// Looks a provider up by its name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "fs" => Some(Self::Fs),
            "memory" => Some(Self::Memory),
            other => Remote::ALL
                .into_iter()
                .find(|r| r.as_str() == other)
                .map(Self::Remote),
        }
    }

    /// Whether a spoke can stream this provider's content itself: every
    /// provider but `memory`, whose files live in the hub's memory.
    pub fn direct(self) -> bool {
        !matches!(self, Self::Memory)
    }
}

/// What the operator allows connections to use.
#[derive(Debug, Clone, Default)]
pub struct ProviderPolicy {
    /// Directories under which `fs` connections may place their root; empty
    /// disables the `fs` provider.
    pub fs_allowed_roots: Vec<PathBuf>,
    /// Whether the `memory` provider may be used.
    pub memory_enabled: bool,
    /// The network providers that may be used.
    pub remote_enabled: Vec<Remote>,
    /// What network endpoints may be.
    pub endpoints: EndpointPolicy,
}

/// Why a connection's provider could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No provider has that name.
    #[error("unknown provider '{0}'")]
    Unknown(String),
    /// The provider exists but this daemon's operator has not enabled it.
    #[error("provider '{0}' is not enabled on this server")]
    Disabled(&'static str),
    /// The configuration is malformed or not allowed; not retryable.
    #[error("invalid configuration for provider '{provider}': {reason}")]
    InvalidConfig {
        /// The provider's name.
        provider: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The provider rejected the configuration or could not be reached.
    #[error("provider '{provider}' failed its check: {source}")]
    Check {
        /// The provider's name.
        provider: &'static str,
        /// The provider's error.
        source: opendal::Error,
    },
}

impl ProviderError {
    /// The API error code for this error. A check that finds no bucket or
    /// folder is a configuration error; one the provider refuses is
    /// `provider_rejected` (wrong credentials, say).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unknown(_) | Self::Disabled(_) => ErrorCode::UnknownProvider,
            Self::InvalidConfig { .. } => ErrorCode::InvalidProviderConfig,
            Self::Check { source, .. } => match source.kind() {
                opendal::ErrorKind::NotFound | opendal::ErrorKind::ConfigInvalid => {
                    ErrorCode::InvalidProviderConfig
                }
                _ => error_code(source),
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FsConfig {
    /// Absolute directory holding the connection's files.
    root: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryConfig {}

/// A connection's provider, ready to use.
#[derive(Debug, Clone)]
pub struct Built {
    /// The provider.
    pub kind: ProviderKind,
    /// Its operator.
    pub op: Operator,
    /// Where the data lives, when one place can hold only one tenant's data
    /// (`fs:/canonical/root`): two accounts must not claim overlapping
    /// locations. `None` for providers whose data is private by nature.
    pub location: Option<String>,
}

/// Whether two locations overlap: the same, or one inside the other.
pub fn locations_overlap(a: &str, b: &str) -> bool {
    let inside = |x: &str, y: &str| x.strip_prefix(y).is_some_and(|rest| rest.starts_with('/'));
    a == b || inside(a, b) || inside(b, a)
}

/// Whether uploads to `op` go in parts (multipart, blocks, resumable
/// uploads): then [`remote::PART_BYTES`] at a time, [`remote::PARTS_IN_FLIGHT`]
/// at once.
pub fn uploads_in_parts(op: &Operator) -> bool {
    let scheme = op.info().scheme();
    Remote::ALL
        .iter()
        .any(|r| r.uploads_in_parts() && scheme == r.as_str())
}

/// Builds operators for connections, within the operator's policy.
#[derive(Debug, Clone)]
pub struct ProviderRegistry {
    policy: ProviderPolicy,
}

impl ProviderRegistry {
    /// A registry enforcing `policy`.
    pub fn new(policy: ProviderPolicy) -> Self {
        Self { policy }
    }

    /// The providers enabled here, by name.
    pub fn enabled(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.policy.fs_allowed_roots.is_empty() {
            out.push(ProviderKind::Fs.as_str());
        }
        if self.policy.memory_enabled {
            out.push(ProviderKind::Memory.as_str());
        }
        out.extend(self.policy.remote_enabled.iter().map(|r| r.as_str()));
        out
    }

    /// Checks `config` for provider `name` and builds its operator, without
    /// touching the provider. `fs` roots are created if missing.
    pub async fn build(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Built, ProviderError> {
        let kind =
            ProviderKind::from_name(name).ok_or_else(|| ProviderError::Unknown(name.into()))?;
        let invalid = |reason: String| ProviderError::InvalidConfig {
            provider: kind.as_str(),
            reason,
        };
        let mut location = None;
        let op = match kind {
            ProviderKind::Fs => {
                if self.policy.fs_allowed_roots.is_empty() {
                    return Err(ProviderError::Disabled(kind.as_str()));
                }
                let cfg: FsConfig =
                    serde_json::from_value(config.clone()).map_err(|e| invalid(e.to_string()))?;
                let root = self.confine_fs_root(&cfg.root).await.map_err(invalid)?;
                let staging = root.join(STAGING_DIR);
                location = Some(format!("fs:{}", root.display()));
                let builder = opendal::services::Fs::default()
                    .root(&root.to_string_lossy())
                    .atomic_write_dir(&staging.to_string_lossy());
                Operator::new(builder).map_err(|e| invalid(e.to_string()))?
            }
            ProviderKind::Memory => {
                if !self.policy.memory_enabled {
                    return Err(ProviderError::Disabled(kind.as_str()));
                }
                let _: MemoryConfig =
                    serde_json::from_value(config.clone()).map_err(|e| invalid(e.to_string()))?;
                Operator::new(opendal::services::Memory::default())
                    .map_err(|e| invalid(e.to_string()))?
            }
            ProviderKind::Remote(r) => {
                if !self.policy.remote_enabled.contains(&r) {
                    return Err(ProviderError::Disabled(kind.as_str()));
                }
                remote::build(r, config, self.policy.endpoints).map_err(invalid)?
            }
        };
        Ok(Built { kind, op, location })
    }

    /// Builds the operator of a connection the hub granted: the hub checked
    /// its configuration against its own policy when the connection was
    /// made, so no local policy applies. Only providers a spoke can reach
    /// are built; `memory` lives in the hub and is refused.
    pub fn build_granted(
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Operator, ProviderError> {
        let kind =
            ProviderKind::from_name(name).ok_or_else(|| ProviderError::Unknown(name.into()))?;
        let invalid = |reason: String| ProviderError::InvalidConfig {
            provider: kind.as_str(),
            reason,
        };
        match kind {
            ProviderKind::Fs => {
                let cfg: FsConfig =
                    serde_json::from_value(config.clone()).map_err(|e| invalid(e.to_string()))?;
                let staging = cfg.root.join(STAGING_DIR);
                let builder = opendal::services::Fs::default()
                    .root(&cfg.root.to_string_lossy())
                    .atomic_write_dir(&staging.to_string_lossy());
                Operator::new(builder).map_err(|e| invalid(e.to_string()))
            }
            ProviderKind::Memory => Err(ProviderError::Disabled(kind.as_str())),
            // The hub applied its endpoint policy when the connection was
            // made.
            ProviderKind::Remote(r) => remote::build(
                r,
                config,
                EndpointPolicy {
                    allow_private: true,
                },
            )
            .map_err(invalid),
        }
    }

    /// Builds the operator and checks that the provider answers, as done
    /// before a new connection is saved.
    pub async fn build_and_check(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Built, ProviderError> {
        let built = self.build(name, config).await?;
        built
            .op
            .check()
            .await
            .map_err(|source| ProviderError::Check {
                provider: built.kind.as_str(),
                source,
            })?;
        Ok(built)
    }

    /// Returns the canonical form of `root` if it lies under an allowed root,
    /// creating it when missing. Symbolic links are resolved before the
    /// check, so a link cannot lead outside the allowed directories.
    async fn confine_fs_root(&self, root: &Path) -> Result<PathBuf, String> {
        if !root.is_absolute() {
            return Err("'root' must be an absolute path".into());
        }
        if root
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err("'root' must not contain '.' or '..'".into());
        }
        let Some(allowed) = self
            .policy
            .fs_allowed_roots
            .iter()
            .find(|a| root.starts_with(a))
        else {
            return Err(format!(
                "'root' {} is not under a directory this server allows for the fs provider",
                root.display()
            ));
        };
        let allowed_canon = tokio::fs::canonicalize(allowed).await.map_err(|e| {
            format!(
                "the allowed directory {} is unusable: {e}",
                allowed.display()
            )
        })?;
        tokio::fs::create_dir_all(root)
            .await
            .map_err(|e| format!("cannot create 'root' {}: {e}", root.display()))?;
        let canon = tokio::fs::canonicalize(root)
            .await
            .map_err(|e| format!("cannot resolve 'root' {}: {e}", root.display()))?;
        if !canon.starts_with(&allowed_canon) {
            return Err(format!(
                "'root' {} resolves outside the allowed directories",
                root.display()
            ));
        }
        Ok(canon)
    }
}

/// A copy of a provider configuration fit to show: members whose names
/// suggest a credential are masked.
pub fn redact(config: &serde_json::Value) -> serde_json::Value {
    const SECRET_WORDS: [&str; 5] = ["secret", "password", "token", "credential", "key"];
    match config {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
                        (k.clone(), serde_json::Value::String("****".into()))
                    } else {
                        (k.clone(), redact(v))
                    }
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Maps a provider failure to a problem, naming the provider (`s3`, …).
/// The provider's own message can name server paths, so it is logged, not
/// returned. Rate limits and temporary failures carry `Retry-After`: the
/// provider's own when it sent one, else 1 second.
pub fn problem(err: &opendal::Error, what: &str) -> crate::problem::Problem {
    let code = error_code(err);
    let text = err.to_string();
    let provider = service_of(&text);
    if matches!(
        code,
        ErrorCode::ProviderUnavailable
            | ErrorCode::ProviderRejected
            | ErrorCode::ProviderFailed
            | ErrorCode::ProviderTimeout
            | ErrorCode::ProviderRateLimited
    ) {
        tracing::warn!(error = %scrub(&text), operation = what, provider, "provider operation failed");
    }
    let detail = match code {
        ErrorCode::NotFound => format!("{provider}: {what}: no such file or folder"),
        _ => format!("{provider}: {what}: {}", err.kind()),
    };
    let p = crate::problem::Problem::new(code, detail);
    match code {
        ErrorCode::ProviderRateLimited | ErrorCode::ProviderUnavailable => {
            p.with_retry_after(retry_after(&text).unwrap_or(1))
        }
        _ => p,
    }
}

/// Masks what a provider's error text may carry of a credential: URL
/// signatures and tokens in query strings (`sig=…`, an Azure SAS;
/// `X-Amz-Signature=…`, `X-Amz-Credential=…`, `X-Amz-Security-Token=…`).
pub fn scrub(text: &str) -> String {
    const KEYS: [&str; 5] = [
        "sig=",
        "x-amz-signature=",
        "x-amz-credential=",
        "x-amz-security-token=",
        "token=",
    ];
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let hit = KEYS.iter().find(|k| {
            lower[i..].starts_with(*k)
                && (i == 0 || matches!(lower.as_bytes()[i - 1], b'?' | b'&' | b' ' | b'-'))
        });
        match hit {
            Some(k) => {
                out.push_str(&text[i..i + k.len()]);
                out.push_str("****");
                i += k.len();
                while i < text.len()
                    && !matches!(
                        text.as_bytes()[i],
                        b'&' | b' ' | b',' | b'"' | b'\'' | b'}' | b'\n'
                    )
                {
                    i += 1;
                }
            }
            None => {
                let ch = text[i..].chars().next().expect("inside the text");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

/// The HTTP status of the provider's answer, from the response OpenDAL
/// keeps in the error's context (`response: Parts { status: 401, …`).
fn http_status(err: &opendal::Error) -> Option<u16> {
    let text = err.to_string();
    let (_, rest) = text.split_once("Parts { status: ")?;
    rest.get(..3)?.parse().ok()
}

/// The service an OpenDAL error names in its context (`service: s3`).
fn service_of(text: &str) -> &str {
    text.split_once("service: ")
        .and_then(|(_, rest)| rest.split([',', ' ', '}']).next())
        .filter(|s| !s.is_empty() && s.len() <= 16)
        .unwrap_or("provider")
}

/// The provider's `Retry-After` in seconds, from the response OpenDAL
/// keeps in the error's context.
fn retry_after(text: &str) -> Option<u64> {
    let at = text.find("\"retry-after\": \"")? + "\"retry-after\": \"".len();
    let value: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    value.parse().ok().map(|s: u64| s.clamp(1, 3600))
}

/// The API error code for a provider error.
pub fn error_code(err: &opendal::Error) -> ErrorCode {
    use opendal::ErrorKind as K;
    match err.kind() {
        K::NotFound => ErrorCode::NotFound,
        K::IsADirectory => ErrorCode::NotAFile,
        K::NotADirectory => ErrorCode::NotAFolder,
        K::AlreadyExists | K::IsSameFile => ErrorCode::AlreadyExists,
        K::ConditionNotMatch => ErrorCode::PreconditionFailed,
        K::RangeNotSatisfied => ErrorCode::RangeNotSatisfiable,
        K::Conflict => ErrorCode::AlreadyExists,
        K::Unsupported => ErrorCode::ProviderUnsupported,
        K::ConfigInvalid => ErrorCode::InvalidProviderConfig,
        K::PermissionDenied => ErrorCode::ProviderRejected,
        K::RateLimited => ErrorCode::ProviderRateLimited,
        // Some services leave HTTP statuses unclassified; the response
        // OpenDAL keeps in the error's context still says what happened.
        K::Unexpected if matches!(http_status(err), Some(401 | 403)) => ErrorCode::ProviderRejected,
        K::Unexpected if http_status(err) == Some(429) => ErrorCode::ProviderRateLimited,
        K::Unexpected if http_status(err) == Some(504) => ErrorCode::ProviderTimeout,
        _ if err.to_string().contains("timeout reached") => ErrorCode::ProviderTimeout,
        _ if err.is_temporary() || err.is_persistent() => {
            // Temporary, or temporary until the retries ran out.
            ErrorCode::ProviderUnavailable
        }
        _ => ErrorCode::ProviderFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry(allowed: &Path) -> ProviderRegistry {
        ProviderRegistry::new(ProviderPolicy {
            fs_allowed_roots: vec![allowed.to_owned()],
            memory_enabled: false,
            remote_enabled: vec![Remote::Webdav],
            endpoints: EndpointPolicy::default(),
        })
    }

    #[tokio::test]
    async fn fs_roots_must_stay_under_the_allowed_directories() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        let inside = dir.path().join("tenant-a");
        let built = reg
            .build_and_check("fs", &json!({ "root": inside }))
            .await
            .unwrap();
        let canon = inside.canonicalize().unwrap();
        assert_eq!(built.location, Some(format!("fs:{}", canon.display())));
        assert!(
            inside.join(STAGING_DIR).is_dir(),
            "staging folder is created"
        );

        for bad in [
            json!({ "root": "/etc" }),
            json!({ "root": "relative/dir" }),
            json!({ "root": dir.path().join("a/../../etc") }),
            json!({ "root": dir.path(), "extra": 1 }),
            json!({}),
        ] {
            let err = reg.build("fs", &bad).await.unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidProviderConfig, "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn a_symlink_cannot_lead_out_of_the_allowed_directory() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).unwrap();
        let err = registry(dir.path())
            .build("fs", &json!({ "root": dir.path().join("escape") }))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
    }

    #[test]
    fn overlapping_locations() {
        assert!(locations_overlap("fs:/a/b", "fs:/a/b"));
        assert!(locations_overlap("fs:/a/b", "fs:/a/b/c"));
        assert!(locations_overlap("fs:/a/b/c", "fs:/a/b"));
        assert!(!locations_overlap("fs:/a/b", "fs:/a/bc"));
        assert!(!locations_overlap("fs:/a/b", "fs:/a/c"));
    }

    #[test]
    fn provider_errors_name_the_provider_and_carry_retry_after() {
        let err = opendal::Error::new(opendal::ErrorKind::RateLimited, "SlowDown")
            .with_context("service", "s3")
            .with_context(
                "response",
                r#"Parts { status: 429, headers: {"retry-after": "7"} }"#,
            )
            .set_temporary();
        let p = problem(&err, "write");
        assert_eq!(
            (p.status, p.code, p.retry_after),
            (429, "provider_rate_limited", Some(7))
        );
        assert!(p.detail.unwrap().starts_with("s3: write"));
        let busy = opendal::Error::new(opendal::ErrorKind::Unexpected, "503")
            .with_context("service", "azblob")
            .set_persistent();
        let p = problem(&busy, "read");
        assert_eq!((p.status, p.retry_after), (503, Some(1)));
        let late = opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            "io operation timeout reached",
        )
        .set_persistent();
        assert_eq!(problem(&late, "read").status, 504);
        let odd = opendal::Error::new(opendal::ErrorKind::Unexpected, "a teapot");
        assert_eq!(problem(&odd, "stat").status, 502);
        let denied = opendal::Error::new(opendal::ErrorKind::PermissionDenied, "AccessDenied");
        assert_eq!(problem(&denied, "stat").status, 403);
    }

    #[test]
    fn credentials_in_error_texts_are_masked() {
        let text = "uri: https://a.blob.core.windows.net/c/x?sv=2021&sig=SECRET%2Fabc&se=1, \
                    other: https://s3/x?X-Amz-Credential=AKIA/1&X-Amz-Signature=deadbeef done";
        let clean = scrub(text);
        assert!(
            !clean.contains("SECRET") && !clean.contains("deadbeef") && !clean.contains("AKIA"),
            "{clean}"
        );
        assert!(
            clean.contains("sig=****&se=1") && clean.ends_with(" done"),
            "{clean}"
        );
        assert_eq!(scrub("design=ok ünï"), "design=ok ünï");
    }

    #[test]
    fn redaction_masks_credentials_only() {
        let shown =
            redact(&json!({"root": "/srv", "nested": {"secret_access_key": "x"}, "password": "p"}));
        assert_eq!(
            shown,
            json!({"root": "/srv", "nested": {"secret_access_key": "****"}, "password": "****"})
        );
    }

    #[tokio::test]
    async fn disabled_and_unknown_providers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        assert!(matches!(
            reg.build("memory", &json!({})).await,
            Err(ProviderError::Disabled("memory"))
        ));
        assert!(matches!(
            reg.build("ftp", &json!({})).await,
            Err(ProviderError::Unknown(_))
        ));
        assert!(matches!(
            reg.build("s3", &json!({"bucket": "b", "anonymous": true}))
                .await,
            Err(ProviderError::Disabled("s3"))
        ));
        assert!(matches!(
            reg.build("webdav", &json!({"endpoint": "http://127.0.0.1:1"}))
                .await,
            Err(ProviderError::InvalidConfig { .. })
        ));
        assert_eq!(reg.enabled(), vec!["fs", "webdav"]);
    }
}
