//! The DNS answers, message by message: records, codes, ECS scopes, rate
//! limiting, truncation, and a bounded fuzz pass over the entry point.

use super::answer::*;
use super::limit::RateLimiter;
use super::metrics::Transport;
use super::zone::Zone;
use crate::config::{RateLimitConfig, SteeringConfig};
use crate::steering::Steering;
use crate::steering::metrics::SteeringMetrics;
use crate::tunnel::LiveSteering;
use ferry_common::proto::SteeringAnnounce;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use prometheus_client::metrics::counter::Counter;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

const CLIENT: &str = "198.51.100.20";

fn responder() -> Responder {
    responder_and_steering().0
}

/// Spokes fra1 (192.0.2.1, 2001:db8::1) and ams1 (192.0.2.2), and the
/// live state they were announced with (to change it).
fn responder_and_steering() -> (Responder, Arc<Steering>, Vec<LiveSteering>) {
    let mut registry = prometheus_client::registry::Registry::default();
    let steering = Arc::new(Steering::new(
        &SteeringConfig::default(),
        Duration::from_secs(3),
        SteeringMetrics::register(&mut registry),
    ));
    let now = tokio::time::Instant::now().into_std();
    let live = |name: &str, addrs: &[&str]| LiveSteering {
        name: name.into(),
        announce: Some(SteeringAnnounce {
            public_addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            public_url: format!("http://{}", addrs[0]),
            capacity_transfers: 0,
        }),
        last_heard: now,
        active_transfers: 0,
        draining: false,
        rtt_ms: None,
    };
    let spokes = vec![
        live("fra1", &["192.0.2.1", "2001:db8::1"]),
        live("ams1", &["192.0.2.2"]),
    ];
    steering.refresh(spokes.clone());
    // Clients in 198.51.100.0/24 are nearer fra1, those in
    // 203.0.113.0/24 nearer ams1.
    let report = |client: &str, fra: f64, ams: f64| {
        steering.observe_report(
            client.parse().unwrap(),
            &[("fra1".into(), fra), ("ams1".into(), ams)],
        )
    };
    report(CLIENT, 5.0, 60.0);
    report("203.0.113.1", 70.0, 8.0);
    let zone = Zone::new(
        "Edge.Example.COM",
        &[],
        None,
        20,
        &[
            "192.0.2.100".parse().unwrap(),
            "2001:db8::100".parse().unwrap(),
        ],
        7,
    )
    .unwrap();
    let metrics = crate::dns::metrics::DnsMetrics::register(&mut registry);
    let hub = SteeringMetrics::register(&mut prometheus_client::registry::Registry::default())
        .answers("hub");
    (
        Responder::new(zone, steering.clone(), metrics, hub),
        steering,
        spokes,
    )
}

/// The answer's bytes to `packet` from `source` over `transport`.
fn raw(r: &Responder, packet: &[u8], source: &str, transport: Transport) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(r.respond(packet, source.parse().unwrap(), transport, None, &mut out));
    out
}

