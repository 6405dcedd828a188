//! The tunnel protocol between spokes and hubs, without I/O.
//!
//! A tunnel is a QUIC connection (ALPN [`ALPN`]) or, where UDP is blocked, a
//! TLS connection on TCP carrying the same frames on HTTP/2 streams. Each
//! stream carries one exchange, and the spoke opens them all: first the
//! control stream (hello, welcome, heartbeats, and notices both ways), then
//! one per forwarded request. A frame is
//!
//! ```text
//! +--------+----------------+------------------+
//! | type   | length (u32 BE)| payload          |
//! | 1 byte | 4 bytes        | `length` bytes   |
//! +--------+----------------+------------------+
//! ```
//!
//! `Data` payloads are raw bytes; other payloads are JSON objects with
//! bounded fields. Every length is checked before anything is buffered, so a
//! peer cannot make the other side allocate more than `max_frame` bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The ALPN of version 1 of the tunnel protocol.
pub const ALPN: &[u8] = b"ferry-tunnel/1";
/// The protocol version spokes announce in [`Hello`].
pub const PROTOCOL_VERSION: u16 = 1;
/// The default largest frame payload.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
/// Bytes before every payload.
pub const HEADER_LEN: usize = 5;

const MAX_NAME: usize = 64;
const MAX_TEXT: usize = 1024;
const MAX_URI: usize = 8 * 1024;
const MAX_HEADERS: usize = 128;
const MAX_HEADER_NAME: usize = 256;
const MAX_HEADER_VALUE: usize = 16 * 1024;

/// Names no spoke may take: routes under `/v1/spokes/` and DNS names in
/// the steering zone that belong to the hub.
pub const RESERVED_SPOKE_NAMES: &[&str] = &["enrol", "probe-targets", "api", "hub"];

/// What a spoke's name must be, for error messages.
pub const SPOKE_NAME_RULE: &str = "must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-', and none of enrol, probe-targets, api, hub";

/// Whether `name` can name a spoke: a DNS label of lower-case letters,
/// digits and `-`, and not a reserved name.
pub fn valid_spoke_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !RESERVED_SPOKE_NAMES.contains(&name)
}

/// The spoke's first frame on a new tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The protocol version the spoke speaks.
    pub version: u16,
    /// The spoke's name, as enrolled.
    pub spoke: String,
    /// The spoke's software version, for the hub's logs.
    pub software: String,
    /// Where clients reach the spoke, for steering: its public addresses
    /// (the hub's DNS answers with them) and the base URL of its API (for
    /// client probes). Absent, the spoke is never a steering answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steering: Option<SteeringAnnounce>,
}

/// What a spoke tells its hub about itself for steering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteeringAnnounce {
    /// Addresses clients reach the spoke's API at (A and AAAA answers).
    pub public_addrs: Vec<std::net::IpAddr>,
    /// Base URL of the spoke's API as clients reach it, such as
    /// `https://fra1.edge.example.com`.
    pub public_url: String,
    /// Transfers the spoke takes before steering sends clients elsewhere;
    /// 0 for no limit.
    pub capacity_transfers: u64,
}

/// The most public addresses a spoke may announce.
pub const MAX_PUBLIC_ADDRS: usize = 16;
/// The most client prefixes one heartbeat carries.
pub const MAX_HEARTBEAT_RTTS: usize = 512;

/// The hub's answer to an acceptable [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// The version both sides now speak.
    pub version: u16,
    /// How often the spoke should send a [`Heartbeat`], in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Prefix lengths the hub groups clients by (IPv4, IPv6); the spoke
    /// aggregates the RTTs it observes the same way.
    #[serde(default = "default_client_prefixes")]
    pub client_prefixes: (u8, u8),
    /// This hub's identity among the hubs of its store (so that a spoke
    /// that knows it under two addresses holds one tunnel to it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hub_id: String,
    /// Every hub sharing this hub's store, this one included: where spokes
    /// reach their tunnels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hubs: Vec<HubAddrs>,
}

