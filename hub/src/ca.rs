//! The hub's certificate authority for tunnels.
//!
//! Created on first start in `<state_dir>/tunnel-ca/` (the key readable by
//! the hub's user only), it signs each spoke's own key at enrolment and a
//! fresh server certificate for the tunnel listener at every start. Spokes
//! trust only this CA for the tunnel; the hub accepts only client
//! certificates it signed (and then checks the registry for revocation).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SignatureAlgorithm,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";

/// Why the CA could not be loaded or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing the CA's files failed.
    #[error("tunnel CA file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Generating or signing failed.
    #[error("tunnel CA: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A public key sent for signing is not an uncompressed P-256 point.
    #[error("the public key must be an uncompressed P-256 point (65 bytes, base64)")]
    BadPublicKey,
}

/// A spoke's public key as sent at enrolment: the raw uncompressed P-256
/// point.
struct RawP256(Vec<u8>);

impl PublicKeyData for RawP256 {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// The loaded CA.
pub struct HubCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// The QUIC stateless-reset key, derived from the CA's private key.
    reset_key: [u8; 32],
}

impl std::fmt::Debug for HubCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubCa").finish_non_exhaustive()
    }
}

/// The QUIC stateless-reset key of the CA whose private key is `key`.
fn reset_key_of(key: &KeyPair) -> [u8; 32] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.serialize_der());
    let tag = ring::hmac::sign(&k, b"ferry: QUIC stateless reset");
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "ferry hub tunnel CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Valid from a little before now (an hour, or a tenth of a short
/// lifetime: clocks differ) for `lifetime`.
fn validity(params: &mut CertificateParams, lifetime: std::time::Duration) {
    let now = time::OffsetDateTime::now_utc();
    let lifetime = time::Duration::try_from(lifetime).unwrap_or(time::Duration::days(365));
    let skew = std::cmp::min(lifetime / 10_i32, time::Duration::hours(1));
    params.not_before = now - skew;
    params.not_after = now + lifetime;
}

/// Days as a lifetime.
fn days(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n * 86_400)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

impl HubCa {
    /// A new CA: the CA and its certificate and private key as PEM.
    pub fn generate() -> Result<(String, String), CaError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        validity(&mut params, days(3650));
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The CA from its certificate and private key, PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        let reset_key = reset_key_of(&key);
        use rustls::pki_types::pem::PemObject as _;
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| CaError::Io {
                path: "the stored tunnel CA".into(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            })?;
        Ok(Self {
            issuer: Issuer::new(ca_params(), key),
            cert_pem: cert_pem.to_owned(),
            cert_der,
            reset_key,
        })
    }

    /// The key QUIC stateless resets are made with: derived from the CA's
    /// private key, so a hub that restarts (and every hub sharing the CA)
    /// makes the same, and a spoke whose tunnel a restart cut honours the
    /// reset at once instead of waiting out three heartbeats.
    pub fn stateless_reset_key(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.reset_key)
    }

    /// The key the hub's QUIC connection ids are tagged with, derived
    /// like [`HubCa::stateless_reset_key`] but apart from it.
    pub fn connection_id_key(&self) -> ring::hmac::Key {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.reset_key);
        let derived = ring::hmac::sign(&k, b"ferry: QUIC connection ids");
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
    }

    /// The CA's certificate and private key as PEM, from `dir` when it has
    /// one (a hub that ran on its own before).
    pub fn read_files(dir: &Path) -> Result<Option<(String, String)>, CaError> {
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if !key_path.exists() {
            return Ok(None);
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        Ok(Some((cert_pem, key_pem)))
    }

    /// Loads the CA from `dir`, creating it there on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if !key_path.exists() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let (cert_pem, key_pem) = Self::generate()?;
            write_private(&key_path, key_pem.as_bytes())?;
            std::fs::write(&cert_path, cert_pem).map_err(io(&cert_path))?;
            tracing::info!(dir = %dir.display(), "created the tunnel certificate authority");
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key = KeyPair::from_pem(&key_pem)?;
        use rustls::pki_types::pem::PemObject as _;
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| CaError::Io {
                path: cert_path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            })?;
        let reset_key = reset_key_of(&key);
        Ok(Self {
            issuer: Issuer::new(ca_params(), key),
            cert_pem,
            cert_der,
            reset_key,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Signs a spoke's own key: a client certificate for `name`, valid for
    /// `lifetime`.
    pub fn issue_spoke(
        &self,
        name: &str,
        raw_public_key: &[u8],
        lifetime: std::time::Duration,
    ) -> Result<rcgen::Certificate, CaError> {
        if raw_public_key.len() != 65 || raw_public_key[0] != 0x04 {
            return Err(CaError::BadPublicKey);
        }
        let mut params = CertificateParams::new(vec![format!("{name}.spoke.ferry")])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, lifetime);
        Ok(params.signed_by(&RawP256(raw_public_key.to_vec()), &self.issuer)?)
    }

    /// A fresh key and server certificate for the tunnel listener.
    pub fn issue_server(
        &self,
        server_name: &str,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![server_name.to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, server_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, days(365));
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((cert.der().clone(), key))
    }
}

/// Writes a secret file readable by its owner only, atomically.
fn write_private(path: &Path, data: &[u8]) -> Result<(), CaError> {
    ferry_common::private_file::write(path, data).map_err(|(p, e)| io(&p)(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_persists_and_signs_keys_that_verify_against_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = HubCa::load_or_create(dir.path()).unwrap();
        let again = HubCa::load_or_create(dir.path()).unwrap();
        assert_eq!(
            ca.cert_pem(),
            again.cert_pem(),
            "the CA is kept, not remade"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the CA key is private");

        let spoke_key = KeyPair::generate().unwrap();
        let cert = again
            .issue_spoke("fra1", spoke_key.public_key_raw(), days(365))
            .unwrap();
        // rustls' own client-certificate verifier accepts it under the CA.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(cert.der(), &[], rustls::pki_types::UnixTime::now())
            .expect("the spoke certificate chains to the CA");
        assert!(matches!(
            ca.issue_spoke("x", &[4u8; 10], days(1)),
            Err(CaError::BadPublicKey)
        ));
        ca.issue_server("ferry-hub").unwrap();
    }
}
