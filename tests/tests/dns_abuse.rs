//! The steering DNS under abuse: one source cannot hold every DNS-over-TCP
//! slot (its connection beyond `dns.max_tcp_connections_per_source` is
//! closed unanswered while another source is served), and `ANY` over UDP,
//! whose source may be forged, gets one RRset while TCP gets them all.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferry_tests::dns::{dig, dig_status};
use ferry_tests::{Hub, HubOptions};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

const ZONE: &str = "ferry.test";

fn dns_hub(extra: &str) -> (Hub, SocketAddr) {
    let hub = Hub::start_with(HubOptions {
        extra_toml: format!("[dns]\nlisten = \"127.0.0.1:0\"\nzone = \"{ZONE}\"\n{extra}"),
        ..HubOptions::default()
    });
    let addr = hub.dns_addr.expect("the hub serves DNS");
    (hub, addr)
}

/// A TCP connection to `to` from `from`.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    socket.connect(to).await.expect("the DNS listener takes it")
}

/// Sends one length-prefixed query for `hub.<zone>` on `tcp` and returns
/// the answer, or `None` when the connection closes unanswered (within
/// 5 s).
async fn ask_on(tcp: &mut TcpStream) -> Option<Message> {
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii(format!("hub.{ZONE}")).unwrap(),
        RecordType::A,
    ));
    let query = m.to_vec().unwrap();
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    let _ = tcp.write_all(&framed).await;
    let answer = async {
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).await.ok()?;
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tcp.read_exact(&mut body).await.ok()?;
        Message::from_vec(&body).ok()
    };
    tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn one_source_cannot_hold_every_tcp_slot() {
    let (_hub, dns) = dns_hub("max_tcp_connections = 8\nmax_tcp_connections_per_source = 2\n");
    let greedy = Ipv4Addr::new(127, 0, 0, 1);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = connect_from(greedy, dns).await;
        assert!(ask_on(&mut tcp).await.is_some(), "within its share");
        held.push(tcp);
    }
    let mut third = connect_from(greedy, dns).await;
    assert!(ask_on(&mut third).await.is_none(), "over its share");
    // Another source is answered over TCP meanwhile.
    let out = dig(
        dns,
        &["-b", "127.0.0.2", "+tcp", &format!("hub.{ZONE}"), "A"],
    );
    assert_eq!(dig_status(&out), "NOERROR", "{out}");
    assert!(out.contains("127.0.0.1"), "{out}");
    // A connection closed gives its source a slot back.
    drop(held.pop());
    let served = ferry_tests::eventually(Duration::from_secs(5), async || {
        let mut tcp = connect_from(greedy, dns).await;
        ask_on(&mut tcp).await.is_some()
    })
    .await;
    assert!(served, "a freed slot is not given back");
}

#[tokio::test]
async fn any_over_udp_gets_one_rrset_and_over_tcp_every_one() {
    let (_hub, dns) = dns_hub("");
    let records = |out: &str| -> Vec<String> {
        out.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .map(str::to_owned)
            .collect()
    };
    // dig asks ANY over TCP unless told not to.
    let udp = dig(dns, &["+notcp", ZONE, "ANY", "+noall", "+answer"]);
    let udp = records(&udp);
    assert_eq!(udp.len(), 1, "{udp:?}");
    assert!(udp[0].contains("SOA"), "{udp:?}");
    let tcp = dig(dns, &["+tcp", ZONE, "ANY", "+noall", "+answer"]);
    let tcp = records(&tcp);
    assert!(tcp.iter().any(|r| r.contains("SOA")), "{tcp:?}");
    assert!(tcp.iter().any(|r| r.contains("\tNS\t")), "{tcp:?}");
}
