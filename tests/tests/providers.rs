//! Network providers against real servers the tests start: moto's S3,
//! Azurite's blob service, fake-gcs-server's GCS, rclone's WebDAV. Through
//! the hub and through a
//! spoke: a 300 MiB upload that goes in parts, downloads and ranges with
//! matching SHA-256, listing, copy, move, delete, digest mismatches that
//! leave nothing behind, and wrong credentials refused at creation. S3
//! also behind a fault proxy: 503s, delays, connections cut mid-body.

use std::time::Duration;

use bytes::Bytes;
use ferry_tests::fault_proxy::FaultProxy;
use ferry_tests::providers::StorageServer;
use ferry_tests::scenarios::{self, Tenant, remote_tenant};
use ferry_tests::{Api, Hub, HubOptions, Spoke, metric, pattern, repr_digest, sha256};
use http_body_util::BodyExt as _;
use serde_json::json;

const MIB: usize = 1 << 20;

fn hub() -> Hub {
    Hub::start_with(HubOptions {
        extra_toml: "[providers.remote]\nallow_private_endpoints = true\n".into(),
        ..HubOptions::default()
    })
}

/// The same tenant, calling `base` instead.
fn at(t: &Tenant, base: &str) -> Tenant {
    Tenant {
        api: Api::new(base).as_token(&t.key),
        ..t.clone()
    }
}

/// Reads a whole response body and its SHA-256; `Err` if it is cut.
async fn read_all(
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<(usize, Vec<u8>), String> {
    let mut body = resp.into_body();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            n += data.len();
            ctx.update(&data);
        }
    }
    Ok((n, ctx.finish().as_ref().to_vec()))
}

/// Uploads `size` bytes through `up` (streamed in 1 MiB pieces, with a
/// `Repr-Digest`), downloads them whole through `down` and a middle range
/// through `up`, and checks every byte by SHA-256.
async fn round_trip(up: &Tenant, down: &Tenant, path: &str, size: usize) {
    let data = Bytes::from(pattern(size, size as u64));
    let put = up
        .api
        .put(&up.file(path))
        .header("repr-digest", repr_digest(&data))
        .body_chunked(data.clone(), MIB)
        .send()
        .await
        .expect(201);
    let crc = put.header("x-ferry-checksum-crc64nvme").expect("a CRC");
    let resp = down.api.get(&down.file(path)).send_raw().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ferry-checksum-crc64nvme"], crc.as_str());
    let (n, digest) = read_all(resp).await.expect("the download is whole");
    assert_eq!((n, digest), (size, sha256(&data)));
    let (from, to) = (size / 3, (size / 3 + 5 * MIB + 17).min(size - 1));
    let part = up
        .api
        .get(&up.file(path))
        .header("range", format!("bytes={from}-{to}"))
        .send()
        .await
        .expect(206);
    assert_eq!(sha256(&part.body), sha256(&data[from..=to]));
    let head = down.api.head(&down.file(path)).send().await.expect(200);
    assert_eq!(head.header("x-ferry-checksum-crc64nvme"), Some(crc));
}

/// The suite for one provider: a hub, a spoke, a tenant whose connection
/// `local` is on `server`.
async fn suite(server: &StorageServer, place: &str) {
    suite_with(server, place, 300 * MIB, 20 * MIB).await;
}