#[test]
fn kept_answers_carry_each_querys_id_and_follow_steering() {
    let (r, steering, mut spokes) = responder_and_steering();
    let with_id = |mut q: Vec<u8>, id: u16| {
        q[..2].copy_from_slice(&id.to_be_bytes());
        q
    };
    let plain = query("aPi.EDGE.example.com", RecordType::A, None);
    let first = raw(&r, &with_id(plain.clone(), 1), CLIENT, Transport::udp);
    assert_eq!(r.kept_sent(), 0);
    let again = raw(&r, &with_id(plain.clone(), 0xbeef), CLIENT, Transport::udp);
    assert_eq!(r.kept_sent(), 1, "the second answer is the kept one");
    assert_eq!(&again[..2], &[0xbe, 0xef], "with the query's own ID");
    assert_eq!(first[2..], again[2..]);
    let m = Message::from_vec(&again).unwrap();
    assert_eq!(m.queries[0].name().to_string(), "aPi.EDGE.example.com.");
    assert_eq!(addrs(&m), ["192.0.2.1"]);

    // The same bytes from a network near ams1 are steered there: not the
    // kept answer.
    let m = Message::from_vec(&raw(&r, &plain, "203.0.113.9", Transport::udp)).unwrap();
    assert_eq!(addrs(&m), ["192.0.2.2"]);
    assert_eq!(r.kept_sent(), 1);
    // Both kept now, each for its own outcome.
    let m = Message::from_vec(&raw(&r, &plain, CLIENT, Transport::udp)).unwrap();
    assert_eq!(addrs(&m), ["192.0.2.1"]);
    let m = Message::from_vec(&raw(&r, &plain, "203.0.113.9", Transport::udp)).unwrap();
    assert_eq!(addrs(&m), ["192.0.2.2"]);
    assert_eq!(r.kept_sent(), 3);

    // ECS: the subnet decides, whoever asks; the scope comes back.
    let ecs = query(
        "api.edge.example.com",
        RecordType::A,
        Some(ClientSubnet::new("203.0.113.0".parse().unwrap(), 24, 0)),
    );
    for source in ["192.0.2.53", CLIENT] {
        let m = Message::from_vec(&raw(&r, &ecs, source, Transport::udp)).unwrap();
        assert_eq!(
            (addrs(&m), scope(&m)),
            (vec!["192.0.2.2".to_owned()], Some((24, 24)))
        );
    }
    assert_eq!(r.kept_sent(), 4);

    // fra1 drains: its clients go to ams1 at once.
    spokes[0].draining = true;
    steering.refresh(spokes);
    let m = Message::from_vec(&raw(&r, &plain, CLIENT, Transport::udp)).unwrap();
    assert_eq!(addrs(&m), ["192.0.2.2"]);
    // TCP answers are built each time.
    let before = r.kept_sent();
    raw(&r, &plain, CLIENT, Transport::tcp);
    raw(&r, &plain, CLIENT, Transport::tcp);
    assert_eq!(r.kept_sent(), before);
}

#[test]
fn a_kept_answer_is_byte_for_byte_the_answer_built_afresh() {
    let r = responder();
    let subnets = [
        None,
        Some(ClientSubnet::new("203.0.113.0".parse().unwrap(), 24, 0)),
        Some(ClientSubnet::new("198.51.0.0".parse().unwrap(), 16, 0)),
        Some(ClientSubnet::new("0.0.0.0".parse().unwrap(), 0, 0)),
        Some(ClientSubnet::new("2001:db8::".parse().unwrap(), 48, 0)),
    ];
    let names = [
        "api.edge.example.com",
        "API.Edge.Example.Com",
        "hub.edge.example.com",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::ANY,
        RecordType::MX,
    ];
    for name in names {
        for qtype in types {
            for subnet in subnets {
                for source in [CLIENT, "203.0.113.9", "192.0.2.200"] {
                    let q = query(name, qtype, subnet);
                    raw(&r, &q, source, Transport::udp);
                    let before = r.kept_sent();
                    let kept = raw(&r, &q, source, Transport::udp);
                    // Every api query's second answer is a kept one;
                    // hub.<zone> is not kept.
                    let api = name.to_ascii_lowercase().starts_with("api.");
                    assert_eq!(r.kept_sent() - before, u64::from(api), "{name}");
                    let built = raw(&responder(), &q, source, Transport::udp);
                    assert_eq!(kept, built, "{name} {qtype} {subnet:?} from {source}");
                }
            }
        }
    }
}

fn ask_from(r: &Responder, packet: &[u8], source: &str) -> Option<Message> {
    let mut out = Vec::new();
    r.respond(
        packet,
        source.parse().unwrap(),
        Transport::udp,
        None,
        &mut out,
    )
    .then(|| Message::from_vec(&out).expect("answers parse"))
}

fn ask(r: &Responder, name: &str, qtype: RecordType) -> Message {
    ask_from(r, &query(name, qtype, None), CLIENT).expect("an answer")
}

fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn scope(m: &Message) -> Option<(u8, u8)> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}

