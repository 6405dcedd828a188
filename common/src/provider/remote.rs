//! Providers reached over the network: S3 and S3-compatibles, Azure Blob,
//! Google Cloud Storage and WebDAV, through OpenDAL.
//!
//! Each has a strict configuration (unknown members refused) and is built
//! the same way at the hub and at a spoke. Credentials come only from the
//! configuration: OpenDAL's loading from the daemon's environment, files and
//! cloud instance metadata is turned off, so a tenant can never borrow the
//! identity of the machine ferry runs on. Every remote operator retries
//! temporary failures with jittered exponential backoff and bounds each
//! operation and each read or write by a timeout.

use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{Executor, OperationContext, Operator};
use serde::Deserialize;

use super::answer::{ObservingTransport, ScopedExecutor};
use super::endpoint::{EndpointError, EndpointPolicy, check_endpoint};

/// Why a network provider's configuration is refused. Each is about the
/// configuration; no retry helps.
#[derive(Debug, thiserror::Error)]
pub enum RemoteConfigError {
    /// Not the provider's JSON object: a member unknown, missing or of the
    /// wrong type.
    #[error("{0}")]
    Malformed(#[from] serde_json::Error),
    /// A member that must name something is empty.
    #[error("'{0}' must not be empty")]
    Empty(&'static str),
    /// The credentials given are not one of the accepted sets; the text
    /// says which are.
    #[error("give {0}")]
    Credentials(&'static str),
    /// The endpoint is refused.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// OpenDAL refused to build the provider from the configuration.
    #[error("{0}")]
    Build(#[from] opendal::Error),
}

/// Bytes per part of a multipart (S3), block (Azure) or resumable (GCS)
/// upload. S3's smallest part is 5 MiB; GCS wants multiples of 256 KiB.
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one upload sent at once; with the part being filled, an upload
/// holds at most this many parts plus one in memory.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Attempts of an operation that failed with a temporary error, after the
/// first.
pub const RETRIES: usize = 4;
/// A whole non-streaming operation (stat, list page, delete, copy,
/// completing an upload) may take this long.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// One read or write of a streaming transfer may take this long; a slow
/// transfer that keeps moving is never cut.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to a provider may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs the HTTP client every network provider uses, once per process
/// (later calls do nothing): reqwest over rustls with the process's crypto
/// provider (ring), a connect timeout, and no timeout on a whole request,
/// since a large transfer that keeps moving may take as long as it needs
/// ([`IO_TIMEOUT`] bounds each read and write instead). Every answer is
/// noted for the operation that asked ([`super::answer`]).
pub fn install_http_client() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("the HTTP client builds (its TLS provider is installed first)");
        opendal::HttpTransporter::install_default(ObservingTransport(
            opendal_http_transport_reqwest::ReqwestTransport::new(client),
        ));
    });
}

/// The network providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Remote {
    /// S3 and S3-compatible object stores.
    S3,
    /// Azure Blob Storage.
    Azblob,
    /// Google Cloud Storage.
    Gcs,
    /// WebDAV servers.
    Webdav,
}

impl Remote {
    /// Every network provider.
    pub const ALL: [Remote; 4] = [Remote::S3, Remote::Azblob, Remote::Gcs, Remote::Webdav];

