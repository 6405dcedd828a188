//! What the protocol promises between releases, held to messages as
//! earlier releases sent them (`tests/peers/<release>/`): within one
//! protocol version every peer parses every other peer's messages, older
//! ones (fields added later are optional) and newer ones (fields it does
//! not know are ignored). Frames go through the real decoder; the spoke's
//! own calls and enrolment through the types both sides use. Release 0.1
//! speaks protocol version 1; 0.2 speaks version 2, whose grants are bound to a
//! path and operation: the frame codec, the control messages, lookups,
//! reports and enrolment of 0.1 still parse, its grants do not (a hub of
//! version 2 refuses a spoke of version 1 at its hello).

use bytes::{BufMut, BytesMut};
use ferry_common::contract::{
    Commit, EnrolAnswer, EnrolRequest, Grant, GrantOp, GrantRequest, LookupAnswer, LookupRequest,
    TokenKind, Transfer,
};
use ferry_common::proto::frame::kind;
use ferry_common::proto::{Decoder, Frame, NoticeKind, RefusalCode};
use serde::de::DeserializeOwned;

/// A message of release 0.1.
fn peer(name: &str) -> String {
    peer_of("0.1", name)
}

/// A message of `release`.
fn peer_of(release: &str, name: &str) -> String {
    let path = format!(
        "{}/tests/peers/{release}/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `json` with a member this release does not know, as a newer peer
/// might send it.
fn with_unknown_member(json: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).expect("fixtures are JSON");
    v.as_object_mut().expect("messages are objects").insert(
        "added_in_a_later_release".into(),
        serde_json::json!({"x": [1, 2]}),
    );
    v.to_string()
}

/// The frame of type `kind_byte` whose payload is `json`, decoded.
fn decode(kind_byte: u8, json: &str) -> Frame {
    let mut buf = BytesMut::new();
    buf.put_u8(kind_byte);
    buf.put_u32(u32::try_from(json.len()).unwrap());
    buf.put_slice(json.as_bytes());
    Decoder::default()
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("{json}: {e}"))
        .expect("a whole frame")
}

