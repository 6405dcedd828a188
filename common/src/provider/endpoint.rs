//! Provider endpoints a tenant may point ferry at: an `http` or `https`
//! URL naming a host, and (unless the operator allows it) not a loopback,
//! private, link-local or otherwise internal address, so a tenant cannot make
//! the hub or a spoke call services on their own networks.

use std::net::IpAddr;

/// Why an `endpoint` is refused. Each is about the configuration; no retry
/// helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The URL is neither `http://` nor `https://`.
    #[error("'endpoint' {0:?} must start with http:// or https://")]
    Scheme(String),
    /// The URL names no host, or carries user information.
    #[error("'endpoint' {0:?} must name a host, with no user information")]
    Host(String),
    /// The host is an internal address and the operator does not allow
    /// those.
    #[error(
        "'endpoint' {0:?} is a private address, which this server does not allow (providers.allow_private_endpoints)"
    )]
    Private(String),
}

/// What the operator allows endpoints to be.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointPolicy {
    /// Allow endpoints on loopback, private, link-local or unspecified
    /// addresses (and `localhost`). Off by default: a tenant must not make
    /// the hub or a spoke call services on their own networks.
    pub allow_private: bool,
}

impl EndpointPolicy {
    /// Any endpoint, private addresses too: for connections the hub
    /// already checked, and for operators who allow it.
    pub const ANY: EndpointPolicy = EndpointPolicy {
        allow_private: true,
    };
    /// Public addresses only (the default).
    pub const PUBLIC_ONLY: EndpointPolicy = EndpointPolicy {
        allow_private: false,
    };
}

/// Checks an endpoint URL: `http` or `https`, a host, and (unless allowed)
/// not a private address.
pub fn check_endpoint(url: &str, policy: EndpointPolicy) -> Result<(), EndpointError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| EndpointError::Scheme(url.into()))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(EndpointError::Host(url.into()));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if !policy.allow_private {
        let private = match host.parse::<IpAddr>() {
            Ok(ip) => is_private(ip),
            Err(_) => {
                let h = host.trim_end_matches('.').to_ascii_lowercase();
                h == "localhost" || h.ends_with(".localhost")
            }
        };
        if private {
            return Err(EndpointError::Private(url.into()));
        }
    }
    Ok(())
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64.0.0/10
        }
        IpAddr::V6(v6) => {
            v6.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
                || v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: EndpointPolicy = EndpointPolicy::ANY;
    const STRICT: EndpointPolicy = EndpointPolicy::PUBLIC_ONLY;

    #[test]
    fn endpoints_must_be_http_urls_and_public_unless_allowed() {
        for good in [
            "https://s3.example.com",
            "http://minio.example.com:9000/path",
        ] {
            check_endpoint(good, STRICT).unwrap();
        }
        for private in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://10.1.2.3",
            "http://[::1]:80",
            "http://[fd00::1]/",
            "http://169.254.169.254/latest",
            "http://100.64.0.1",
            "http://[::ffff:192.168.0.1]",
        ] {
            assert!(
                matches!(
                    check_endpoint(private, STRICT),
                    Err(EndpointError::Private(_))
                ),
                "{private}"
            );
            check_endpoint(private, OPEN).unwrap();
        }
        for bad in [
            "ftp://x",
            "s3.example.com",
            "https://",
            "https://user:pw@host",
        ] {
            assert!(
                matches!(
                    check_endpoint(bad, OPEN),
                    Err(EndpointError::Scheme(_) | EndpointError::Host(_))
                ),
                "{bad}"
            );
        }
    }
}
