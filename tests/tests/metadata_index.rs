//! The metadata index: listings from it, and changes made directly in the
//! provider (not through ferry) found and reported in the feed with
//! origin `provider` — on a folder through the kernel's notifications, on
//! moto's S3 (written with the AWS CLI), Azurite (signed requests), a
//! WebDAV server and fake-gcs-server (written with curl) by polling; and a
//! walk of a large folder that changes under it; and listings asked of the
//! provider before the index is complete.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ferry_tests::client::Api;
use ferry_tests::hub::{Hub, HubOptions};
use ferry_tests::providers::StorageServer;
use ferry_tests::scenarios::Tenant;
use serde_json::{Value, json};

/// An account with one connection `local` of `provider`, scanned every
/// `scan` seconds if given.
async fn account(
    hub: &Hub,
    name: &str,
    provider: &str,
    config: Value,
    scan: Option<u64>,
) -> Tenant {
    let mut body = json!({ "name": "local", "provider": provider, "config": config });
    if let Some(s) = scan {
        body["scan_interval_secs"] = json!(s);
    }
    let t = ferry_tests::scenarios::tenant_with(&hub.url(), name, body).await;
    let shown = t
        .api
        .get("/v1/connections/local")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(shown["scan_interval_secs"].as_u64(), scan);
    t
}

