//! The spoke's identity: its own private key (made here, never sent), the
//! certificate the hub's CA signed for it, and the hub's CA certificate.
//! Enrolment happens once, with a join token; afterwards the files in the
//! state directory are enough. The certificate is renewed with a new key
//! before it expires (`crate::renew`): both are written to one file first
//! and then put in place, so a stop between leaves a pair that works.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use ferry_common::contract::{EnrolAnswer, EnrolRequest};
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::SpokeConfig;

const KEY: &str = "spoke-key.pem";
const CERT: &str = "spoke-cert.pem";
/// A renewed certificate and its key, together, until both are in place.
const RENEWED: &str = "renewed.pem";
const HUB_CA: &str = "hub-ca.pem";
const SERVER_NAME: &str = "hub-server-name";
/// The hubs sharing the spoke's hub's store, as last learned.
const HUBS: &str = "hubs.json";

/// The environment variable carrying a join token for the first start.
pub const JOIN_TOKEN_ENV: &str = "FERRY_JOIN_TOKEN";

/// What the spoke needs to open tunnels.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The spoke's certificate and key, as tunnels present them.
    pub client: Arc<ClientCert>,
    /// The hub's tunnel CA.
    pub hub_ca: CertificateDer<'static>,
    /// The name in the hub's tunnel certificate.
    pub server_name: String,
    /// Every hub of the store, as learned at enrolment or from a `welcome`.
    pub hubs: Vec<ferry_common::proto::HubAddrs>,
}

/// The spoke's certificate and key as its tunnels present them: a renewal
/// replaces them for every tunnel opened after (those open stay as they
/// are: the hub takes the certificate before a renewal beside the new one).
#[derive(Debug)]
pub struct ClientCert(std::sync::RwLock<Arc<CertifiedKey>>);

impl ClientCert {
    fn certified(
        cert: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> anyhow::Result<Arc<CertifiedKey>> {
        let provider = rustls::crypto::ring::default_provider();
        Ok(Arc::new(
            CertifiedKey::from_der(cert, key, &provider)
                .context("the spoke's certificate and key do not make a pair")?,
        ))
    }

    /// `cert` and its `key`.
    pub fn new(
        cert: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> anyhow::Result<Self> {
        Ok(Self(std::sync::RwLock::new(Self::certified(cert, key)?)))
    }

    /// Presents `cert` and `key` from now on.
    pub fn replace(
        &self,
        cert: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> anyhow::Result<()> {
        let next = Self::certified(cert, key)?;
        *self.0.write().expect("client certificate poisoned") = next;
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().expect("client certificate poisoned").clone()
    }

    /// When the certificate presented now became valid and when it
    /// expires (Unix seconds).
    pub fn validity(&self) -> Option<(i64, i64)> {
        let current = self.current();
        ferry_common::cert_time::validity(current.cert.first()?)
    }
}

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl Identity {
    /// Loads the identity, enrolling first (with `FERRY_JOIN_TOKEN`) if the
    /// state directory holds none.
    pub async fn load_or_enrol(cfg: &SpokeConfig) -> anyhow::Result<Identity> {
        let dir = &cfg.state_dir;
        if !dir.join(CERT).exists() {
            let token = std::env::var(JOIN_TOKEN_ENV).ok().filter(|t| !t.is_empty()).with_context(|| {
                format!(
                    "{} holds no enrolment: set {JOIN_TOKEN_ENV} to a token from `ferry-hub spoke add {}`",
                    dir.display(),
                    cfg.name
                )
            })?;
            enrol(cfg, &token).await?;
        }
        Self::load(dir)
    }

    fn load(dir: &Path) -> anyhow::Result<Identity> {
        put_renewed_in_place(dir)?;
        let read = |name: &str| -> anyhow::Result<Vec<u8>> {
            let p = dir.join(name);
            std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))
        };
        let cert = CertificateDer::pem_slice_iter(&read(CERT)?)
            .collect::<Result<Vec<_>, _>>()
            .context("the spoke certificate is not PEM")?;
        let key = PrivateKeyDer::from_pem_slice(&read(KEY)?).context("the spoke key is not PEM")?;
        let hub_ca =
            CertificateDer::from_pem_slice(&read(HUB_CA)?).context("the hub CA is not PEM")?;
        let server_name = String::from_utf8(read(SERVER_NAME)?)?.trim().to_owned();
        let hubs = std::fs::read(dir.join(HUBS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Identity {
            client: Arc::new(ClientCert::new(cert, key)?),
            hub_ca,
            server_name,
            hubs,
        })
    }
}

/// A new P-256 key: to sign with (the proof), and as PEM to keep.
pub fn new_key() -> anyhow::Result<(ring::signature::EcdsaKeyPair, String)> {
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("cannot make a P-256 key"))?;
    let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("cannot use the P-256 key just made"))?;
    let pem = rcgen::KeyPair::try_from(pkcs8.as_ref())?.serialize_pem();
    Ok((signer, pem))
}

