//! The hub's TLS listener: HTTP/2 and HTTP/1.1 by ALPN, and certificates
//! picked up again when their files change.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_tests::{Hub, HubOptions, eventually};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn write_cert(dir: &Path) -> CertificateDer<'static> {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    cert.cert.der().clone()
}

/// Connects with `alpn`, trusting only `trusted`; returns the negotiated
/// protocol and the connection.
async fn connect(
    hub: &Hub,
    trusted: &CertificateDer<'static>,
    alpn: &[u8],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(hub.addr).await?;
    TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

async fn healthz_over(
    stream: tokio_rustls::client::TlsStream<TcpStream>,
) -> (http::Version, Bytes) {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = http::Request::get("https://localhost/healthz")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    assert_eq!(resp.status(), 200);
    let version = resp.version();
    (
        version,
        resp.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn tls_serves_both_http_versions_and_reloads_certificates() {
    ferry_tests::install_crypto_provider();
    let certs = tempfile::tempdir().unwrap();
    let first = write_cert(certs.path());
    let hub = Hub::start_with(HubOptions {
        tls: Some((certs.path().join("cert.pem"), certs.path().join("key.pem"))),
        ..HubOptions::default()
    });
    assert!(hub.url().starts_with("https://"));

    let (version, body) = healthz_over(connect(&hub, &first, b"h2").await.unwrap()).await;
    assert_eq!((version, &body[..]), (http::Version::HTTP_2, &b"ok\n"[..]));
    let (version, body) = healthz_over(connect(&hub, &first, b"http/1.1").await.unwrap()).await;
    assert_eq!((version, &body[..]), (http::Version::HTTP_11, &b"ok\n"[..]));

    // Rotate the certificate: new connections get the new one, no restart.
    // The hub notices a change of the files' modification time; make sure
    // it changes even when both writes fall in one tick of the file
    // system's clock.
    let modified = |file: &str| {
        std::fs::metadata(certs.path().join(file))
            .and_then(|m| m.modified())
            .unwrap()
    };
    let first_written = modified("cert.pem").max(modified("key.pem"));
    let second = write_cert(certs.path());
    for file in ["cert.pem", "key.pem"] {
        std::fs::File::options()
            .write(true)
            .open(certs.path().join(file))
            .and_then(|f| f.set_modified(first_written + Duration::from_secs(1)))
            .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(15), async || {
            connect(&hub, &second, b"h2").await.is_ok()
        })
        .await,
        "the new certificate was not picked up:\n{}",
        hub.log()
    );
    let (version, _) = healthz_over(connect(&hub, &second, b"h2").await.unwrap()).await;
    assert_eq!(version, http::Version::HTTP_2);
    assert!(
        connect(&hub, &first, b"h2").await.is_err(),
        "the old certificate is no longer served"
    );
    assert!(
        hub.daemon()
            .wait_for(
                "reloaded the TLS certificate",
                std::time::Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        hub.log()
    );
}
