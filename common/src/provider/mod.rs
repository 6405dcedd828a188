//! The storage providers a connection may use.
//!
//! A connection names a provider (`fs`, `memory`, `s3`, `azblob`, `gcs`,
//! `webdav`) and gives it a JSON configuration. The [`registry`] checks
//! that configuration against the operator's limits and builds an OpenDAL
//! [`Operator`] for it. Provider kinds are data, not code paths scattered
//! through the API: adding another OpenDAL service means a variant in
//! [`remote`], its configuration and its cargo feature. Failures become API
//! problems in [`failure`], helped by what [`answer`] saw of the provider's
//! HTTP answers.
//!
//! This file holds the kinds, the operator's policy, the errors of setting
//! a provider up, and the helpers the rest of ferry asks about providers.

pub mod answer;
pub mod azure_blocks;
pub mod egress;
pub mod endpoint;
pub mod failure;
pub mod grammar;
pub mod native;
pub mod registry;
pub mod remote;
pub mod s3_parts;
pub mod webdav_upload;

pub use endpoint::{EndpointError, EndpointPolicy};
pub use failure::{problem, scrub};
pub use registry::{FsRootError, ProviderRegistry, root_unavailable};
pub use remote::{Remote, RemoteConfigError};

use std::path::PathBuf;

use opendal::Operator;

use crate::problem::{ErrorCode, Problem};

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
    /// No provider has that name; not retryable.
    #[error("unknown provider '{0}'")]
    Unknown(String),
    /// The provider exists but this daemon's operator has not enabled it;
    /// not retryable.
    #[error("provider '{0}' is not enabled on this server")]
    Disabled(&'static str),
    /// The configuration is malformed or not allowed; not retryable.
    #[error("invalid configuration for provider '{provider}': {reason}")]
    InvalidConfig {
        /// The provider's name.
        provider: &'static str,
        /// What is wrong.
        reason: InvalidConfig,
    },
    /// The provider rejected the configuration or could not be reached; a
    /// retry helps when the provider was unavailable ([`Self::code`] says).
    /// Its text carries the provider's answer: for the operator's log only
    /// ([`Self::problem`] is what a client sees).
    #[error("provider '{provider}' failed its check: {source}")]
    Check {
        /// The provider's name.
        provider: &'static str,
        /// The provider's error.
        source: opendal::Error,
        /// The provider's answer, when ferry saw it (boxed: the error
        /// stays small when there is none).
        answer: Option<Box<answer::FailedAnswer>>,
    },
}

/// What is wrong with a provider's configuration.
#[derive(Debug, thiserror::Error)]
pub enum InvalidConfig {
    /// Not the provider's JSON object: a member unknown, missing or of the
    /// wrong type.
    #[error(transparent)]
    Malformed(serde_json::Error),
    /// An `fs` root the server does not allow or cannot use.
    #[error(transparent)]
    FsRoot(FsRootError),
    /// A network provider's configuration is refused.
    #[error(transparent)]
    Remote(RemoteConfigError),
    /// OpenDAL refused to build the provider from it.
    #[error("{0}")]
    Build(opendal::Error),
}

impl ProviderError {
    /// The API error code for this error. A check that finds no bucket or
    /// folder is a configuration error; one the provider refuses is
    /// `provider_rejected` (wrong credentials, say).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unknown(_) | Self::Disabled(_) => ErrorCode::UnknownProvider,
            Self::InvalidConfig {
                reason: InvalidConfig::FsRoot(FsRootError::Unavailable { .. }),
                ..
            } => ErrorCode::LocationInUse,
            Self::InvalidConfig { .. } => ErrorCode::InvalidProviderConfig,
            Self::Check { source, answer, .. } => match source.kind() {
                opendal::ErrorKind::NotFound | opendal::ErrorKind::ConfigInvalid => {
                    ErrorCode::InvalidProviderConfig
                }
                _ => failure::error_code(source, answer.as_deref()),
            },
        }
    }

    /// The problem a client sees. A failed check says what failed in a
    /// fixed sentence and carries the provider's request id; the
    /// provider's answer itself is logged, never returned. The other
    /// errors are about the configuration the client sent and say what is
    /// wrong with it.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Unknown(_) | Self::Disabled(_) => {
                Problem::new(ErrorCode::UnknownProvider, self.to_string())
            }
            Self::InvalidConfig {
                reason: InvalidConfig::FsRoot(e @ FsRootError::Unavailable { .. }),
                ..
            } => {
                tracing::info!(reason = %e, "refused an fs root");
                registry::root_unavailable()
            }
            Self::InvalidConfig { .. } => {
                Problem::new(ErrorCode::InvalidProviderConfig, scrub(&self.to_string()))
            }
            Self::Check {
                provider,
                source,
                answer,
            } => failure::check_problem(source, answer.as_deref(), provider),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overlapping_locations() {
        assert!(locations_overlap("fs:/a/b", "fs:/a/b"));
        assert!(locations_overlap("fs:/a/b", "fs:/a/b/c"));
        assert!(locations_overlap("fs:/a/b/c", "fs:/a/b"));
        assert!(!locations_overlap("fs:/a/b", "fs:/a/bc"));
        assert!(!locations_overlap("fs:/a/b", "fs:/a/c"));
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

    #[test]
    fn failed_checks_take_their_code_from_the_answer() {
        let check = |kind, status: Option<u16>| ProviderError::Check {
            provider: "s3",
            source: opendal::Error::new(kind, "check failed"),
            answer: status.map(|status| {
                Box::new(answer::FailedAnswer {
                    status,
                    retry_after_secs: None,
                    request_id: None,
                })
            }),
        };
        use opendal::ErrorKind as K;
        assert_eq!(
            check(K::Unexpected, Some(403)).code(),
            ErrorCode::ProviderRejected
        );
        assert_eq!(check(K::Unexpected, None).code(), ErrorCode::ProviderFailed);
        assert_eq!(
            check(K::NotFound, Some(404)).code(),
            ErrorCode::InvalidProviderConfig
        );
        // The code is the one of the problem a client sees.
        for (kind, status) in [
            (K::Unexpected, Some(403)),
            (K::Unexpected, None),
            (K::NotFound, Some(404)),
            (K::ConfigInvalid, None),
        ] {
            let err = check(kind, status);
            assert_eq!(err.code(), err.problem().error_code(), "{kind:?}");
        }
    }
}
