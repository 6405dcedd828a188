//! Grants and lookups: what a spoke asks before it streams a client's
//! content, and what the hub answers.

use serde::{Deserialize, Serialize};

use crate::content::model::ObjectMeta;

/// The header field that carries a grant's token on the spoke's later
/// calls for the same client request (lookups, commits, transfers).
pub const GRANT_HEADER: &str = "x-ferry-grant";

/// The header field that carries a completion report's id (commits and
/// transfers from a spoke): the hub records it with what it applies, and
/// applies a report it has seen once only.
pub const REPORT_ID_HEADER: &str = "x-ferry-report-id";

/// What a grant lets a spoke do with its one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantOp {
    /// Serve the content (`GET`, `HEAD`): look it up, log the download,
    /// record a digest computed on the way.
    Read,
    /// Take new content (`PUT`): look it up, commit the upload.
    Write,
    /// Append to one resumable-upload session under its lease, and commit
    /// its object when the last byte is in.
    Upload,
}

/// `grant`: may the client whose `Authorization` comes with the call
/// `op` the object at `path` of `connection`, and how does the spoke reach
/// its provider?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRequest {
    /// The connection's name or id, as the client wrote it in the URL.
    pub connection: String,
    /// The object's path, decoded.
    pub path: String,
    /// What the client's request does with it.
    pub op: GrantOp,
}

/// The hub's answer to a [`GrantRequest`]: for a short lifetime, the
/// spoke may stream this one object with this connection's provider for
/// this client, and report what it did under `token`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// The account the connection belongs to.
    pub account_id: String,
    /// The connection's id.
    pub connection_id: String,
    /// The provider's name (`s3`, `fs`, …).
    pub provider: String,
    /// The connection's configuration, credentials included: they stay in
    /// the spoke's memory and never appear in its logs.
    pub config: serde_json::Value,
    /// Whether the spoke can reach the provider itself; `false` for
    /// providers whose data lives in the hub's process, whose requests the
    /// spoke forwards.
    pub direct: bool,
    /// How long the spoke may start transfers under the grant, in
    /// milliseconds.
    pub ttl_ms: u64,
    /// Whether the hub's operator allows provider endpoints at internal
    /// addresses (`providers.remote.allow_private_endpoints`); the spoke
    /// checks every address it connects to under the same rule.
    #[serde(default)]
    pub allow_private_endpoints: bool,
    /// The signed grant, opaque to the spoke: it goes back to the hub in
    /// [`GRANT_HEADER`] with every lookup and report for this object.
    pub token: String,
    /// What ferry recorded for the object when the grant was made, so that
    /// the first lookup needs no second call.
    pub meta: Option<ObjectMeta>,
    /// The invalidation epoch the issuing hub knew when it made the grant
    /// (none from a hub of an earlier release). A spoke that has since
    /// been told of a later epoch ([`crate::proto::Notice::epoch`]) uses
    /// the grant for the request it asked for, and keeps it for no other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// The account's bandwidth limits at each node, which the spoke
    /// applies across the account's transfers through it (none from a hub
    /// of an earlier release).
    #[serde(default)]
    pub limits: crate::content::throttle::TransferLimits,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("account_id", &self.account_id)
            .field("connection_id", &self.connection_id)
            .field("provider", &self.provider)
            .field("config", &crate::provider::redact(&self.config))
            .field("direct", &self.direct)
            .field("ttl_ms", &self.ttl_ms)
            .field("allow_private_endpoints", &self.allow_private_endpoints)
            .field("meta", &self.meta)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Grant {
    /// The endpoint policy the hub applied to the connection, which a
    /// spoke applies again when it connects.
    pub fn endpoint_policy(&self) -> crate::provider::EndpointPolicy {
        if self.allow_private_endpoints {
            crate::provider::EndpointPolicy::ANY
        } else {
            crate::provider::EndpointPolicy::PUBLIC_ONLY
        }
    }
}

/// `lookup`: what did ferry record for `path` in `connection_id`?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRequest {
    /// The connection's id (from a grant).
    pub connection_id: String,
    /// The object's path.
    pub path: String,
}

/// An intent by its id: the hub's answer to an `intend` call (whose body
/// is the [`crate::content::model::Intent`]), which the upload's commit
/// then names; and the body of an `abandon` call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentRef {
    /// The intent's id.
    pub intent: String,
}

/// The hub's answer to a [`LookupRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupAnswer {
    /// The recorded metadata; `None` when ferry recorded nothing.
    pub meta: Option<ObjectMeta>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grants_debug_form_hides_credentials() {
        let grant = Grant {
            account_id: "acc_1".into(),
            connection_id: "con_1".into(),
            provider: "s3".into(),
            config: serde_json::json!({ "bucket": "b", "secret_access_key": "hunter2" }),
            direct: true,
            ttl_ms: 30_000,
            allow_private_endpoints: false,
            token: "fg1.secret-token".into(),
            meta: None,
            epoch: None,
            limits: Default::default(),
        };
        let text = format!("{grant:?}");
        assert!(
            text.contains("bucket") && !text.contains("hunter2"),
            "{text}"
        );
    }
}