/// Where a hub takes tunnels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubAddrs {
    /// The hub's identity, as in its `welcome`.
    pub id: String,
    /// QUIC, over UDP.
    pub tunnel_addr: std::net::SocketAddr,
    /// TLS over TCP.
    pub tunnel_tcp_addr: std::net::SocketAddr,
}

/// The most hubs a `welcome` lists.
pub const MAX_HUBS: usize = 16;

fn default_client_prefixes() -> (u8, u8) {
    (24, 48)
}

/// The spoke's periodic report of its load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Increases by one per heartbeat.
    pub seq: u64,
    /// Transfers streaming now.
    pub active_transfers: u64,
    /// Content bytes per second over the last interval.
    pub bytes_per_sec: u64,
    /// Round-trip times of client connections since the previous
    /// heartbeat, per client prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_rtts: Vec<PrefixRtt>,
}

/// The kernel RTT of a spoke's client connections from one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixRtt {
    /// The client network, `ADDR/LEN`.
    pub prefix: String,
    /// The mean RTT of the connections sampled, in microseconds.
    pub rtt_us: u32,
    /// Connections sampled.
    pub samples: u32,
}

/// The head of a forwarded HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestHead {
    /// The method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Header fields, in order.
    pub headers: Vec<(String, String)>,
    /// The client's address as the spoke saw it.
    pub client_addr: Option<String>,
}

/// The head of the answer to a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Header fields, in order.
    pub headers: Vec<(String, String)>,
}

/// What a notice from the hub asks of a spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// Stop taking new requests and finish what is in flight.
    Drain,
    /// The spoke's enrolment was revoked; the tunnel closes.
    Revoked,
    /// An API key was revoked or a connection deleted: cached grants must
    /// be dropped now, not when they expire.
    InvalidateGrants,
    /// The hubs sharing the store changed: `hubs` lists them now, and the
    /// spoke opens a tunnel to each one it lacks.
    Hubs,
}

/// A message the hub pushes to a spoke on a stream of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    /// What is asked.
    pub kind: NoticeKind,
    /// Why, for the spoke's log.
    pub reason: String,
    /// With [`NoticeKind::Hubs`]: every hub, this one included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hubs: Vec<HubAddrs>,
}

impl Notice {
    /// A notice of `kind` for `reason`.
    pub fn new(kind: NoticeKind, reason: impl Into<String>) -> Self {
        Notice {
            kind,
            reason: reason.into(),
            hubs: Vec::new(),
        }
    }
}

/// A refusal that ends the stream (or, on the first stream, the tunnel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    /// A stable code, such as `unsupported_version`.
    pub code: String,
    /// Why, for logs.
    pub reason: String,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Spoke → hub, first frame of a tunnel.
    Hello(Hello),
    /// Hub → spoke, answer to `Hello`.
    Welcome(Welcome),
    /// Either way: the exchange (or tunnel) is refused.
    Refuse(Refusal),
    /// Spoke → hub, on the heartbeat stream.
    Heartbeat(Heartbeat),
    /// Hub → spoke, echoing a heartbeat's `seq`.
    HeartbeatAck(u64),
    /// Spoke → hub: a forwarded request; its body follows as `Data`, then `End`.
    Request(RequestHead),
    /// Hub → spoke: the answer's head; its body follows as `Data`, then `End`.
    Response(ResponseHead),
    /// Body bytes.
    Data(Bytes),
    /// The body is complete.
    End,
    /// Hub → spoke: drain or revocation.
    Notice(Notice),
}

mod kind {
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const REFUSE: u8 = 0x03;
    pub const HEARTBEAT: u8 = 0x04;
    pub const HEARTBEAT_ACK: u8 = 0x05;
    pub const REQUEST: u8 = 0x10;
    pub const RESPONSE: u8 = 0x11;
    pub const DATA: u8 = 0x12;
    pub const END: u8 = 0x13;
    pub const NOTICE: u8 = 0x20;
}