#[test]
fn the_zone_answers_soa_ns_and_addresses_authoritatively() {
    let r = responder();
    let soa = ask(&r, "edge.example.com.", RecordType::SOA);
    assert_eq!(soa.metadata.response_code, ResponseCode::NoError);
    assert!(soa.metadata.authoritative && !soa.metadata.recursion_available);
    let RData::SOA(s) = &soa.answers[0].data else {
        panic!("not an SOA: {soa:?}");
    };
    assert_eq!(s.mname.to_string(), "hub.edge.example.com.");
    assert_eq!(s.rname.to_string(), "hostmaster.edge.example.com.");
    assert_eq!((s.serial, s.minimum), (7, 20));

    let ns = ask(&r, "EDGE.example.com", RecordType::NS);
    assert_eq!(ns.answers.len(), 1);
    let mut glue = ns.clone();
    glue.answers = ns.additionals.clone();
    assert_eq!(addrs(&glue), ["192.0.2.100", "2001:db8::100"]);

    assert_eq!(
        addrs(&ask(&r, "hub.edge.example.com", RecordType::A)),
        ["192.0.2.100"]
    );
    assert_eq!(
        addrs(&ask(&r, "hub.edge.example.com", RecordType::AAAA)),
        ["2001:db8::100"]
    );
    assert_eq!(
        addrs(&ask(&r, "fra1.edge.example.com", RecordType::AAAA)),
        ["2001:db8::1"]
    );
    assert_eq!(
        addrs(&ask(&r, "AMS1.edge.example.com", RecordType::A)),
        ["192.0.2.2"]
    );
    let api = ask(&r, "api.edge.example.com", RecordType::A);
    assert_eq!(addrs(&api), ["192.0.2.1"]);
    assert!(api.answers.iter().all(|a| a.ttl == 20));
    // The question is echoed as asked.
    assert_eq!(api.queries[0].name().to_string(), "api.edge.example.com.");
}

