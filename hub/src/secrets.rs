//! The master key and the encryption of provider credentials at rest.
//!
//! Connection configurations (which hold provider credentials) are sealed
//! with AES-256-GCM under a master key that comes from the environment or a
//! key file, never from the database. The connection's id is bound in as
//! associated data, so a sealed blob cannot be moved to another row.

use std::path::Path;

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::SecretsConfig;

/// The first byte of every sealed blob: the format (and, later, the key
/// generation) it was sealed with.
const FORMAT_V1: u8 = 1;

/// Why the master key or a sealed value is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Neither the environment variable nor the key file gave a key.
    #[error("no master key: set the environment variable {env} or secrets.master_key_file")]
    Missing {
        /// The variable that was looked at.
        env: String,
    },
    /// The key file could not be read.
    #[error("cannot read the master key file {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key is not 32 bytes of base64 or hex.
    #[error("the master key from {origin} is not 32 bytes of base64 or hex")]
    Malformed {
        /// Where it came from.
        origin: String,
    },
    /// A sealed value failed to open: wrong master key or a damaged row.
    #[error("a sealed value cannot be opened: wrong master key or damaged data")]
    Open,
}

/// The key that seals provider credentials, and from which the keys of
/// other purposes (signing spokes' grants) are derived.
pub struct MasterKey {
    key: LessSafeKey,
    /// HKDF's pseudo-random key over the master key, for derived keys.
    derive: ring::hkdf::Prk,
    rng: SystemRandom,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(****)")
    }
}

impl MasterKey {
    /// Loads the key from the environment variable, else the key file.
    pub fn load(cfg: &SecretsConfig) -> Result<Self, SecretsError> {
        if let Ok(value) = std::env::var(&cfg.master_key_env) {
            return Self::parse(&value, &format!("${}", cfg.master_key_env));
        }
        let Some(path) = &cfg.master_key_file else {
            return Err(SecretsError::Missing {
                env: cfg.master_key_env.clone(),
            });
        };
        warn_if_readable_by_others(path);
        let text = std::fs::read_to_string(path).map_err(|source| SecretsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses 32 bytes given as standard base64 or as hex.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SecretsError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .ok()
        } else {
            base64::engine::general_purpose::STANDARD.decode(text).ok()
        };
        let malformed = || SecretsError::Malformed {
            origin: origin.to_owned(),
        };
        let bytes = bytes.filter(|b| b.len() == 32).ok_or_else(malformed)?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| malformed())?;
        let derive = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"ferry derived keys v1")
            .extract(&bytes);
        Ok(Self {
            key: LessSafeKey::new(key),
            derive,
            rng: SystemRandom::new(),
        })
    }

    /// An HMAC-SHA-256 key for `purpose`, the same on every hub with this
    /// master key and unrelated to the sealing key and to other purposes.
    pub fn derive_hmac(&self, purpose: &str) -> ring::hmac::Key {
        let info = [purpose.as_bytes()];
        let okm = self
            .derive
            .expand(&info, ring::hmac::HMAC_SHA256)
            .expect("an HMAC key's length is within HKDF's limit");
        ring::hmac::Key::from(okm)
    }

    /// Encrypts `plaintext`, binding `context` (the row's id) to it.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("the system RNG works");
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM sealing of a small value cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out
    }

    /// Decrypts a value made by [`MasterKey::seal`] with the same `context`.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, SecretsError> {
        let (&format, rest) = sealed.split_first().ok_or(SecretsError::Open)?;
        if format != FORMAT_V1 || rest.len() < NONCE_LEN {
            return Err(SecretsError::Open);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretsError::Open)?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| SecretsError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the master key file is readable by group or others; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn seals_and_opens_with_the_same_context_only() {
        let key = MasterKey::parse(HEX, "test").unwrap();
        let sealed = key.seal(b"secret credentials", "con_1");
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "ciphertext hides the plaintext"
        );
        assert_eq!(key.open(&sealed, "con_1").unwrap(), b"secret credentials");
        assert!(key.open(&sealed, "con_2").is_err(), "bound to its row");
        let other = MasterKey::parse(&"ff".repeat(32), "test").unwrap();
        assert!(other.open(&sealed, "con_1").is_err(), "needs the right key");
    }

    #[test]
    fn derived_keys_are_per_purpose_and_the_same_for_the_same_master_key() {
        let hex = "8f1d2c3b4a5968778695a4b3c2d1e0f000112233445566778899aabbccddeeff";
        let (a, b) = (
            MasterKey::parse(hex, "t").unwrap(),
            MasterKey::parse(hex, "t").unwrap(),
        );
        let other = MasterKey::parse(&hex.replace('8', "9"), "t").unwrap();
        let tag = |k: &MasterKey, purpose| {
            ring::hmac::sign(&k.derive_hmac(purpose), b"m")
                .as_ref()
                .to_vec()
        };
        assert_eq!(tag(&a, "grants"), tag(&b, "grants"));
        assert_ne!(tag(&a, "grants"), tag(&a, "cursors"));
        assert_ne!(tag(&a, "grants"), tag(&other, "grants"));
    }

    #[test]
    fn accepts_base64_and_hex_and_refuses_the_rest() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(MasterKey::parse(&b64, "t").is_ok());
        assert!(MasterKey::parse(&format!("{HEX}\n"), "t").is_ok());
        assert!(MasterKey::parse("short", "t").is_err());
        assert!(
            MasterKey::parse(
                &base64::engine::general_purpose::STANDARD.encode([7u8; 16]),
                "t"
            )
            .is_err()
        );
    }
}
