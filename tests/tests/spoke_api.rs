//! The API suite through a spoke: the same scenarios as `hub_api.rs`, sent
//! to a real `ferry-spoke` that carries them to a real hub.

use ferry_tests::scenarios::{self, Tenant, tenant};
use ferry_tests::{Api, Hub, Spoke};

async fn network() -> (Hub, Spoke, Tenant) {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let spoke = Spoke::start(&hub, "fra1");
    let t = tenant(&spoke.url(), "alpha", &hub.data_dir).await;
    (hub, spoke, t)
}

#[tokio::test]
async fn large_upload_and_download_keep_every_byte() {
    let (_hub, _spoke, t) = network().await;
    scenarios::large_round_trip(&t, 64 << 20).await;
}

#[tokio::test]
async fn range_reads() {
    let (_hub, _spoke, t) = network().await;
    scenarios::range_reads(&t).await;
}

#[tokio::test]
async fn conditional_requests() {
    let (_hub, _spoke, t) = network().await;
    scenarios::conditional_requests(&t).await;
}

#[tokio::test]
async fn listing_pages_through_more_entries_than_one_page() {
    let (_hub, _spoke, t) = network().await;
    scenarios::listing_pagination(&t).await;
}

#[tokio::test]
async fn copy_and_move() {
    let (_hub, _spoke, t) = network().await;
    scenarios::copy_and_move(&t).await;
}

#[tokio::test]
async fn events_come_in_order_and_resume_from_a_cursor() {
    let (_hub, _spoke, t) = network().await;
    scenarios::events_in_order(&t).await;
}

#[tokio::test]
async fn a_digest_mismatch_leaves_no_object() {
    let (_hub, _spoke, t) = network().await;
    scenarios::digest_mismatch_leaves_nothing(&t).await;
}

#[tokio::test]
async fn wanted_digests_are_answered() {
    let (_hub, _spoke, t) = network().await;
    scenarios::wanted_digests(&t).await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let (_hub, _spoke, t) = network().await;
    scenarios::bad_inputs(&t, 1024 * 1024).await;
}

#[tokio::test]
async fn tenants_are_isolated() {
    let (hub, spoke, a) = network().await;
    let b = tenant(&spoke.url(), "beta", &hub.data_dir).await;
    scenarios::tenant_isolation(&a, &b, &hub.data_dir).await;
}

#[tokio::test]
async fn api_keys_are_made_and_revoked() {
    let (_hub, _spoke, t) = network().await;
    scenarios::key_lifecycle(&t).await;
}