/// Keeps a renewed certificate (PEM) and its key (PEM) in the state
/// directory `dir`: both in one file first, then each in its place.
pub fn save_renewed(dir: &Path, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
    let both = format!("{cert_pem}\n{key_pem}");
    write_file(&dir.join(RENEWED), both.as_bytes(), true)?;
    put_renewed_in_place(dir)
}

/// Puts a renewed certificate and key kept together (by [`save_renewed`])
/// in their places, if there are any: done again after a stop part-way.
fn put_renewed_in_place(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(RENEWED);
    let Ok(both) = std::fs::read(&path) else {
        return Ok(());
    };
    let key = PrivateKeyDer::from_pem_slice(&both).context("the renewed key is not PEM")?;
    let certs = CertificateDer::pem_slice_iter(&both)
        .collect::<Result<Vec<_>, _>>()
        .context("the renewed certificate is not PEM")?;
    ClientCert::new(certs.clone(), key)?;
    let text = String::from_utf8_lossy(&both);
    let key_at = text
        .find("-----BEGIN PRIVATE KEY-----")
        .context("the renewed key is not PKCS#8 PEM")?;
    write_file(&dir.join(KEY), text[key_at..].as_bytes(), true)?;
    write_file(&dir.join(CERT), text[..key_at].trim_end().as_bytes(), false)?;
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    tracing::info!("the renewed certificate and key are in place");
    Ok(())
}

/// Makes a key, has the hub sign it, and stores the result.
async fn enrol(cfg: &SpokeConfig, token: &str) -> anyhow::Result<()> {
    let (signer, key_pem) = new_key()?;
    let request = EnrolRequest::signed(token, &cfg.name, &signer);
    let url = format!("{}/v1/spokes/enrol", cfg.hub.api_url.trim_end_matches('/'));
    tracing::info!(%url, "enrolling with the hub");
    let resp = hub_api_client(cfg.hub.api_ca_file.as_deref())?
        .post(&url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&request)?)
        .send()
        .await
        .with_context(|| format!("cannot reach the hub API at {url}"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .context("the hub's answer to the enrolment broke off")?;
    if status != http::StatusCode::CREATED {
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        bail!(
            "the hub refused the enrolment ({} {}): {}",
            status.as_u16(),
            problem["code"].as_str().unwrap_or("?"),
            problem["detail"].as_str().unwrap_or("no detail")
        );
    }
    let answer: EnrolAnswer =
        serde_json::from_slice(&body).context("the hub's enrolment answer is unreadable")?;
    std::fs::create_dir_all(&cfg.state_dir)?;
    write_file(&cfg.state_dir.join(KEY), key_pem.as_bytes(), true)?;
    write_file(&cfg.state_dir.join(HUB_CA), answer.ca.as_bytes(), false)?;
    write_file(
        &cfg.state_dir.join(SERVER_NAME),
        answer.server_name.as_bytes(),
        false,
    )?;
    save_hubs(&cfg.state_dir, &answer.hubs)?;
    // The certificate last: its presence means "enrolled".
    write_file(
        &cfg.state_dir.join(CERT),
        answer.certificate.as_bytes(),
        false,
    )?;
    tracing::info!("enrolled: the hub signed this spoke's key");
    Ok(())
}

/// Keeps the list of hubs for the next start.
pub fn save_hubs(dir: &Path, hubs: &[ferry_common::proto::HubAddrs]) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(hubs).expect("addresses serialise");
    write_file(&dir.join(HUBS), &json, false)
}

fn write_file(path: &Path, data: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The HTTP client for the hub's API: TLS trusting `ca_file`'s
/// certificates, or the public web's roots when none is given.
fn hub_api_client(ca_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(f) => {
            for cert in CertificateDer::pem_file_iter(f)
                .with_context(|| format!("cannot read {}", f.display()))?
            {
                roots.add(cert?)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(30))
        .build()?)
}
