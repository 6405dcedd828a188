//! DNS clients for tests: Debian's `dig`, and hickory's own client over UDP
//! and TCP.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt as _;
use hickory_net::client::Client;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::DnsHandle as _;
use hickory_proto::op::{DnsRequest, DnsRequestOptions, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};

/// Runs `dig @server -p port ARGS…` (one try, two seconds) and returns its
/// output; panics if dig is missing or fails.
pub fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig runs (Debian's bind9-dnsutils; scripts/install-test-deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dig {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `dig +short` of one name and type: the answers, one per line.
pub fn dig_short(server: SocketAddr, name: &str, qtype: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![name, qtype, "+short"];
    args.extend_from_slice(extra);
    dig(server, &args)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The `status:` of a dig answer (`NOERROR`, `NXDOMAIN`, …).
pub fn dig_status(output: &str) -> String {
    output
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("none")
        .to_owned()
}

/// Asks `server` with hickory's client, over TCP or UDP, optionally with
/// an EDNS Client Subnet option.
pub async fn ask(
    server: SocketAddr,
    tcp: bool,
    name: &str,
    qtype: RecordType,
    subnet: Option<ClientSubnet>,
) -> Message {
    let provider = TokioRuntimeProvider::new();
    let timeout = Duration::from_secs(3);
    let (client, bg) = if tcp {
        let (stream, handle) = TcpClientStream::new(server, None, Some(timeout), provider);
        let stream = stream.await.expect("a TCP connection to the DNS server");
        let (client, background) =
            Client::<TokioRuntimeProvider>::with_timeout(stream, handle, timeout);
        (client, tokio::spawn(background))
    } else {
        let stream = UdpClientStream::builder(server, provider)
            .with_timeout(Some(timeout))
            .build();
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
        (client, tokio::spawn(background))
    };
    let request = DnsRequest::from_query(
        Query::query(Name::from_ascii(name).expect("a valid name"), qtype),
        DnsRequestOptions::default(),
    );
    let (mut message, options) = request.into_parts();
    if let (Some(s), Some(edns)) = (subnet, message.edns.as_mut()) {
        edns.options_mut().insert(EdnsOption::Subnet(s));
    }
    let response = client
        .send(DnsRequest::new(message, options))
        .next()
        .await
        .expect("an answer")
        .expect("the query succeeds");
    bg.abort();
    response.into_message()
}

/// The A and AAAA addresses in an answer.
pub fn addresses(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The (source, scope) prefix lengths of the ECS option in an answer.
pub fn subnet_scope(m: &Message) -> Option<(u8, u8)> {
    let edns = m.edns.as_ref()?;
    edns.options().options.iter().find_map(|(_, o)| match o {
        EdnsOption::Subnet(s) => Some((s.source_prefix(), s.scope_prefix())),
        _ => None,
    })
}

/// Waits until the hub's DNS may answer every spoke in `names`.
pub async fn until_eligible(hub: &crate::Hub, names: &[&str]) {
    let admin = crate::Api::new(hub.url()).as_token(crate::hub::ADMIN_TOKEN);
    let ok = crate::eventually(Duration::from_secs(10), async || {
        let view = admin.get("/v1/steering").send().await.json();
        let eligible: Vec<&str> = view["eligible"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        names.iter().all(|n| eligible.contains(n))
    })
    .await;
    assert!(ok, "spokes {names:?} never became eligible:\n{}", hub.log());
}
