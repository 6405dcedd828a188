//! Where ferry's provider HTTP client may connect.
//!
//! A tenant chooses a provider's endpoint; unless the operator allows
//! private endpoints ([`EndpointPolicy`]), ferry must never connect to an
//! internal address for it: loopback, private and shared (CGNAT) networks,
//! link-local (cloud metadata at 169.254.169.254), unique-local, multicast,
//! documentation and the other special-purpose ranges ([`is_internal`]).
//! Checking the endpoint's text when the connection is made is not enough:
//! a name can resolve elsewhere later (DNS rebinding), and a provider can
//! redirect. So the check happens where connections are made:
//! - host names are resolved by [`GuardedResolver`], reqwest's resolver,
//!   which refuses a name if any of its addresses is internal;
//! - IP literals never reach a resolver: [`GuardedTransport`] checks the
//!   host of every request before it is sent, and the redirect policy
//!   checks every redirect's target.
//!
//! Each policy has its own client ([`transporter`], [`client`]), built once
//! per process, and every network operator carries the transporter of the
//! policy it was built under (OpenDAL 0.59 lets an operator carry its own
//! HTTP transport in its operation context). A task-local policy would fail
//! open for any request made outside the scope that set it; a policy fixed
//! in the operator cannot be forgotten.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use opendal::{Buffer, HttpBody, HttpRedirect, HttpTransport, HttpTransporter};
use opendal_http_transport_reqwest::ReqwestTransport;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::endpoint::EndpointPolicy;

/// How long connecting to a provider may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Redirects followed for one request, as reqwest's default policy does.
const MAX_REDIRECTS: usize = 10;

/// The text of the OpenDAL error a refused connection becomes; a
/// configuration error, which no retry helps.
pub const REFUSED_MESSAGE: &str =
    "the endpoint leads to an internal address, which this server does not allow";

/// A connection refused because the address is internal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} is the internal address {addr}, which this server does not allow")]
pub struct InternalAddress {
    /// The host as the request named it.
    pub host: String,
    /// The internal address it is or resolved to.
    pub addr: IpAddr,
}

/// Whether `ip` is an address a tenant's endpoint must not reach: anything
/// but a public unicast address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", 0.0.0.0
        || a == 10 // RFC 1918
        || a == 127 // loopback
        || (a == 100 && (b & 0xc0) == 64) // shared address space (CGNAT) 100.64/10
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (b & 0xf0) == 16) // RFC 1918
        || (a == 192 && b == 168) // RFC 1918
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224 // multicast, reserved, broadcast
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4); // ::ffff:a.b.c.d
    }
    if s[..5] == [0; 5] && s[5] == 0 {
        return true; // ::/96: unspecified, loopback, IPv4-compatible (deprecated)
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_internal_v4(embedded_v4(s[6], s[7])); // NAT64 64:ff9b::/96
    }
    if s[0] == 0x2002 {
        return is_internal_v4(embedded_v4(s[1], s[2])); // 6to4
    }
    (s[0] == 0x64 && s[1] == 0xff9b) // local-use NAT64 64:ff9b:1::/48
        || (s[0] == 0x100 && s[1..4] == [0; 3]) // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] < 0x200) // IETF protocol assignments 2001::/23, Teredo
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] & 0xfff0) == 0x3ff0 // documentation 3fff::/20
        || s[0] == 0x5f00 // SRv6 SIDs
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || s[0] >> 8 == 0xff // multicast
}

/// Refuses `url` when its host is an internal IP literal (the host names
/// go through [`GuardedResolver`]). The URL is parsed as reqwest parses it,
/// so `http://2130706433/` is 127.0.0.1 here as there.
pub fn refuse_internal_literal(url: &url::Url) -> Result<(), InternalAddress> {
    let addr = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    if is_internal(addr) {
        return Err(InternalAddress {
            host: url.host_str().unwrap_or_default().to_owned(),
            addr,
        });
    }
    Ok(())
}

/// Looks a host name up: its addresses, the port left 0.
pub type Lookup =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// The system's resolver, as reqwest uses by default.
pub fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.collect()) })
    })
}

/// reqwest's resolver: looks a name up at connect time and refuses it when
/// any of its addresses is internal, unless the policy allows that.
#[derive(Clone)]
pub struct GuardedResolver {
    allow_internal: bool,
    lookup: Lookup,
}

impl std::fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("allow_internal", &self.allow_internal)
            .finish_non_exhaustive()
    }
}