/// Why bytes are not a valid frame. Every variant ends the stream it came
/// on; none can be fixed by retrying the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The type byte is not one this version knows.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The announced payload is larger than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload does not parse, or a field is out of bounds.
    #[error("malformed {frame} frame: {reason}")]
    Malformed {
        /// The frame type's name.
        frame: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn malformed(frame: &'static str, reason: impl Into<String>) -> ProtoError {
    ProtoError::Malformed {
        frame,
        reason: reason.into(),
    }
}

impl Frame {
    fn name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Welcome(_) => "welcome",
            Frame::Refuse(_) => "refuse",
            Frame::Heartbeat(_) => "heartbeat",
            Frame::HeartbeatAck(_) => "heartbeat_ack",
            Frame::Request(_) => "request",
            Frame::Response(_) => "response",
            Frame::Data(_) => "data",
            Frame::End => "end",
            Frame::Notice(_) => "notice",
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let (header, payload) = self.parts();
        out.reserve(HEADER_LEN + payload.len());
        out.put_slice(&header);
        out.put_slice(&payload);
    }

    /// The frame's header and its payload, apart, so that a payload already
    /// in memory can be sent without copying it behind the header.
    pub fn parts(&self) -> ([u8; HEADER_LEN], Bytes) {
        let json = |v: &dyn erased::Json| v.to_json();
        let (kind, payload): (u8, Bytes) = match self {
            Frame::Hello(v) => (kind::HELLO, json(v)),
            Frame::Welcome(v) => (kind::WELCOME, json(v)),
            Frame::Refuse(v) => (kind::REFUSE, json(v)),
            Frame::Heartbeat(v) => (kind::HEARTBEAT, json(v)),
            Frame::HeartbeatAck(seq) => (
                kind::HEARTBEAT_ACK,
                Bytes::copy_from_slice(&seq.to_be_bytes()),
            ),
            Frame::Request(v) => (kind::REQUEST, json(v)),
            Frame::Response(v) => (kind::RESPONSE, json(v)),
            Frame::Data(b) => (kind::DATA, b.clone()),
            Frame::End => (kind::END, Bytes::new()),
            Frame::Notice(v) => (kind::NOTICE, json(v)),
        };
        let len = u32::try_from(payload.len()).expect("frames are far smaller than 4 GiB");
        let mut header = [0u8; HEADER_LEN];
        header[0] = kind;
        header[1..].copy_from_slice(&len.to_be_bytes());
        (header, payload)
    }

    /// The encoded frame.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// Checks the bounds of every field.
    fn check(self) -> Result<Frame, ProtoError> {
        let name = self.name();
        let long = |what: &str, len: usize, max: usize| {
            if len > max {
                Err(malformed(
                    name,
                    format!("{what} is {len} bytes, more than {max}"),
                ))
            } else {
                Ok(())
            }
        };
        let hubs = |hubs: &[HubAddrs]| {
            if hubs.len() > MAX_HUBS {
                return Err(malformed(name, format!("more than {MAX_HUBS} hubs")));
            }
            hubs.iter()
                .try_for_each(|h| long("hub id", h.id.len(), MAX_NAME))
        };
        match &self {
            Frame::Hello(h) => {
                long("spoke", h.spoke.len(), MAX_NAME)?;
                long("software", h.software.len(), MAX_NAME)?;
                if let Some(s) = &h.steering {
                    long("public_url", s.public_url.len(), MAX_TEXT)?;
                    if s.public_addrs.len() > MAX_PUBLIC_ADDRS {
                        return Err(malformed(
                            name,
                            format!("more than {MAX_PUBLIC_ADDRS} public addresses"),
                        ));
                    }
                }
            }
            Frame::Welcome(w) => {
                long("hub_id", w.hub_id.len(), MAX_NAME)?;
                hubs(&w.hubs)?;
            }
            Frame::Heartbeat(hb) => {
                if hb.client_rtts.len() > MAX_HEARTBEAT_RTTS {
                    return Err(malformed(
                        name,
                        format!("more than {MAX_HEARTBEAT_RTTS} client prefixes"),
                    ));
                }
                for r in &hb.client_rtts {
                    long("prefix", r.prefix.len(), MAX_NAME)?;
                }
            }
            Frame::Refuse(r) => {
                long("code", r.code.len(), MAX_NAME)?;
                long("reason", r.reason.len(), MAX_TEXT)?;
            }
            Frame::Notice(n) => {
                long("reason", n.reason.len(), MAX_TEXT)?;
                hubs(&n.hubs)?;
            }
            Frame::Request(r) => {
                long("method", r.method.len(), 16)?;
                long("uri", r.uri.len(), MAX_URI)?;
                long(
                    "client_addr",
                    r.client_addr.as_deref().map_or(0, str::len),
                    MAX_NAME,
                )?;
                check_headers(name, &r.headers)?;
            }
            Frame::Response(r) => {
                if !(100..=999).contains(&r.status) {
                    return Err(malformed(
                        name,
                        format!("status {} is not a status code", r.status),
                    ));
                }
                check_headers(name, &r.headers)?;
            }
            _ => {}
        }
        Ok(self)
    }
}

