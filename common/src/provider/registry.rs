//! The registry: builds a connection's operator from its provider's name
//! and JSON configuration, within the operator's [`ProviderPolicy`] (an `fs`
//! root must lie under a directory the operator allowed; a disabled
//! provider is refused), and checks that the provider answers before a new
//! connection is saved.
//!
//! An `fs` root is resolved and checked before anything is created
//! ([`ProviderRegistry::locate`]): a refused root leaves no folder behind,
//! and every refusal that depends on what is on the disk or on another
//! account's claims gets one answer ([`root_unavailable`]), so a tenant
//! learns nothing of other tenants' files from it.

use std::path::{Component, Path, PathBuf};

use opendal::Operator;
use serde::Deserialize;

use super::endpoint::EndpointPolicy;
use super::remote;
use super::{Built, InvalidConfig, ProviderError, ProviderKind, ProviderPolicy, answer};
use crate::path::STAGING_DIR;
use crate::problem::{ErrorCode, Problem};

/// The one answer to an `fs` root refused for what is on the disk or for
/// another account's claim: inside, around or equal to another account's
/// location, leading outside the allowed directories through a symbolic
/// link, or not a folder that can be made. The same status, code and text
/// whatever the reason, so that it reveals nothing of other tenants' files.
pub fn root_unavailable() -> Problem {
    Problem::new(
        ErrorCode::LocationInUse,
        "'root' is not available to this account: it overlaps another account's location, or it is not a folder this server can give it",
    )
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

/// Why an `fs` connection's `root` is refused. Each is about the
/// configuration or the server's folders; retrying the same configuration
/// helps only when an operator fixed the folders in between.
#[derive(Debug, thiserror::Error)]
pub enum FsRootError {
    /// `root` is relative.
    #[error("'root' must be an absolute path")]
    NotAbsolute,
    /// `root` has `.` or `..` in it.
    #[error("'root' must not contain '.' or '..'")]
    Dots,
    /// `root` is not under any directory the operator allowed (as written:
    /// decided without looking at the disk).
    #[error("'root' {} is not under a directory this server allows for the fs provider", .0.display())]
    NotAllowed(PathBuf),
    /// The allowed directory `root` is under cannot be resolved (it is
    /// missing, say): the server's setup is wrong.
    #[error("the allowed directory {} is unusable: {source}", dir.display())]
    AllowedUnusable {
        /// The allowed directory.
        dir: PathBuf,
        /// Why it cannot be resolved.
        source: std::io::Error,
    },
    /// `root` cannot be used for what is on the disk: it leads outside
    /// the allowed directories through a symbolic link, a file is in its
    /// way, or it cannot be made. Answered as [`root_unavailable`]; the
    /// text, for the operator's log, says which.
    #[error("'root' {} is unavailable: {why}", root.display())]
    Unavailable {
        /// The root asked for.
        root: PathBuf,
        /// What is in the way.
        why: String,
    },
}

impl FsRootError {
    fn unavailable(root: &Path, why: impl std::fmt::Display) -> Self {
        FsRootError::Unavailable {
            root: root.to_owned(),
            why: why.to_string(),
        }
    }
}

/// The provider `name`, and how to refuse a configuration of it.
fn named(
    name: &str,
) -> Result<(ProviderKind, impl Fn(InvalidConfig) -> ProviderError), ProviderError> {
    let kind = ProviderKind::from_name(name).ok_or_else(|| ProviderError::Unknown(name.into()))?;
    let invalid = move |reason| ProviderError::InvalidConfig {
        provider: kind.as_str(),
        reason,
    };
    Ok((kind, invalid))
}

/// An `fs` operator on `root`, writing through a staging folder inside it.
fn fs_operator(root: &Path) -> Result<Operator, InvalidConfig> {
    let staging = root.join(STAGING_DIR);
    let builder = opendal::services::Fs::default()
        .root(&root.to_string_lossy())
        .atomic_write_dir(&staging.to_string_lossy());
    Operator::new(builder).map_err(InvalidConfig::Build)
}

/// Builds operators for connections, within the operator's policy.
#[derive(Debug, Clone)]
pub struct ProviderRegistry {
    policy: ProviderPolicy,
}

impl ProviderRegistry {
    /// What network endpoints may be, here.
    pub fn endpoint_policy(&self) -> EndpointPolicy {
        self.policy.endpoints
    }

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

    /// Checks `config` for provider `name` and returns where its data would
    /// live (`fs:/canonical/root`; `None` for providers whose data is
    /// private by nature), creating nothing: for checking a new
    /// connection's location against other accounts' claims before
    /// [`Self::build_and_check`] creates its folders.
    pub async fn locate(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Option<String>, ProviderError> {
        let (kind, invalid) = named(name)?;
        if kind != ProviderKind::Fs || self.policy.fs_allowed_roots.is_empty() {
            return Ok(None);
        }
        let cfg: FsConfig = serde_json::from_value(config.clone())
            .map_err(|e| invalid(InvalidConfig::Malformed(e)))?;
        let root = self
            .locate_fs_root(&cfg.root)
            .await
            .map_err(|e| invalid(InvalidConfig::FsRoot(e)))?;
        Ok(Some(fs_location(&root)))
    }

    /// Checks `config` for provider `name` and builds its operator, without
    /// touching the provider. `fs` roots are created if missing, once they
    /// are known to be allowed.
    pub async fn build(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Built, ProviderError> {
        let (kind, invalid) = named(name)?;
        let mut location = None;
        let op = match kind {
            ProviderKind::Fs => {
                if self.policy.fs_allowed_roots.is_empty() {
                    return Err(ProviderError::Disabled(kind.as_str()));
                }
                let cfg: FsConfig = serde_json::from_value(config.clone())
                    .map_err(|e| invalid(InvalidConfig::Malformed(e)))?;
                let root = self
                    .confine_fs_root(&cfg.root)
                    .await
                    .map_err(|e| invalid(InvalidConfig::FsRoot(e)))?;
                location = Some(fs_location(&root));
                fs_operator(&root).map_err(invalid)?
            }
            ProviderKind::Memory => {
                if !self.policy.memory_enabled {
                    return Err(ProviderError::Disabled(kind.as_str()));
                }
                let _: MemoryConfig = serde_json::from_value(config.clone())
                    .map_err(|e| invalid(InvalidConfig::Malformed(e)))?;
                Operator::new(opendal::services::Memory::default())
                    .map_err(|e| invalid(InvalidConfig::Build(e)))?
            }
            ProviderKind::Remote(r) => {
                if !self.policy.remote_enabled.contains(&r) {
                    return Err(ProviderError::Disabled(kind.as_str()));
                }
                remote::build(r, config, self.policy.endpoints)
                    .map_err(|e| invalid(InvalidConfig::Remote(e)))?
            }
        };
        Ok(Built { kind, op, location })
    }

    /// Builds the operator of a connection the hub granted: the hub checked
    /// its configuration against its own policy when the connection was
    /// made. Only providers a spoke can reach are built; `memory` lives in
    /// the hub and is refused. The addresses a spoke connects to are
    /// checked at connect time under `endpoints`, the hub's policy as the
    /// grant carries it: a host name rebound to an internal address after
    /// the hub checked it is refused at the spoke too, unless the operator
    /// allows internal endpoints.
    pub fn build_granted(
        name: &str,
        config: &serde_json::Value,
        endpoints: EndpointPolicy,
    ) -> Result<Operator, ProviderError> {
        let (kind, invalid) = named(name)?;
        match kind {
            ProviderKind::Fs => {
                let cfg: FsConfig = serde_json::from_value(config.clone())
                    .map_err(|e| invalid(InvalidConfig::Malformed(e)))?;
                fs_operator(&cfg.root).map_err(invalid)
            }
            ProviderKind::Memory => Err(ProviderError::Disabled(kind.as_str())),
            // The hub applied its endpoint policy when the connection was
            // made.
            ProviderKind::Remote(r) => {
                remote::build(r, config, endpoints).map_err(|e| invalid(InvalidConfig::Remote(e)))
            }
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
        answer::observed(async {
            built
                .op
                .check()
                .await
                .map_err(|source| ProviderError::Check {
                    provider: built.kind.as_str(),
                    source,
                    answer: answer::last_failed().map(Box::new),
                })
        })
        .await?;
        Ok(built)
    }

    /// Returns the canonical form of `root` if it lies under an allowed
    /// directory, creating nothing: the deepest part of `root` that exists
    /// is resolved (symbolic links followed), the rest appended, and the
    /// result must stay under the allowed directory.
    async fn locate_fs_root(&self, root: &Path) -> Result<PathBuf, FsRootError> {
        if !root.is_absolute() {
            return Err(FsRootError::NotAbsolute);
        }
        if root
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(FsRootError::Dots);
        }
        let Some(allowed) = self
            .policy
            .fs_allowed_roots
            .iter()
            .find(|a| root.starts_with(a))
        else {
            return Err(FsRootError::NotAllowed(root.to_owned()));
        };
        let allowed_canon = tokio::fs::canonicalize(allowed).await.map_err(|source| {
            FsRootError::AllowedUnusable {
                dir: allowed.clone(),
                source,
            }
        })?;
        let mut existing = root.to_owned();
        let mut missing = Vec::new();
        let canon = loop {
            match tokio::fs::canonicalize(&existing).await {
                Ok(canon) => break canon,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let Some(name) = existing.file_name() else {
                        return Err(FsRootError::unavailable(root, e));
                    };
                    missing.push(name.to_owned());
                    existing.pop();
                }
                Err(e) => return Err(FsRootError::unavailable(root, e)),
            }
        };
        let canon = missing
            .iter()
            .rev()
            .fold(canon, |path, name| path.join(name));
        if !canon.starts_with(&allowed_canon) {
            return Err(FsRootError::unavailable(
                root,
                "it resolves outside the allowed directories",
            ));
        }
        Ok(canon)
    }

    /// [`Self::locate_fs_root`], then creates the root when missing and
    /// checks again that it resolves under the allowed directories.
    async fn confine_fs_root(&self, root: &Path) -> Result<PathBuf, FsRootError> {
        let located = self.locate_fs_root(root).await?;
        tokio::fs::create_dir_all(&located)
            .await
            .map_err(|e| FsRootError::unavailable(root, e))?;
        let again = self.locate_fs_root(&located).await?;
        let meta = tokio::fs::metadata(&again)
            .await
            .map_err(|e| FsRootError::unavailable(root, e))?;
        if !meta.is_dir() {
            return Err(FsRootError::unavailable(root, "it is not a folder"));
        }
        Ok(again)
    }
}

/// The location of an `fs` root, as claims record it.
fn fs_location(canonical_root: &Path) -> String {
    format!("fs:{}", canonical_root.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::ErrorCode;
    use crate::provider::remote::Remote;
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
        let relative = reg.build("fs", &json!({ "root": "relative/dir" })).await;
        assert!(matches!(
            relative,
            Err(ProviderError::InvalidConfig {
                reason: InvalidConfig::FsRoot(FsRootError::NotAbsolute),
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_symlink_cannot_lead_out_of_the_allowed_directory_nor_create_there() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).unwrap();
        let reg = registry(dir.path());
        for root in [
            dir.path().join("escape"),
            dir.path().join("escape/new/deeper"),
        ] {
            let err = reg.build("fs", &json!({ "root": root })).await.unwrap_err();
            assert!(
                matches!(
                    &err,
                    ProviderError::InvalidConfig {
                        reason: InvalidConfig::FsRoot(FsRootError::Unavailable { .. }),
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains("outside"), "{err}");
            let shown = err.problem();
            assert_eq!(
                (shown.status, shown.detail),
                (409, root_unavailable().detail)
            );
        }
        let made: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
        assert!(made.is_empty(), "nothing is created outside: {made:?}");
    }

    #[tokio::test]
    async fn locating_a_root_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        std::fs::write(dir.path().join("a-file"), b"x").unwrap();
        let root = dir.path().join("new/deeper");
        let location = reg.locate("fs", &json!({ "root": root })).await.unwrap();
        let canon = dir.path().canonicalize().unwrap().join("new/deeper");
        assert_eq!(location, Some(format!("fs:{}", canon.display())));
        assert!(!dir.path().join("new").exists(), "nothing is created");
        // A file in the way is refused as any other unavailable root.
        let err = reg
            .locate("fs", &json!({ "root": dir.path().join("a-file/below") }))
            .await
            .unwrap_err();
        assert_eq!(err.problem().detail, root_unavailable().detail);
        assert_eq!(reg.locate("webdav", &json!({})).await.unwrap(), None);
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
            reg.build("s3", &json!({"bucket": "bkt", "anonymous": true}))
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