/// The suite with a `large` upload through the spoke and a `small` one
/// through the hub.
async fn suite_with(server: &StorageServer, place: &str, large: usize, small: usize) {
    ferry_tests::install_crypto_provider();
    let hub = hub();
    let spoke = Spoke::start(&hub, "fra1");
    let t = remote_tenant(&hub.url(), "alpha", server.kind, server.config(place, None)).await;
    let via_spoke = at(&t, &spoke.url());

    // `large` (300 MiB) up through the spoke (8 MiB parts where the
    // provider takes parts), down through the hub; the hub carried none of
    // the spoke's bytes.
    let hub_metrics = hub.metrics_url();
    let hub_bytes = async || {
        metric(
            &hub_metrics,
            "ferry_content_bytes_total",
            &[("direction", "upload")],
        )
        .await
    };
    let before = hub_bytes().await;
    round_trip(&via_spoke, &t, "big/300.bin", large).await;
    assert_eq!(
        hub_bytes().await,
        before,
        "the spoke streamed the upload itself"
    );
    // `small` (20 MiB) up through the hub, down through the spoke.
    round_trip(&t, &via_spoke, "big/20.bin", small).await;

    scenarios::range_reads(&via_spoke).await;
    scenarios::copy_and_move(&via_spoke).await;
    scenarios::digest_mismatch_leaves_nothing(&via_spoke).await;
    scenarios::listing_pagination(&t).await;
    scenarios::folder_deletion(&via_spoke).await;
    // A second account, under another root of the same place, through the hub.
    let beta = remote_tenant(
        &hub.url(),
        "beta",
        server.kind,
        server.config_at(place, "/beta/", None),
    )
    .await;
    scenarios::digest_mismatch_leaves_nothing(&beta).await;
    scenarios::copy_and_move(&beta).await;

    // Delete, and it is gone everywhere.
    via_spoke
        .api
        .delete(&t.file("big/20.bin"))
        .send()
        .await
        .expect(204);
    t.api
        .get(&t.file("big/20.bin"))
        .send()
        .await
        .expect_problem(404, "not_found");
    via_spoke
        .api
        .head(&t.file("big/20.bin"))
        .send()
        .await
        .expect(404);
    // Credentials never come back in clear.
    let shown = t
        .api
        .get("/v1/connections/local")
        .send()
        .await
        .expect(200)
        .json();
    let text = shown.to_string();
    for secret in [
        "ferrytestsecret",
        ferry_tests::providers::AZURITE_KEY,
        "\"secret\"",
    ] {
        assert!(!text.contains(secret), "a credential is shown: {shown}");
    }
}

/// A new connection with `config` for `provider` on `hub`: its status and
/// problem body.
async fn create(hub: &Hub, provider: &str, config: serde_json::Value) -> (u16, serde_json::Value) {
    let t = scenarios::tenant(&hub.url(), &format!("t{}", rand_suffix()), &hub.data_dir).await;
    let r = t
        .api
        .post("/v1/connections")
        .json(&json!({ "name": "other", "provider": provider, "config": config }))
        .send()
        .await;
    (r.status.as_u16(), r.json())
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test]
async fn s3_through_hub_and_spoke() {
    let server = StorageServer::s3("ferry-test");
    suite(&server, "ferry-test").await;
    // A bucket that does not exist is a clear 4xx at creation.
    let hub = hub();
    let (status, p) = create(&hub, "s3", server.config("no-such-bucket", None)).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (422, Some("invalid_provider_config")),
        "{p}"
    );
    assert!(
        !p.to_string().contains("NoSuchBucket"),
        "the provider's answer stays in the log: {p}"
    );
    // Unknown keys are refused; so are private endpoints unless allowed.
    let mut bad = server.config("ferry-test", None);
    bad["colour"] = json!("red");
    assert_eq!(create(&hub, "s3", bad).await.0, 422);
    let strict = Hub::start();
    let (status, p) = create(&strict, "s3", server.config("ferry-test", None)).await;
    assert_eq!(status, 422, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("internal address"),
        "{p}"
    );
}

#[tokio::test]
async fn azure_blob_through_hub_and_spoke() {
    let server = StorageServer::azblob("ferry-test");
    suite(&server, "ferry-test").await;
    let hub = hub();
    let mut wrong = server.config("ferry-test", None);
    wrong["account_key"] = json!("d3Jvbmcga2V5IGZvciB0aGUgdGVzdA==");
    let (status, p) = create(&hub, "azblob", wrong).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (403, Some("provider_rejected")),
        "{p}"
    );
}

