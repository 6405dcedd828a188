//! The codec's tests: every frame round-trips, bounds hold, and arbitrary
//! bytes never panic.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::kind;
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
                public_addrs: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
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
        Frame::Refuse(Refusal::new(RefusalCode::UnsupportedVersion, "v9")),
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
            epoch: None,
            connection: None,
            for_ms: None,
        }),
        Frame::Notice(Notice {
            epoch: Some(42),
            ..Notice::new(NoticeKind::InvalidateGrants, "a key was revoked")
        }),
        Frame::Notice(Notice {
            connection: Some("con_1".into()),
            for_ms: Some(30_000),
            ..Notice::new(NoticeKind::SlowDown, "the provider asked to slow down")
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
