//! Enrolment: a new spoke presents a token and its own public key to
//! `POST /v1/spokes/enrol`, with a signature by that key over the token
//! and its name (so the hub signs only a key the enrolling spoke holds,
//! and only a real P-256 point), and the hub's CA signs the key. The
//! tokens' prefixes tell their kind apart.
//!
//! Renewal: an enrolled spoke makes a new key before its certificate
//! expires and sends it, with the same kind of proof over its name, as its
//! own `renew_certificate` call through its tunnel; the hub's CA signs it.

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
    /// Proof that the spoke holds the key: its ECDSA P-256 SHA-256
    /// signature (ASN.1 DER, base64) over [`EnrolRequest::signed_message`].
    pub proof: String,
}

/// Why an enrolment request is not acceptable as sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The key or the proof is not base64.
    #[error("'{0}' is not base64")]
    Encoding(&'static str),
    /// The key is not a P-256 point, or the proof is not its signature
    /// over this token and name.
    #[error("the proof is not a signature of this token and name by this key")]
    Invalid,
}

impl EnrolRequest {
    /// What the proof signs: the token and the name as sent.
    pub fn signed_message(token: &str, name: Option<&str>) -> Vec<u8> {
        format!("ferry enrolment v2\n{token}\n{}", name.unwrap_or_default()).into_bytes()
    }

    /// The request of spoke `name` enrolling with `token` and its `key`.
    pub fn signed(token: &str, name: &str, key: &ring::signature::EcdsaKeyPair) -> Self {
        let name = (TokenKind::of(token) == Some(TokenKind::Fleet)).then(|| name.to_owned());
        let (public_key, proof) = prove(key, &Self::signed_message(token, name.as_deref()));
        Self {
            token: token.to_owned(),
            name,
            public_key,
            proof,
        }
    }

    /// The public key, once its proof verifies: a P-256 point whose
    /// holder signed this token and name.
    pub fn verified_key(&self) -> Result<Vec<u8>, ProofError> {
        let message = Self::signed_message(&self.token, self.name.as_deref());
        verify(&self.public_key, &self.proof, &message)
    }
}

/// The public key (the uncompressed point) and its holder's signature over
/// `message`, both base64.
fn prove(key: &ring::signature::EcdsaKeyPair, message: &[u8]) -> (String, String) {
    use base64::Engine as _;
    use ring::signature::KeyPair as _;
    let proof = key
        .sign(&ring::rand::SystemRandom::new(), message)
        .expect("ECDSA signing of a short message works");
    let b64 = &base64::engine::general_purpose::STANDARD;
    (
        b64.encode(key.public_key().as_ref()),
        b64.encode(proof.as_ref()),
    )
}

/// The key `public_key` (base64), once `proof` (base64) verifies as its
/// signature over `message`.
fn verify(public_key: &str, proof: &str, message: &[u8]) -> Result<Vec<u8>, ProofError> {
    use base64::Engine as _;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(public_key.trim())
        .map_err(|_| ProofError::Encoding("public_key"))?;
    let proof = b64
        .decode(proof.trim())
        .map_err(|_| ProofError::Encoding("proof"))?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &key)
        .verify(message, &proof)
        .map_err(|_| ProofError::Invalid)?;
    Ok(key)
}

/// What an enrolled spoke sends to renew its certificate: a new key and
/// the proof that it holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The new P-256 public key: the uncompressed point, base64.
    pub public_key: String,
    /// Its ECDSA P-256 SHA-256 signature (ASN.1 DER, base64) over
    /// [`RenewRequest::signed_message`] for the spoke's name.
    pub proof: String,
}

impl RenewRequest {
    /// What the proof signs: the spoke's name.
    pub fn signed_message(name: &str) -> Vec<u8> {
        format!("ferry certificate renewal v1\n{name}").into_bytes()
    }

    /// The request of spoke `name` for a certificate for its new `key`.
    pub fn signed(name: &str, key: &ring::signature::EcdsaKeyPair) -> Self {
        let (public_key, proof) = prove(key, &Self::signed_message(name));
        Self { public_key, proof }
    }

    /// The new key, once its proof for spoke `name` verifies.
    pub fn verified_key(&self, name: &str) -> Result<Vec<u8>, ProofError> {
        verify(&self.public_key, &self.proof, &Self::signed_message(name))
    }
}

/// The hub's answer to a renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewAnswer {
    /// The spoke's new certificate, PEM, signed by the hub's tunnel CA.
    pub certificate: String,
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

    fn key() -> ring::signature::EcdsaKeyPair {
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    #[test]
    fn tokens_are_told_apart_and_only_fleet_enrolments_carry_the_name() {
        assert_eq!(TokenKind::of("fjt_abc"), Some(TokenKind::Join));
        assert_eq!(TokenKind::of("fft_abc"), Some(TokenKind::Fleet));
        assert_eq!(TokenKind::of("fry_abc"), None);
        assert_eq!(EnrolRequest::signed("fjt_a", "fra1", &key()).name, None);
        assert_eq!(
            EnrolRequest::signed("fft_a", "edge-1", &key())
                .name
                .as_deref(),
            Some("edge-1")
        );
    }

    #[test]
    fn a_renewal_proof_binds_the_new_key_to_the_name() {
        let req = RenewRequest::signed("fra1", &key());
        assert_eq!(req.verified_key("fra1").unwrap().len(), 65);
        assert_eq!(req.verified_key("fra2"), Err(ProofError::Invalid));
        let mut rekeyed = req.clone();
        rekeyed.public_key = RenewRequest::signed("fra1", &key()).public_key;
        assert_eq!(rekeyed.verified_key("fra1"), Err(ProofError::Invalid));
    }

    #[test]
    fn a_proof_binds_the_key_to_the_token_and_name() {
        use base64::Engine as _;
        let req = EnrolRequest::signed("fft_a", "edge-1", &key());
        let raw = req.verified_key().unwrap();
        assert_eq!((raw.len(), raw[0]), (65, 4));
        // Another name, another token, another key, or a point off the
        // curve: refused.
        let mut renamed = req.clone();
        renamed.name = Some("edge-2".into());
        assert_eq!(renamed.verified_key(), Err(ProofError::Invalid));
        let mut retokened = req.clone();
        retokened.token = "fft_b".into();
        assert_eq!(retokened.verified_key(), Err(ProofError::Invalid));
        let mut rekeyed = req.clone();
        rekeyed.public_key = EnrolRequest::signed("fft_a", "edge-1", &key()).public_key;
        assert_eq!(rekeyed.verified_key(), Err(ProofError::Invalid));
        let mut off_curve = req.clone();
        let mut point = vec![4u8];
        point.extend_from_slice(&[7u8; 64]);
        off_curve.public_key = base64::engine::general_purpose::STANDARD.encode(point);
        assert_eq!(off_curve.verified_key(), Err(ProofError::Invalid));
        let mut junk = req;
        junk.proof = "%%%".into();
        assert_eq!(junk.verified_key(), Err(ProofError::Encoding("proof")));
    }
}