/// GCS, against fake-gcs-server with no credentials (the emulator takes
/// none): allowed only where the operator allows private endpoints. The
/// emulator has no XML-API multipart uploads, which OpenDAL writes objects
/// larger than a part (8 MiB) with: the files here fit in one request.
#[tokio::test]
async fn gcs_through_hub_and_spoke() {
    let server = StorageServer::gcs("ferry-test");
    suite_with(&server, "ferry-test", 7 * MIB, 3 * MIB).await;
    let strict = Hub::start();
    let (status, p) = create(&strict, "gcs", server.config("ferry-test", None)).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (422, Some("invalid_provider_config")),
        "{p}"
    );
}

#[tokio::test]
async fn webdav_through_hub_and_spoke() {
    let server = StorageServer::webdav("ferry", "secret");
    suite(&server, "tenant-a").await;
    let hub = hub();
    let mut wrong = server.config("tenant-a", None);
    wrong["password"] = json!("not-the-password");
    let (status, p) = create(&hub, "webdav", wrong).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (403, Some("provider_rejected")),
        "{p}"
    );
}

/// Puts `data` at `path` through `t`; the answer's status.
async fn put(t: &Tenant, path: &str, data: &Bytes) -> ferry_tests::Resp {
    t.api
        .put(&t.file(path))
        .header("repr-digest", repr_digest(data))
        .body_chunked(data.clone(), MIB)
        .send()
        .await
}

/// Downloads `path` through `t` whole; `Err` if the body is cut.
async fn get(t: &Tenant, path: &str) -> Result<(usize, Vec<u8>), String> {
    let resp = t
        .api
        .get(&t.file(path))
        .send_raw()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("status {}", resp.status()));
    }
    read_all(resp).await
}

#[tokio::test]
async fn s3_faults_complete_correctly_or_fail_cleanly() {
    ferry_tests::install_crypto_provider();
    let server = StorageServer::s3("faults");
    let proxy = FaultProxy::start(server.addr).await;
    // No scans: every request the proxy sees is one of the test's.
    let hub = Hub::start_with(HubOptions {
        extra_toml:
            "[providers.remote]\nallow_private_endpoints = true\n[index]\nenabled = false\n".into(),
        ..HubOptions::default()
    });
    let spoke = Spoke::start(&hub, "fra1");
    let t = remote_tenant(
        &hub.url(),
        "alpha",
        "s3",
        server.config("faults", Some(&proxy.url())),
    )
    .await;
    for t in [t.clone(), at(&t, &spoke.url())] {
        let v1 = Bytes::from(pattern(20 * MIB, 1));
        let v2 = Bytes::from(pattern(20 * MIB, 2));
        assert!(put(&t, "f/obj.bin", &v1).await.status.is_success());

        // A few 503s with Retry-After: retried, and the upload completes.
        proxy.fail_next(3, 1);
        put(&t, "f/obj.bin", &v2).await.expect(200);
        assert_eq!(get(&t, "f/obj.bin").await.unwrap(), (v2.len(), sha256(&v2)));

        // Slow answers: slower, but whole.
        proxy.delay(Duration::from_millis(150));
        assert!(put(&t, "f/slow.bin", &v1).await.status.is_success());
        assert_eq!(
            get(&t, "f/slow.bin").await.unwrap(),
            (v1.len(), sha256(&v1))
        );
        proxy.delay(Duration::ZERO);

        // A part cut in the middle: sent again.
        proxy.cut_next_request_after(3 * MIB);
        assert!(put(&t, "f/cut-up.bin", &v1).await.status.is_success());
        assert_eq!(
            get(&t, "f/cut-up.bin").await.unwrap(),
            (v1.len(), sha256(&v1))
        );

        // A download cut in the middle: whole and correct, or an error the
        // client sees; never a short body that looks complete.
        proxy.cut_next_response_after(5 * MIB);
        match get(&t, "f/cut-up.bin").await {
            Ok(got) => assert_eq!(got, (v1.len(), sha256(&v1))),
            Err(e) => eprintln!("the cut download failed visibly: {e}"),
        }

        // The provider down for longer than the retries last: a clean 503
        // with the provider's Retry-After, and the earlier version stays.
        proxy.fail_next(1000, 7);
        let r = put(&t, "f/obj.bin", &v1)
            .await
            .expect_problem(503, "provider_unavailable");
        assert_eq!(
            r.header("retry-after").as_deref(),
            Some("7"),
            "{:?}",
            r.body
        );
        assert!(
            r.json()["detail"].as_str().unwrap().starts_with("s3:"),
            "the provider is named"
        );
        put(&t, "f/new.bin", &v1)
            .await
            .expect_problem(503, "provider_unavailable");
        proxy.fail_next(0, 0);
        assert_eq!(get(&t, "f/obj.bin").await.unwrap(), (v2.len(), sha256(&v2)));
        t.api
            .get(&t.file("f/new.bin"))
            .send()
            .await
            .expect_problem(404, "not_found");
    }
    let (seen, injected) = proxy.counts();
    assert!(
        injected >= 10 && seen > injected,
        "{seen} requests, {injected} faults"
    );
}