impl GuardedResolver {
    /// A resolver for `policy` that looks names up with `lookup`.
    pub fn new(policy: EndpointPolicy, lookup: Lookup) -> Self {
        Self {
            allow_internal: policy.allow_private,
            lookup,
        }
    }

    /// The addresses of `host`, or why it is refused.
    pub async fn addresses(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let addrs = (self.lookup)(host.to_owned())
            .await
            .map_err(ResolveError::Lookup)?;
        if addrs.is_empty() {
            return Err(ResolveError::Lookup(std::io::Error::other(format!(
                "{host} has no address"
            ))));
        }
        if !self.allow_internal
            && let Some(bad) = addrs.iter().find(|a| is_internal(a.ip()))
        {
            return Err(ResolveError::Internal(InternalAddress {
                host: host.to_owned(),
                addr: bad.ip(),
            }));
        }
        Ok(addrs)
    }
}

/// Why [`GuardedResolver`] gave no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The lookup failed; a retry may help.
    #[error("cannot resolve: {0}")]
    Lookup(std::io::Error),
    /// An address is internal; no retry helps.
    #[error(transparent)]
    Internal(InternalAddress),
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = this.addresses(&host).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Whether `err`, or an error it came from, is a refused internal address.
pub fn is_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<InternalAddress>() {
            return true;
        }
        if let Some(ResolveError::Internal(_)) = e.downcast_ref::<ResolveError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The OpenDAL error of a refused connection: a configuration error that
/// no retry helps.
pub fn refused_error(why: impl std::fmt::Display) -> opendal::Error {
    opendal::Error::new(opendal::ErrorKind::ConfigInvalid, REFUSED_MESSAGE)
        .with_context("refused", why.to_string())
}

/// reqwest's transport for OpenDAL, refusing requests to internal IP
/// literals before they are sent and turning a refusal by the resolver or
/// the redirect policy into [`refused_error`].
#[derive(Debug)]
pub struct GuardedTransport {
    inner: ReqwestTransport,
    allow_internal: bool,
}

impl HttpTransport for GuardedTransport {
    async fn fetch(&self, req: Request<Buffer>) -> opendal::Result<Response<HttpBody>> {
        if !self.allow_internal {
            let mut targets = vec![req.uri().to_string()];
            if let Some(redirect) = req.extensions().get::<HttpRedirect>() {
                targets.push(redirect.uri().original_uri().to_owned());
            }
            for target in targets {
                if let Ok(url) = url::Url::parse(&target) {
                    refuse_internal_literal(&url).map_err(refused_error)?;
                }
            }
        }
        self.inner.fetch(req).await.map_err(|e| {
            if is_refusal(&e) {
                refused_error(scrubbed_chain(&e))
            } else {
                e
            }
        })
    }
}

/// The sources of `err` as one line, for the operator's log.
fn scrubbed_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = Vec::new();
    let mut next = err.source();
    while let Some(e) = next {
        out.push(e.to_string());
        next = e.source();
    }
    super::failure::scrub(&out.join(": "))
}

/// The redirect policy: at most [`MAX_REDIRECTS`], none to an internal IP
/// literal unless allowed (names are checked by the resolver).
fn redirect_policy(allow_internal: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        if !allow_internal && let Err(refused) = refuse_internal_literal(attempt.url()) {
            return attempt.error(refused);
        }
        attempt.follow()
    })
}

/// A reqwest client for `policy` that looks names up with `lookup`: rustls
/// with the process's crypto provider (ring), a connect timeout, and no
/// timeout on a whole request, since a large transfer that keeps moving may
/// take as long as it needs (OpenDAL's timeout layer bounds each read and
/// write instead).
pub fn build_client(policy: EndpointPolicy, lookup: Lookup) -> reqwest::Client {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .dns_resolver(GuardedResolver::new(policy, lookup))
        .redirect(redirect_policy(policy.allow_private))
        .build()
        .expect("the HTTP client builds (its TLS provider is installed first)")
}

/// OpenDAL's transport over `client`, for `policy`: guarded, and noting
/// each answer for the operation that asked ([`super::answer`]).
pub fn transport_over(client: reqwest::Client, policy: EndpointPolicy) -> HttpTransporter {
    HttpTransporter::new(super::answer::ObservingTransport(GuardedTransport {
        inner: ReqwestTransport::new(client),
        allow_internal: policy.allow_private,
    }))
}

/// The client and transport of one policy, built once per process.
struct Egress {
    client: reqwest::Client,
    transporter: HttpTransporter,
}

