//! The hello/welcome exchange that opens a tunnel, as plain functions:
//! the hub decides on the spoke's first frame ([`accept_first_frame`]),
//! the spoke on the hub's answer ([`read_welcome`]). The drivers
//! (`hub/src/tunnel/`, `spoke/src/tunnel/`) only move frames and time.

use std::time::Duration;

use super::{Frame, Hello, HubAddrs, PROTOCOL_VERSION, Refusal, RefusalCode, Welcome};
use crate::proto::SteeringAnnounce;

/// Who the peer is, from its client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The spoke the certificate was issued to.
    pub spoke: String,
}

/// What a hub tells every spoke it welcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WelcomeTerms {
    /// How often the spoke sends heartbeats.
    pub heartbeat_interval: Duration,
    /// Prefix lengths the hub groups clients by (IPv4, IPv6).
    pub client_prefixes: (u8, u8),
    /// The hub's id among the hubs of its store (empty: it has none).
    pub hub_id: String,
    /// Every hub of the store.
    pub hubs: Vec<HubAddrs>,
}

/// What the hub saw first on a new tunnel's control stream.
#[derive(Debug)]
pub enum FirstFrame {
    /// A frame.
    Frame(Frame),
    /// The stream ended before any frame.
    Ended,
    /// The stream failed, or sent bytes that are no frame.
    Broken(String),
    /// Nothing came in time.
    TimedOut,
}

/// A hello the hub accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The answer to send.
    pub welcome: Welcome,
    /// What the spoke announced for steering.
    pub announce: Option<SteeringAnnounce>,
    /// The spoke's software version, for the logs.
    pub software: String,
}

/// The hub's decision on the first frame of a tunnel from `peer`: a
/// welcome on `terms`, or the refusal to send before closing.
pub fn accept_first_frame(
    first: FirstFrame,
    peer: &PeerIdentity,
    terms: &WelcomeTerms,
) -> Result<Accepted, Refusal> {
    let hello = match first {
        FirstFrame::Frame(Frame::Hello(h)) => h,
        FirstFrame::Frame(other) => {
            let seen: String = format!("{other:?}").chars().take(200).collect();
            return Err(Refusal::new(
                RefusalCode::Protocol,
                format!("expected hello, got {seen}"),
            ));
        }
        FirstFrame::Ended => {
            return Err(Refusal::new(
                RefusalCode::Protocol,
                "the control stream ended before a hello",
            ));
        }
        FirstFrame::Broken(why) => return Err(Refusal::new(RefusalCode::Protocol, why)),
        FirstFrame::TimedOut => {
            return Err(Refusal::new(RefusalCode::Timeout, "no hello in time"));
        }
    };
    accept_hello(hello, peer, terms)
}

/// The hub's decision on a hello from `peer`.
pub fn accept_hello(
    hello: Hello,
    peer: &PeerIdentity,
    terms: &WelcomeTerms,
) -> Result<Accepted, Refusal> {
    if hello.version != PROTOCOL_VERSION {
        return Err(Refusal::new(
            RefusalCode::UnsupportedVersion,
            format!(
                "this hub speaks tunnel version {PROTOCOL_VERSION}, not {}",
                hello.version
            ),
        ));
    }
    if hello.spoke != peer.spoke {
        return Err(Refusal::new(
            RefusalCode::WrongName,
            format!(
                "the certificate is for '{}', not '{}'",
                peer.spoke, hello.spoke
            ),
        ));
    }
    Ok(Accepted {
        welcome: Welcome {
            version: PROTOCOL_VERSION,
            heartbeat_interval_ms: u64::try_from(terms.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
            client_prefixes: terms.client_prefixes,
            hub_id: terms.hub_id.clone(),
            hubs: terms.hubs.clone(),
        },
        announce: hello.steering,
        software: hello.software,
    })
}

/// The hello a spoke sends.
pub fn hello(spoke: &str, announce: Option<SteeringAnnounce>) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        spoke: spoke.to_owned(),
        software: env!("CARGO_PKG_VERSION").to_owned(),
        steering: announce,
    }
}

/// The shortest and longest heartbeat interval a spoke follows, whatever
/// a hub asks.
pub const HEARTBEAT_BOUNDS: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(60));

/// What a spoke takes from a hub's welcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcomed {
    /// How often to send heartbeats, within [`HEARTBEAT_BOUNDS`].
    pub heartbeat_interval: Duration,
    /// Prefix lengths to group client RTTs by.
    pub client_prefixes: (u8, u8),
    /// The hub's id, when it has one.
    pub hub_id: Option<String>,
    /// Every hub of its store (empty: it did not say).
    pub hubs: Vec<HubAddrs>,
}