/// The hub stops between asking S3 for a change and recording it: S3 holds
/// the change, the store not. The hub recorded its intent first, and after
/// its restart settles it by what S3 holds: the upload's metadata and
/// event appear, and a delete's too, each once; a change S3 never made is
/// dropped.
#[tokio::test]
async fn changes_whose_record_was_lost_are_recorded_from_what_s3_holds() {
    ferry_tests::install_crypto_provider();
    let server = StorageServer::s3("intents");
    let proxy = FaultProxy::start(server.addr).await;
    // No scans: nothing but the intents can record what S3 holds.
    let mut hub = Hub::start_with(HubOptions {
        extra_toml:
            "[providers.remote]\nallow_private_endpoints = true\n[index]\nenabled = false\n".into(),
        ..HubOptions::default()
    });
    let t = remote_tenant(
        &hub.url(),
        "alpha",
        "s3",
        server.config("intents", Some(&proxy.url())),
    )
    .await;
    let kept = Bytes::from(pattern(256 * 1024, 4));
    put(&t, "lost/kept.bin", &kept).await.expect(201);
    let data = Bytes::from(pattern(256 * 1024, 3));
    let events = || async {
        let feed = t.api.get("/v1/events").send().await.expect(200).json();
        feed["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["type"].as_str().unwrap(),
                    e["path"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };

    // Each change is made at S3, and the hub killed before S3's answer.
    for (method, change) in [
        (http::Method::PUT, "upload"),
        (http::Method::DELETE, "delete"),
    ] {
        let before = proxy.counts().1;
        proxy.hold_answers(method.clone(), Duration::from_secs(60));
        let request = match change {
            "upload" => t.api.put(&t.file("lost/record.bin")).body(data.clone()),
            _ => t.api.delete(&t.file("lost/kept.bin")),
        };
        let pending = tokio::spawn(request.send_raw());
        assert!(
            ferry_tests::eventually(Duration::from_secs(10), async || proxy.counts().1 > before)
                .await,
            "S3 never got the {change}"
        );
        hub.kill();
        proxy.release_answers();
        assert!(pending.await.unwrap().is_err(), "the {change} was answered");
        hub.restart();
    }
    let settled = |outcome: &'static str| {
        let url = hub.metrics_url();
        async move { metric(&url, "ferry_intents_settled_total", &[("outcome", outcome)]).await }
    };
    // (Settled by the restarted hub, or by the one between if it lived
    // long enough: the events tell, whichever did.)
    let want = [
        "created lost/kept.bin",
        "created lost/record.bin",
        "deleted lost/kept.bin",
    ];
    assert!(
        ferry_tests::eventually(Duration::from_secs(30), async || events().await == want).await,
        "{:?}\n{}",
        events().await,
        hub.log()
    );
    let file = t
        .api
        .get(&t.file("lost/record.bin"))
        .send()
        .await
        .expect(200);
    assert_eq!(file.body.len(), data.len());
    let listed = t
        .api
        .get("/v1/connections/local/list/lost")
        .send()
        .await
        .expect(200)
        .json();
    let entry = &listed["entries"][0];
    assert_eq!(entry["path"], "lost/record.bin", "{listed}");
    assert!(
        entry["checksums"]["crc64nvme"].is_string(),
        "the metadata is ferry's: {entry}"
    );
    t.api
        .get(&t.file("lost/kept.bin"))
        .send()
        .await
        .expect_problem(404, "not_found");

    // An upload S3 refused for longer than the retries last: the client
    // is told, and the intent is dropped once a minute old (a copy may
    // take that long); nothing is recorded.
    proxy.fail_after(http::Method::PUT, 0, 1000);
    put(&t, "lost/never.bin", &data)
        .await
        .expect_problem(503, "provider_unavailable");
    proxy.fail_after(http::Method::PUT, 0, 0);
    assert!(
        ferry_tests::eventually(Duration::from_secs(90), async || settled("dropped").await
            == 1.0)
        .await,
        "{}",
        hub.log()
    );
    t.api
        .get(&t.file("lost/never.bin"))
        .send()
        .await
        .expect_problem(404, "not_found");
    assert_eq!(events().await.len(), 3);
}

/// An upload whose provider write fails after its intent was recorded
/// gives the intent up at once (at the hub, and through a spoke, which
/// tells the hub): the path is free for the next writer at once, not
/// held with `409 write_conflict` until the intent is a minute old.
#[tokio::test]
async fn a_write_that_failed_at_the_provider_frees_its_path_at_once() {
    ferry_tests::install_crypto_provider();
    let server = StorageServer::s3("abandon");
    let proxy = FaultProxy::start(server.addr).await;
    let hub = hub();
    let spoke = Spoke::start(&hub, "fra1");
    let t = remote_tenant(
        &hub.url(),
        "alpha",
        "s3",
        server.config("abandon", Some(&proxy.url())),
    )
    .await;
    for (node, base) in [("hub", hub.url()), ("spoke", spoke.url())] {
        let t = at(&t, &base);
        let path = format!("{node}.bin");
        let data = Bytes::from(pattern(64 * 1024, 7));
        // Every try of the write (ferry's retries included) gets a 503.
        proxy.fail_after(
            http::Method::PUT,
            0,
            ferry_common::provider::remote::RETRIES + 1,
        );
        let dropped = async || {
            metric(
                &hub.metrics_url(),
                "ferry_intents_settled_total",
                &[("outcome", "dropped")],
            )
            .await
        };
        let before = dropped().await;
        let failed = put(&t, &path, &data).await;
        assert!(failed.status.is_server_error(), "{failed:?}");
        proxy.fail_after(http::Method::PUT, 0, 0);
        // The next writer goes through once the hub has looked at what S3
        // holds (nothing), well within the minute the intent would hold
        // the path otherwise.
        let mut conflicts = 0;
        let through = ferry_tests::eventually(Duration::from_secs(15), async || {
            let r = put(&t, &path, &data).await;
            conflicts += usize::from(r.status == 409);
            r.status == 201
        })
        .await;
        assert!(
            through,
            "the path stayed held ({conflicts} conflicts)\n{}",
            hub.log()
        );
        // (Its intent was recorded, and dropped: S3 holds nothing of it.)
        assert!(dropped().await > before, "{}", hub.log());
        assert_eq!(
            t.api.get(&t.file(&path)).send().await.expect(200).body,
            data
        );
    }
}
