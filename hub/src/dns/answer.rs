//! Answers one DNS message of the steering zone, bytes in and bytes out,
//! with no I/O: the serving loops in [`super`] feed it.
//!
//! The zone ([`Zone`]) holds: SOA and NS at the apex; `hub.<zone>` (this hub's
//! addresses); `api.<zone>`, steered per client network to the nearest
//! eligible spoke (the hub's addresses when none fits); and `<spoke>.<zone>`
//! for every connected spoke. Names below these do not exist (NXDOMAIN),
//! names outside the zone are refused (REFUSED), and nothing is recursed.
//!
//! `ANY` over UDP gets one RRset (RFC 8482): the SOA at the apex, the
//! addresses of one family elsewhere. A UDP source is unknown (its
//! address may be forged), so its answer stays about the size of its
//! query and the server amplifies nothing; over TCP, whose handshake
//! proves the source, `ANY` is answered whole.
//!
//! EDNS Client Subnet (RFC 7871): with an ECS option, `api.<zone>` is
//! steered on the client's subnet and the answer carries the option back
//! with the scope the answer holds for (the steering prefix length); every
//! other answer does not depend on the client and has scope 0. Without the
//! option, the resolver's own address is steered on.
//!
//! Answers to `api.<zone>` over UDP are kept as they were sent ([`Kept`]):
//! a later query with the same bytes (but its message ID) that steering
//! sends to the same place gets them again, with its own ID, without
//! parsing or building a message. Steering still decides every query.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_common::prefix::Prefix;
use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, NS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{
    BinDecodable as _, BinDecoder, BinEncodable as _, BinEncoder,
};
use prometheus_client::metrics::counter::Counter;

use super::limit::{RateLimiter, Verdict};
use super::metrics::{DnsMetrics, DropReason, QType, RCode, Transport};
use super::zone::Zone;
use crate::steering::{SpokeTarget, Steering};

/// The UDP payload size this server offers in EDNS (the 2020 DNS flag
/// day's value, which avoids IP fragmentation).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Responses to queries without EDNS fit in this many bytes on UDP.
const CLASSIC_PAYLOAD: usize = 512;

/// Answers queries for the zone.
#[derive(Debug)]
pub struct Responder {
    zone: Zone,
    steering: Arc<Steering>,
    metrics: DnsMetrics,
    hub_answers: Counter,
    kept: Mutex<Kept>,
}

/// Queries kept at most; past this the kept answers are forgotten and
/// gathered again.
const KEPT_QUERIES: usize = 4096;
/// Answers kept per query (one per steering outcome seen).
const KEPT_PER_QUERY: usize = 8;
/// Queries longer than this are answered without keeping.
const KEPT_QUERY_BYTES: usize = 512;

/// Answers to `api.<zone>` sent over UDP, by the query's bytes after its
/// message ID. An answer depends on those bytes and on where steering
/// sent the client (a spoke's target or the hub, and the ECS scope); the
/// zone does not change while the responder lives.
#[derive(Debug, Default)]
struct Kept {
    queries: HashMap<Box<[u8]>, Asked>,
}

/// What the bytes of one query ask, and the answers given to them.
#[derive(Debug)]
struct Asked {
    /// The ECS address steered on; `None` steers on the source.
    subnet: Option<IpAddr>,
    /// Whether the query carried an ECS option.
    subnet_sent: bool,
    qtype: QType,
    answers: Vec<KeptAnswer>,
}

#[derive(Debug)]
struct KeptAnswer {
    /// The spoke steered to (held, so no other target can take its
    /// address), `None` for the hub.
    target: Option<Arc<SpokeTarget>>,
    scope: u8,
    rcode: RCode,
    /// The answer after its message ID.
    bytes: Box<[u8]>,
}

/// Where a query of `api.<zone>` was steered, for keeping its answer.
struct Steer {
    subnet: Option<IpAddr>,
    subnet_sent: bool,
    target: Option<Arc<SpokeTarget>>,
    scope: u8,
}

fn same_target(a: &Option<Arc<SpokeTarget>>, b: &Option<Arc<SpokeTarget>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
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

/// How much an `ANY` query gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Any {
    /// One RRset: the asker's address is not proven (UDP).
    OneRrset,
    /// Every RRset of the name (TCP).
    Whole,
}

