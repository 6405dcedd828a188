//! Frames and their codec: the type byte, the length, and a payload that
//! is raw bytes (`Data`) or a JSON object with bounded fields. Every length
//! is checked before anything is buffered (see [`super`] for the layout).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{
    DEFAULT_MAX_FRAME, HEADER_LEN, Heartbeat, Hello, HubAddrs, MAX_HEARTBEAT_RTTS, MAX_HUBS,
    MAX_PUBLIC_ADDRS, Notice, Refusal, RequestHead, ResponseHead, Welcome,
};

/// The longest name (spoke, hub id, prefix, software version), in bytes.
pub(crate) const MAX_NAME: usize = 64;
/// The longest free text (a reason, a URL), in bytes.
pub(crate) const MAX_TEXT: usize = 1024;
/// The longest URI (path and query) a forwarded request carries, as the
/// hub's own listener takes by default (`api.max_header_bytes`).
pub const MAX_URI: usize = 64 * 1024;
/// The most header fields a message head carries.
pub const MAX_HEADERS: usize = 128;
/// The longest header field name, in bytes.
pub const MAX_HEADER_NAME: usize = 256;
/// The longest header field value, in bytes.
pub const MAX_HEADER_VALUE: usize = 64 * 1024;

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
    /// Either way on the control stream: drain, revocation, changes.
    Notice(Notice),
}

/// The type byte of each frame, as on the wire.
pub mod kind {
    /// [`super::Frame::Hello`].
    pub const HELLO: u8 = 0x01;
    /// [`super::Frame::Welcome`].
    pub const WELCOME: u8 = 0x02;
    /// [`super::Frame::Refuse`].
    pub const REFUSE: u8 = 0x03;
    /// [`super::Frame::Heartbeat`].
    pub const HEARTBEAT: u8 = 0x04;
    /// [`super::Frame::HeartbeatAck`].
    pub const HEARTBEAT_ACK: u8 = 0x05;
    /// [`super::Frame::Request`].
    pub const REQUEST: u8 = 0x10;
    /// [`super::Frame::Response`].
    pub const RESPONSE: u8 = 0x11;
    /// [`super::Frame::Data`].
    pub const DATA: u8 = 0x12;
    /// [`super::Frame::End`].
    pub const END: u8 = 0x13;
    /// [`super::Frame::Notice`].
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
