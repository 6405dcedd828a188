//! The hub as a process: restarts and crashes, TLS, metrics, shutdown.

use std::time::Duration;

use bytes::Bytes;
use ferry_tests::hub::ADMIN_TOKEN;
use ferry_tests::scenarios::{tenant, upload};
use ferry_tests::{Api, Hub, HubOptions, eventually, metric, pattern};
use serde_json::json;

/// Waits (at most 10 s) until the hub has counted `bytes` of content going
/// `direction` (it counts as the bytes stream); whether it did.
async fn counted(hub: &Hub, direction: &str, bytes: u32) -> bool {
    let labels = [("direction", direction)];
    eventually(Duration::from_secs(10), async || {
        metric(&hub.metrics_url(), "ferry_content_bytes_total", &labels).await >= f64::from(bytes)
    })
    .await
}

#[tokio::test]
async fn a_restart_keeps_accounts_keys_connections_files_and_events() {
    let mut hub = Hub::start();
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let up = upload(&t, "keep/me.txt", b"persistent").await;
    let extra = t.new_key().await;
    let revoked = t.new_key().await;
    t.admin
        .delete(&format!(
            "/v1/accounts/{}/keys/{}",
            t.account_id,
            revoked["id"].as_str().unwrap()
        ))
        .send()
        .await
        .expect(204);
    let events_before = t.api.get("/v1/events").send().await.expect(200).json()["events"].clone();

    for crash in [false, true] {
        if crash {
            hub.kill();
            hub.restart();
        } else {
            hub.restart();
        }
        let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
        let api = admin.as_token(&t.key);
        let accounts = admin.get("/v1/accounts").send().await.expect(200).json();
        assert_eq!(accounts["accounts"][0]["id"], t.account_id.as_str());
        api.as_token(extra["key"].as_str().unwrap())
            .get("/v1/connections")
            .send()
            .await
            .expect(200);
        api.as_token(revoked["key"].as_str().unwrap())
            .get("/v1/connections")
            .send()
            .await
            .expect_problem(401, "unauthorized");
        let conns = api.get("/v1/connections").send().await.expect(200).json();
        assert_eq!(conns["connections"][0]["id"], t.conn_id.as_str());
        let file = api.get(&t.file("keep/me.txt")).send().await.expect(200);
        assert_eq!(&file.body[..], b"persistent");
        assert_eq!(
            file.header("etag").as_deref(),
            up["etag"].as_str(),
            "crash={crash}"
        );
        assert_eq!(
            file.header("x-ferry-checksum-crc64nvme").as_deref(),
            up["checksums"]["crc64nvme"].as_str()
        );
        let events = api.get("/v1/events").send().await.expect(200).json()["events"].clone();
        assert_eq!(events, events_before, "crash={crash}");
    }
    // New events continue after the old ones.
    let api = Api::new(hub.url()).as_token(&t.key);
    api.put(&t.file("keep/after.txt"))
        .body("x")
        .send()
        .await
        .expect(201);
    let events = api.get("/v1/events").send().await.expect(200).json()["events"].clone();
    let ids: Vec<i64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(
        events.as_array().unwrap().last().unwrap()["path"],
        "keep/after.txt"
    );
}

