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
//!
//! - [`frame`]: the frame types and their codec;
//! - [`control`]: what the control stream carries (hello, welcome,
//!   heartbeats, notices, refusals);
//! - [`head`]: the heads of forwarded HTTP messages and their conversion
//!   to and from `http` types;
//! - [`handshake`] and [`liveness`]: the hello/welcome exchange and the
//!   heartbeat bookkeeping, as plain state machines that take the time.
//!
//! # Compatibility
//!
//! The ALPN's number is the frame format's; [`PROTOCOL_VERSION`], in the
//! hello, the messages' meaning. Within one protocol version a peer parses
//! every message of every other peer of that version, older or newer:
//! fields added later are optional (an older peer's message lacks them and
//! means their default), and fields a peer does not know are ignored. A
//! field whose meaning a peer must not ignore comes with a new version, and
//! the hub refuses a hello of another version. The tests in
//! `common/tests/peer_compat.rs` hold messages as earlier releases sent
//! them.

pub mod control;
pub mod frame;
pub mod handshake;
pub mod head;
pub mod liveness;
#[cfg(test)]
mod tests;

pub use control::{
    Heartbeat, Hello, HubAddrs, Notice, NoticeKind, PrefixRtt, Refusal, RefusalCode,
    SteeringAnnounce, Welcome,
};
pub use frame::{Decoder, Frame, ProtoError};
pub use head::{RequestHead, ResponseHead, hop_by_hop};

/// The ALPN of version 1 of the tunnel protocol.
pub const ALPN: &[u8] = b"ferry-tunnel/1";
/// The protocol version spokes announce in [`Hello`]. Version 2 binds
/// every grant to one spoke, path and operation, and the spoke's reports
/// to their grant (`crate::contract`); a hub of version 2 refuses spokes of
/// version 1, whose reports it could not hold to anything.
pub const PROTOCOL_VERSION: u16 = 2;
/// The default largest frame payload.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
/// Bytes before every payload.
pub const HEADER_LEN: usize = 5;

/// The most public addresses a spoke may announce.
pub const MAX_PUBLIC_ADDRS: usize = 16;
/// The most client prefixes one heartbeat carries.
pub const MAX_HEARTBEAT_RTTS: usize = 512;
/// The most hubs a `welcome` lists.
pub const MAX_HUBS: usize = 16;

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
