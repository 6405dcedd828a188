//! The direct data path: content streams between client and provider at
//! the spoke; the hub grants and records, and never carries the bytes.

use std::time::Duration;

use bytes::Bytes;
use ferry_tests::hub::ADMIN_TOKEN;
use ferry_tests::scenarios::tenant;
use ferry_tests::{Api, Hub, HubOptions, Spoke, eventually, metric, pattern, sha256};
use http_body_util::BodyExt as _;

/// Streams a download and returns (bytes, SHA-256).
async fn download(api: &Api, path: &str) -> (usize, Vec<u8>) {
    let resp = api.get(path).send_raw().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            n += data.len();
            ctx.update(&data);
        }
    }
    (n, ctx.finish().as_ref().to_vec())
}

#[tokio::test]
async fn spokes_carry_content_and_the_hub_never_does() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let a = Spoke::start(&hub, "fra1");
    let b = Spoke::start(&hub, "ams1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let (via_a, via_b, via_hub) = (
        Api::new(a.url()).as_token(&t.key),
        Api::new(b.url()).as_token(&t.key),
        Api::new(hub.url()).as_token(&t.key),
    );
    let size = 256 << 20;
    let data = Bytes::from(pattern(size, 256));
    let want = sha256(&data);
    let hub_bytes = |d: &'static str| {
        let url = hub.metrics_url();
        async move { metric(&url, "ferry_content_bytes_total", &[("direction", d)]).await }
    };
    let (hub_up, hub_down) = (hub_bytes("upload").await, hub_bytes("download").await);

    let up = via_a
        .put(&t.file("big/256.bin"))
        .header("repr-digest", ferry_tests::repr_digest(&data))
        .body_chunked(data.clone(), 1 << 20)
        .send()
        .await
        .expect(201);
    assert_eq!(up.json()["size"], size as u64);
    let (n, sum) = download(&via_b, &t.file("big/256.bin")).await;
    assert_eq!((n, &sum), (size, &want), "through spoke B");

    assert_eq!(
        hub_bytes("upload").await,
        hub_up,
        "the hub carried upload bytes"
    );
    assert_eq!(
        hub_bytes("download").await,
        hub_down,
        "the hub carried download bytes"
    );
    assert_eq!(
        metric(
            &a.metrics_url(),
            "ferry_spoke_content_bytes_total",
            &[("direction", "upload")]
        )
        .await,
        size as f64
    );
    // Spoke B's counter moves as the body is sent; the last frame may still be in flight.
    assert!(
        eventually(Duration::from_secs(5), async || {
            metric(
                &b.metrics_url(),
                "ferry_spoke_content_bytes_total",
                &[("direction", "download")],
            )
            .await
                == size as f64
        })
        .await
    );

    // The hub recorded what the spoke reported: metadata, event.
    let head = via_hub
        .head(&t.file("big/256.bin"))
        .send()
        .await
        .expect(200);
    assert_eq!(
        head.header("x-ferry-checksum-crc64nvme").as_deref(),
        up.header("x-ferry-checksum-crc64nvme").as_deref()
    );
    assert_eq!(head.header("etag"), up.header("etag"));
    let events = via_hub.get("/v1/events").send().await.expect(200).json();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "big/256.bin" && e["type"] == "created"),
        "{events}"
    );

    let (n, sum) = download(&via_hub, &t.file("big/256.bin")).await;
    assert_eq!((n, &sum), (size, &want), "through the hub");
    assert_eq!(hub_bytes("download").await, hub_down + size as f64);

    // The hub's view of its tunnels.
    assert_eq!(
        metric(
            &hub.metrics_url(),
            "ferry_tunnel_spokes_connected",
            &[("transport", "quic")]
        )
        .await,
        2.0
    );
    assert!(metric(&hub.metrics_url(), "ferry_grants_total", &[]).await >= 2.0);
    assert!(metric(&hub.metrics_url(), "ferry_tunnel_streams_total", &[]).await >= 4.0);
    assert_eq!(
        metric(&hub.metrics_url(), "ferry_tunnel_open_streams", &[]).await,
        0.0
    );
    // Repeated reads of one object reuse the cached grant.
    via_b
        .get(&t.file("big/256.bin"))
        .header("range", "bytes=0-9")
        .send()
        .await
        .expect(206);
    assert!(
        metric(
            &b.metrics_url(),
            "ferry_spoke_grants_total",
            &[("result", "cached")]
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn internal_routes_are_not_for_clients() {
    let hub = Hub::start();
    let spoke = Spoke::start(&hub, "fra1");
    for base in [hub.url(), spoke.url()] {
        let api = Api::new(base).as_token(ADMIN_TOKEN);
        for route in ["grant", "lookup", "commit", "transfer"] {
            api.post(&format!("/internal/v1/{route}"))
                .json(&serde_json::json!({}))
                .send()
                .await
                .expect_problem(404, "route_not_found");
            api.get(&format!("/internal/v1/{route}"))
                .send()
                .await
                .expect_problem(404, "route_not_found");
        }
        api.get("/v1/connections//files/x")
            .send()
            .await
            .expect_problem(404, "route_not_found");
    }
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_a_spoke_within_the_grant_lifetime() {
    let hub = Hub::start_with(HubOptions {
        tunnel_extra: "grant_ttl_secs = 1".into(),
        ..HubOptions::default()
    });
    let spoke = Spoke::start(&hub, "fra1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let key = t.new_key().await;
    let via_spoke = Api::new(spoke.url()).as_token(key["key"].as_str().unwrap());
    via_spoke
        .put(&t.file("k.txt"))
        .body("x")
        .send()
        .await
        .expect(201);
    t.revoke_key(key["id"].as_str().unwrap()).await;
    assert!(
        eventually(Duration::from_secs(5), async || via_spoke
            .get(&t.file("k.txt"))
            .send()
            .await
            .status
            == 401)
        .await,
        "the revoked key still works at the spoke"
    );
    // The account's other key is unaffected.
    Api::new(spoke.url())
        .as_token(&t.key)
        .get(&t.file("k.txt"))
        .send()
        .await
        .expect(200);
}

/// Downloads under way go on without the hub; uploads wait for it: the
/// hub orders the changes to each object, so a spoke cannot put one in
/// place while it is away, even under a grant it holds.
#[tokio::test]
async fn downloads_survive_a_hub_outage_and_uploads_wait_for_the_hub() {
    let mut hub = Hub::start();
    let mut spoke = Spoke::start(&hub, "fra1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let via_spoke = Api::new(spoke.url()).as_token(&t.key);
    let data = Bytes::from(pattern(256 << 20, 9));
    via_spoke
        .put(&t.file("d.bin"))
        .body(data.clone())
        .send()
        .await
        .expect(201);

    // A download is under way through the spoke when the hub dies.
    let resp = via_spoke.get(&t.file("d.bin")).send_raw().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::with_capacity(data.len());
    ferry_tests::read_at_least(&mut body, &mut got, 8 << 20).await;
    // The spoke holds a write grant for this one object…
    via_spoke
        .put(&t.file("while-down.txt"))
        .body("written before the outage")
        .send()
        .await
        .expect(201);
    hub.kill();
    ferry_tests::read_rest(&mut body, &mut got, "the download goes on without the hub").await;
    assert!(got == data, "the download completed intact");

    // …yet writing it again waits for the hub (nothing is changed), as
    // does an object no grant covers.
    assert!(spoke.until_readyz(503, Duration::from_secs(10)).await);
    for path in ["while-down.txt", "never-granted.txt"] {
        via_spoke
            .put(&t.file(path))
            .body("written during the outage")
            .send()
            .await
            .expect_problem(503, "hub_unreachable");
    }
    hub.restart_on_same_ports();
    let via_hub = Api::new(hub.url()).as_token(&t.key);
    let got = via_hub
        .get(&t.file("while-down.txt"))
        .send()
        .await
        .expect(200);
    assert_eq!(&got.body[..], b"written before the outage");
    assert_eq!(
        got.header("x-ferry-checksum-crc64nvme"),
        ferry_tests::crc64nvme_field(b"written before the outage"),
    );
    via_hub
        .get(&t.file("never-granted.txt"))
        .send()
        .await
        .expect(404);
    assert_eq!(events_of(&via_hub, "while-down.txt", "updated").await, 0);
    // With the hub back, the spoke writes again.
    assert!(spoke.until_readyz(200, Duration::from_secs(20)).await);
    via_spoke
        .put(&t.file("while-down.txt"))
        .body("written after the outage")
        .send()
        .await
        .expect(200);
    spoke.stop();
}

#[tokio::test]
async fn a_draining_spoke_finishes_its_transfers_and_tells_the_hub() {
    let hub = Hub::start();
    let mut spoke = Spoke::start(&hub, "fra1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let via_spoke = Api::new(spoke.url()).as_token(&t.key);
    let data = Bytes::from(pattern(48 << 20, 4));
    via_spoke
        .put(&t.file("drain.bin"))
        .body(data.clone())
        .send()
        .await
        .expect(201);

    let resp = via_spoke
        .get(&t.file("drain.bin"))
        .send_raw()
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::with_capacity(data.len());
    ferry_tests::read_at_least(&mut body, &mut got, 4 << 20).await;
    // The download in flight shows in the spoke's load, and the hub hears
    // it in the next heartbeat.
    assert_eq!(
        metric(&spoke.metrics_url(), "ferry_spoke_active_transfers", &[]).await,
        1.0
    );
    let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
    assert!(
        eventually(Duration::from_secs(5), async || {
            admin.get("/v1/spokes/fra1").send().await.json()["tunnel"]["active_transfers"] == 1
        })
        .await,
        "the heartbeat did not carry the active transfer"
    );
    let stopping = tokio::task::spawn_blocking(move || {
        let status = spoke.stop();
        (spoke, status)
    });
    assert!(
        eventually(Duration::from_secs(5), async || {
            admin.get("/v1/spokes/fra1").send().await.json()["tunnel"]["draining"] == true
        })
        .await,
        "the hub never heard the spoke was draining"
    );
    let fresh =
        tokio::time::timeout(Duration::from_secs(2), via_spoke.get("/healthz").send_raw()).await;
    assert!(
        !matches!(fresh, Ok(Ok(ref r)) if r.status() == 200),
        "a new request was served while draining"
    );
    ferry_tests::read_rest(&mut body, &mut got, "the download is not cut").await;
    assert!(got == data, "the download in flight completed");
    let (spoke, status) = stopping.await.unwrap();
    assert!(
        status.expect("the spoke exited").success(),
        "{}",
        spoke.log()
    );
    assert!(spoke.log().contains("told the hub this spoke is draining"));
}

#[tokio::test]
async fn revocations_reach_spokes_at_once() {
    // The default grant lifetime is 30 s: only the hub's push can make
    // these take effect within the few seconds the test allows.
    let hub = Hub::start();
    let spoke = Spoke::start(&hub, "fra1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let key = t.new_key().await;
    let with_key = Api::new(spoke.url()).as_token(key["key"].as_str().unwrap());
    with_key
        .put(&t.file("r.txt"))
        .body("x")
        .send()
        .await
        .expect(201);
    with_key.get(&t.file("r.txt")).send().await.expect(200);
    with_key.get(&t.file("r.txt")).send().await.expect(200);
    assert!(
        metric(
            &spoke.metrics_url(),
            "ferry_spoke_grants_total",
            &[("result", "cached")]
        )
        .await
            >= 1.0,
        "the grant is cached, so only a push can revoke it early"
    );
    t.admin
        .delete(&format!(
            "/v1/accounts/{}/keys/{}",
            t.account_id,
            key["id"].as_str().unwrap()
        ))
        .send()
        .await
        .expect(204);
    assert!(
        eventually(Duration::from_secs(3), async || with_key
            .get(&t.file("r.txt"))
            .send()
            .await
            .status
            == 401)
        .await,
        "the revoked key still works at the spoke"
    );

    let via_spoke = Api::new(spoke.url()).as_token(&t.key);
    via_spoke.get(&t.file("r.txt")).send().await.expect(200);
    t.api
        .delete("/v1/connections/local")
        .send()
        .await
        .expect(204);
    assert!(
        eventually(Duration::from_secs(3), async || via_spoke
            .get(&t.file("r.txt"))
            .send()
            .await
            .status
            == 404)
        .await,
        "the deleted connection still works at the spoke"
    );
    via_spoke
        .get(&t.file("r.txt"))
        .send()
        .await
        .expect_problem(404, "connection_not_found");
}

/// The bytes of reports in `spoke`'s journal.
async fn journal_bytes(spoke: &Spoke) -> f64 {
    metric(
        &spoke.metrics_url(),
        "ferry_spoke_report_journal_bytes",
        &[],
    )
    .await
}

/// Waits (at most `limit`) until `spoke`'s journal holds nothing the hub
/// has not taken; whether it did.
async fn journal_empties(spoke: &Spoke, limit: Duration) -> bool {
    eventually(limit, async || journal_bytes(spoke).await == 0.0).await
}

/// The events of `path` of type `kind` in the account's feed.
async fn events_of(api: &Api, path: &str, kind: &str) -> usize {
    let feed = api.get("/v1/events").send().await.expect(200).json();
    feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] == path && e["type"] == kind)
        .count()
}

#[tokio::test]
async fn a_spoke_killed_with_an_answered_upload_reports_it_after_restarting_and_only_once() {
    ferry_tests::install_crypto_provider();
    // S3 (moto) behind a proxy that can hold its answers, so that the
    // hub can go away between recording the upload's intent and taking
    // its report.
    let server = ferry_tests::providers::StorageServer::s3("journal");
    let proxy = ferry_tests::fault_proxy::FaultProxy::start(server.addr).await;
    let mut hub = Hub::start_with(HubOptions {
        extra_toml: "[providers.remote]\nallow_private_endpoints = true\n".into(),
        ..HubOptions::default()
    });
    let mut spoke = Spoke::start(&hub, "fra1");
    let t = ferry_tests::scenarios::remote_tenant(
        &hub.url(),
        "alpha",
        "s3",
        server.config("journal", Some(&proxy.url())),
    )
    .await;
    let via_spoke = Api::new(spoke.url()).as_token(&t.key);
    via_spoke
        .put(&t.file("x.txt"))
        .body("first")
        .send()
        .await
        .expect(201);

    // S3 takes the second upload, its answer held; meanwhile the hub goes
    // away. The upload is answered, its report only in the spoke's
    // journal.
    let before = proxy.counts().1;
    proxy.hold_answers(http::Method::PUT, Duration::from_secs(60));
    let second = via_spoke
        .put(&t.file("x.txt"))
        .body("second, while the hub is away");
    let pending = tokio::spawn(second.send());
    assert!(
        eventually(Duration::from_secs(10), async || proxy.counts().1 > before).await,
        "S3 never got the upload"
    );
    hub.kill();
    proxy.release_answers();
    pending.await.unwrap().expect(200);
    let journal = spoke.dir.path().join("state/reports.journal");
    let kept = std::fs::read(&journal).unwrap();
    assert!(!kept.is_empty(), "the report is not in the journal");
    assert!(journal_bytes(&spoke).await > 0.0);

    // The spoke dies at once (nothing flushed on the way out); the hub
    // and then the spoke come back: the report arrives from the journal.
    spoke.kill();
    hub.restart_on_same_ports();
    spoke.restart();
    let via_hub = Api::new(hub.url()).as_token(&t.key);
    let arrived = eventually(Duration::from_secs(20), async || {
        let got = via_hub.get(&t.file("x.txt")).send().await;
        got.header("x-ferry-checksum-crc64nvme")
            == ferry_tests::crc64nvme_field(b"second, while the hub is away")
    })
    .await;
    assert!(arrived, "the report did not arrive:\n{}", spoke.log());
    assert!(journal_empties(&spoke, Duration::from_secs(10)).await);
    assert_eq!(events_of(&via_hub, "x.txt", "updated").await, 1);

    // Delivered, then the spoke crashes before its mark reaches the disk:
    // the same report comes again, and the hub applies it once.
    assert!(
        spoke.resend_journal(&kept, &hub).await,
        "the report was not sent again:\n{}",
        spoke.log()
    );
    assert_eq!(events_of(&via_hub, "x.txt", "updated").await, 1);
    assert_eq!(
        &via_hub.get(&t.file("x.txt")).send().await.expect(200).body[..],
        b"second, while the hub is away"
    );
}

#[tokio::test]
async fn a_spoke_whose_journal_is_full_refuses_uploads_until_the_hub_takes_its_reports() {
    let mut hub = Hub::start();
    let opts = ferry_tests::SpokeOptions {
        tunnel_extra: "report_journal_max_bytes = 4096\n".into(),
        ..Default::default()
    };
    let spoke = Spoke::start_with(&hub, "fra1", &hub.spoke_token("fra1", None), &opts)
        .unwrap_or_else(|log| panic!("{log}"));
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let via_spoke = Api::new(spoke.url()).as_token(&t.key);
    via_spoke
        .put(&t.file("x.txt"))
        .body("v0")
        .send()
        .await
        .expect(201);
    assert_eq!(
        metric(
            &spoke.metrics_url(),
            "ferry_spoke_report_journal_limit_bytes",
            &[]
        )
        .await,
        4096.0
    );
    via_spoke.get(&t.file("x.txt")).send().await.expect(200);
    hub.kill();
    assert!(spoke.until_readyz(503, Duration::from_secs(10)).await);
    // Downloads under the cached grant go on, each one's transfer report
    // journalled, until the journal holds its limit.
    let mut downloads = 0;
    while journal_bytes(&spoke).await < 4096.0 {
        via_spoke.get(&t.file("x.txt")).send().await.expect(200);
        downloads += 1;
        assert!(downloads < 200, "the journal never filled");
    }
    // Then an upload is refused for that, before anything is written
    // (not for the hub being away, which is asked later).
    let refused = via_spoke
        .put(&t.file("x.txt"))
        .body("refused")
        .send()
        .await
        .expect_problem(503, "report_journal_full");
    assert!(refused.header("retry-after").is_some());
    // The hub back, the reports go and uploads are taken again.
    hub.restart_on_same_ports();
    assert!(journal_empties(&spoke, Duration::from_secs(20)).await);
    let via_hub = Api::new(hub.url()).as_token(&t.key);
    let got = via_hub.get(&t.file("x.txt")).send().await.expect(200);
    assert_eq!(&got.body[..], b"v0");
    via_spoke
        .put(&t.file("x.txt"))
        .body("after")
        .send()
        .await
        .expect(200);
}

/// Two writers on one path through different nodes, the first to begin
/// the last to end: the later one's change is recorded first, and the
/// earlier one is refused (`409 write_conflict`; `412` when it had a
/// condition; S3's `409 ConditionalRequestConflict` through the door),
/// changing nothing. Content, record and feed all say the winner's.
#[tokio::test]
async fn two_writers_on_one_path_one_wins_and_the_other_changes_nothing() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let fra = Spoke::start(&hub, "fra1");
    let ams = Spoke::start(&hub, "ams1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let via = |url: String| Api::new(url).as_token(&t.key);
    let via_hub = via(hub.url());
    let path = "shared/one.bin";
    let slow = Bytes::from(pattern(1 << 20, 5));
    let active = async |url: String, name: &str| {
        assert!(
            eventually(Duration::from_secs(10), async || metric(&url, name, &[])
                .await
                >= 1.0)
            .await,
            "the slow upload did not begin"
        );
    };
    let check = async |winner: &[u8], created: usize, updated: usize| {
        let got = via_hub.get(&t.file(path)).send().await.expect(200);
        assert_eq!(&got.body[..], winner, "the provider holds the winner's");
        assert_eq!(
            got.header("x-ferry-checksum-crc64nvme"),
            ferry_tests::crc64nvme_field(winner),
            "the record is the winner's"
        );
        assert_eq!(events_of(&via_hub, path, "created").await, created);
        assert_eq!(events_of(&via_hub, path, "updated").await, updated);
    };

    // 1. Through two spokes, nothing there before: the loser began first
    // (its body slow), the winner began and ended meanwhile. (The loser's
    // spoke holds a grant from a write of the path deleted since, so it
    // looks the path up itself as the upload begins.)
    via(fra.url())
        .put(&t.file(path))
        .body("written and deleted")
        .send()
        .await
        .expect(201);
    via_hub.delete(&t.file(path)).send().await.expect(204);
    let (req, tx) = via(fra.url()).put(&t.file(path)).body_channel(slow.len());
    let loser = tokio::spawn(req.send());
    tx.send(slow.slice(..64 << 10)).await.unwrap();
    active(fra.metrics_url(), "ferry_spoke_active_transfers").await;
    via(ams.url())
        .put(&t.file(path))
        .body("the winner")
        .send()
        .await
        .expect(201);
    tx.send(slow.slice(64 << 10..)).await.unwrap();
    drop(tx);
    let lost = loser.await.unwrap().expect_problem(409, "write_conflict");
    assert_eq!(lost.header("retry-after").as_deref(), Some("1"));
    check(b"the winner", 2, 0).await;

    // 2. With conditions, the hub against a spoke: both began with the
    // same version; the later one's condition no longer holds.
    let etag = via_hub
        .head(&t.file(path))
        .send()
        .await
        .header("etag")
        .unwrap();
    let (req, tx) = via(fra.url())
        .put(&t.file(path))
        .header("if-match", &etag)
        .body_channel(slow.len());
    let loser = tokio::spawn(req.send());
    tx.send(slow.slice(..64 << 10)).await.unwrap();
    active(fra.metrics_url(), "ferry_spoke_active_transfers").await;
    via_hub
        .put(&t.file(path))
        .header("if-match", &etag)
        .body("the second winner")
        .send()
        .await
        .expect(200);
    tx.send(slow.slice(64 << 10..)).await.unwrap();
    drop(tx);
    loser
        .await
        .unwrap()
        .expect_problem(412, "precondition_failed");
    check(b"the second winner", 2, 1).await;

    // 3. Through the S3 door at a spoke (a presigned PUT, its body slow)
    // against a delete at the hub.
    let key = t.new_s3_key().await;
    let url = ferry_tests::scenarios::presigned(
        &ams.url(),
        key["access_key_id"].as_str().unwrap(),
        key["secret_access_key"].as_str().unwrap(),
        "put_object",
        "local",
        path,
    );
    let (req, tx) = Api::new(ams.url()).put(&url).body_channel(slow.len());
    let loser = tokio::spawn(req.send());
    tx.send(slow.slice(..64 << 10)).await.unwrap();
    active(ams.metrics_url(), "ferry_spoke_active_transfers").await;
    via_hub.delete(&t.file(path)).send().await.expect(204);
    tx.send(slow.slice(64 << 10..)).await.unwrap();
    drop(tx);
    let lost = loser.await.unwrap().expect(409);
    let body = String::from_utf8_lossy(&lost.body).into_owned();
    assert!(
        body.contains("<Code>ConditionalRequestConflict</Code>"),
        "{body}"
    );
    via_hub.get(&t.file(path)).send().await.expect(404);
    assert_eq!(events_of(&via_hub, path, "deleted").await, 2);

    // Nothing of the losers is left staged, and a writer that begins now
    // goes through.
    let staged = std::fs::read_dir(hub.data_dir.join("alpha/.ferry-partial"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(staged, 0, "the losers' content is not left staged");
    via(fra.url())
        .put(&t.file(path))
        .body(slow.clone())
        .send()
        .await
        .expect(201);
    check(&slow, 3, 1).await;
}

/// Bursts of overwrites through a spoke restarted just before each, as the
/// benchmark's memory scenario does: the restarted spoke replays the
/// completion reports it had not delivered while the next burst writes the
/// same paths. Every overwrite must succeed (no `409 write_conflict`).
#[tokio::test]
async fn overwrites_right_after_a_spoke_restart_never_conflict() {
    let hub = Hub::start();
    let mut spoke = Spoke::start(&hub, "fra1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let body = Bytes::from(pattern(256 << 10, 7));
    for round in 0..6 {
        let api = Api::new(spoke.url()).as_token(&t.key);
        let mut puts = tokio::task::JoinSet::new();
        for i in 0..32 {
            let req = api
                .put(&t.file(&format!("burst/{i}.bin")))
                .body(body.clone());
            puts.spawn(async move {
                let resp = req.send().await;
                (
                    resp.status,
                    String::from_utf8_lossy(&resp.body).into_owned(),
                )
            });
        }
        while let Some(done) = puts.join_next().await {
            let (status, text) = done.unwrap();
            assert!(
                status == 200 || status == 201,
                "round {round}: {status} {text}\n{}",
                ferry_tests::tail(&spoke.log(), 40)
            );
        }
        // At once, as the benchmark does: reports may still be queued.
        spoke.restart();
    }
}
