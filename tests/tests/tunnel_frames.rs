//! A misbehaving spoke, played by the test with a real enrolled identity:
//! bad frames on a request stream reset that stream only; a bad frame on the
//! control stream ends the tunnel; both are logged with their reason.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use ferry_common::proto::{Frame, Hello, PROTOCOL_VERSION, RequestHead};
use ferry_common::tunnel_io::{FrameReader, write_frame};
use ferry_tests::hub::ADMIN_TOKEN;
use ferry_tests::{Api, Hub};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;

/// Enrols `name` through the API and connects with its new identity.
async fn connect_as(hub: &Hub, name: &str) -> quinn::Connection {
    ferry_tests::install_crypto_provider();
    let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
    let token = admin
        .post("/v1/spokes")
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect(201)
        .json();
    let key = rcgen::KeyPair::generate().unwrap();
    let enrolled = Api::new(hub.url())
        .post("/v1/spokes/enrol")
        .json(&json!({
            "token": token["join_token"],
            "public_key": base64::engine::general_purpose::STANDARD.encode(key.public_key_raw()),
        }))
        .send()
        .await
        .expect(201)
        .json();
    let cert = CertificateDer::from_pem_slice(enrolled["certificate"].as_str().unwrap().as_bytes())
        .unwrap();
    let ca = CertificateDer::from_pem_slice(enrolled["ca"].as_str().unwrap().as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![cert],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    tls.alpn_protocols = vec![ferry_common::proto::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let server_name = enrolled["server_name"].as_str().unwrap().to_owned();
    endpoint
        .connect(hub.tunnel_addr, &server_name)
        .unwrap()
        .await
        .unwrap()
}

async fn hello(
    conn: &quinn::Connection,
    name: &str,
) -> (quinn::SendStream, FrameReader<quinn::RecvStream>) {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        spoke: name.into(),
        software: "test".into(),
        steering: None,
    };
    write_frame(&mut send, &Frame::Hello(hello)).await.unwrap();
    let mut reader = FrameReader::new(recv, 1 << 20);
    assert!(matches!(
        reader.next().await.unwrap(),
        Some(Frame::Welcome(_))
    ));
    (send, reader)
}

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
    let (_control, _reader) = hello(&conn, "evil").await;

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
    let log = hub.log();
    assert!(log.contains("unknown frame type 0x7f"), "{log}");
    assert!(log.contains("exceeds the limit"), "{log}");
}

#[tokio::test]
async fn a_bad_frame_on_the_control_stream_ends_the_tunnel() {
    let hub = Hub::start();
    let conn = connect_as(&hub, "evil").await;
    let (mut control, _reader) = hello(&conn, "evil").await;
    control.write_all(&[0x7f, 0, 0, 0, 0]).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    assert!(closed.is_ok(), "the tunnel stayed open");
    assert!(
        hub.daemon()
            .wait_for("spoke disconnected", Duration::from_secs(5))
            .is_some()
    );
    assert!(hub.log().contains("control stream failed"), "{}", hub.log());
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
