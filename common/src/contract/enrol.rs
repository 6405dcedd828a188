//! Enrolment: a new spoke presents a token and its own public key to
//! `POST /v1/spokes/enrol`, and the hub's CA signs the key. The tokens'
//! prefixes tell their kind apart.

use serde::{Deserialize, Serialize};

use crate::proto::HubAddrs;

/// The prefix of a one-time join token, made for one spoke by name.
pub const JOIN_TOKEN_PREFIX: &str = "fjt_";
/// The prefix of a fleet token, which enrols any number of new spokes
/// whose names start with its prefix.
pub const FLEET_TOKEN_PREFIX: &str = "fft_";

/// Which kind of token a spoke enrols with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A one-time join token: it names its spoke.
    Join,
    /// A fleet token: the spoke says its name.
    Fleet,
}

impl TokenKind {
    /// The kind of `token`, by its prefix; `None` for neither.
    pub fn of(token: &str) -> Option<Self> {
        if token.starts_with(JOIN_TOKEN_PREFIX) {
            Some(Self::Join)
        } else if token.starts_with(FLEET_TOKEN_PREFIX) {
            Some(Self::Fleet)
        } else {
            None
        }
    }

    /// The prefix of tokens of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Join => JOIN_TOKEN_PREFIX,
            Self::Fleet => FLEET_TOKEN_PREFIX,
        }
    }
}

/// What a spoke sends to enrol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    /// A join token (`fjt_…`) or a fleet token (`fft_…`).
    pub token: String,
    /// The spoke's name: required with a fleet token (it must be
    /// `<prefix>-…`); with a join token, absent or the token's spoke (hubs
    /// older than fleet tokens do not know the member, so spokes send it
    /// with fleet tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The spoke's own P-256 public key: the uncompressed point, base64.
    pub public_key: String,
}

impl EnrolRequest {
    /// The request of spoke `name` enrolling with `token` and the raw
    /// public key `public_key`.
    pub fn new(token: &str, name: &str, public_key: &[u8]) -> Self {
        use base64::Engine as _;
        Self {
            token: token.to_owned(),
            name: (TokenKind::of(token) == Some(TokenKind::Fleet)).then(|| name.to_owned()),
            public_key: base64::engine::general_purpose::STANDARD.encode(public_key),
        }
    }
}

/// The hub's answer to an accepted enrolment (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolAnswer {
    /// The spoke's name.
    pub name: String,
    /// The spoke's certificate, PEM, signed by the hub's tunnel CA.
    pub certificate: String,
    /// The tunnel CA's certificate, PEM: the spoke trusts hubs by it.
    pub ca: String,
    /// The name in the hubs' tunnel certificates.
    pub server_name: String,
    /// Every hub of the store, where the spoke reaches their tunnels.
    #[serde(default)]
    pub hubs: Vec<HubAddrs>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_told_apart_and_only_fleet_enrolments_carry_the_name() {
        assert_eq!(TokenKind::of("fjt_abc"), Some(TokenKind::Join));
        assert_eq!(TokenKind::of("fft_abc"), Some(TokenKind::Fleet));
        assert_eq!(TokenKind::of("fry_abc"), None);
        assert_eq!(EnrolRequest::new("fjt_a", "fra1", b"k").name, None);
        assert_eq!(
            EnrolRequest::new("fft_a", "edge-1", b"k").name.as_deref(),
            Some("edge-1")
        );
        let json = serde_json::to_value(EnrolRequest::new("fjt_a", "fra1", &[4, 1])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "token": "fjt_a", "public_key": "BAE=" })
        );
    }
}
