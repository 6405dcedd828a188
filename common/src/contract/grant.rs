//! Grants and lookups: what a spoke asks before it streams a client's
//! content, and what the hub answers.

use serde::{Deserialize, Serialize};

use crate::content::model::ObjectMeta;

/// `grant`: may the client whose `Authorization` comes with the call use
/// `connection`, and how does the spoke reach its provider?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRequest {
    /// The connection's name or id, as the client wrote it in the URL.
    pub connection: String,
}

/// The hub's answer to a [`GrantRequest`]: for a short lifetime, the
/// spoke may stream with this connection's provider for this client.
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
    /// How long the spoke may use the grant, in milliseconds.
    pub ttl_ms: u64,
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
            .finish()
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
        };
        let text = format!("{grant:?}");
        assert!(
            text.contains("bucket") && !text.contains("hunter2"),
            "{text}"
        );
    }
}
