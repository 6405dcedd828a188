//! What the control stream carries: the spoke's hello and the hub's
//! welcome, heartbeats and their acknowledgements, notices both ways, and
//! refusals. Fields added after version 1 first shipped are optional, so
//! an older peer's messages still parse (see the module's compatibility
//! rule in [`super`]).

use serde::{Deserialize, Serialize};

/// The spoke's first frame on a new tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The hub's answer to an acceptable [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct HubAddrs {
    /// The hub's identity, as in its `welcome`.
    pub id: String,
    /// QUIC, over UDP.
    pub tunnel_addr: std::net::SocketAddr,
    /// TLS over TCP.
    pub tunnel_tcp_addr: std::net::SocketAddr,
}

fn default_client_prefixes() -> (u8, u8) {
    (24, 48)
}

/// The spoke's periodic report of its load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct PrefixRtt {
    /// The client network, `ADDR/LEN`.
    pub prefix: String,
    /// The mean RTT of the connections sampled, in microseconds.
    pub rtt_us: u32,
    /// Connections sampled.
    pub samples: u32,
}

/// What a notice asks of its receiver. A kind this peer does not know
/// (sent by a newer one) reads as [`NoticeKind::Unknown`] and is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// Stop taking new requests and finish what is in flight (hub → spoke),
    /// or: this spoke is draining (spoke → hub).
    Drain,
    /// The spoke's enrolment was revoked; the tunnel closes.
    Revoked,
    /// An API key was revoked or a connection deleted: cached grants must
    /// be dropped now, not when they expire.
    InvalidateGrants,
    /// The hubs sharing the store changed: `hubs` lists them now, and the
    /// spoke opens a tunnel to each one it lacks.
    Hubs,
    /// A provider asked to slow down: start the transfers of
    /// `connection` at a slower pace for `for_ms`
    /// ([`crate::content::pace`]).
    SlowDown,
    /// A kind from a newer peer.
    #[serde(other)]
    Unknown,
}

/// A message either side pushes on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// What is asked.
    pub kind: NoticeKind,
    /// Why, for the receiver's log.
    pub reason: String,
    /// With [`NoticeKind::Hubs`]: every hub, this one included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hubs: Vec<HubAddrs>,
    /// With [`NoticeKind::InvalidateGrants`]: the invalidation epoch the
    /// change raised; a grant made in an earlier one is kept no more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// With [`NoticeKind::SlowDown`]: the connection's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// With [`NoticeKind::SlowDown`]: for how long, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_ms: Option<u64>,
}

impl Notice {
    /// A notice of `kind` for `reason`.
    pub fn new(kind: NoticeKind, reason: impl Into<String>) -> Self {
        Notice {
            kind,
            reason: reason.into(),
            hubs: Vec::new(),
            epoch: None,
            connection: None,
            for_ms: None,
        }
    }
}

/// Why a hub refuses a tunnel (or a peer an exchange). A code this peer
/// does not know reads as [`RefusalCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The hello's version is not one the hub speaks.
    UnsupportedVersion,
    /// The hello names another spoke than the certificate does.
    WrongName,
    /// The first frame was not a hello, or did not parse.
    Protocol,
    /// No hello arrived in time.
    Timeout,
    /// A code from a newer peer.
    #[serde(other)]
    Other,
}

impl RefusalCode {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnsupportedVersion => "unsupported_version",
            Self::WrongName => "wrong_name",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }

    /// Whether trying again, unchanged, can succeed: a timeout can; a
    /// version or name the hub refuses cannot until something changes.
    pub fn retryable(self) -> bool {
        matches!(self, Self::Timeout | Self::Protocol | Self::Other)
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal that ends the stream (or, on the first stream, the tunnel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// A stable code.
    pub code: RefusalCode,
    /// Why, for logs.
    pub reason: String,
}

impl Refusal {
    /// A refusal with `code` for `reason` (cut to what a frame carries).
    pub fn new(code: RefusalCode, reason: impl Into<String>) -> Self {
        let mut reason: String = reason.into();
        if reason.len() > super::frame::MAX_TEXT {
            let mut end = super::frame::MAX_TEXT;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self { code, reason }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}
