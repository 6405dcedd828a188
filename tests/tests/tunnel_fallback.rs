//! Where UDP is blocked, the tunnel runs over TLS on TCP with the same
//! frames, and moves back to QUIC when UDP gets through again.

use std::time::Duration;

use bytes::Bytes;
use ferry_tests::hub::ADMIN_TOKEN;
use ferry_tests::scenarios::tenant;
use ferry_tests::udp_relay::UdpRelay;
use ferry_tests::{Api, Hub, Spoke, SpokeOptions, eventually, metric, pattern};

#[tokio::test]
async fn blocked_udp_falls_back_to_tcp_and_returns_to_quic() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let relay = UdpRelay::start(hub.tunnel_addr, true).await;
    let opts = SpokeOptions {
        quic_via: Some(relay.addr),
        tunnel_extra: "quic_handshake_timeout_ms = 500\nquic_retry_secs = 1".into(),
        ..SpokeOptions::default()
    };
    let token = hub.spoke_token("fra1", None);
    let spoke =
        Spoke::start_with(&hub, "fra1", &token, &opts).unwrap_or_else(|log| panic!("{log}"));
    let transport = |t: &'static str| {
        let url = spoke.metrics_url();
        async move { metric(&url, "ferry_spoke_tunnel_transport", &[("transport", t)]).await }
    };
    assert_eq!(transport("tcp").await, 1.0, "{}", spoke.log());
    let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
    assert_eq!(
        admin.get("/v1/spokes/fra1").send().await.json()["tunnel"]["transport"],
        "tcp"
    );

    // The whole API works over TCP: control requests, content, reports.
    let t = tenant(&spoke.url(), "alpha", &hub.data_dir).await;
    let data = Bytes::from(pattern(8 << 20, 6));
    let via_spoke = Api::new(spoke.url()).as_token(&t.key);
    via_spoke
        .put(&t.file("tcp.bin"))
        .body(data.clone())
        .send()
        .await
        .expect(201);
    assert_eq!(
        &via_spoke
            .get(&t.file("tcp.bin"))
            .send()
            .await
            .expect(200)
            .body[..],
        &data[..]
    );
    let listed = via_spoke
        .get("/v1/connections/local/list")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(listed["entries"][0]["name"], "tcp.bin");
    // A forwarded request with a large body crosses the TCP tunnel intact.
    via_spoke
        .post("/v1/connections")
        .json(&serde_json::json!({ "name": "mem", "provider": "memory" }))
        .send()
        .await
        .expect(201);
    via_spoke
        .put("/v1/connections/mem/files/big.bin")
        .body(data.clone())
        .send()
        .await
        .expect(201);
    assert_eq!(
        &via_spoke
            .get("/v1/connections/mem/files/big.bin")
            .send()
            .await
            .expect(200)
            .body[..],
        &data[..]
    );

    // UDP comes back while a large forwarded download is under way on
    // the TCP tunnel: the spoke moves to QUIC by itself, and the download
    // finishes on the TCP tunnel, whole, read past the spoke's 5 s grace
    // (the old tunnel waits for it, up to 10 minutes).
    let large = Bytes::from(pattern(96 << 20, 7));
    via_spoke
        .put("/v1/connections/mem/files/large.bin")
        .body(large.clone())
        .send()
        .await
        .expect(201);
    let resp = via_spoke
        .get("/v1/connections/mem/files/large.bin")
        .send_raw()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::with_capacity(large.len());
    ferry_tests::read_at_least(&mut body, &mut got, 8 << 20).await;
    relay.block(false);
    assert!(
        eventually(Duration::from_secs(15), async || transport("quic").await
            == 1.0)
        .await,
        "the tunnel did not move back to QUIC:\n{}",
        spoke.log()
    );
    assert_eq!(transport("tcp").await, 0.0);
    assert!(
        eventually(Duration::from_secs(10), async || {
            admin.get("/v1/spokes/fra1").send().await.json()["tunnel"]["transport"] == "quic"
        })
        .await
    );
    // Past the spoke's grace the download is still open: the old tunnel
    // waits for it, however long it takes, and closes once it is read.
    assert!(
        spoke
            .daemon()
            .wait_for(
                "the replaced tunnel stays open for the requests still on it",
                Duration::from_secs(15)
            )
            .is_some(),
        "{}",
        spoke.log()
    );
    ferry_tests::read_rest(&mut body, &mut got, "the download in flight on TCP goes on").await;
    assert!(got == large, "the download in flight arrived whole");
    assert!(
        spoke
            .daemon()
            .wait_for("closed the replaced tunnel", Duration::from_secs(10))
            .is_some(),
        "{}",
        spoke.log()
    );
    assert_eq!(
        &via_spoke
            .get(&t.file("tcp.bin"))
            .send()
            .await
            .expect(200)
            .body[..],
        &data[..]
    );
    via_spoke.get("/v1/connections").send().await.expect(200);

    // UDP blocked again mid-way: the spoke loses QUIC and returns to TCP.
    relay.block(true);
    assert!(
        eventually(Duration::from_secs(20), async || transport("tcp").await
            == 1.0)
        .await,
        "the tunnel did not fall back again:\n{}",
        spoke.log()
    );
    via_spoke.get("/v1/connections").send().await.expect(200);
}
