//! TLS for ferry's listeners: one crypto provider (ring), certificates loaded
//! from PEM files and picked up again when the files change, so an operator
//! (or an ACME client) can rotate them without restarting the daemon.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// Installs ring as the process-wide rustls crypto provider. Call once at
/// start-up (and in tests); later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The certificate file holds no certificate.
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    /// The key is not of a type ring can sign with, or does not match.
    #[error("the key in {path} is unusable: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// Loads a certificate chain and its private key from PEM files.
pub fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let pem_err = |path: &Path, e: rustls_pki_types::pem::Error| TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| pem_err(cert_file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert_file, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_file.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| pem_err(key_file, e))?;
    let provider = rustls::crypto::ring::default_provider();
    let key_err = |e: rustls::Error| TlsError::Key {
        path: key_file.to_owned(),
        reason: e.to_string(),
    };
    let certified = CertifiedKey::from_der(certs, key, &provider).map_err(key_err)?;
    Ok(certified)
}

/// A certificate resolver that serves the current certificate and reloads it
/// from its files when they change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    state: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

impl ReloadingCert {
    /// Loads the certificate and key for the first time.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, TlsError> {
        let key = load_certified_key(cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            state: RwLock::new((Arc::new(key), modified(cert_file, key_file))),
        }))
    }

    /// Reloads the files if they changed since the last load. Returns whether
    /// a new certificate is now served; a failed reload keeps the old one.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = modified(&self.cert_file, &self.key_file);
        if stamp == self.state.read().map(|s| s.1).unwrap_or_default() {
            return Ok(false);
        }
        let key = load_certified_key(&self.cert_file, &self.key_file)?;
        if let Ok(mut state) = self.state.write() {
            *state = (Arc::new(key), stamp);
        }
        Ok(true)
    }

    /// Checks the files every `interval` until `cancel` fires.
    pub async fn watch(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(cert_file = %self.cert_file.display(), "reloaded the TLS certificate")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "kept the previous TLS certificate: the new one does not load")
                }
            }
        }
    }
}

/// The later of the two files' modification times.
fn modified(a: &Path, b: &Path) -> Option<SystemTime> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    m(a).max(m(b))
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.state.read().ok().map(|s| s.0.clone())
    }
}

/// A server configuration offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn http_server_config(certs: Arc<ReloadingCert>) -> Arc<ServerConfig> {
    let mut cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn reloads_when_the_files_change_and_keeps_the_old_one_on_error() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_cert(dir.path(), "one.test");
        let certs = ReloadingCert::load(&c, &k).unwrap();
        let first = certs.state.read().unwrap().0.cert[0].clone();
        assert!(
            !certs.reload_if_changed().unwrap(),
            "unchanged files are not reloaded"
        );

        std::thread::sleep(Duration::from_millis(20));
        write_cert(dir.path(), "two.test");
        assert!(certs.reload_if_changed().unwrap());
        assert_ne!(certs.state.read().unwrap().0.cert[0], first);

        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&c, "not a certificate").unwrap();
        assert!(certs.reload_if_changed().is_err());
        assert!(
            !certs.state.read().unwrap().0.cert.is_empty(),
            "old certificate still served"
        );
    }

    #[test]
    fn missing_files_are_named() {
        let err = load_certified_key(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }
}