/// Why a spoke's hello was not welcomed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotWelcomed {
    /// The hub refused: retrying helps only if the refusal's code says so.
    #[error("the hub refused the tunnel: {0}")]
    Refused(Refusal),
    /// The hub answered something else: a protocol error; try again later.
    #[error("the hub answered with an unexpected frame: {0}")]
    Unexpected(String),
    /// The stream ended without an answer: the tunnel was lost.
    #[error("the control stream ended without a welcome")]
    Ended,
}

/// The spoke's reading of the hub's answer to its hello.
pub fn read_welcome(answer: Option<Frame>) -> Result<Welcomed, NotWelcomed> {
    match answer {
        Some(Frame::Welcome(w)) => {
            let (low, high) = HEARTBEAT_BOUNDS;
            Ok(Welcomed {
                heartbeat_interval: Duration::from_millis(w.heartbeat_interval_ms).clamp(low, high),
                client_prefixes: w.client_prefixes,
                hub_id: Some(w.hub_id).filter(|id| !id.is_empty()),
                hubs: w.hubs,
            })
        }
        Some(Frame::Refuse(r)) => Err(NotWelcomed::Refused(r)),
        Some(other) => Err(NotWelcomed::Unexpected(
            format!("{other:?}").chars().take(200).collect(),
        )),
        None => Err(NotWelcomed::Ended),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms() -> WelcomeTerms {
        WelcomeTerms {
            heartbeat_interval: Duration::from_secs(1),
            client_prefixes: (24, 48),
            hub_id: "hub_1".into(),
            hubs: vec![],
        }
    }

    fn peer() -> PeerIdentity {
        PeerIdentity {
            spoke: "fra1".into(),
        }
    }

    #[test]
    fn a_hello_from_the_certificates_spoke_is_welcomed_and_read_back() {
        let accepted = accept_first_frame(
            FirstFrame::Frame(Frame::Hello(hello("fra1", None))),
            &peer(),
            &terms(),
        )
        .unwrap();
        assert_eq!(accepted.welcome.heartbeat_interval_ms, 1000);
        assert_eq!(accepted.welcome.hub_id, "hub_1");
        let welcomed = read_welcome(Some(Frame::Welcome(accepted.welcome))).unwrap();
        assert_eq!(welcomed.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(welcomed.hub_id.as_deref(), Some("hub_1"));
    }

    #[test]
    fn every_bad_start_gets_its_refusal_code() {
        let refused = |first| {
            accept_first_frame(first, &peer(), &terms())
                .unwrap_err()
                .code
        };
        let mut old = hello("fra1", None);
        old.version = 9;
        assert_eq!(
            refused(FirstFrame::Frame(Frame::Hello(old))),
            RefusalCode::UnsupportedVersion
        );
        assert_eq!(
            refused(FirstFrame::Frame(Frame::Hello(hello("ams1", None)))),
            RefusalCode::WrongName
        );
        assert_eq!(
            refused(FirstFrame::Frame(Frame::End)),
            RefusalCode::Protocol
        );
        assert_eq!(refused(FirstFrame::Ended), RefusalCode::Protocol);
        assert_eq!(
            refused(FirstFrame::Broken("bad frame".into())),
            RefusalCode::Protocol
        );
        assert_eq!(refused(FirstFrame::TimedOut), RefusalCode::Timeout);
    }

    #[test]
    fn a_spoke_bounds_the_interval_and_reads_refusals() {
        let welcome = |ms| Welcome {
            version: 1,
            heartbeat_interval_ms: ms,
            client_prefixes: (24, 48),
            hub_id: String::new(),
            hubs: vec![],
        };
        let w = read_welcome(Some(Frame::Welcome(welcome(1)))).unwrap();
        assert_eq!(w.heartbeat_interval, HEARTBEAT_BOUNDS.0);
        assert_eq!(w.hub_id, None);
        let w = read_welcome(Some(Frame::Welcome(welcome(u64::MAX)))).unwrap();
        assert_eq!(w.heartbeat_interval, HEARTBEAT_BOUNDS.1);
        let refusal = Refusal::new(RefusalCode::WrongName, "no");
        assert_eq!(
            read_welcome(Some(Frame::Refuse(refusal.clone()))),
            Err(NotWelcomed::Refused(refusal))
        );
        assert!(matches!(
            read_welcome(Some(Frame::End)),
            Err(NotWelcomed::Unexpected(_))
        ));
        assert_eq!(read_welcome(None), Err(NotWelcomed::Ended));
    }
}
