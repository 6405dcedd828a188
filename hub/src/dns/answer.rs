//! Answers one DNS message of the steering zone, bytes in and bytes out,
//! with no I/O: the serving loops in [`super`] feed it.
//!
//! The zone holds: SOA and NS at the apex; `hub.<zone>` (this hub's
//! addresses); `api.<zone>`, steered per client network to the nearest
//! eligible spoke (the hub's addresses when none fits); and `<spoke>.<zone>`
//! for every connected spoke. Names below these do not exist (NXDOMAIN),
//! names outside the zone are refused (REFUSED), and nothing is recursed.
//!
//! EDNS Client Subnet (RFC 7871): with an ECS option, `api.<zone>` is
//! steered on the client's subnet and the answer carries the option back
//! with the scope the answer holds for (the steering prefix length); every
//! other answer does not depend on the client and has scope 0. Without the
//! option, the resolver's own address is steered on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use ferry_common::prefix::Prefix;
use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{
    BinDecodable as _, BinDecoder, BinEncodable as _, BinEncoder,
};
use prometheus_client::metrics::counter::Counter;

use super::limit::{RateLimiter, Verdict};
use super::metrics::{DnsMetrics, DropReason, QType, RCode, Transport};
use crate::steering::Steering;

/// The UDP payload size this server offers in EDNS (the 2020 DNS flag
/// day's value, which avoids IP fragmentation).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Responses to queries without EDNS fit in this many bytes on UDP.
const CLASSIC_PAYLOAD: usize = 512;

/// The zone's fixed parts, built once from the configuration.
#[derive(Debug)]
pub struct Zone {
    /// The zone's apex, lower case, fully qualified.
    pub origin: Name,
    /// `hub.<zone>`.
    pub hub_name: Name,
    /// TTL of every record and of negative answers.
    pub ttl: u32,
    /// The SOA record.
    pub soa: Record,
    /// The NS records.
    pub ns: Vec<Record>,
    /// The hub's own addresses.
    pub hub_v4: Vec<Ipv4Addr>,
    /// The hub's own IPv6 addresses.
    pub hub_v6: Vec<Ipv6Addr>,
}

impl Zone {
    /// The zone for `origin`; `nameservers` empty means `hub.<origin>`.
    pub fn new(
        origin: &str,
        nameservers: &[String],
        hostmaster: Option<&str>,
        ttl: u32,
        hub_addrs: &[IpAddr],
        serial: u32,
    ) -> Result<Zone, String> {
        let fqdn = |s: &str| -> Result<Name, String> {
            let mut n = Name::from_ascii(s).map_err(|e| format!("'{s}': {e}"))?;
            n.set_fqdn(true);
            Ok(n.to_lowercase())
        };
        let origin = fqdn(origin)?;
        let hub = Name::from_ascii("hub")
            .and_then(|h| h.append_domain(&origin))
            .map_err(|e| e.to_string())?;
        let nameservers: Vec<Name> = if nameservers.is_empty() {
            vec![hub.clone()]
        } else {
            nameservers
                .iter()
                .map(|n| fqdn(n))
                .collect::<Result<_, _>>()?
        };
        let rname = match hostmaster {
            Some(h) => fqdn(h)?,
            None => Name::from_ascii("hostmaster")
                .and_then(|h| h.append_domain(&origin))
                .map_err(|e| e.to_string())?,
        };
        let soa = SOA::new(
            nameservers[0].clone(),
            rname,
            serial,
            3600,
            600,
            86_400,
            ttl,
        );
        let ns = nameservers
            .iter()
            .map(|n| Record::from_rdata(origin.clone(), ttl, RData::NS(NS(n.clone()))))
            .collect();
        Ok(Zone {
            soa: Record::from_rdata(origin.clone(), ttl, RData::SOA(soa)),
            ns,
            origin,
            hub_name: hub,
            ttl,
            hub_v4: hub_addrs
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V4(v) => Some(*v),
                    IpAddr::V6(_) => None,
                })
                .collect(),
            hub_v6: hub_addrs
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V6(v) => Some(*v),
                    IpAddr::V4(_) => None,
                })
                .collect(),
        })
    }
}

/// Answers queries for the zone.
#[derive(Debug)]
pub struct Responder {
    zone: Zone,
    steering: Arc<Steering>,
    metrics: DnsMetrics,
    hub_answers: Counter,
}

/// What a name in the zone is.
enum Node<'a> {
    Apex,
    Api,
    Hub,
    Spoke(&'a [u8]),
    Nothing,
}