fn check_headers(frame: &'static str, headers: &[(String, String)]) -> Result<(), ProtoError> {
    if headers.len() > MAX_HEADERS {
        return Err(malformed(
            frame,
            format!("{} header fields, more than {MAX_HEADERS}", headers.len()),
        ));
    }
    for (k, v) in headers {
        if k.len() > MAX_HEADER_NAME || v.len() > MAX_HEADER_VALUE {
            return Err(malformed(frame, "a header field is too long"));
        }
    }
    Ok(())
}

mod erased {
    use bytes::Bytes;

    pub trait Json {
        fn to_json(&self) -> Bytes;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Bytes {
            Bytes::from(serde_json::to_vec(self).expect("frame payloads serialise"))
        }
    }
}

/// Reads frames out of a byte buffer, as bytes arrive.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    max_frame: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder {
    /// A decoder refusing payloads over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    /// The largest payload accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// How many more bytes `buf` needs before a frame can be decoded (0 when
    /// one is complete), or the error its header already shows.
    pub fn needed(&self, buf: &[u8]) -> Result<usize, ProtoError> {
        if buf.len() < HEADER_LEN {
            return Ok(HEADER_LEN - buf.len());
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > self.max_frame {
            return Err(ProtoError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok((HEADER_LEN + len).saturating_sub(buf.len()))
    }

    /// Takes one complete frame off the front of `buf`; `Ok(None)` if more
    /// bytes are needed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        if self.needed(buf)? > 0 {
            return Ok(None);
        }
        let kind_byte = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(len).freeze();
        fn json<T: serde::de::DeserializeOwned>(
            name: &'static str,
            p: &[u8],
        ) -> Result<T, ProtoError> {
            serde_json::from_slice(p).map_err(|e| malformed(name, e.to_string()))
        }
        let frame = match kind_byte {
            kind::HELLO => Frame::Hello(json("hello", &payload)?),
            kind::WELCOME => Frame::Welcome(json("welcome", &payload)?),
            kind::REFUSE => Frame::Refuse(json("refuse", &payload)?),
            kind::HEARTBEAT => Frame::Heartbeat(json("heartbeat", &payload)?),
            kind::HEARTBEAT_ACK => {
                let seq: [u8; 8] = payload[..]
                    .try_into()
                    .map_err(|_| malformed("heartbeat_ack", "payload is not 8 bytes"))?;
                Frame::HeartbeatAck(u64::from_be_bytes(seq))
            }
            kind::REQUEST => Frame::Request(json("request", &payload)?),
            kind::RESPONSE => Frame::Response(json("response", &payload)?),
            kind::DATA => Frame::Data(payload),
            kind::END if payload.is_empty() => Frame::End,
            kind::END => return Err(malformed("end", "payload must be empty")),
            kind::NOTICE => Frame::Notice(json("notice", &payload)?),
            other => return Err(ProtoError::UnknownType(other)),
        };
        frame.check().map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                version: 1,
                spoke: "fra1".into(),
                software: "0.1.0".into(),
                steering: None,
            }),
            Frame::Hello(Hello {
                version: 1,
                spoke: "fra1".into(),
                software: "0.1.0".into(),
                steering: Some(SteeringAnnounce {
                    public_addrs: vec![
                        "192.0.2.1".parse().unwrap(),
                        "2001:db8::1".parse().unwrap(),
                    ],
                    public_url: "https://fra1.example.com".into(),
                    capacity_transfers: 100,
                }),
            }),
            Frame::Welcome(Welcome {
                version: 1,
                heartbeat_interval_ms: 5000,
                client_prefixes: (24, 48),
                hub_id: String::new(),
                hubs: vec![],
            }),
            Frame::Welcome(Welcome {
                version: 1,
                heartbeat_interval_ms: 1000,
                client_prefixes: (24, 56),
                hub_id: "hub_1".into(),
                hubs: vec![HubAddrs {
                    id: "hub_1".into(),
                    tunnel_addr: "192.0.2.1:7443".parse().unwrap(),
                    tunnel_tcp_addr: "192.0.2.1:7443".parse().unwrap(),
                }],
            }),
            Frame::Refuse(Refusal {
                code: "unsupported_version".into(),
                reason: "v9".into(),
            }),
            Frame::Heartbeat(Heartbeat {
                seq: 7,
                active_transfers: 2,
                bytes_per_sec: 1 << 30,
                client_rtts: vec![],
            }),
            Frame::Heartbeat(Heartbeat {
                seq: 8,
                active_transfers: 0,
                bytes_per_sec: 0,
                client_rtts: vec![PrefixRtt {
                    prefix: "192.0.2.0/24".into(),
                    rtt_us: 12_500,
                    samples: 3,
                }],
            }),
            Frame::HeartbeatAck(7),
            Frame::Request(RequestHead {
                method: "GET".into(),
                uri: "/v1/connections?x=1".into(),
                headers: vec![("authorization".into(), "Bearer fry_x".into())],
                client_addr: Some("127.0.0.1:5000".into()),
            }),
            Frame::Response(ResponseHead {
                status: 200,
                headers: vec![],
            }),
            Frame::Data(Bytes::from_static(b"\x00\x01binary")),
            Frame::End,
            Frame::Notice(Notice::new(NoticeKind::Drain, "maintenance")),
            Frame::Notice(Notice {
                kind: NoticeKind::Hubs,
                reason: "a hub joined".into(),
                hubs: vec![HubAddrs {
                    id: "hub_2".into(),
                    tunnel_addr: "[2001:db8::1]:7443".parse().unwrap(),
                    tunnel_tcp_addr: "[2001:db8::1]:7444".parse().unwrap(),
                }],
            }),
        ]
    }

    #[test]
    fn every_frame_round_trips_even_byte_by_byte() {
        let mut all = BytesMut::new();
        for f in samples() {
            f.encode(&mut all);
        }
        let dec = Decoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in all.iter() {
            buf.put_u8(*b);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, samples());
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header_alone() {
        let dec = Decoder::new(1024);
        let mut buf = BytesMut::from(&[kind::DATA, 0, 0, 0x04, 0x01][..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(ProtoError::TooLarge {
                len: 1025,
                max: 1024
            })
        );
        let mut buf = BytesMut::from(&[kind::DATA, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(ProtoError::TooLarge { .. })
        ));
    }

    #[test]
    fn unknown_types_and_bad_payloads_are_errors() {
        let dec = Decoder::default();
        let mut buf = BytesMut::from(&[0x7f, 0, 0, 0, 0][..]);
        assert_eq!(dec.decode(&mut buf), Err(ProtoError::UnknownType(0x7f)));
        let mut buf = BytesMut::from(&[kind::HELLO, 0, 0, 0, 2, b'{', b'x'][..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(ProtoError::Malformed { frame: "hello", .. })
        ));
        let mut buf = BytesMut::from(&[kind::END, 0, 0, 0, 1, 0][..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(ProtoError::Malformed { frame: "end", .. })
        ));
        let mut buf = BytesMut::from(&[kind::HEARTBEAT_ACK, 0, 0, 0, 1, 0][..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(ProtoError::Malformed { .. })
        ));
    }

    #[test]
    fn field_bounds_are_enforced() {
        let long_name = Frame::Hello(Hello {
            version: 1,
            spoke: "x".repeat(65),
            software: String::new(),
            steering: None,
        });
        let many_addrs = Frame::Hello(Hello {
            version: 1,
            spoke: "x".into(),
            software: String::new(),
            steering: Some(SteeringAnnounce {
                public_addrs: vec!["192.0.2.1".parse().unwrap(); MAX_PUBLIC_ADDRS + 1],
                public_url: String::new(),
                capacity_transfers: 0,
            }),
        });
        let many_rtts = Frame::Heartbeat(Heartbeat {
            seq: 1,
            active_transfers: 0,
            bytes_per_sec: 0,
            client_rtts: vec![
                PrefixRtt {
                    prefix: "192.0.2.0/24".into(),
                    rtt_us: 1,
                    samples: 1
                };
                MAX_HEARTBEAT_RTTS + 1
            ],
        });
        let hub = HubAddrs {
            id: "hub_1".into(),
            tunnel_addr: "192.0.2.1:7443".parse().unwrap(),
            tunnel_tcp_addr: "192.0.2.1:7443".parse().unwrap(),
        };
        let many_hubs = Frame::Notice(Notice {
            hubs: vec![hub; MAX_HUBS + 1],
            ..Notice::new(NoticeKind::Hubs, "")
        });
        for bad in [long_name, many_addrs, many_rtts, many_hubs] {
            let mut buf = BytesMut::from(&bad.to_bytes()[..]);
            assert!(matches!(
                Decoder::default().decode(&mut buf),
                Err(ProtoError::Malformed { .. })
            ));
        }
        let many = Frame::Request(RequestHead {
            method: "GET".into(),
            uri: "/".into(),
            headers: vec![("a".into(), "b".into()); 129],
            client_addr: None,
        });
        let mut buf = BytesMut::from(&many.to_bytes()[..]);
        assert!(matches!(
            Decoder::default().decode(&mut buf),
            Err(ProtoError::Malformed { .. })
        ));
        let status = Frame::Response(ResponseHead {
            status: 42,
            headers: vec![],
        });
        let mut buf = BytesMut::from(&status.to_bytes()[..]);
        assert!(matches!(
            Decoder::default().decode(&mut buf),
            Err(ProtoError::Malformed { .. })
        ));
    }

    /// A bounded, deterministic fuzz pass in the ordinary test run (the
    /// `fuzz/` target explores further with libFuzzer): random bytes and
    /// mutated valid frames never panic, and every error is a clean value.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid: Vec<Bytes> = samples().iter().map(Frame::to_bytes).collect();
        let dec = Decoder::new(4096);
        for i in 0..20_000 {
            let mut bytes = if i % 2 == 0 {
                valid[(next() as usize) % valid.len()].to_vec()
            } else {
                (0..(next() % 64)).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 4) {
                if !bytes.is_empty() {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
            }
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..8 {
                match dec.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
