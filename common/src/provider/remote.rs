//! Providers reached over the network: S3 and S3-compatibles, Azure Blob,
//! Google Cloud Storage and WebDAV, through OpenDAL.
//!
//! Each has a strict configuration (unknown members refused) and is built
//! the same way at the hub and at a spoke. Credentials come only from the
//! configuration: OpenDAL's loading from the daemon's environment, files and
//! cloud instance metadata is turned off, so a tenant can never borrow the
//! identity of the machine ferry runs on. Every member that becomes part
//! of a URL is checked against its grammar ([`super::grammar`], endpoints
//! in [`super::endpoint`]) and every operator carries the HTTP client of the
//! operator's endpoint policy ([`super::egress`]), which checks addresses
//! when it connects. Every remote operator retries temporary failures with
//! jittered exponential backoff and bounds each operation and each read or
//! write by a timeout.

use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{Executor, OperationContext, Operator};
use serde::Deserialize;

use super::answer::ScopedExecutor;
use super::egress;
use super::endpoint::{EndpointError, EndpointPolicy, check_endpoint};
use super::grammar::{self, FieldError};
use super::webdav_upload;

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
    /// A member that becomes part of a URL breaks its grammar.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// A Google service account key that is not one, or that would make
    /// ferry fetch tokens from somewhere else; the text says what is wrong.
    #[error("'credential' {0}")]
    GcsCredential(&'static str),
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

/// Installs OpenDAL's process-wide default HTTP transport, once per
/// process (later calls do nothing): the public-only client of
/// [`egress`]. Every network operator carries the client of its own policy;
/// the default only serves an operator built some other way, which then
/// cannot reach internal addresses.
pub fn install_http_client() {
    opendal::HttpTransporter::install_default(egress::transporter(EndpointPolicy::PUBLIC_ONLY));
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
    /// rather than in one request (WebDAV's, streamed by
    /// [`webdav_upload`]).
    pub fn uploads_in_parts(self) -> bool {
        !matches!(self, Remote::Webdav)
    }
}

/// An `s3` connection's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct S3Config {
    pub(super) bucket: String,
    /// Default `us-east-1`.
    pub(super) region: Option<String>,
    /// Default AWS's endpoint for the region.
    pub(super) endpoint: Option<String>,
    pub(super) access_key_id: Option<String>,
    pub(super) secret_access_key: Option<String>,
    pub(super) session_token: Option<String>,
    /// A prefix inside the bucket.
    pub(super) root: Option<String>,
    /// `https://bucket.host/key` instead of `https://host/bucket/key`.
    #[serde(default)]
    pub(super) virtual_host_style: bool,
    /// Send no signature (public buckets).
    #[serde(default)]
    pub(super) anonymous: bool,
}