impl Any {
    fn of(transport: Transport) -> Any {
        match transport {
            Transport::udp => Any::OneRrset,
            Transport::tcp => Any::Whole,
        }
    }
}

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
            kept: Mutex::default(),
        }
    }

    /// The DNS metrics it counts in.
    pub fn metrics(&self) -> &DnsMetrics {
        &self.metrics
    }

    /// Answers sent again from those kept, so far.
    pub fn kept_sent(&self) -> u64 {
        self.metrics.kept.get()
    }

    /// Sends the answer kept for `packet` (a UDP query of `api.<zone>`
    /// asked before) if steering sends its client where it sent it then;
    /// false when none is kept.
    fn send_kept(&self, packet: &[u8], source: IpAddr, out: &mut Vec<u8>) -> bool {
        if packet.len() > KEPT_QUERY_BYTES || packet.len() < 12 {
            return false;
        }
        let kept = self.kept.lock().expect("kept answers poisoned");
        let Some(asked) = kept.queries.get(&packet[2..]) else {
            return false;
        };
        let steered = self.steering.answer(asked.subnet.unwrap_or(source));
        let scope = if asked.subnet.is_some() {
            steered.scope
        } else {
            0
        };
        let Some(answer) = asked
            .answers
            .iter()
            .find(|a| a.scope == scope && same_target(&a.target, &steered.target))
        else {
            return false;
        };
        out.clear();
        out.extend_from_slice(&packet[..2]);
        out.extend_from_slice(&answer.bytes);
        self.metrics.client_subnet(asked.subnet_sent);
        match &steered.target {
            Some(t) => t.answers.inc(),
            None => self.hub_answers.inc(),
        };
        self.metrics
            .query(Transport::udp, asked.qtype, answer.rcode);
        self.metrics.kept.inc();
        true
    }

    /// Keeps `answer`, sent to the UDP query `packet` steered as `steer`.
    fn keep(&self, packet: &[u8], steer: Steer, qtype: QType, rcode: RCode, answer: &[u8]) {
        if packet.len() > KEPT_QUERY_BYTES || packet.len() < 12 || answer.len() < 12 {
            return;
        }
        let mut kept = self.kept.lock().expect("kept answers poisoned");
        if kept.queries.len() >= KEPT_QUERIES && !kept.queries.contains_key(&packet[2..]) {
            kept.queries.clear();
        }
        let asked = kept
            .queries
            .entry(packet[2..].into())
            .or_insert_with(|| Asked {
                subnet: steer.subnet,
                subnet_sent: steer.subnet_sent,
                qtype,
                answers: Vec::new(),
            });
        if asked.answers.len() >= KEPT_PER_QUERY {
            asked.answers.clear();
        }
        asked.answers.push(KeptAnswer {
            target: steer.target,
            scope: steer.scope,
            rcode,
            bytes: answer[2..].into(),
        });
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
        let udp = transport == Transport::udp;
        if udp && verdict == Verdict::Send && self.send_kept(packet, source, out) {
            return true;
        }
        let mut steer = None;
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
            Ok(query) => self.answer(&query, source, transport, &mut steer),
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
        if udp && out.len() > udp_limit {
            // Too big for the client's buffer: it retries over TCP.
            if encode(&truncated(&reply), out).is_err() {
                return false;
            }
        }
        self.metrics.query(transport, qtype, rcode);
        if udp && let Some(steer) = steer {
            self.keep(packet, steer, qtype, rcode, out);
        }
        true
    }

    /// The answer to a well-formed message, its type's label and the
    /// largest UDP answer the asker takes.
    ///
    /// For `api.<zone>`, `steer` is set to where the client was steered.
    fn answer(
        &self,
        query: &Message,
        source: IpAddr,
        transport: Transport,
        steer: &mut Option<Steer>,
    ) -> (Message, QType, usize) {
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
        let any = Any::of(transport);
        let scope = match self.node(name) {
            Node::Apex => {
                self.apex(&mut reply, q.query_type(), any);
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
                let scope = if use_ecs { steered.scope } else { 0 };
                *steer = Some(Steer {
                    subnet: use_ecs.then_some(client),
                    subnet_sent: subnet.is_some(),
                    target: steered.target.clone(),
                    scope,
                });
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
                self.addresses(&mut reply, name, (q.query_type(), any), v4, v6);
                scope
            }
            Node::Hub => {
                let (v4, v6) = (&self.zone.hub_v4[..], &self.zone.hub_v6[..]);
                self.addresses(&mut reply, name, (q.query_type(), any), v4, v6);
                0
            }
            Node::Spoke(label) => {
                let target = std::str::from_utf8(label)
                    .ok()
                    .and_then(|l| self.steering.spoke_target(&l.to_ascii_lowercase()));
                match target {
                    Some(t) => {
                        self.addresses(&mut reply, name, (q.query_type(), any), &t.v4, &t.v6)
                    }
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

    fn apex(&self, reply: &mut Message, qtype: RecordType, any: Any) {
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
                if any == Any::Whole {
                    reply.add_answers(self.zone.ns.iter().cloned());
                }
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

    /// A and AAAA answers for a name that exists (for `ANY` over UDP, one
    /// family only: v4 when it has addresses); other types get an empty
    /// answer with the SOA (NODATA).
    fn addresses(
        &self,
        reply: &mut Message,
        name: &Name,
        (qtype, any): (RecordType, Any),
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
        let v4_given = reply.answers.len() > before;
        let v6_wanted = match qtype {
            RecordType::AAAA => true,
            RecordType::ANY => any == Any::Whole || !v4_given,
            _ => false,
        };
        if v6_wanted {
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