#[test]
fn missing_names_types_and_foreign_zones_get_the_right_codes() {
    let r = responder();
    let nx = ask(&r, "nope.edge.example.com", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(nx.authorities[0].data, RData::SOA(_)));
    let deep = ask(&r, "x.api.edge.example.com", RecordType::A);
    assert_eq!(deep.metadata.response_code, ResponseCode::NXDomain);
    // ams1 has no IPv6 address: NODATA, not NXDOMAIN.
    let nodata = ask(&r, "ams1.edge.example.com", RecordType::AAAA);
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty() && !nodata.authorities.is_empty());
    let txt = ask(&r, "api.edge.example.com", RecordType::TXT);
    assert_eq!(
        (txt.metadata.response_code, txt.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let outside = ask(&r, "example.com", RecordType::A);
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
    assert!(!outside.metadata.authoritative);
    let other = ask(&r, "edge.example.org", RecordType::A);
    assert_eq!(other.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn api_is_steered_on_the_client_subnet_with_its_scope() {
    let r = responder();
    let ecs = |net: &str, len: u8| Some(ClientSubnet::new(net.parse().unwrap(), len, 0));
    // From a resolver elsewhere, for a client in 203.0.113.0/24: ams1.
    let m = ask_from(
        &r,
        &query(
            "api.edge.example.com",
            RecordType::A,
            ecs("203.0.113.0", 24),
        ),
        "192.0.2.53",
    )
    .unwrap();
    assert_eq!(addrs(&m), ["192.0.2.2"]);
    assert_eq!(scope(&m), Some((24, 24)));
    // A /16 source is steered on as given; the answer holds for /24.
    let m = ask_from(
        &r,
        &query("api.edge.example.com", RecordType::A, ecs("198.51.0.0", 16)),
        "192.0.2.53",
    )
    .unwrap();
    assert_eq!(scope(&m), Some((16, 24)));
    // Source prefix 0: the resolver's own address, scope 0.
    let m = ask_from(
        &r,
        &query("api.edge.example.com", RecordType::A, ecs("0.0.0.0", 0)),
        CLIENT,
    )
    .unwrap();
    assert_eq!(
        (addrs(&m), scope(&m)),
        (vec!["192.0.2.1".to_owned()], Some((0, 0)))
    );
    // Names that do not depend on the client: scope 0.
    let m = ask_from(
        &r,
        &query(
            "hub.edge.example.com",
            RecordType::A,
            ecs("203.0.113.0", 24),
        ),
        CLIENT,
    )
    .unwrap();
    assert_eq!(scope(&m), Some((24, 0)));
    // No ECS: the source address decides; an unknown network gets the hub.
    assert_eq!(
        addrs(
            &ask_from(
                &r,
                &query("api.edge.example.com", RecordType::A, None),
                "203.0.113.9"
            )
            .unwrap()
        ),
        ["192.0.2.2"]
    );
    assert_eq!(
        addrs(
            &ask_from(
                &r,
                &query("api.edge.example.com", RecordType::AAAA, None),
                "192.0.2.200"
            )
            .unwrap()
        ),
        ["2001:db8::100"]
    );
}

#[test]
fn bad_subnets_versions_and_opcodes_are_refused_by_code() {
    let r = responder();
    // Address bits beyond the source prefix (113 has bits past /20);
    // a scope in a query.
    for bad in [
        ClientSubnet::new("203.0.113.0".parse().unwrap(), 20, 0),
        ClientSubnet::new("203.0.113.0".parse().unwrap(), 24, 24),
    ] {
        let m = ask_from(
            &r,
            &query("api.edge.example.com", RecordType::A, Some(bad)),
            CLIENT,
        )
        .unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    }
    let mut m = Message::from_vec(&query("api.edge.example.com", RecordType::A, None)).unwrap();
    m.edns.as_mut().unwrap().set_version(1);
    let answer = ask_from(&r, &m.to_vec().unwrap(), CLIENT).unwrap();
    // BADVERS is 16 (which hickory reads back as BADSIG, its twin).
    assert_eq!(u16::from(answer.metadata.response_code), 16);
    let mut m = Message::from_vec(&query("api.edge.example.com", RecordType::A, None)).unwrap();
    m.metadata.op_code = OpCode::Notify;
    let answer = ask_from(&r, &m.to_vec().unwrap(), CLIENT).unwrap();
    assert_eq!(answer.metadata.response_code, ResponseCode::NotImp);
    let mut m = Message::from_vec(&query("api.edge.example.com", RecordType::A, None)).unwrap();
    m.add_query(Query::query(
        Name::from_ascii("hub.edge.example.com").unwrap(),
        RecordType::A,
    ));
    let answer = ask_from(&r, &m.to_vec().unwrap(), CLIENT).unwrap();
    assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    let mut m = Message::from_vec(&query("api.edge.example.com", RecordType::A, None)).unwrap();
    m.queries[0].set_query_class(DNSClass::CH);
    let answer = ask_from(&r, &m.to_vec().unwrap(), CLIENT).unwrap();
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn answers_short_packets_and_garbage_are_not_answered_or_formerr() {
    let r = responder();
    assert!(ask_from(&r, b"\x12\x34", CLIENT).is_none());
    let mut response =
        Message::from_vec(&query("api.edge.example.com", RecordType::A, None)).unwrap();
    response.metadata.message_type = MessageType::Response;
    assert!(ask_from(&r, &response.to_vec().unwrap(), CLIENT).is_none());
    // A header that claims a question that is not there.
    let garbage = [0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x3f];
    let m = ask_from(&r, &garbage, CLIENT).unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (0xabcd, ResponseCode::FormErr)
    );
}

#[test]
fn over_the_rate_answers_slip_truncated_or_drop() {
    let r = responder();
    let cfg = RateLimitConfig {
        responses_per_sec: 1,
        burst: 2,
        slip: 2,
        v4_prefix: 24,
        v6_prefix: 56,
    };
    let mut limiter = RateLimiter::new(&cfg, Instant::now());
    let packet = query("api.edge.example.com", RecordType::A, None);
    let mut sent = Vec::new();
    for _ in 0..6 {
        let mut out = Vec::new();
        if r.respond(
            &packet,
            CLIENT.parse().unwrap(),
            Transport::udp,
            Some(&mut limiter),
            &mut out,
        ) {
            sent.push(Message::from_vec(&out).unwrap());
        }
    }
    // Two whole, then of four over the rate two slip, truncated.
    assert_eq!(sent.len(), 4);
    assert!(
        sent[..2]
            .iter()
            .all(|m| !m.metadata.truncation && !m.answers.is_empty())
    );
    assert!(
        sent[2..]
            .iter()
            .all(|m| m.metadata.truncation && m.answers.is_empty())
    );
    assert_eq!(
        sent[3].queries[0].name().to_string(),
        "api.edge.example.com."
    );
}

/// A responder for a hub with 16 IPv4 and 16 IPv6 addresses.
fn responder_with_32_hub_addresses() -> Responder {
    let mut registry = prometheus_client::registry::Registry::default();
    let steering = Arc::new(Steering::new(
        &SteeringConfig::default(),
        Duration::from_secs(3),
        SteeringMetrics::register(&mut registry),
    ));
    let many: Vec<IpAddr> = (0..16u16)
        .map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xffff, i)))
        .chain((0..16u8).map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i))))
        .collect();
    let zone = Zone::new("edge.example.com", &[], None, 20, &many, 1).unwrap();
    Responder::new(
        zone,
        steering,
        crate::dns::metrics::DnsMetrics::register(&mut registry),
        Counter::default(),
    )
}