/// An ECS option that breaks RFC 7871's rules (FORMERR).
struct BadSubnet;

impl Responder {
    /// A responder for `zone`, steering with `steering`.
    pub fn new(
        zone: Zone,
        steering: Arc<Steering>,
        metrics: DnsMetrics,
        hub_answers: Counter,
    ) -> Self {
        Self {
            zone,
            steering,
            metrics,
            hub_answers,
        }
    }

    /// Answers `packet` from `source` into `out` (cleared first); false
    /// when nothing is to be sent. Over UDP, `limiter` decides whether the
    /// answer goes out whole, truncated or not at all.
    pub fn respond(
        &self,
        packet: &[u8],
        source: IpAddr,
        transport: Transport,
        limiter: Option<&mut RateLimiter>,
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
            self.metrics.dropped(DropReason::malformed);
            return false;
        };
        if header.metadata.message_type != MessageType::Query {
            // Never answer an answer: that is how reflection loops start.
            self.metrics.dropped(DropReason::malformed);
            return false;
        }
        // The rate is checked first, so a flood costs no parsing.
        let verdict = limiter.map_or(Verdict::Send, |l| l.check(source, Instant::now()));
        if verdict == Verdict::Drop {
            self.metrics.dropped(DropReason::rate_limited);
            return false;
        }
        let (mut reply, qtype, udp_limit) = match Message::from_vec(packet) {
            Ok(query) if verdict == Verdict::Slip => {
                self.metrics.slipped.inc();
                let qtype = query
                    .queries
                    .first()
                    .map_or(QType::other, |q| qtype_label(q.query_type()));
                let mut reply = Message::new(
                    query.metadata.id,
                    MessageType::Response,
                    query.metadata.op_code,
                );
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                if let [q] = query.queries.as_slice() {
                    reply.add_query(q.clone());
                }
                if query.edns.is_some() {
                    let mut edns = Edns::new();
                    edns.set_max_payload(EDNS_PAYLOAD);
                    reply.set_edns(edns);
                }
                (truncated(&reply), qtype, CLASSIC_PAYLOAD)
            }
            Ok(query) => self.answer(&query, source),
            Err(_) => {
                let mut m = Message::new(
                    header.metadata.id,
                    MessageType::Response,
                    header.metadata.op_code,
                );
                m.metadata.response_code = ResponseCode::FormErr;
                (m, QType::other, CLASSIC_PAYLOAD)
            }
        };
        let rcode = rcode_label(reply.metadata.response_code);
        if encode(&reply, out).is_err() {
            reply.metadata.response_code = ResponseCode::ServFail;
            reply.answers.clear();
            reply.authorities.clear();
            reply.additionals.clear();
            if encode(&reply, out).is_err() {
                return false;
            }
        }
        if transport == Transport::udp && out.len() > udp_limit {
            // Too big for the client's buffer: it retries over TCP.
            if encode(&truncated(&reply), out).is_err() {
                return false;
            }
        }
        self.metrics.query(transport, qtype, rcode);
        true
    }

    /// The answer to a well-formed message, its type's label and the
    /// largest UDP answer the asker takes.
    fn answer(&self, query: &Message, source: IpAddr) -> (Message, QType, usize) {
        let mut reply = Message::new(
            query.metadata.id,
            MessageType::Response,
            query.metadata.op_code,
        );
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.checking_disabled = query.metadata.checking_disabled;
        let mut udp_limit = CLASSIC_PAYLOAD;
        let mut subnet = None;
        if let Some(edns) = &query.edns {
            let mut answer_edns = Edns::new();
            answer_edns.set_max_payload(EDNS_PAYLOAD);
            answer_edns.set_version(0);
            udp_limit = usize::from(edns.max_payload().clamp(512, EDNS_PAYLOAD));
            let ecs = edns.option(EdnsCode::Subnet);
            self.metrics.client_subnet(ecs.is_some());
            reply.set_edns(answer_edns);
            if edns.version() > 0 {
                reply.metadata.response_code = ResponseCode::BADVERS;
                return (reply, QType::other, udp_limit);
            }
            match ecs.map(check_subnet) {
                Some(Ok(s)) => subnet = Some(s),
                Some(Err(BadSubnet)) => {
                    reply.metadata.response_code = ResponseCode::FormErr;
                    return (reply, QType::other, udp_limit);
                }
                None => {}
            }
        } else {
            self.metrics.client_subnet(false);
        }
        let [q] = query.queries.as_slice() else {
            reply.metadata.response_code = ResponseCode::FormErr;
            return (reply, QType::other, udp_limit);
        };
        let qtype = qtype_label(q.query_type());
        reply.add_query(q.clone());
        if query.metadata.op_code != OpCode::Query {
            reply.metadata.response_code = ResponseCode::NotImp;
            return (reply, qtype, udp_limit);
        }
        if q.query_class() != DNSClass::IN || !self.zone.origin.zone_of(q.name()) {
            reply.metadata.response_code = ResponseCode::Refused;
            return (reply, qtype, udp_limit);
        }
        reply.metadata.authoritative = true;
        let name = q.name();
        let scope = match self.node(name) {
            Node::Apex => {
                self.apex(&mut reply, q.query_type());
                0
            }
            Node::Api => {
                // Steer on the client's subnet when the resolver sent one
                // (a source prefix of 0 asks us not to use it).
                let (client, use_ecs) = match subnet {
                    Some(s) if s.source_prefix() > 0 => (s.addr(), true),
                    _ => (source, false),
                };
                let steered = self.steering.answer(client);
                let (v4, v6) = match &steered.target {
                    Some(t) => {
                        t.answers.inc();
                        (&t.v4[..], &t.v6[..])
                    }
                    None => {
                        self.hub_answers.inc();
                        (&self.zone.hub_v4[..], &self.zone.hub_v6[..])
                    }
                };
                self.addresses(&mut reply, name, q.query_type(), v4, v6);
                if use_ecs { steered.scope } else { 0 }
            }
            Node::Hub => {
                let (v4, v6) = (&self.zone.hub_v4[..], &self.zone.hub_v6[..]);
                self.addresses(&mut reply, name, q.query_type(), v4, v6);
                0
            }
            Node::Spoke(label) => {
                let target = std::str::from_utf8(label)
                    .ok()
                    .and_then(|l| self.steering.spoke_target(&l.to_ascii_lowercase()));
                match target {
                    Some(t) => self.addresses(&mut reply, name, q.query_type(), &t.v4, &t.v6),
                    None => self.negative(&mut reply, ResponseCode::NXDomain),
                }
                0
            }
            Node::Nothing => {
                self.negative(&mut reply, ResponseCode::NXDomain);
                0
            }
        };
        if let (Some(s), Some(edns)) = (subnet, reply.edns.as_mut()) {
            let back = ClientSubnet::new(s.addr(), s.source_prefix(), scope);
            edns.options_mut().insert(EdnsOption::Subnet(back));
        }
        (reply, qtype, udp_limit)
    }

    fn node<'a>(&self, name: &'a Name) -> Node<'a> {
        let below = name.iter().count() - self.zone.origin.iter().count();
        match below {
            0 => Node::Apex,
            1 => {
                let label = name.iter().next().expect("one label below the apex");
                if label.eq_ignore_ascii_case(b"api") {
                    Node::Api
                } else if label.eq_ignore_ascii_case(b"hub") {
                    Node::Hub
                } else {
                    Node::Spoke(label)
                }
            }
            _ => Node::Nothing,
        }
    }

    fn apex(&self, reply: &mut Message, qtype: RecordType) {
        match qtype {
            RecordType::SOA => {
                reply.add_answer(self.zone.soa.clone());
            }
            RecordType::NS => {
                reply.add_answers(self.zone.ns.iter().cloned());
                self.glue(reply);
            }
            RecordType::ANY => {
                reply.add_answer(self.zone.soa.clone());
                reply.add_answers(self.zone.ns.iter().cloned());
            }
            _ => self.negative(reply, ResponseCode::NoError),
        }
    }

    /// Addresses of name servers inside the zone (`hub.<zone>`), so a
    /// resolver need not ask again.
    fn glue(&self, reply: &mut Message) {
        for ns in &self.zone.ns {
            let RData::NS(NS(target)) = &ns.data else {
                continue;
            };
            if *target == self.zone.hub_name {
                for v4 in &self.zone.hub_v4 {
                    reply.add_additional(Record::from_rdata(
                        target.clone(),
                        self.zone.ttl,
                        RData::A(A(*v4)),
                    ));
                }
                for v6 in &self.zone.hub_v6 {
                    reply.add_additional(Record::from_rdata(
                        target.clone(),
                        self.zone.ttl,
                        RData::AAAA(AAAA(*v6)),
                    ));
                }
            }
        }
    }

    /// A and AAAA answers for a name that exists; other types get an empty
    /// answer with the SOA (NODATA).
    fn addresses(
        &self,
        reply: &mut Message,
        name: &Name,
        qtype: RecordType,
        v4: &[Ipv4Addr],
        v6: &[Ipv6Addr],
    ) {
        let ttl = self.zone.ttl;
        let before = reply.answers.len();
        if matches!(qtype, RecordType::A | RecordType::ANY) {
            for a in v4 {
                reply.add_answer(Record::from_rdata(name.clone(), ttl, RData::A(A(*a))));
            }
        }
        if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
            for a in v6 {
                reply.add_answer(Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(*a))));
            }
        }
        if reply.answers.len() == before {
            self.negative(reply, ResponseCode::NoError);
        }
    }

    /// NXDOMAIN, or NOERROR with no answer, with the SOA for negative
    /// caching (RFC 2308).
    fn negative(&self, reply: &mut Message, code: ResponseCode) {
        reply.metadata.response_code = code;
        reply.add_authority(self.zone.soa.clone());
    }
}

