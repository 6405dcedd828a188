//! Provider endpoints a tenant may point ferry at: an `http` or `https`
//! URL naming a host, with no user information, query or fragment, and
//! (unless the operator allows it) not a loopback, private, link-local or
//! otherwise internal address, so a tenant cannot make the hub or a spoke
//! call services on their own networks.
//!
//! The URL is parsed as the HTTP client parses it (the WHATWG URL parser of
//! the `url` crate, which reqwest uses): `http://2130706433`, `0x7f.1`,
//! `0177.0.0.1` and `127.1` are all 127.0.0.1 to it, so they are to this
//! check, and the URL handed on to OpenDAL is the parsed one. This check
//! gives a clear answer when a connection is made; the binding one happens
//! when ferry connects ([`super::egress`]), for every address a name
//! resolves to at that moment.

use super::egress::is_internal;

/// Why an endpoint is refused. Each is about the configuration; no retry
/// helps. `field` names the configuration member (`endpoint`, or the
/// member an endpoint is made from).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The text is not a URL.
    #[error("'{field}' {url:?} is not a URL: {reason}")]
    Syntax {
        /// The configuration member.
        field: &'static str,
        /// The text given.
        url: String,
        /// What the URL parser said.
        reason: String,
    },
    /// The URL is neither `http://` nor `https://`.
    #[error("'{field}' {url:?} must start with http:// or https://")]
    Scheme {
        /// The configuration member.
        field: &'static str,
        /// The text given.
        url: String,
    },
    /// The URL names no host, or carries user information, a query or a
    /// fragment.
    #[error("'{field}' {url:?} must name a host, with no user information, query or fragment")]
    Host {
        /// The configuration member.
        field: &'static str,
        /// The text given.
        url: String,
    },
    /// The host is an internal address (or `localhost`) and the operator
    /// does not allow those.
    #[error(
        "'{field}' {url:?} is an internal address, which this server does not allow (providers.remote.allow_private_endpoints)"
    )]
    Private {
        /// The configuration member.
        field: &'static str,
        /// The text given.
        url: String,
    },
}

/// What the operator allows endpoints to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Allow endpoints on loopback, private, link-local and the other
    /// internal addresses (and `localhost`). Off by default: a tenant must
    /// not make the hub or a spoke call services on their own networks.
    pub allow_private: bool,
}

impl EndpointPolicy {
    /// Any endpoint, private addresses too: for operators who allow it.
    pub const ANY: EndpointPolicy = EndpointPolicy {
        allow_private: true,
    };
    /// Public addresses only (the default).
    pub const PUBLIC_ONLY: EndpointPolicy = EndpointPolicy {
        allow_private: false,
    };
}

/// Checks the endpoint URL in configuration member `field`: `http` or
/// `https`, a host, no user information, query or fragment, and (unless
/// allowed) not an internal address. Returns the URL as the HTTP client
/// will read it, without a trailing `/`, for OpenDAL to use.
pub fn check_endpoint(
    field: &'static str,
    text: &str,
    policy: EndpointPolicy,
) -> Result<String, EndpointError> {
    let url = url::Url::parse(text).map_err(|e| EndpointError::Syntax {
        field,
        url: text.into(),
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EndpointError::Scheme {
            field,
            url: text.into(),
        });
    }
    if url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(EndpointError::Host {
            field,
            url: text.into(),
        });
    }
    if !policy.allow_private && names_internal_host(&url) {
        return Err(EndpointError::Private {
            field,
            url: text.into(),
        });
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Whether `url`'s host is, by its text, an internal address: an
/// internal IP literal, `localhost` or a name under it, or no host. Names
/// are checked again, binding, when ferry connects.
pub fn names_internal_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(v4)) => is_internal(v4.into()),
        Some(url::Host::Ipv6(v6)) => is_internal(v6.into()),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            name == "localhost" || name.ends_with(".localhost")
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: EndpointPolicy = EndpointPolicy::ANY;
    const STRICT: EndpointPolicy = EndpointPolicy::PUBLIC_ONLY;

    fn check(url: &str, policy: EndpointPolicy) -> Result<String, EndpointError> {
        check_endpoint("endpoint", url, policy)
    }

    #[test]
    fn endpoints_must_be_http_urls_and_public_unless_allowed() {
        assert_eq!(
            check("https://S3.Example.com", STRICT).unwrap(),
            "https://s3.example.com"
        );
        assert_eq!(
            check("http://minio.example.com:9000/path/", STRICT).unwrap(),
            "http://minio.example.com:9000/path"
        );
        for private in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://LOCALHOST./",
            "http://a.localhost",
            "http://10.1.2.3",
            "http://[::1]:80",
            "http://[fd00::1]/",
            "http://169.254.169.254/latest",
            "http://100.64.0.1",
            "http://[::ffff:192.168.0.1]",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://0/",
            "http://[::]/",
        ] {
            let err = check(private, STRICT).unwrap_err();
            assert!(
                matches!(err, EndpointError::Private { .. }),
                "{private}: {err}"
            );
            assert!(err.to_string().starts_with("'endpoint'"), "{err}");
            check(private, OPEN).unwrap();
        }
        for bad in [
            "ftp://x",
            "s3.example.com",
            "https://",
            "https://user:pw@host",
            "https://user@host",
            "https://host/?x=1",
            "https://host/#frag",
            "https://host:99999",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(
                    check(bad, OPEN),
                    Err(EndpointError::Scheme { .. }
                        | EndpointError::Host { .. }
                        | EndpointError::Syntax { .. })
                ),
                "{bad}"
            );
        }
    }
}