/// Parses `json` as it is and with an unknown member.
fn parse<T: DeserializeOwned>(json: &str) -> T {
    let newer: T = serde_json::from_str(&with_unknown_member(json))
        .unwrap_or_else(|e| panic!("a newer peer's {json}: {e}"));
    drop(newer);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

#[test]
fn control_frames_of_release_0_1_and_newer_ones_decode() {
    for (kind_byte, name) in [
        (kind::HELLO, "hello"),
        (kind::HELLO, "hello-without-steering"),
        (kind::WELCOME, "welcome"),
        (kind::WELCOME, "welcome-single-hub"),
        (kind::HEARTBEAT, "heartbeat"),
        (kind::NOTICE, "notice-hubs"),
        (kind::NOTICE, "notice-invalidate"),
        (kind::REFUSE, "refuse"),
        (kind::REQUEST, "request"),
        (kind::RESPONSE, "response"),
    ] {
        let json = peer(name);
        decode(kind_byte, &json);
        decode(kind_byte, &with_unknown_member(&json));
    }
    let Frame::Welcome(w) = decode(kind::WELCOME, &peer("welcome-single-hub")) else {
        panic!("a welcome");
    };
    assert_eq!(
        (w.client_prefixes, w.hub_id.as_str(), w.hubs.len()),
        ((24, 48), "", 0),
        "what a hub before several hubs meant"
    );
    let Frame::Hello(h) = decode(kind::HELLO, &peer("hello-without-steering")) else {
        panic!("a hello");
    };
    assert_eq!(h.steering, None);
    let Frame::Refuse(r) = decode(kind::REFUSE, &peer("refuse")) else {
        panic!("a refusal");
    };
    assert_eq!(r.code, RefusalCode::WrongName);
}

#[test]
fn codes_and_kinds_from_a_newer_peer_read_as_unknown() {
    let Frame::Notice(n) = decode(kind::NOTICE, r#"{"kind":"reticulate","reason":"x"}"#) else {
        panic!("a notice");
    };
    assert_eq!(n.kind, NoticeKind::Unknown);
    let Frame::Refuse(r) = decode(kind::REFUSE, r#"{"code":"too_early","reason":"x"}"#) else {
        panic!("a refusal");
    };
    assert_eq!(r.code, RefusalCode::Other);
}

#[test]
fn the_grants_of_version_2_parse_and_those_of_version_1_do_not() {
    let Frame::Hello(h) = decode(kind::HELLO, &peer_of("0.2", "hello")) else {
        panic!("a hello");
    };
    assert_eq!(h.version, ferry_common::proto::PROTOCOL_VERSION);
    let g: GrantRequest = parse(&peer_of("0.2", "grant-request"));
    assert_eq!(
        (g.path.as_str(), g.op),
        ("photos/2026/a.jpg", GrantOp::Write)
    );
    let grant: Grant = parse(&peer_of("0.2", "grant"));
    assert!(grant.direct && grant.token.starts_with("fg1.") && grant.meta.is_none());
    // Version 1 grants named no path: they cannot be read as version 2's.
    assert!(serde_json::from_str::<GrantRequest>(&peer("grant-request")).is_err());
    assert!(serde_json::from_str::<Grant>(&peer("grant")).is_err());
}

#[test]
fn the_spokes_calls_of_release_0_1_parse() {
    let l: LookupRequest = parse(&peer("lookup-request"));
    assert_eq!(l.path, "photos/2026/a.jpg");
    let found: LookupAnswer = parse(&peer("lookup-answer"));
    assert_eq!(found.meta.map(|m| m.size), Some(1_048_576));
    let none: LookupAnswer = parse(&peer("lookup-answer-none"));
    assert_eq!(none.meta, None);
    let c: Commit = parse(&peer("commit"));
    assert_eq!(c.upsert.map(|m| m.size), Some(5));
    let t: Transfer = parse(&peer("transfer"));
    assert_eq!(t.via, "fra1");
}

#[test]
fn enrolments_parse_and_those_of_version_1_lack_their_proof() {
    let join: EnrolRequest = parse(&peer_of("0.2", "enrol-request"));
    assert_eq!(
        (TokenKind::of(&join.token), join.name),
        (Some(TokenKind::Join), None)
    );
    let fleet: EnrolRequest = parse(&peer_of("0.2", "enrol-request-fleet"));
    assert_eq!(fleet.name.as_deref(), Some("edge-use1-a"));
    // Release 0.1 sent no proof that it holds its key: not enrolled.
    assert!(serde_json::from_str::<EnrolRequest>(&peer("enrol-request")).is_err());
    let answer: EnrolAnswer = parse(&peer("enrol-answer"));
    assert_eq!(answer.hubs.len(), 1);
    let single: EnrolAnswer = parse(&peer("enrol-answer-single-hub"));
    assert!(single.hubs.is_empty());
}

#[test]
fn this_release_sends_what_earlier_peers_of_its_version_parse() {
    // Every message this release makes, parsed back as the earliest
    // release of its version parsed it: the fixtures' own fields are all
    // still sent, under the same names.
    for (release, name) in [
        ("0.2", "grant"),
        ("0.1", "lookup-answer"),
        ("0.1", "commit"),
        ("0.1", "transfer"),
        ("0.1", "enrol-answer"),
    ] {
        let json = peer_of(release, name);
        let fields = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        let original: serde_json::Value = serde_json::from_str(&json).unwrap();
        let again = match name {
            "grant" => serde_json::to_value(parse::<Grant>(&json)),
            "lookup-answer" => serde_json::to_value(parse::<LookupAnswer>(&json)),
            "commit" => serde_json::to_value(parse::<Commit>(&json)),
            "transfer" => serde_json::to_value(parse::<Transfer>(&json)),
            _ => serde_json::to_value(parse::<EnrolAnswer>(&json)),
        }
        .unwrap();
        // Fields added since may come along; the fixture's are all there,
        // with the same values.
        for field in fields(&original) {
            assert_eq!(original[&field], again[&field], "{name}: {field}");
        }
    }
}