/// A page from another origin may call any node: preflights are answered
/// at the spoke itself (never forwarded), and answers, the spoke's own and
/// those it forwards from the hub, let the page read what tus needs.
#[tokio::test]
async fn pages_from_other_origins_may_call_spokes_and_the_hub() {
    let (hub, spoke, t) = network().await;
    for base in [spoke.url(), hub.url()] {
        let api = ferry_tests::Api::new(&base);
        let pre = api
            .req(http::Method::OPTIONS, "/v1/connections/local/uploads")
            .header("origin", "https://console.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,tus-resumable,upload-length,upload-metadata",
            )
            .send()
            .await
            .expect(204);
        assert_eq!(
            pre.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
        assert_eq!(
            pre.header("access-control-allow-headers").as_deref(),
            Some("authorization,tus-resumable,upload-length,upload-metadata")
        );
        assert!(pre.header("access-control-allow-credentials").is_none());
        // tus's own OPTIONS (no preflight) still reaches its route.
        let tus = api
            .req(http::Method::OPTIONS, "/v1/connections/local/uploads")
            .header("tus-resumable", "1.0.0")
            .send()
            .await
            .expect(204);
        assert!(tus.header("tus-version").is_some(), "{base}");
        // A forwarded answer (connections come from the hub) and a
        // problem both carry the headers.
        for (path, status) in [("/v1/connections", 200), ("/v1/connections/nope", 404)] {
            let resp = ferry_tests::Api::new(&base)
                .as_token(&t.key)
                .get(path)
                .header("origin", "https://console.example")
                .send()
                .await
                .expect(status);
            assert_eq!(
                resp.header("access-control-allow-origin").as_deref(),
                Some("*")
            );
            let exposed = resp.header("access-control-expose-headers").unwrap();
            assert!(exposed.contains("upload-offset") && exposed.contains("location"));
        }
        // Without an Origin, nothing is added.
        let plain = ferry_tests::Api::new(&base)
            .as_token(&t.key)
            .get("/v1/connections")
            .send()
            .await
            .expect(200);
        assert!(plain.header("access-control-allow-origin").is_none());
    }
}

#[tokio::test]
async fn accounts_manage_their_own_keys() {
    let (hub, spoke, a) = network().await;
    let b = tenant(&spoke.url(), "beta", &hub.data_dir).await;
    scenarios::own_keys(&a, &b).await;
}

#[tokio::test]
async fn memory_connections_work() {
    let (_hub, _spoke, t) = network().await;
    scenarios::memory_connection(&t).await;
}

#[tokio::test]
async fn health_readiness_and_metrics_are_the_spokes_own() {
    let (_hub, spoke, _t) = network().await;
    let api = Api::new(spoke.url());
    assert_eq!(
        &api.get("/healthz").send().await.expect(200).body[..],
        b"ok\n"
    );
    assert_eq!(
        &api.get("/readyz").send().await.expect(200).body[..],
        b"ready\n"
    );
    let operator = Api::new(spoke.metrics_url());
    let text = String::from_utf8(
        operator
            .get("/metrics")
            .send()
            .await
            .expect(200)
            .body
            .to_vec(),
    )
    .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(value("ferry_spoke_tunnel_up"), Some(1.0));
    assert!(value("ferry_spoke_forwarded_requests_total").unwrap() >= 2.0);
}

#[tokio::test]
async fn what_the_tunnel_cannot_carry_is_the_clients_to_fix_and_odd_bytes_arrive_intact() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let spoke = Spoke::start(&hub, "fra1");
    // A memory connection lives in the hub: its files are forwarded.
    let t = scenarios::remote_tenant(&spoke.url(), "alpha", "memory", serde_json::json!({})).await;
    // A header value beyond ASCII reaches the hub as sent, which refuses
    // it as it refuses it sent directly.
    t.api
        .put(&t.file("a.txt"))
        .header("content-type", "caf\u{e9}")
        .body("x")
        .send()
        .await
        .expect_problem(400, "invalid_field");
    // Header fields larger than a tunnel frame carries: a 4xx that says
    // so, not the hub's absence. (URIs cross up to 64 KiB, as long as the
    // HTTP libraries here take.)
    t.api
        .get("/v1/connections")
        .header("x-big", "b".repeat(70_000))
        .send()
        .await
        .expect_problem(431, "headers_too_large");
}

#[tokio::test]
async fn folders_are_deleted_empty_or_with_all_they_hold() {
    let (_hub, _spoke, t) = network().await;
    scenarios::folder_deletion(&t).await;
}

#[tokio::test]
async fn a_deleted_account_keeps_nothing() {
    let (hub, spoke, t) = network().await;
    let other = tenant(&spoke.url(), "beta", &hub.data_dir).await;
    scenarios::account_deletion(&t, &hub.data_dir.join("alpha"), &other).await;
}

#[tokio::test]
async fn one_clients_overwrites_read_between_never_conflict() {
    let (_hub, _spoke, t) = network().await;
    for i in 0..30u32 {
        let body = format!("version {i}");
        let put = t
            .api
            .put(&t.file("same.txt"))
            .body(body.clone())
            .send()
            .await;
        assert!(
            put.status.is_success(),
            "overwrite {i}: {} {}",
            put.status,
            String::from_utf8_lossy(&put.body)
        );
        let got = t.api.get(&t.file("same.txt")).send().await.expect(200);
        assert_eq!(&got.body[..], body.as_bytes(), "read after overwrite {i}");
    }
}
