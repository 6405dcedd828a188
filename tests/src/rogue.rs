//! A spoke played by the test: enrolled through the API like any other,
//! with a real identity, but speaking the tunnel protocol by hand, so
//! tests can send what a compromised or misbehaving spoke would.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use ferry_common::proto::{
    Frame, Heartbeat, Hello, PROTOCOL_VERSION, PrefixRtt, RequestHead, SteeringAnnounce,
};
use ferry_common::tunnel_io::{FrameReader, write_frame};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::hub::{ADMIN_TOKEN, Hub};
use crate::{Api, install_crypto_provider};

/// A new P-256 key, as its PKCS#8 DER, for a spoke the test enrols.
pub fn new_key() -> Vec<u8> {
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap()
    .as_ref()
    .to_vec()
}

/// The body of `POST /v1/spokes/enrol` for spoke `name` with `token` and
/// the key `pkcs8`, signed as a spoke signs it.
pub fn enrol_body(token: &str, name: &str, pkcs8: &[u8]) -> Value {
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let mut body = serde_json::to_value(ferry_common::contract::EnrolRequest::signed(
        token, name, &key,
    ))
    .unwrap();
    // A join token names its spoke; the test says it anyway, as it may.
    if body.get("name").is_none() && token.starts_with("fjt_") {
        body["name"] = json!(name);
        let signed = ferry_common::contract::EnrolRequest::signed_message(token, Some(name));
        let proof = key.sign(&ring::rand::SystemRandom::new(), &signed).unwrap();
        body["proof"] = json!(base64::engine::general_purpose::STANDARD.encode(proof.as_ref()));
    }
    body
}

/// Enrols `name` through the API and connects with its new identity.
pub async fn connect_as(hub: &Hub, name: &str) -> quinn::Connection {
    connect_as_with(hub, name, json!({ "name": name })).await
}

/// What an enrolment gave a hand-played spoke.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pkcs8: Vec<u8>,
    answer: Value,
}

/// Enrols with `spoke` as the `POST /v1/spokes` body (the name and, say,
/// the addresses the operator allows it), with a new key.
pub async fn enrol_as(hub: &Hub, name: &str, spoke: Value) -> Enrolled {
    install_crypto_provider();
    let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
    let token = admin
        .post("/v1/spokes")
        .json(&spoke)
        .send()
        .await
        .expect(201)
        .json();
    let pkcs8 = new_key();
    let answer = Api::new(hub.url())
        .post("/v1/spokes/enrol")
        .json(&enrol_body(
            token["join_token"].as_str().unwrap(),
            name,
            &pkcs8,
        ))
        .send()
        .await
        .expect(201)
        .json();
    Enrolled { pkcs8, answer }
}

/// Opens a tunnel to the hub whose tunnel is at `tunnel_addr`, as
/// `enrolled`.
pub async fn connect(enrolled: &Enrolled, tunnel_addr: std::net::SocketAddr) -> quinn::Connection {
    let field = |k: &str| enrolled.answer[k].as_str().unwrap().to_owned();
    let cert = CertificateDer::from_pem_slice(field("certificate").as_bytes()).unwrap();
    let ca = CertificateDer::from_pem_slice(field("ca").as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![cert],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(enrolled.pkcs8.clone())),
        )
        .unwrap();
    tls.alpn_protocols = vec![ferry_common::proto::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
        .connect(tunnel_addr, &field("server_name"))
        .unwrap()
        .await
        .unwrap()
}

/// Enrols with `spoke` as the `POST /v1/spokes` body and connects.
pub async fn connect_as_with(hub: &Hub, name: &str, spoke: Value) -> quinn::Connection {
    connect(&enrol_as(hub, name, spoke).await, hub.tunnel_addr).await
}

/// Opens the control stream, says hello as `name` (announcing `steering`)
/// and expects a welcome; the raw control stream is the caller's.
pub async fn hello_raw(
    conn: &quinn::Connection,
    name: &str,
    steering: Option<SteeringAnnounce>,
) -> (quinn::SendStream, FrameReader<quinn::RecvStream>) {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        spoke: name.into(),
        software: "test".into(),
        steering,
    };
    write_frame(&mut send, &Frame::Hello(hello)).await.unwrap();
    let mut reader = FrameReader::new(recv, 1 << 20);
    let answer = reader.next().await.unwrap();
    assert!(
        matches!(answer, Some(Frame::Welcome(_))),
        "no welcome: {answer:?}"
    );
    (send, reader)
}

/// A hand-played spoke's control stream, kept alive with heartbeats every
/// 300 ms (a hub closes a silent tunnel) until dropped.
#[derive(Debug)]
pub struct Control {
    beats: mpsc::Sender<Vec<PrefixRtt>>,
    task: tokio::task::JoinHandle<()>,
}

impl Control {
    /// Sends a heartbeat reporting these client RTTs now.
    pub async fn report_rtts(&self, client_rtts: Vec<PrefixRtt>) {
        self.beats
            .send(client_rtts)
            .await
            .expect("the control stream runs");
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Says hello as `name`, announcing `steering`, and keeps the tunnel alive.
pub async fn hello_announcing(
    conn: &quinn::Connection,
    name: &str,
    steering: Option<SteeringAnnounce>,
) -> Control {
    let (mut send, mut reader) = hello_raw(conn, name, steering).await;
    let (beats, mut asked) = mpsc::channel::<Vec<PrefixRtt>>(8);
    let task = tokio::spawn(async move {
        let mut seq = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        loop {
            let client_rtts = tokio::select! {
                _ = tick.tick() => Vec::new(),
                rtts = asked.recv() => match rtts {
                    Some(r) => r,
                    None => return,
                },
                frame = reader.next() => match frame {
                    Ok(Some(_)) => continue,
                    _ => return,
                },
            };
            seq += 1;
            let hb = Heartbeat {
                seq,
                client_rtts,
                ..Heartbeat::default()
            };
            if write_frame(&mut send, &Frame::Heartbeat(hb)).await.is_err() {
                return;
            }
        }
    });
    Control { beats, task }
}

/// [`hello_announcing`] nothing for steering.
pub async fn hello(conn: &quinn::Connection, name: &str) -> Control {
    hello_announcing(conn, name, None).await
}

/// One of the spoke's own calls, made by hand: `POST path` with `headers`
/// and the JSON `body`, on a stream of its own, without a client address.
/// Returns the status and the answer's body as JSON (`Null` when empty).
pub async fn own_call(
    conn: &quinn::Connection,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value) {
    let mut fields = vec![("content-type".to_owned(), "application/json".to_owned())];
    fields.extend(
        headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let head = RequestHead {
        method: "POST".into(),
        uri: path.into(),
        headers: fields,
        client_addr: None,
    };
    let (mut send, recv) = conn.open_bi().await.unwrap();
    write_frame(&mut send, &Frame::Request(head)).await.unwrap();
    let body = serde_json::to_vec(body).unwrap();
    write_frame(&mut send, &Frame::Data(Bytes::from(body)))
        .await
        .unwrap();
    write_frame(&mut send, &Frame::End).await.unwrap();
    let _ = send.finish();
    let mut reader = FrameReader::new(recv, 1 << 20);
    let mut status = 0;
    let mut answer = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
            Ok(Ok(Some(Frame::Response(r)))) => status = r.status,
            Ok(Ok(Some(Frame::Data(d)))) => answer.extend_from_slice(&d),
            Ok(Ok(Some(Frame::End) | None)) => break,
            other => panic!("the hub's answer to {path} broke: {other:?}"),
        }
    }
    let json = if answer.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&answer)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer).into_owned()))
    };
    (status, json)
}