/// Checks an ECS option from a query against RFC 7871 §6: a known family,
/// a source prefix no longer than the address, a scope of 0, and no
/// address bits set beyond the source prefix.
fn check_subnet(option: &EdnsOption) -> Result<ClientSubnet, BadSubnet> {
    let EdnsOption::Subnet(s) = option else {
        return Err(BadSubnet);
    };
    let max = if s.addr().is_ipv4() { 32 } else { 128 };
    if s.source_prefix() > max || s.scope_prefix() != 0 {
        return Err(BadSubnet);
    }
    if Prefix::new(s.addr(), s.source_prefix()).addr() != s.addr() {
        return Err(BadSubnet);
    }
    Ok(*s)
}

/// The same answer with no records and the TC bit: "ask again over TCP".
fn truncated(reply: &Message) -> Message {
    let mut t = Message::new(
        reply.metadata.id,
        MessageType::Response,
        reply.metadata.op_code,
    );
    t.metadata = reply.metadata;
    t.metadata.truncation = true;
    t.queries = reply.queries.clone();
    t.edns = reply.edns.clone();
    t
}

fn encode(message: &Message, out: &mut Vec<u8>) -> Result<(), hickory_proto::ProtoError> {
    out.clear();
    let mut encoder = BinEncoder::new(out);
    message.emit(&mut encoder)
}