#[test]
fn udp_answers_too_big_for_the_client_are_truncated() {
    let r = responder_with_32_hub_addresses();
    // The apex's NS with the glue of hub.<zone>'s 32 addresses.
    let mut m = Message::from_vec(&query("edge.example.com", RecordType::NS, None)).unwrap();
    m.edns = None;
    let classic = m.to_vec().unwrap();
    let mut out = Vec::new();
    assert!(r.respond(
        &classic,
        CLIENT.parse().unwrap(),
        Transport::udp,
        None,
        &mut out
    ));
    assert!(out.len() <= 512);
    let got = Message::from_vec(&out).unwrap();
    assert!(got.metadata.truncation && got.answers.is_empty());
    // Over TCP it is whole.
    assert!(r.respond(
        &classic,
        CLIENT.parse().unwrap(),
        Transport::tcp,
        None,
        &mut out
    ));
    assert_eq!(Message::from_vec(&out).unwrap().additionals.len(), 32);
}

#[test]
fn any_over_udp_gets_one_rrset_and_over_tcp_the_whole_name() {
    let r = responder_with_32_hub_addresses();
    let ask = |name: &str, transport: Transport| {
        let packet = query(name, RecordType::ANY, None);
        let mut out = Vec::new();
        assert!(r.respond(&packet, CLIENT.parse().unwrap(), transport, None, &mut out));
        (packet.len(), out.len(), Message::from_vec(&out).unwrap())
    };
    // An unknown (UDP) source: one family of addresses, no truncation, an
    // answer a few times its query at most.
    let (asked, size, got) = ask("hub.edge.example.com", Transport::udp);
    assert!(!got.metadata.truncation);
    assert_eq!(got.answers.len(), 16);
    assert!(got.answers.iter().all(|a| a.record_type() == RecordType::A));
    assert!(size <= 8 * asked, "{size} bytes for a {asked}-byte query");
    // At the apex, the SOA alone.
    let (_, _, apex) = ask("edge.example.com", Transport::udp);
    assert_eq!(apex.answers.len(), 1);
    assert_eq!(apex.answers[0].record_type(), RecordType::SOA);
    assert!(
        apex.additionals
            .iter()
            .all(|a| a.record_type() == RecordType::OPT)
    );
    // Over TCP the source is proven: every RRset.
    let (_, tcp_size, whole) = ask("hub.edge.example.com", Transport::tcp);
    assert_eq!(whole.answers.len(), 32);
    assert!(tcp_size > size);
    let (_, _, apex) = ask("edge.example.com", Transport::tcp);
    assert!(apex.answers.len() >= 2, "SOA and NS");
}

/// A deterministic fuzz pass over the entry point: random bytes and
/// mutated real queries never panic, and whatever is sent back is a
/// response to the same id.
#[test]
fn arbitrary_packets_never_panic() {
    let r = responder();
    let seeds = [
        query(
            "api.edge.example.com",
            RecordType::A,
            Some(ClientSubnet::new("203.0.113.0".parse().unwrap(), 24, 0)),
        ),
        query("fra1.edge.example.com", RecordType::AAAA, None),
        query("edge.example.com", RecordType::NS, None),
    ];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::new();
    for i in 0..30_000 {
        let mut p = if i % 3 == 0 {
            let len = (next() % 300) as usize;
            (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            seeds[i % seeds.len()].clone()
        };
        if !p.is_empty() {
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % p.len();
                p[at] = next() as u8;
            }
            if next() % 5 == 0 {
                p.truncate((next() as usize) % p.len());
            }
        }
        if r.respond(&p, CLIENT.parse().unwrap(), Transport::udp, None, &mut out) {
            assert!(out.len() <= usize::from(EDNS_PAYLOAD));
            let back = Message::from_vec(&out).expect("what is sent parses");
            assert_eq!(back.metadata.message_type, MessageType::Response);
            assert_eq!(&back.metadata.id.to_be_bytes()[..], &p[..2]);
        }
    }
}
