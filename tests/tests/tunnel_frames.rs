//! A misbehaving spoke, played by the test with a real enrolled identity:
//! bad frames on a request stream reset that stream only; a bad frame on the
//! control stream ends the tunnel; both are logged with their reason.

use std::time::Duration;

use bytes::Bytes;
use ferry_common::proto::{Frame, Hello, PROTOCOL_VERSION, RequestHead};
use ferry_common::tunnel_io::{FrameReader, write_frame};
use ferry_tests::Hub;
use ferry_tests::rogue::{connect_as, hello, hello_raw};

/// Sends `bytes` on a new stream and returns what came back: `Ok(frames)`
/// or the error that ended the stream.
async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<Frame>, String> {
    let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    let mut reader = FrameReader::new(recv, 1 << 20);
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), reader.next()).await {
            Ok(Ok(Some(f))) => {
                let end = f == Frame::End;
                frames.push(f);
                if end {
                    return Ok(frames);
                }
            }
            Ok(Ok(None)) => return Ok(frames),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no answer".into()),
        }
    }
}

fn healthz_request() -> Vec<u8> {
    let head = RequestHead {
        method: "GET".into(),
        uri: "/healthz".into(),
        headers: vec![],
        client_addr: Some("127.0.0.1:1".into()),
    };
    let mut out = Frame::Request(head).to_bytes().to_vec();
    out.extend_from_slice(&Frame::End.to_bytes());
    out
}

#[tokio::test]
async fn bad_frames_on_a_request_stream_reset_only_that_stream() {
    let hub = Hub::start();
    let conn = connect_as(&hub, "evil").await;
    let _control = hello(&conn, "evil").await;

    let answer = exchange(&conn, &healthz_request())
        .await
        .expect("a good request is answered");
    assert!(
        matches!(&answer[0], Frame::Response(r) if r.status == 200),
        "{answer:?}"
    );

    let unknown = exchange(&conn, &[0x7f, 0, 0, 0, 0]).await;
    assert!(
        unknown.is_err(),
        "an unknown frame type resets the stream: {unknown:?}"
    );
    let oversized = exchange(&conn, &[0x12, 0x10, 0, 0, 0]).await;
    assert!(
        oversized.is_err(),
        "a 256 MiB frame is refused from its header: {oversized:?}"
    );
    let malformed = exchange(&conn, &[0x10, 0, 0, 0, 3, b'{', b'{', b'{']).await;
    assert!(
        malformed.is_err(),
        "bad JSON resets the stream: {malformed:?}"
    );
    let not_a_request = exchange(&conn, &Frame::Data(Bytes::from_static(b"x")).to_bytes()).await;
    assert!(
        not_a_request.is_err(),
        "a stream must start with a request: {not_a_request:?}"
    );

    // The tunnel itself is still fine.
    let answer = exchange(&conn, &healthz_request())
        .await
        .expect("the tunnel survives bad streams");
    assert!(matches!(&answer[0], Frame::Response(r) if r.status == 200));
    assert!(conn.close_reason().is_none());
    // The hub's log lines may trail its answers through the log pipe.
    for line in ["unknown frame type 0x7f", "exceeds the limit"] {
        assert!(
            hub.daemon()
                .wait_for(line, std::time::Duration::from_secs(10))
                .is_some(),
            "no '{line}' in the hub's log:\n{}",
            hub.log()
        );
    }
}

#[tokio::test]
async fn a_bad_frame_on_the_control_stream_ends_the_tunnel() {
    let hub = Hub::start();
    let conn = connect_as(&hub, "evil").await;
    let (mut control, _reader) = hello_raw(&conn, "evil", None).await;
    control.write_all(&[0x7f, 0, 0, 0, 0]).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    assert!(closed.is_ok(), "the tunnel stayed open");
    assert!(
        hub.daemon()
            .wait_for("spoke disconnected", Duration::from_secs(5))
            .is_some()
    );
    assert!(
        hub.daemon()
            .wait_for("control stream failed", std::time::Duration::from_secs(5))
            .is_some(),
        "{}",
        hub.log()
    );
}

#[tokio::test]
async fn a_wrong_name_or_version_in_hello_is_refused() {
    let hub = Hub::start();
    let conn = connect_as(&hub, "evil").await;
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let hello = Hello {
        version: 99,
        spoke: "evil".into(),
        software: "test".into(),
        steering: None,
    };
    write_frame(&mut send, &Frame::Hello(hello)).await.unwrap();
    let mut reader = FrameReader::new(recv, 1 << 20);
    match reader.next().await {
        Ok(Some(Frame::Refuse(r))) => assert_eq!(r.code.as_str(), "unsupported_version"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let conn = connect_as(&hub, "other").await;
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        spoke: "evil".into(),
        software: "test".into(),
        steering: None,
    };
    write_frame(&mut send, &Frame::Hello(hello)).await.unwrap();
    let mut reader = FrameReader::new(recv, 1 << 20);
    match reader.next().await {
        Ok(Some(Frame::Refuse(r))) => assert_eq!(r.code.as_str(), "wrong_name"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