fn egress(policy: EndpointPolicy) -> &'static Egress {
    static PUBLIC: OnceLock<Egress> = OnceLock::new();
    static ANY: OnceLock<Egress> = OnceLock::new();
    let cell = if policy.allow_private { &ANY } else { &PUBLIC };
    cell.get_or_init(|| {
        let client = build_client(policy, system_lookup());
        Egress {
            transporter: transport_over(client.clone(), policy),
            client,
        }
    })
}

/// The OpenDAL transport that operators built under `policy` carry.
pub fn transporter(policy: EndpointPolicy) -> HttpTransporter {
    egress(policy).transporter.clone()
}

/// The reqwest client behind [`transporter`], for the requests ferry makes
/// itself (WebDAV's streaming uploads).
pub fn client(policy: EndpointPolicy) -> reqwest::Client {
    egress(policy).client.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn internal_ranges_are_recognised_in_every_form() {
        for internal in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2001::1",
            "2001:db8::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
        ] {
            let ip: IpAddr = internal.parse().unwrap();
            assert!(is_internal(ip), "{internal}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert!(!is_internal(ip), "{public}");
        }
    }

    #[test]
    fn literals_are_read_as_the_http_client_reads_them() {
        for spelled in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:0:0:1]/",
        ] {
            let url = url::Url::parse(spelled).unwrap();
            assert!(refuse_internal_literal(&url).is_err(), "{spelled}");
        }
        let name = url::Url::parse("http://example.com/").unwrap();
        refuse_internal_literal(&name).unwrap();
    }

    /// A lookup answering `answers` in turn, the last one for ever after.
    fn changing(answers: Vec<&'static str>) -> (Lookup, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let lookup: Lookup = Arc::new(move |_host| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let ip: IpAddr = answers[n.min(answers.len() - 1)].parse().unwrap();
            Box::pin(async move { Ok(vec![SocketAddr::new(ip, 0)]) })
        });
        (lookup, calls)
    }

    #[tokio::test]
    async fn a_name_rebound_to_an_internal_address_is_refused_when_connecting() {
        let (lookup, calls) = changing(vec!["93.184.215.14", "127.0.0.1"]);
        let resolver = GuardedResolver::new(EndpointPolicy::PUBLIC_ONLY, lookup);
        // Public when the connection was checked…
        resolver.addresses("rebind.example").await.unwrap();
        // …internal when the next request connects: refused.
        let err = resolver.addresses("rebind.example").await.unwrap_err();
        assert!(matches!(err, ResolveError::Internal(_)), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "every connection resolves");
        // One internal address among public ones is enough to refuse.
        let mixed: Lookup = Arc::new(|_| {
            Box::pin(async {
                Ok(vec![
                    "93.184.215.14:0".parse().unwrap(),
                    "[::1]:0".parse().unwrap(),
                ])
            })
        });
        let resolver = GuardedResolver::new(EndpointPolicy::PUBLIC_ONLY, mixed.clone());
        assert!(resolver.addresses("mixed.example").await.is_err());
        let open = GuardedResolver::new(EndpointPolicy::ANY, mixed);
        assert_eq!(open.addresses("mixed.example").await.unwrap().len(), 2);
    }

    /// A server on loopback answering every request `204`, and its port.
    async fn loopback_server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock
                        .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn the_client_refuses_internal_names_and_literals_unless_allowed() {
        let port = loopback_server().await;
        let to_loopback = || changing(vec!["127.0.0.1"]).0;
        let get = |policy, url: String| {
            let transport = transport_over(build_client(policy, to_loopback()), policy);
            async move {
                let req = Request::get(url).body(Buffer::new()).unwrap();
                transport.fetch(req).await.map(|r| r.status().as_u16())
            }
        };
        for url in [
            format!("http://provider.example:{port}/"),
            format!("http://2130706433:{port}/"),
            format!("http://127.1:{port}/"),
        ] {
            let err = get(EndpointPolicy::PUBLIC_ONLY, url.clone())
                .await
                .unwrap_err();
            assert_eq!(
                err.kind(),
                opendal::ErrorKind::ConfigInvalid,
                "{url}: {err}"
            );
            assert_eq!(err.message(), REFUSED_MESSAGE, "{url}");
            assert!(!err.is_temporary(), "a refusal is not retried");
            assert_eq!(get(EndpointPolicy::ANY, url).await.unwrap(), 204);
        }
    }
}