/// An `azblob` connection's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AzblobConfig {
    pub(super) container: String,
    pub(super) account_name: String,
    pub(super) account_key: Option<String>,
    pub(super) sas_token: Option<String>,
    /// Default `https://<account_name>.blob.core.windows.net`.
    pub(super) endpoint: Option<String>,
    pub(super) root: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcsConfig {
    bucket: String,
    /// The service account's JSON key, base64-encoded.
    credential: Option<String>,
    /// An OAuth access token used as it is (it expires: for emulators and
    /// tests), instead of a key. Only where private endpoints are allowed.
    token: Option<String>,
    /// No credentials at all (a public bucket, an emulator). Only where
    /// private endpoints are allowed.
    #[serde(default)]
    anonymous: bool,
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

/// The root prefix, checked; `/` when none is given.
fn root(given: Option<&str>) -> Result<&str, RemoteConfigError> {
    let root = given.unwrap_or("/");
    grammar::root(root)?;
    Ok(root)
}

/// Checks a Google credential: a base64-encoded service account key whose
/// token endpoint, if it names one, is an endpoint the policy allows.
/// Other kinds (external accounts, say) are refused: they make the signer
/// read local files or call URLs the key names.
fn check_gcs_credential(encoded: &str, policy: EndpointPolicy) -> Result<(), RemoteConfigError> {
    use base64::Engine as _;
    let json = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| RemoteConfigError::GcsCredential("must be a base64-encoded JSON key"))?;
    let key: serde_json::Value = serde_json::from_slice(&json)
        .map_err(|_| RemoteConfigError::GcsCredential("must be a base64-encoded JSON key"))?;
    if key.get("type").and_then(|t| t.as_str()) != Some("service_account") {
        return Err(RemoteConfigError::GcsCredential(
            "must be a service account key (\"type\": \"service_account\")",
        ));
    }
    match key.get("token_uri") {
        None => Ok(()),
        Some(serde_json::Value::String(uri)) => {
            check_endpoint("credential.token_uri", uri, policy)?;
            Ok(())
        }
        Some(_) => Err(RemoteConfigError::GcsCredential(
            "has a 'token_uri' that is not a URL",
        )),
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
            grammar::s3_bucket(&c.bucket)?;
            let region = c.region.as_deref().unwrap_or("us-east-1");
            grammar::s3_region(region)?;
            let mut b = opendal::services::S3::default()
                .bucket(&c.bucket)
                .region(region)
                .root(root(c.root.as_deref())?)
                // Each part carries its CRC32C, which S3 checks.
                .checksum_algorithm("crc32c")
                .disable_config_load()
                .disable_ec2_metadata();
            if let Some(e) = &c.endpoint {
                b = b.endpoint(&check_endpoint("endpoint", e, policy)?);
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
            grammar::azure_container(&c.container)?;
            grammar::azure_account(&c.account_name)?;
            let endpoint = match &c.endpoint {
                Some(e) => check_endpoint("endpoint", e, policy)?,
                None => check_endpoint(
                    "account_name",
                    &format!("https://{}.blob.core.windows.net", c.account_name),
                    policy,
                )?,
            };
            let mut b = opendal::services::Azblob::default()
                .container(&c.container)
                .account_name(&c.account_name)
                .endpoint(&endpoint)
                .root(root(c.root.as_deref())?);
            // Credentials from the configuration only: without them
            // OpenDAL would look in the daemon's environment.
            b = match (&c.account_key, &c.sas_token) {
                (Some(k), None) => b.account_key(k),
                (None, Some(t)) => {
                    grammar::sas_token(t)?;
                    b.sas_token(t)
                }
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
            grammar::gcs_bucket(&c.bucket)?;
            let mut b = opendal::services::Gcs::default()
                .bucket(&c.bucket)
                .root(root(c.root.as_deref())?)
                .disable_config_load()
                .disable_vm_metadata();
            // A key, the production way; a bare token or none at all only
            // where the operator allows private endpoints (emulators,
            // tests): they skip the key's checks.
            const SETS: &str = "'credential' (a service account key), or, where the operator allows private endpoints, 'token' or \"anonymous\": true";
            b = match (&c.credential, &c.token, c.anonymous) {
                (Some(key), None, false) => {
                    required("credential", key)?;
                    check_gcs_credential(key, policy)?;
                    b.credential(key)
                }
                (None, Some(token), false) if policy.allow_private => {
                    required("token", token)?;
                    b.token(token.clone())
                }
                (None, None, true) if policy.allow_private => b.skip_signature(),
                _ => return Err(RemoteConfigError::Credentials(SETS)),
            };
            if let Some(e) = &c.endpoint {
                b = b.endpoint(&check_endpoint("endpoint", e, policy)?);
            }
            Operator::new(b)?
        }
        Remote::Webdav => {
            let c: WebdavConfig = parse(config)?;
            let endpoint = check_endpoint("endpoint", &c.endpoint, policy)?;
            let mut b = opendal::services::Webdav::default()
                .endpoint(&endpoint)
                .root(root(c.root.as_deref())?);
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
            let authorization = webdav_upload::authorization(
                c.username.as_deref(),
                c.password.as_deref(),
                c.token.as_deref(),
            );
            Operator::new(b)?.layer(webdav_upload::StreamingUploads::new(
                endpoint,
                authorization,
                policy,
            ))
        }
    };
    Ok(with_layers(op, policy))
}

/// Retries and timeouts, as every network operator has them, the HTTP
/// client of the endpoint `policy`, and the executor that keeps background
/// work in its operation's [`super::answer::observed`] scope.
fn with_layers(op: Operator, policy: EndpointPolicy) -> Operator {
    op.with_context(OperationContext::from_parts(
        egress::transporter(policy),
        Executor::with(ScopedExecutor),
    ))
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
        s3(json!({"bucket": "bkt", "endpoint": "http://127.0.0.1:9", "access_key_id": "a", "secret_access_key": "s"}))
            .unwrap();
        s3(json!({"bucket": "bkt", "anonymous": true})).unwrap();
        use RemoteConfigError as E;
        let refused = |r: Result<Operator, E>| r.expect_err("refused");
        for (bad, why) in [
            (json!({"bucket": "bkt"}), "credentials"),
            (
                json!({"bucket": "bkt", "access_key_id": "a"}),
                "credentials",
            ),
            (json!({"bucket": "", "anonymous": true}), "empty"),
            (
                json!({"bucket": "bkt", "anonymous": true, "colour": "red"}),
                "malformed",
            ),
            (
                json!({"bucket": "bkt", "anonymous": true, "endpoint": "file:///etc"}),
                "endpoint",
            ),
        ] {
            let err = refused(s3(bad.clone()));
            let kind = match &err {
                E::Credentials(_) => "credentials",
                E::Empty("bucket") => "empty",
                E::Malformed(_) => "malformed",
                E::Endpoint(EndpointError::Scheme { .. }) => "endpoint",
                _ => "other",
            };
            assert_eq!(kind, why, "{bad}: {err}");
        }
        let az = |v: serde_json::Value| build(Remote::Azblob, &v, OPEN);
        az(json!({"container": "ctr", "account_name": "acct", "account_key": "a2V5"})).unwrap();
        assert!(matches!(
            refused(az(json!({"container": "ctr", "account_name": "acct"}))),
            E::Credentials(_)
        ));
        assert!(matches!(
            refused(build(
                Remote::Azblob,
                &json!({"container": "ctr", "account_name": "acct", "account_key": "a2V5", "endpoint": "http://127.0.0.1:10000/a"}),
                STRICT
            )),
            E::Endpoint(EndpointError::Private { .. })
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
            refused(build(Remote::Gcs, &json!({"bucket": "bkt"}), OPEN)),
            E::Credentials(_)
        ));
    }

    use RemoteConfigError as E;

    /// The member a refusal names, from its text.
    fn named(err: &RemoteConfigError) -> String {
        let text = err.to_string();
        text.split('\'').nth(1).unwrap_or_default().to_owned()
    }

    #[test]
    fn members_that_become_urls_are_checked_against_their_grammar() {
        let s3 = json!({"bucket": "ferry-test", "anonymous": true});
        let with = |base: &serde_json::Value, key: &str, value: &str| {
            let mut v = base.clone();
            v[key] = json!(value);
            v
        };
        for (key, value) in [
            ("region", "us-east-1.evil.example/#"),
            ("region", "us-east-1/../x"),
            ("bucket", "a/../b"),
            ("bucket", "b.evil.example/#"),
            ("bucket", "b?x=1"),
            ("root", "a/../b"),
            ("root", "/a?x"),
            ("endpoint", "http://s3.example.com/#"),
            ("endpoint", "http://user@s3.example.com"),
        ] {
            let err = build(Remote::S3, &with(&s3, key, value), OPEN).expect_err(value);
            assert_eq!(named(&err), key, "{key}={value}: {err}");
        }
        let az = json!({"container": "c-1", "account_name": "acct", "account_key": "a2V5"});
        for (key, value) in [
            ("account_name", "evil.example/#"),
            ("account_name", "127.0.0.1"),
            ("container", "c/../d"),
            ("root", "../x"),
        ] {
            let err = build(Remote::Azblob, &with(&az, key, value), OPEN).expect_err(value);
            assert_eq!(named(&err), key, "{key}={value}: {err}");
        }
        let sas = json!({"container": "c-1", "account_name": "acct", "sas_token": "sv=1#x"});
        assert_eq!(
            named(&build(Remote::Azblob, &sas, OPEN).unwrap_err()),
            "sas_token"
        );
        let dav = json!({"endpoint": "https://dav.example.com/dav/"});
        build(Remote::Webdav, &dav, STRICT).unwrap();
        let err = build(Remote::Webdav, &with(&dav, "root", "x/../../y"), STRICT).unwrap_err();
        assert_eq!(named(&err), "root");
        let err = build(
            Remote::Webdav,
            &with(&dav, "endpoint", "http://0x7f.1/"),
            STRICT,
        )
        .unwrap_err();
        assert!(
            matches!(err, E::Endpoint(EndpointError::Private { .. })),
            "{err}"
        );
    }

    #[test]
    fn gcs_credentials_must_be_service_account_keys() {
        use base64::Engine as _;
        let encode =
            |v: serde_json::Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
        let gcs = |credential: String, policy| {
            build(
                Remote::Gcs,
                &json!({"bucket": "ferry-test", "credential": credential}),
                policy,
            )
        };
        let external = encode(json!({
            "type": "external_account",
            "token_url": "https://sts.example.com/v1/token",
            "credential_source": {"file": "/etc/hostname"},
        }));
        assert!(matches!(
            gcs(external, OPEN).unwrap_err(),
            E::GcsCredential(_)
        ));
        assert!(matches!(
            gcs("not base64!".into(), OPEN).unwrap_err(),
            E::GcsCredential(_)
        ));
        let inward = encode(json!({
            "type": "service_account",
            "token_uri": "http://169.254.169.254/token",
        }));
        let err = gcs(inward, STRICT).unwrap_err();
        assert!(
            matches!(err, E::Endpoint(EndpointError::Private { .. })),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("'credential.token_uri'"),
            "{err}"
        );
    }

    #[test]
    fn a_bare_gcs_token_or_none_only_where_private_endpoints_are_allowed() {
        let gcs = |config: serde_json::Value, policy| build(Remote::Gcs, &config, policy);
        let token =
            json!({"bucket": "ferry-test", "token": "ya29.x", "endpoint": "http://127.0.0.1:4443"});
        let anonymous =
            json!({"bucket": "ferry-test", "anonymous": true, "endpoint": "http://127.0.0.1:4443"});
        assert!(gcs(token.clone(), OPEN).is_ok());
        assert!(gcs(anonymous.clone(), OPEN).is_ok());
        for config in [
            json!({"bucket": "ferry-test", "token": "ya29.x"}),
            json!({"bucket": "ferry-test", "anonymous": true}),
        ] {
            assert!(matches!(
                gcs(config, STRICT).unwrap_err(),
                E::Credentials(_)
            ));
        }
        // Exactly one way.
        for config in [
            json!({"bucket": "ferry-test"}),
            json!({"bucket": "ferry-test", "token": "t", "anonymous": true}),
            json!({"bucket": "ferry-test", "credential": "x", "token": "t"}),
            json!({"bucket": "ferry-test", "anonymous": false}),
        ] {
            assert!(
                matches!(gcs(config.clone(), OPEN).unwrap_err(), E::Credentials(_)),
                "{config}"
            );
        }
    }
}