    /// The provider's name in connections.
    pub fn as_str(self) -> &'static str {
        match self {
            Remote::S3 => "s3",
            Remote::Azblob => "azblob",
            Remote::Gcs => "gcs",
            Remote::Webdav => "webdav",
        }
    }

    /// Whether large uploads go in parts (multipart, blocks, resumable)
    /// rather than in one request.
    pub fn uploads_in_parts(self) -> bool {
        !matches!(self, Remote::Webdav)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Config {
    bucket: String,
    /// Default `us-east-1`.
    region: Option<String>,
    /// Default AWS's endpoint for the region.
    endpoint: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    /// A prefix inside the bucket.
    root: Option<String>,
    /// `https://bucket.host/key` instead of `https://host/bucket/key`.
    #[serde(default)]
    virtual_host_style: bool,
    /// Send no signature (public buckets).
    #[serde(default)]
    anonymous: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AzblobConfig {
    container: String,
    account_name: String,
    account_key: Option<String>,
    sas_token: Option<String>,
    /// Default `https://<account_name>.blob.core.windows.net`.
    endpoint: Option<String>,
    root: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcsConfig {
    bucket: String,
    /// The service account's JSON key, base64-encoded.
    credential: String,
    /// Default `https://storage.googleapis.com`.
    endpoint: Option<String>,
    root: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebdavConfig {
    endpoint: String,
    username: Option<String>,
    password: Option<String>,
    /// A bearer token, instead of a username and password.
    token: Option<String>,
    root: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(
    config: &serde_json::Value,
) -> Result<T, RemoteConfigError> {
    Ok(serde_json::from_value(config.clone())?)
}

fn required(what: &'static str, value: &str) -> Result<(), RemoteConfigError> {
    if value.trim().is_empty() {
        Err(RemoteConfigError::Empty(what))
    } else {
        Ok(())
    }
}

/// Builds the operator of a network provider from a connection's
/// configuration, checking it first.
pub fn build(
    remote: Remote,
    config: &serde_json::Value,
    policy: EndpointPolicy,
) -> Result<Operator, RemoteConfigError> {
    let op = match remote {
        Remote::S3 => {
            let c: S3Config = parse(config)?;
            required("bucket", &c.bucket)?;
            let mut b = opendal::services::S3::default()
                .bucket(&c.bucket)
                .region(c.region.as_deref().unwrap_or("us-east-1"))
                .root(c.root.as_deref().unwrap_or("/"))
                // Each part carries its CRC32C, which S3 checks.
                .checksum_algorithm("crc32c")
                .disable_config_load()
                .disable_ec2_metadata();
            if let Some(e) = &c.endpoint {
                check_endpoint(e, policy)?;
                b = b.endpoint(e);
            }
            if c.virtual_host_style {
                b = b.enable_virtual_host_style();
            }
            match (&c.access_key_id, &c.secret_access_key, c.anonymous) {
                (Some(id), Some(secret), false) => {
                    b = b.access_key_id(id).secret_access_key(secret);
                    if let Some(t) = &c.session_token {
                        b = b.session_token(t);
                    }
                }
                (None, None, true) => b = b.skip_signature(),
                _ => {
                    return Err(RemoteConfigError::Credentials(
                        "'access_key_id' and 'secret_access_key', or 'anonymous': true",
                    ));
                }
            }
            Operator::new(b)?
        }
        Remote::Azblob => {
            let c: AzblobConfig = parse(config)?;
            required("container", &c.container)?;
            required("account_name", &c.account_name)?;
            let endpoint = c
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("https://{}.blob.core.windows.net", c.account_name));
            check_endpoint(&endpoint, policy)?;
            let mut b = opendal::services::Azblob::default()
                .container(&c.container)
                .account_name(&c.account_name)
                .endpoint(&endpoint)
                .root(c.root.as_deref().unwrap_or("/"));
            // Credentials from the configuration only: without them
            // OpenDAL would look in the daemon's environment.
            b = match (&c.account_key, &c.sas_token) {
                (Some(k), None) => b.account_key(k),
                (None, Some(t)) => b.sas_token(t),
                _ => {
                    return Err(RemoteConfigError::Credentials(
                        "exactly one of 'account_key' and 'sas_token'",
                    ));
                }
            };
            Operator::new(b)?
        }
        Remote::Gcs => {
            let c: GcsConfig = parse(config)?;
            required("bucket", &c.bucket)?;
            required("credential", &c.credential)?;
            let mut b = opendal::services::Gcs::default()
                .bucket(&c.bucket)
                .credential(&c.credential)
                .root(c.root.as_deref().unwrap_or("/"))
                .disable_config_load()
                .disable_vm_metadata();
            if let Some(e) = &c.endpoint {
                check_endpoint(e, policy)?;
                b = b.endpoint(e);
            }
            Operator::new(b)?
        }
        Remote::Webdav => {
            let c: WebdavConfig = parse(config)?;
            check_endpoint(&c.endpoint, policy)?;
            let mut b = opendal::services::Webdav::default()
                .endpoint(&c.endpoint)
                .root(c.root.as_deref().unwrap_or("/"));
            match (&c.username, &c.password, &c.token) {
                (Some(u), p, None) => {
                    b = b.username(u);
                    if let Some(p) = p {
                        b = b.password(p);
                    }
                }
                (None, None, Some(t)) => b = b.token(t),
                (None, None, None) => {}
                _ => {
                    return Err(RemoteConfigError::Credentials(
                        "'username' (and 'password'), or 'token', not both",
                    ));
                }
            }
            Operator::new(b)?
        }
    };
    Ok(with_layers(op))
}

/// Retries and timeouts, as every network operator has them, and the
/// executor that keeps background work in its operation's
/// [`super::answer::observed`] scope.
fn with_layers(op: Operator) -> Operator {
    op.with_context(OperationContext::new().with_executor(Executor::with(ScopedExecutor)))
        .layer(
            RetryLayer::new()
                .with_jitter()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(RETRIES),
        )
        .layer(
            TimeoutLayer::new()
                .with_timeout(OPERATION_TIMEOUT)
                .with_io_timeout(IO_TIMEOUT),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OPEN: EndpointPolicy = EndpointPolicy::ANY;
    const STRICT: EndpointPolicy = EndpointPolicy::PUBLIC_ONLY;

    #[test]
    fn configurations_are_strict_and_need_their_credentials() {
        let s3 = |v: serde_json::Value| build(Remote::S3, &v, OPEN);
        s3(json!({"bucket": "b", "endpoint": "http://127.0.0.1:9", "access_key_id": "a", "secret_access_key": "s"}))
            .unwrap();
        s3(json!({"bucket": "b", "anonymous": true})).unwrap();
        use RemoteConfigError as E;
        let refused = |r: Result<Operator, E>| r.expect_err("refused");
        for (bad, why) in [
            (json!({"bucket": "b"}), "credentials"),
            (json!({"bucket": "b", "access_key_id": "a"}), "credentials"),
            (json!({"bucket": "", "anonymous": true}), "empty"),
            (
                json!({"bucket": "b", "anonymous": true, "colour": "red"}),
                "malformed",
            ),
            (
                json!({"bucket": "b", "anonymous": true, "endpoint": "file:///etc"}),
                "endpoint",
            ),
        ] {
            let err = refused(s3(bad.clone()));
            let kind = match &err {
                E::Credentials(_) => "credentials",
                E::Empty("bucket") => "empty",
                E::Malformed(_) => "malformed",
                E::Endpoint(EndpointError::Scheme(_)) => "endpoint",
                _ => "other",
            };
            assert_eq!(kind, why, "{bad}: {err}");
        }
        let az = |v: serde_json::Value| build(Remote::Azblob, &v, OPEN);
        az(json!({"container": "c", "account_name": "a", "account_key": "a2V5"})).unwrap();
        assert!(matches!(
            refused(az(json!({"container": "c", "account_name": "a"}))),
            E::Credentials(_)
        ));
        assert!(matches!(
            refused(build(
                Remote::Azblob,
                &json!({"container": "c", "account_name": "a", "account_key": "a2V5", "endpoint": "http://127.0.0.1:10000/a"}),
                STRICT
            )),
            E::Endpoint(EndpointError::Private(_))
        ));
        let dav = |v: serde_json::Value| build(Remote::Webdav, &v, OPEN);
        dav(json!({"endpoint": "http://127.0.0.1:8080", "username": "u", "password": "p"}))
            .unwrap();
        let both = refused(dav(
            json!({"endpoint": "http://127.0.0.1:8080", "username": "u", "token": "t"}),
        ));
        assert_eq!(
            both.to_string(),
            "give 'username' (and 'password'), or 'token', not both"
        );
        assert!(matches!(
            refused(build(Remote::Gcs, &json!({"bucket": "b"}), OPEN)),
            E::Malformed(_)
        ));
    }
}