#[tokio::test]
async fn a_crash_mid_upload_leaves_no_object() {
    let mut hub = Hub::start();
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    upload(&t, "doc.bin", b"the old version").await;
    let total = 32 << 20;
    let (req, tx) = t.api.put(&t.file("doc.bin")).body_channel(total);
    let sending = tokio::spawn(req.send_raw());
    let chunk = Bytes::from(pattern(1 << 20, 1));
    for _ in 0..8 {
        tx.send(chunk.clone()).await.unwrap();
    }
    // The hub has received (and is staging) what was sent when it dies.
    assert!(
        counted(&hub, "upload", 8 << 20).await,
        "the hub did not receive the first 8 MiB:\n{}",
        hub.log()
    );
    hub.kill();
    drop(tx);
    let _ = sending.await;
    hub.restart();
    let api = Api::new(hub.url()).as_token(&t.key);
    let got = api.get(&t.file("doc.bin")).send().await.expect(200);
    assert_eq!(&got.body[..], b"the old version");
    let list = api
        .get("/v1/connections/local/list")
        .send()
        .await
        .expect(200)
        .json();
    let names = ferry_tests::entry_names(&list);
    assert_eq!(names, vec!["doc.bin"]);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_download_finish() {
    let mut hub = Hub::start();
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let data = pattern(48 << 20, 2);
    t.api
        .put(&t.file("big.bin"))
        .body(data.clone())
        .send()
        .await
        .expect(201);
    let resp = t.api.get(&t.file("big.bin")).send_raw().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::with_capacity(data.len());
    // Read a little, then ask the hub to stop, then read the rest slowly.
    ferry_tests::read_at_least(&mut body, &mut got, 4 << 20).await;
    let log = hub.daemon().log_view();
    let pid_stop = tokio::task::spawn_blocking(move || {
        let status = hub.stop();
        (hub, status)
    });
    // The drain has begun once the hub says it is finishing what is in
    // flight (the listening socket stays open: the harness holds it, as a
    // service manager would, so new clients wait in its queue).
    assert!(
        eventually(Duration::from_secs(10), async || {
            log.text().contains("draining open connections")
        })
        .await,
        "the hub did not start draining within 10 s of SIGTERM"
    );
    // New connections are refused while draining.
    let fresh =
        tokio::time::timeout(Duration::from_secs(2), t.api.get("/healthz").send_raw()).await;
    assert!(
        !matches!(fresh, Ok(Ok(ref r)) if r.status() == 200),
        "a new request was served while draining"
    );
    ferry_tests::read_rest(&mut body, &mut got, "the download is not cut").await;
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    let (hub, status) = pid_stop.await.unwrap();
    assert!(status.expect("it exited").success(), "{}", hub.log());
    assert!(
        hub.log().contains("draining open connections"),
        "{}",
        hub.log()
    );
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text() {
    let hub = Hub::start();
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let data = pattern(300_000, 4);
    upload(&t, "m.bin", &data).await;
    t.api.get(&t.file("m.bin")).send().await.expect(200);
    t.api.get(&t.file("nope")).send().await.expect(404);
    // The download's byte counter is updated as the body streams: wait
    // until the whole response is counted.
    assert!(counted(&hub, "download", 300_000).await);
    let resp = Api::new(hub.metrics_url())
        .get("/metrics")
        .send()
        .await
        .expect(200);
    assert!(resp.header("content-type").unwrap().contains("text"));
    let text = String::from_utf8(resp.body.to_vec()).unwrap();
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(
        value(
            "ferry_http_requests_total",
            &[("route", "files"), ("method", "PUT"), ("status", "201")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "ferry_http_requests_total",
            &[("route", "files"), ("method", "GET"), ("status", "404")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value("ferry_content_bytes_total", &[("direction", "upload")]),
        Some(300_000.0)
    );
    assert_eq!(
        value("ferry_content_bytes_total", &[("direction", "download")]),
        Some(300_000.0)
    );
    assert!(value("ferry_store_errors_total", &[]).is_some());
    let histogram = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "ferry_http_request_duration_seconds"
                && s.labels.get("route") == Some("files")
        })
        .expect("a latency histogram");
    assert!(
        matches!(histogram.value, prometheus_parse::Value::Histogram(_)),
        "{:?}",
        histogram.value
    );
    for s in &scrape.samples {
        assert!(s.metric.starts_with("ferry_"), "{}", s.metric);
    }
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_token() {
    let hub = Hub::start_with(HubOptions {
        admin_token: false,
        ..HubOptions::default()
    });
    Api::new(hub.url())
        .as_token("anything")
        .post("/v1/accounts")
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .expect_problem(403, "admin_disabled");
    assert!(
        hub.log()
            .contains("admin API (accounts and keys) is disabled")
    );
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let hub = Hub::start_with(HubOptions {
        api_extra: "max_header_bytes = 8192".into(),
        ..HubOptions::default()
    });
    let api = Api::new(hub.url());
    let resp = api
        .get("/healthz")
        .header("x-big", "x".repeat(20_000))
        .send_raw()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    api.get("/healthz").send().await.expect(200);
}

#[tokio::test]
async fn rekey_moves_every_connection_to_a_new_master_key() {
    let mut hub = Hub::start_with(HubOptions {
        extra_toml: "[webhooks]\nallow_private_endpoints = true\n".into(),
        ..HubOptions::default()
    });
    let receiver = ferry_tests::webhooks::Receiver::start();
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    upload(&t, "kept.txt", b"still here").await;
    t.new_s3_key().await;
    let made = ferry_tests::webhooks::endpoint(&t, &receiver, "/rekeyed", None).await;
    // A rotation: the secret it replaced is sealed again too.
    let rotated = t
        .api
        .post(&format!(
            "/v1/webhooks/{}/rotate-secret",
            made["id"].as_str().unwrap()
        ))
        .send()
        .await
        .expect(200)
        .json();
    receiver
        .control("/_secrets", json!({ "/rekeyed": [rotated["secret"]] }))
        .await;
    hub.stop();

    let new_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let key_file = hub.dir.path().join("new.key");
    std::fs::write(&key_file, new_key).unwrap();
    let (ok, _, err) = hub.command(&["rekey", "--new-key-file", key_file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        err.contains("re-encrypted 1 connection(s), 1 S3 key(s), 1 webhook endpoint(s)"),
        "{err}"
    );
    // Run again with the old key: it no longer opens them, and nothing changes.
    let (ok, _, err) = hub.command(&["rekey", "--new-key-file", key_file.to_str().unwrap()]);
    assert!(
        !ok && err.contains("does not open with the current key"),
        "{err}"
    );

    hub.master_key = new_key.to_owned();
    hub.restart();
    let api = Api::new(hub.url()).as_token(&t.key);
    let got = api.get(&t.file("kept.txt")).send().await.expect(200);
    assert_eq!(&got.body[..], b"still here");
    // The webhook's secrets open with the new key: deliveries are signed.
    upload(&t, "after.txt", b"after the new key").await;
    let got = receiver
        .wait_for("/rekeyed", 1, std::time::Duration::from_secs(20))
        .await;
    assert_eq!(got[0]["verified"], true, "{got:#?}");
}