fn qtype_label(t: RecordType) -> QType {
    match t {
        RecordType::A => QType::A,
        RecordType::AAAA => QType::AAAA,
        RecordType::NS => QType::NS,
        RecordType::SOA => QType::SOA,
        RecordType::ANY => QType::ANY,
        _ => QType::other,
    }
}

fn rcode_label(c: ResponseCode) -> RCode {
    match c {
        ResponseCode::NoError => RCode::NOERROR,
        ResponseCode::FormErr => RCode::FORMERR,
        ResponseCode::NXDomain => RCode::NXDOMAIN,
        ResponseCode::NotImp => RCode::NOTIMP,
        ResponseCode::Refused => RCode::REFUSED,
        ResponseCode::BADVERS => RCode::BADVERS,
        _ => RCode::SERVFAIL,
    }
}

/// Builds a query message, for tests and the benchmark's tools.
pub fn query(name: &str, qtype: RecordType, subnet: Option<ClientSubnet>) -> Vec<u8> {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("a valid name"),
        qtype,
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    if let Some(s) = subnet {
        edns.options_mut().insert(EdnsOption::Subnet(s));
    }
    m.set_edns(edns);
    m.to_vec().expect("a query encodes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RateLimitConfig, SteeringConfig};
    use crate::steering::metrics::SteeringMetrics;
    use crate::tunnel::LiveSteering;
    use ferry_common::proto::SteeringAnnounce;
    use std::time::Duration;

    const CLIENT: &str = "198.51.100.20";

    fn responder() -> Responder {
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
        };
        steering.refresh(vec![
            live("fra1", &["192.0.2.1", "2001:db8::1"]),
            live("ams1", &["192.0.2.2"]),
        ]);
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
        Responder::new(zone, steering, metrics, hub)
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
        let mut limiter = RateLimiter::new(&cfg, Instant::now()).unwrap();
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

    #[test]
    fn udp_answers_too_big_for_the_client_are_truncated() {
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
        let r = Responder::new(
            zone,
            steering,
            crate::dns::metrics::DnsMetrics::register(&mut registry),
            Counter::default(),
        );
        let mut m =
            Message::from_vec(&query("hub.edge.example.com", RecordType::ANY, None)).unwrap();
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
        assert_eq!(Message::from_vec(&out).unwrap().answers.len(), 32);
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
}