/// Waits (up to `limit`) until the connection's listings come from its
/// index: its first scan is complete.
async fn index_complete(api: &Api, limit: Duration) {
    let started = Instant::now();
    loop {
        let page = api
            .get("/v1/connections/local/list")
            .send()
            .await
            .expect(200);
        assert_eq!(
            page.header("x-ferry-index").as_deref(),
            page.json()["index"].as_str()
        );
        if page.json()["index"] == "complete" {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "the first scan did not complete in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the feed after `cursor` until an event matches (up to `limit`);
/// returns it and the new cursor.
async fn next_event(
    api: &Api,
    cursor: &mut String,
    limit: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let page = api
            .get(&format!("/v1/events?cursor={cursor}"))
            .send()
            .await
            .expect(200)
            .json();
        *cursor = page["next_cursor"].as_str().unwrap().to_owned();
        for e in page["events"].as_array().unwrap() {
            if want(e) {
                return e.clone();
            }
            seen.push(e.clone());
        }
        assert!(
            started.elapsed() < limit,
            "no such event within {limit:?}; saw {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn is(kind: &'static str, path: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["type"] == kind && e["path"] == path
}

/// Lists `dir` page by page (1,000 a page) from the index, handing each
/// page's entries to `page`; returns how many pages.
async fn walk(api: &Api, dir: &str, mut page: impl AsyncFnMut(&[Value])) -> usize {
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("/v1/connections/local/list/{dir}?limit=1000&cursor={c}"),
            None => format!("/v1/connections/local/list/{dir}?limit=1000"),
        };
        let got = api.get(&url).send().await.expect(200).json();
        assert_eq!(got["index"], "complete");
        page(got["entries"].as_array().unwrap()).await;
        pages += 1;
        assert!(pages <= 100, "the walk does not end");
        match got["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return pages,
        }
    }
}

async fn names(api: &Api, dir: &str) -> Vec<String> {
    let page = api
        .get(&format!("/v1/connections/local/list/{dir}?limit=1000"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(page["index"], "complete");
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Files created, changed and deleted directly in an `fs` connection's
/// folder reach the feed (origin `provider`) well within a second each,
/// through the kernel's notifications, and the listings; ferry's own
/// writes are reported once, as ferry's.
#[tokio::test]
async fn a_folder_changed_outside_ferry_reaches_the_feed_within_a_second() {
    ferry_tests::install_crypto_provider();
    // Full scans an hour apart: what is found within the test is found by
    // the notifications.
    let hub = Hub::start_with(HubOptions {
        extra_toml: "[index]\nscan_interval_secs = 3600\n".into(),
        ..HubOptions::default()
    });
    let root = hub.data_dir.join("alpha");
    std::fs::create_dir_all(root.join("old")).unwrap();
    std::fs::write(root.join("old/before.txt"), b"there before").unwrap();
    let a = account(&hub, "alpha", "fs", json!({ "root": root }), None).await;
    index_complete(&a.api, Duration::from_secs(20)).await;
    assert_eq!(names(&a.api, "").await, ["old"]);
    assert_eq!(names(&a.api, "old").await, ["before.txt"]);
    // The first scan found what was there: no event for it.
    let mut cursor = "s0".to_owned();
    let feed = a.api.get("/v1/events").send().await.expect(200).json();
    assert_eq!(feed["events"], json!([]), "a first scan makes no events");

    let mut lags = Vec::new();
    // Makes a change outside ferry, then waits for its event (origin
    // `provider`, with `size`) and notes how long it took.
    let mut step =
        async |change: &dyn Fn(), kind: &'static str, path: &'static str, size: Option<i64>| {
            let t = Instant::now();
            change();
            let e = next_event(&a.api, &mut cursor, Duration::from_secs(10), is(kind, path)).await;
            lags.push(t.elapsed().as_millis());
            assert_eq!(
                (e["origin"].as_str(), e["size"].as_i64()),
                (Some("provider"), size),
                "{e}"
            );
        };
    let write = |path: &str, data: &[u8]| std::fs::write(root.join(path), data).unwrap();
    let nested = || {
        std::fs::create_dir_all(root.join("new/deep")).unwrap();
        write("new/deep/a.txt", b"12345");
    };
    step(&nested, "created", "new/deep/a.txt", Some(5)).await;
    assert_eq!(names(&a.api, "new/deep").await, ["a.txt"]);

    step(
        &|| write("new/deep/a.txt", b"1234567"),
        "updated",
        "new/deep/a.txt",
        Some(7),
    )
    .await;
    let listed = a
        .api
        .get("/v1/connections/local/list/new/deep")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(listed["entries"][0]["size"], 7);
    // The listing's tag is the one a GET of the file answers with.
    let got = a
        .api
        .get("/v1/connections/local/files/new/deep/a.txt")
        .send()
        .await
        .expect(200);
    assert_eq!(
        got.header("etag").as_deref(),
        listed["entries"][0]["etag"].as_str()
    );

    // Renamed in its folder: one move, from the old name.
    let rename =
        || std::fs::rename(root.join("new/deep/a.txt"), root.join("new/deep/b.txt")).unwrap();
    step(&rename, "moved", "new/deep/b.txt", Some(7)).await;
    let feed = a
        .api
        .get("/v1/events?limit=1000")
        .send()
        .await
        .expect(200)
        .json();
    let moved = feed["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (moved["type"].as_str(), moved["from"].as_str()),
        (Some("moved"), Some("new/deep/a.txt"))
    );
    assert_eq!(names(&a.api, "new/deep").await, ["b.txt"]);

    let remove = || std::fs::remove_file(root.join("old/before.txt")).unwrap();
    step(&remove, "deleted", "old/before.txt", Some(12)).await;
    assert!(names(&a.api, "old").await.is_empty());

    // A whole folder removed: a deletion for each file in it.
    let remove_all = || std::fs::remove_dir_all(root.join("new")).unwrap();
    step(&remove_all, "deleted", "new/deep/b.txt", Some(7)).await;
    assert_eq!(names(&a.api, "").await, ["old"]);
    println!("fs: from the change to its event, ms: {lags:?}");

    // ferry's own write: one event, ferry's, even though the kernel tells
    // the hub of it too and the folder is compared again.
    let folder_scans = || async {
        ferry_tests::metric(
            &hub.metrics_url(),
            "ferry_index_scans_total",
            &[("kind", "folder"), ("result", "ok")],
        )
        .await
    };
    let before = folder_scans().await;
    a.api
        .put("/v1/connections/local/files/mine.txt")
        .body(&b"by ferry"[..])
        .send()
        .await
        .expect(201);
    let e = next_event(
        &a.api,
        &mut cursor,
        Duration::from_secs(10),
        is("created", "mine.txt"),
    )
    .await;
    assert_eq!(e["origin"], "ferry");
    // Wait for the folder's look that the write set off, then the settle
    // time's second look, and see nothing more reported.
    let started = Instant::now();
    while folder_scans().await < before + 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no folder scan followed the write"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let settled = folder_scans().await;
    let started = Instant::now();
    while folder_scans().await < settled + 1.0 && started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let rest = a
        .api
        .get(&format!("/v1/events?cursor={cursor}"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(
        rest["events"],
        json!([]),
        "ferry's write was reported again"
    );
    assert_eq!(names(&a.api, "").await, ["mine.txt", "old"]);
    assert!(
        ferry_tests::metric(
            &hub.metrics_url(),
            "ferry_index_provider_changes_total",
            &[("kind", "deleted")]
        )
        .await
            >= 2.0
    );
}

/// Objects written, replaced and removed in moto's S3 with the AWS CLI,
/// and files on a WebDAV server with curl, are found by the scans
/// (interval 1 s) and reported.
#[tokio::test]
async fn s3_and_webdav_changed_outside_ferry_reach_the_feed_by_polling() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start_with(HubOptions {
        extra_toml: "[providers.remote]\nallow_private_endpoints = true\n".into(),
        ..HubOptions::default()
    });
    let s3 = StorageServer::s3("watched");
    let dav = StorageServer::webdav("ferry", "secret");
    std::fs::create_dir_all(dav.dir().join("share")).unwrap();
    let on_s3 = account(&hub, "alpha", "s3", s3.config("watched", None), Some(1)).await;
    let on_dav = account(&hub, "beta", "webdav", dav.config("share", None), Some(1)).await;
    index_complete(&on_s3.api, Duration::from_secs(20)).await;
    index_complete(&on_dav.api, Duration::from_secs(20)).await;

    let aws = |args: &[&str]| {
        let aws = std::path::Path::new("/usr/bin/aws");
        let out =
            ferry_tests::tools::aws_cli(aws, &s3.url(), s3.dir(), "ferrytest", "ferrytestsecret")
                .args(args)
                .output()
                .expect("aws runs");
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let local = s3.dir().join("upload.bin");
    let mut cursor = "s0".to_owned();
    let limit = Duration::from_secs(15);
    let mut lags = Vec::new();
    // Runs the AWS CLI, then waits for the event it should make.
    let mut step = async |args: &[&str], kind: &'static str| {
        let t = Instant::now();
        aws(args);
        let e = next_event(&on_s3.api, &mut cursor, limit, is(kind, "in/bucket.bin")).await;
        lags.push(t.elapsed().as_millis());
        assert_eq!(e["origin"], "provider", "{e}");
        e
    };
    let cp = [
        "s3",
        "cp",
        local.to_str().unwrap(),
        "s3://watched/in/bucket.bin",
    ];
    std::fs::write(&local, vec![7u8; 1000]).unwrap();
    let e = step(&cp, "created").await;
    assert_eq!(e["size"], 1000);
    // Same size, other content: S3's tag tells.
    std::fs::write(&local, vec![8u8; 1000]).unwrap();
    step(&cp, "updated").await;
    step(&["s3", "rm", "s3://watched/in/bucket.bin"], "deleted").await;
    // The folder goes with its last object, by the same scan or the next
    // (one may have listed the root before the removal and the folder
    // after it).
    assert!(
        ferry_tests::eventually(limit, async || names(&on_s3.api, "").await.is_empty()).await,
        "the folder went with its last object"
    );
    // Listed with S3's own tag, as a GET of it answers.
    aws(&cp);
    // (Until the next scan finds it, the folder is not there: 404.)
    let started = Instant::now();
    let listed = loop {
        let page = on_s3.api.get("/v1/connections/local/list/in").send().await;
        // (A scan writes a new folder, then what is in it.)
        if page.status == 200
            && page.json()["entries"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        {
            break page.json();
        }
        assert!(started.elapsed() < limit, "the object did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let got = on_s3
        .api
        .get("/v1/connections/local/files/in/bucket.bin")
        .send()
        .await;
    assert_eq!(
        got.expect(200).header("etag").as_deref(),
        listed["entries"][0]["etag"].as_str()
    );
    println!("s3 (interval 1 s): from the change to its event, ms: {lags:?}");

    // WebDAV, written with curl.
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-f", "-u", "ferry:secret"])
            .args(args)
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let url = format!("{}/share/dav.txt", dav.url());
    let mut cursor = "s0".to_owned();
    curl(&["-X", "PUT", "--data-binary", "hello", &url]);
    let e = next_event(&on_dav.api, &mut cursor, limit, is("created", "dav.txt")).await;
    assert_eq!(
        (e["origin"].as_str(), e["size"].as_i64()),
        (Some("provider"), Some(5))
    );
    curl(&["-X", "PUT", "--data-binary", "hello, world", &url]);
    next_event(&on_dav.api, &mut cursor, limit, is("updated", "dav.txt")).await;
    curl(&["-X", "DELETE", &url]);
    next_event(&on_dav.api, &mut cursor, limit, is("deleted", "dav.txt")).await;
    assert!(names(&on_dav.api, "").await.is_empty());
}

/// A walk of a 20,000-entry folder, page by page (1,000 a page), returns
/// each name that stays exactly once, while another client adds 1,000
/// names and removes 1,000 others through ferry during the walk.
#[tokio::test]
async fn a_walk_returns_each_name_once_while_the_folder_changes() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let root = hub.data_dir.join("alpha");
    let big = root.join("big");
    std::fs::create_dir_all(&big).unwrap();
    const N: usize = 20_000;
    for i in 0..N {
        std::fs::write(big.join(format!("f{i:05}")), b"").unwrap();
    }
    let a = account(&hub, "alpha", "fs", json!({ "root": root }), None).await;
    index_complete(&a.api, Duration::from_secs(60)).await;

    // The other client: removes f00000, f00002, … (every even name below
    // 2,000) and adds g00000… interleaved, 1,000 of each.
    let other = a.api.clone();
    let churn = tokio::spawn(async move {
        for i in 0..1000 {
            other
                .delete(&format!("/v1/connections/local/files/big/f{:05}", 2 * i))
                .send()
                .await
                .expect(204);
            other
                .put(&format!("/v1/connections/local/files/big/e{i:05}"))
                .body(&b"x"[..])
                .send()
                .await
                .expect(201);
        }
    });
    let mut seen: HashMap<String, usize> = HashMap::new();
    let pages = walk(&a.api, "big", async |page| {
        for e in page {
            *seen
                .entry(e["name"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        // Let the other client move between pages.
        tokio::task::yield_now().await;
    })
    .await;
    churn.await.unwrap();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "names returned twice: {twice:?}");
    let removed: HashSet<String> = (0..1000).map(|i| format!("f{:05}", 2 * i)).collect();
    for i in 0..N {
        let name = format!("f{i:05}");
        if !removed.contains(&name) {
            assert!(
                seen.contains_key(&name),
                "{name}, never removed, was not returned"
            );
        }
    }
    println!("walked {pages} pages, {} names", seen.len());
    // Afterwards the folder lists exactly what is there.
    let mut after = 0;
    walk(&a.api, "big", async |page| after += page.len()).await;
    assert_eq!(after, N, "1,000 removed, 1,000 added");
}

/// A hub with an account whose connection `local` is `server`'s place
/// `watched`, scanned every second, its first scan complete.
async fn watched(server: &StorageServer) -> (Hub, Tenant) {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start_with(HubOptions {
        extra_toml: "[providers.remote]\nallow_private_endpoints = true\n".into(),
        ..HubOptions::default()
    });
    let config = server.config("watched", None);
    let a = account(&hub, "alpha", server.kind, config, Some(1)).await;
    index_complete(&a.api, Duration::from_secs(20)).await;
    (hub, a)
}

/// Objects written, replaced and removed in fake-gcs-server directly
/// (its JSON API, with curl) are found by the scans and reported.
#[tokio::test]
async fn gcs_changed_outside_ferry_reaches_the_feed_by_polling() {
    let gcs = StorageServer::gcs("watched");
    let (_hub, a) = watched(&gcs).await;
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-f"])
            .args(args)
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let upload = format!(
        "{}/upload/storage/v1/b/watched/o?uploadType=media&name=in%2Fgcs.txt",
        gcs.url()
    );
    let limit = Duration::from_secs(15);
    let mut cursor = "s0".to_owned();
    curl(&["-X", "POST", "--data-binary", "first", &upload]);
    let e = next_event(&a.api, &mut cursor, limit, is("created", "in/gcs.txt")).await;
    assert_eq!(
        (e["origin"].as_str(), e["size"].as_i64()),
        (Some("provider"), Some(5))
    );
    assert_eq!(names(&a.api, "in").await, ["gcs.txt"]);
    curl(&["-X", "POST", "--data-binary", "again", &upload]);
    next_event(&a.api, &mut cursor, limit, is("updated", "in/gcs.txt")).await;
    curl(&[
        "-X",
        "DELETE",
        &format!("{}/storage/v1/b/watched/o/in%2Fgcs.txt", gcs.url()),
    ]);
    next_event(&a.api, &mut cursor, limit, is("deleted", "in/gcs.txt")).await;
    // The folder goes with its last object, by this scan or the next.
    assert!(
        ferry_tests::eventually(limit, async || names(&a.api, "").await.is_empty()).await,
        "the folder went with its last object"
    );
}

/// Blobs written, replaced and removed in Azurite directly (signed
/// requests of its own, as another application sends them) are found by
/// the scans and reported.
#[tokio::test]
async fn azure_blob_changed_outside_ferry_reaches_the_feed_by_polling() {
    let az = StorageServer::azblob("watched");
    let (_hub, a) = watched(&az).await;
    let limit = Duration::from_secs(15);
    let mut cursor = "s0".to_owned();
    assert_eq!(az.azure_put_blob("watched", "in/az.txt", b"first"), 201);
    let e = next_event(&a.api, &mut cursor, limit, is("created", "in/az.txt")).await;
    assert_eq!(
        (e["origin"].as_str(), e["size"].as_i64()),
        (Some("provider"), Some(5))
    );
    assert_eq!(names(&a.api, "in").await, ["az.txt"]);
    // Same size, other content: the blob's ETag tells.
    assert_eq!(az.azure_put_blob("watched", "in/az.txt", b"again"), 201);
    next_event(&a.api, &mut cursor, limit, is("updated", "in/az.txt")).await;
    assert_eq!(az.azure_delete_blob("watched", "in/az.txt"), 202);
    next_event(&a.api, &mut cursor, limit, is("deleted", "in/az.txt")).await;
    assert!(
        ferry_tests::eventually(limit, async || names(&a.api, "").await.is_empty()).await,
        "the folder went with its last blob"
    );
}

/// Before the index is complete (here: never, the indexer is off), a
/// listing is read from the provider as a stream: pages of any size, in
/// key-name order (a folder's name with a `/` after it), each name once,
/// the folder's entries made directly on disk included.
#[tokio::test]
async fn a_listing_from_the_provider_pages_in_key_order() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start_with(HubOptions {
        extra_toml: "[index]\nenabled = false\n".into(),
        ..HubOptions::default()
    });
    let root = hub.data_dir.join("alpha");
    let dir = root.join("mixed");
    std::fs::create_dir_all(&dir).unwrap();
    const N: usize = 1_500;
    for i in 0..N {
        std::fs::write(dir.join(format!("f{i:04}")), b"x").unwrap();
    }
    // Folders whose names sort around files' ("f0001/" after "f0001",
    // "a-b" before "a/"…).
    for d in ["f0001", "a", "zz"] {
        std::fs::create_dir_all(dir.join(format!("{d}.d"))).unwrap();
    }
    std::fs::write(dir.join("a-b"), b"x").unwrap();
    let a = account(&hub, "alpha", "fs", json!({ "root": root }), None).await;
    let mut want: Vec<String> = (0..N).map(|i| format!("f{i:04}")).collect();
    want.extend(["f0001.d/", "a.d/", "zz.d/", "a-b"].map(String::from));
    want.sort();
    for limit in [1000, 61] {
        let mut got: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let url = match &cursor {
                Some(c) => format!("/v1/connections/local/list/mixed?limit={limit}&cursor={c}"),
                None => format!("/v1/connections/local/list/mixed?limit={limit}"),
            };
            let page = a.api.get(&url).send().await.expect(200);
            assert_eq!(page.header("x-ferry-index").as_deref(), Some("building"));
            let page = page.json();
            let entries = page["entries"].as_array().unwrap();
            assert!(entries.len() <= limit);
            for e in entries {
                let name = e["name"].as_str().unwrap();
                got.push(if e["type"] == "folder" {
                    format!("{name}/")
                } else {
                    name.to_owned()
                });
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(got, want, "limit {limit}");
    }
}
