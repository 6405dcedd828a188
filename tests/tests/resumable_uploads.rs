//! Resumable uploads (tus 1.0 and the IETF draft) against a real hub and
//! spokes: sessions in the hub's store, bytes only at the nodes that take
//! them, an upload continued through another node than the one it began
//! on, and the protocols' answers to bad input.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use ferry_tests::scenarios::tenant;
use ferry_tests::{Api, Hub, HubOptions, Spoke, eventually, metric, pattern, sha256};

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const CHUNK: &str = "application/offset+octet-stream";

/// Creates a tus upload of `length` bytes at `path` through `api`: its
/// URL path.
async fn create(api: &Api, path: &str, length: usize) -> String {
    let name = STANDARD.encode(path);
    let resp = api
        .post("/v1/connections/local/uploads")
        .header(TUS.0, TUS.1)
        .header("upload-length", length.to_string())
        .header(
            "upload-metadata",
            format!("filename {name},filetype dGV4dC9wbGFpbg=="),
        )
        .send()
        .await
        .expect(201);
    assert_eq!(resp.header("upload-offset").as_deref(), Some("0"));
    assert!(resp.header("upload-expires").is_some());
    resp.header("location").expect("a Location")
}

async fn offset(api: &Api, url: &str) -> u64 {
    let resp = api.head(url).header(TUS.0, TUS.1).send().await.expect(200);
    assert_eq!(resp.header("cache-control").as_deref(), Some("no-store"));
    resp.header("upload-offset").unwrap().parse().unwrap()
}

/// A hub that may reach storage on loopback; for `s3` and `azblob`, a
/// server of that kind with the bucket or container `place`; and the
/// account `alpha` with its connection `local` there (for `fs`, in the
/// hub's own folder).
async fn hub_and_storage(
    provider: &str,
    place: &str,
) -> (
    Hub,
    Option<ferry_tests::providers::StorageServer>,
    ferry_tests::scenarios::Tenant,
) {
    ferry_tests::install_crypto_provider();
    let server = match provider {
        "s3" => Some(ferry_tests::providers::StorageServer::s3(place)),
        "azblob" => Some(ferry_tests::providers::StorageServer::azblob(place)),
        _ => None,
    };
    let hub = Hub::start_with(HubOptions {
        extra_toml: "[providers.remote]\nallow_private_endpoints = true\n".into(),
        ..HubOptions::default()
    });
    let t = match &server {
        Some(s) => {
            ferry_tests::scenarios::remote_tenant(
                &hub.url(),
                "alpha",
                provider,
                s.config(place, None),
            )
            .await
        }
        None => tenant(&hub.url(), "alpha", &hub.data_dir).await,
    };
    (hub, server, t)
}

/// A tus append of the upload at `url` at `offset`; the body is the
/// caller's.
fn tus_append(api: &Api, url: &str, offset: impl std::fmt::Display) -> ferry_tests::client::Req {
    api.req(http::Method::PATCH, url)
        .header(TUS.0, TUS.1)
        .header("content-type", CHUNK)
        .header("upload-offset", offset.to_string())
}

/// Whether the upload at `url` answers `410 upload_expired` within 15 s.
async fn expires(api: &Api, url: &str) -> bool {
    eventually(Duration::from_secs(15), async || {
        api.head(url)
            .header(TUS.0, TUS.1)
            .send()
            .await
            .status
            .as_u16()
            == 410
    })
    .await
}

/// `Upload-Checksum` with the SHA-256 of `data`.
fn sha256_field(data: &[u8]) -> String {
    format!(
        "sha256 {}",
        STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, data))
    )
}

fn sha1_field(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    format!("sha1 {}", STANDARD.encode(d.as_ref()))
}

async fn hub_upload_bytes(hub: &Hub) -> f64 {
    metric(
        &hub.metrics_url(),
        "ferry_content_bytes_total",
        &[("direction", "upload")],
    )
    .await
}

#[tokio::test]
async fn a_tus_upload_moves_between_spokes_and_the_hub_never_carries_its_bytes() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let a = Spoke::start(&hub, "fra1");
    let b = Spoke::start(&hub, "ams1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let via_a = Api::new(a.url()).as_token(&t.key);
    let via_b = Api::new(b.url()).as_token(&t.key);
    let via_hub = Api::new(hub.url()).as_token(&t.key);
    let mib = 1 << 20;
    let data = Bytes::from(pattern(3 * mib + 1234, 15));
    let hub_before = hub_upload_bytes(&hub).await;

    // What a tus client asks first, answered without credentials.
    let opts = Api::new(a.url())
        .req(http::Method::OPTIONS, "/v1/connections/local/uploads")
        .send()
        .await
        .expect(204);
    assert_eq!(opts.header("tus-version").as_deref(), Some("1.0.0"));
    assert!(
        opts.header("tus-extension")
            .unwrap()
            .contains("creation-with-upload")
    );
    assert!(
        opts.header("tus-checksum-algorithm")
            .unwrap()
            .contains("sha1")
    );

    let url = create(&via_a, "big/3m.bin", data.len()).await;
    assert!(url.starts_with("/v1/uploads/upl_"), "{url}");
    let patch = |api: &Api, at: usize, chunk: Bytes| tus_append(api, &url, at).body(chunk);

    // The first MiB through spoke A.
    let resp = patch(&via_a, 0, data.slice(..mib)).send().await.expect(204);
    assert_eq!(resp.header("upload-offset"), Some(mib.to_string()));
    assert_eq!(resp.header("tus-resumable").as_deref(), Some("1.0.0"));
    // Spoke B sees the offset the store holds, and refuses a wrong one
    // with the right one.
    assert_eq!(offset(&via_b, &url).await, mib as u64);
    // (A small chunk: a refusal comes before the body is read, and the
    // connection closes behind it.)
    let wrong = patch(&via_b, 0, data.slice(..10)).send().await;
    let wrong = wrong.expect_problem(409, "mismatching_upload_offset");
    assert_eq!(wrong.header("upload-offset"), Some(mib.to_string()));
    // A chunk that fails its checksum is discarded: 460, offset unchanged.
    let bad = patch(&via_b, mib, data.slice(mib..2 * mib))
        .header("upload-checksum", sha1_field(b"something else"))
        .send()
        .await;
    assert_eq!(bad.status.as_u16(), 460, "{:?}", bad.json());
    assert_eq!(offset(&via_hub, &url).await, mib as u64);
    // The second MiB through B with its checksum, the rest through the hub.
    patch(&via_b, mib, data.slice(mib..2 * mib))
        .header("upload-checksum", sha1_field(&data[mib..2 * mib]))
        .send()
        .await
        .expect(204);
    // Nothing is visible at the path before the last byte.
    via_hub.get(&t.file("big/3m.bin")).send().await.expect(404);
    let done = patch(&via_a, 2 * mib, data.slice(2 * mib..))
        .send()
        .await
        .expect(204);
    assert_eq!(done.header("upload-offset"), Some(data.len().to_string()));

    let got = via_hub.get(&t.file("big/3m.bin")).send().await.expect(200);
    assert_eq!(sha256(&got.body), sha256(&data));
    assert_eq!(got.header("content-type").as_deref(), Some("text/plain"));
    let crc = got.header("x-ferry-checksum-crc64nvme");
    assert_eq!(crc, ferry_tests::crc64nvme_field(&data));
    let events = via_hub.get("/v1/events").send().await.expect(200).json();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "big/3m.bin" && e["type"] == "created"),
        "{events}"
    );
    assert_eq!(
        hub_upload_bytes(&hub).await,
        hub_before,
        "the hub carried upload bytes"
    );
    assert_eq!(
        metric(&hub.metrics_url(), "ferry_upload_bytes_appended_total", &[]).await,
        data.len() as f64
    );
    // The staging folder is emptied once the object is in place.
    let staging = hub.data_dir.join("alpha/.ferry-partial/uploads");
    assert!(
        eventually(Duration::from_secs(5), async || std::fs::read_dir(&staging)
            .map(|d| d.count() == 0)
            .unwrap_or(true))
        .await,
        "parts left in {staging:?}"
    );

    // Terminated: gone for good.
    via_b
        .delete(&url)
        .header(TUS.0, TUS.1)
        .send()
        .await
        .expect(204);
    via_a
        .head(&url)
        .header(TUS.0, TUS.1)
        .send()
        .await
        .expect(404);
}

#[tokio::test]
async fn an_upload_cut_by_a_killed_spoke_resumes_through_another() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let mut a = Spoke::start(&hub, "fra1");
    let b = Spoke::start(&hub, "ams1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let via_a = Api::new(a.url()).as_token(&t.key);
    let via_b = Api::new(b.url()).as_token(&t.key);
    let mib = 1 << 20;
    let data = Bytes::from(pattern(24 * mib, 99));
    let url = create(&via_a, "cut.bin", data.len()).await;

    // 8 MiB committed through A, then a PATCH that A dies in the middle of.
    tus_append(&via_a, &url, 0)
        .body(data.slice(..8 * mib))
        .send()
        .await
        .expect(204);
    let (req, tx) = tus_append(&via_a, &url, 8 * mib).body_channel(16 * mib);
    let sending = tokio::spawn(req.send_raw());
    for i in 0..4 {
        tx.send(data.slice(8 * mib + i * mib..9 * mib + i * mib))
            .await
            .unwrap();
    }
    a.kill();
    drop(tx);
    let _ = sending.await;

    // Through B: the offset is the last one the store recorded, and B takes
    // the lease over once the hub has seen A's tunnel go.
    let at = offset(&via_b, &url).await as usize;
    assert_eq!(at, 8 * mib, "only committed bytes count");
    let mut status = 0;
    let resumed = eventually(Duration::from_secs(30), async || {
        let resp = tus_append(&via_b, &url, at)
            .body(data.slice(at..))
            .send()
            .await;
        status = resp.status.as_u16();
        status == 204
    })
    .await;
    assert!(
        resumed,
        "the upload did not resume through B (last {status})"
    );
    let got = Api::new(hub.url())
        .as_token(&t.key)
        .get(&t.file("cut.bin"))
        .send()
        .await
        .expect(200);
    assert_eq!(sha256(&got.body), sha256(&data));
    assert!(metric(&hub.metrics_url(), "ferry_upload_resumptions_total", &[]).await >= 1.0);
}

/// One long `PATCH` of a slow client through spoke A, which is killed
/// once the store shows part of it recorded: what was recorded stays, and
/// the client goes on from there through spoke B.
async fn a_long_request_keeps_what_it_recorded(provider: &str) {
    let (hub, _server, t) = hub_and_storage(provider, "long").await;
    let mut a = Spoke::start(&hub, "fra1");
    let b = Spoke::start(&hub, "ams1");
    let via_a = Api::new(a.url()).as_token(&t.key);
    let via_b = Api::new(b.url()).as_token(&t.key);
    let via_hub = Api::new(hub.url()).as_token(&t.key);
    let mib = 1 << 20;
    let data = Bytes::from(pattern(96 * mib, 17));
    let url = create(&via_a, "long.bin", data.len()).await;
    // The whole file in one request, as tus-js-client sends it by default,
    // at 5 MiB/s: the spoke records what the provider holds every 5 s.
    let (req, tx) = tus_append(&via_a, &url, 0).body_channel(data.len());
    let sending = tokio::spawn(req.send_raw());
    let mut sent = 0;
    let mut recorded = 0;
    while sent < 80 * mib && recorded == 0 {
        tx.send(data.slice(sent..sent + mib)).await.unwrap();
        sent += mib;
        tokio::time::sleep(Duration::from_millis(200)).await;
        recorded = offset(&via_hub, &url).await as usize;
    }
    assert!(
        recorded > 0 && recorded <= sent,
        "nothing was recorded while {sent} bytes streamed"
    );
    a.kill_for_good();
    drop(tx);
    let _ = sending.await;
    let at = offset(&via_b, &url).await as usize;
    assert!(
        at >= recorded,
        "the offset went back from {recorded} to {at}"
    );
    // Until the hub has seen A go, A's lease holds: B is refused (423)
    // before the body is read, which may cut the sending short.
    let mut status = None;
    let resumed = eventually(Duration::from_secs(30), async || {
        let sent = tus_append(&via_b, &url, at)
            .body(data.slice(at..))
            .send_raw()
            .await;
        status = sent.map(|r| r.status()).ok();
        status == Some(http::StatusCode::NO_CONTENT)
    })
    .await;
    assert!(
        resumed,
        "the upload did not resume through B (last {status:?})"
    );
    let got = via_hub.get(&t.file("long.bin")).send().await.expect(200);
    assert_eq!(sha256(&got.body), sha256(&data));
}

#[tokio::test]
async fn a_long_request_keeps_what_it_recorded_on_a_folder() {
    a_long_request_keeps_what_it_recorded("fs").await;
}

#[tokio::test]
async fn a_long_request_keeps_what_it_recorded_on_s3() {
    a_long_request_keeps_what_it_recorded("s3").await;
}

#[tokio::test]
async fn the_ietf_draft_creates_appends_and_names_the_offset_it_holds() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let a = Spoke::start(&hub, "fra1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let via_a = Api::new(a.url()).as_token(&t.key);
    let data = Bytes::from(pattern(600_000, 4));

    // Creation carrying the first part, not the whole.
    let created = via_a
        .post("/v1/connections/local/uploads?path=drafts/a.bin")
        .header("upload-draft-interop-version", "8")
        .header("upload-complete", "?0")
        .header("content-type", "application/x-thing")
        .body(data.slice(..200_000))
        .send()
        .await
        .expect(201);
    let url = created.header("location").unwrap();
    assert_eq!(created.header("upload-offset").as_deref(), Some("200000"));
    assert_eq!(created.header("upload-complete").as_deref(), Some("?0"));
    assert!(
        created
            .header("upload-limit")
            .unwrap()
            .starts_with("max-size=")
    );

    let append = |at: usize, end: usize, complete: &'static str| {
        via_a
            .req(http::Method::PATCH, &url)
            .header("upload-draft-interop-version", "8")
            .header("content-type", "application/partial-upload")
            .header("upload-offset", at.to_string())
            .header("upload-complete", complete)
            .body(data.slice(at..end))
    };
    // A wrong offset: 409 with the draft's problem type and both offsets.
    let wrong = append(100, 110, "?0")
        .send()
        .await
        .expect_problem(409, "mismatching_upload_offset");
    let p = wrong.json();
    assert_eq!(
        p["type"],
        "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
    );
    assert_eq!(
        (p["expected-offset"].as_u64(), p["provided-offset"].as_u64()),
        (Some(200_000), Some(100))
    );

    let status = via_a
        .head(&url)
        .header("upload-draft-interop-version", "8")
        .send()
        .await
        .expect(204);
    assert_eq!(status.header("upload-offset").as_deref(), Some("200000"));
    append(200_000, 400_000, "?0").send().await.expect(204);
    let last = append(400_000, 600_000, "?1").send().await.expect(204);
    assert_eq!(last.header("upload-complete").as_deref(), Some("?1"));
    let got = via_a.get(&t.file("drafts/a.bin")).send().await.expect(200);
    assert_eq!(sha256(&got.body), sha256(&data));
    assert_eq!(
        got.header("content-type").as_deref(),
        Some("application/x-thing")
    );

    // A whole upload in one creation, length unknown beforehand.
    let one = via_a
        .post("/v1/connections/local/uploads?path=drafts/one.bin")
        .header("upload-draft-interop-version", "8")
        .header("upload-complete", "?1")
        .body(data.slice(..1000))
        .send()
        .await
        .expect(201);
    assert_eq!(one.header("upload-complete").as_deref(), Some("?1"));
    assert_eq!(one.header("upload-length").as_deref(), Some("1000"));
    let got = via_a
        .get(&t.file("drafts/one.bin"))
        .send()
        .await
        .expect(200);
    assert_eq!(got.body.len(), 1000);
}

#[tokio::test]
async fn bad_upload_requests_get_the_protocols_answers() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start_with(HubOptions {
        extra_toml:
            "[uploads]\nmax_size_bytes = 1000000\nexpiry_secs = 2\nsweep_interval_secs = 1\n".into(),
        ..HubOptions::default()
    });
    let a = Spoke::start(&hub, "fra1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let other = tenant(&hub.url(), "beta", &hub.data_dir).await;
    let via_a = Api::new(a.url()).as_token(&t.key);
    let via_hub = Api::new(hub.url()).as_token(&t.key);
    let creation = |api: &Api| {
        api.post("/v1/connections/local/uploads?path=x.bin")
            .header(TUS.0, TUS.1)
    };

    // No protocol, or another tus version: 412 with the version spoken.
    let resp = via_a
        .post("/v1/connections/local/uploads?path=x.bin")
        .header("upload-length", "5")
        .send()
        .await
        .expect_problem(412, "unsupported_tus_version");
    assert_eq!(resp.header("tus-version").as_deref(), Some("1.0.0"));
    via_hub
        .post("/v1/connections/local/uploads?path=x.bin")
        .header("tus-resumable", "0.2.2")
        .header("upload-length", "5")
        .send()
        .await
        .expect_problem(412, "unsupported_tus_version");
    // Lengths: negative, not a number, both or neither given, over the limit.
    for bad in ["-1", "abc", "1e3", ""] {
        creation(&via_hub)
            .header("upload-length", bad)
            .send()
            .await
            .expect_problem(400, "invalid_field");
    }
    creation(&via_hub)
        .send()
        .await
        .expect_problem(400, "invalid_field");
    creation(&via_hub)
        .header("upload-length", "5")
        .header("upload-defer-length", "1")
        .send()
        .await
        .expect_problem(400, "invalid_field");
    creation(&via_a)
        .header("upload-length", "1000001")
        .send()
        .await
        .expect_problem(413, "upload_too_large");
    // Malformed metadata, an unsafe path.
    creation(&via_hub)
        .header("upload-length", "5")
        .header("upload-metadata", "filename !!!notbase64")
        .send()
        .await
        .expect_problem(400, "invalid_field");
    via_hub
        .post("/v1/connections/local/uploads?path=../x")
        .header(TUS.0, TUS.1)
        .header("upload-length", "5")
        .send()
        .await
        .expect_problem(400, "invalid_path");

    let url = creation(&via_a)
        .header("upload-length", "10")
        .send()
        .await
        .expect(201)
        .header("location")
        .unwrap();
    let patch = |api: &Api| {
        api.req(http::Method::PATCH, &url)
            .header(TUS.0, TUS.1)
            .header("upload-offset", "0")
    };
    // The wrong media type, an unknown checksum, a chunk past the length,
    // an offset past the end.
    patch(&via_a)
        .header("content-type", "application/octet-stream")
        .body("hello")
        .send()
        .await
        .expect_problem(415, "unsupported_media_type");
    patch(&via_a)
        .header("content-type", CHUNK)
        .header("upload-checksum", "md5 XUFAKrxLKna5cZ2REBfFkg==")
        .body("hello")
        .send()
        .await
        .expect_problem(400, "invalid_digest");
    patch(&via_a)
        .header("content-type", CHUNK)
        .body("hello world!")
        .send()
        .await
        .expect_problem(413, "upload_too_large");
    tus_append(&via_a, &url, 11)
        .body("x")
        .send()
        .await
        .expect_problem(409, "mismatching_upload_offset");
    assert_eq!(offset(&via_a, &url).await, 0);
    // Another tenant's id is no upload at all.
    let theirs = Api::new(a.url()).as_token(&other.key);
    theirs
        .head(&url)
        .header(TUS.0, TUS.1)
        .send()
        .await
        .expect(404);
    tus_append(&theirs, &url, 0)
        .body("hello")
        .send()
        .await
        .expect_problem(404, "upload_not_found");

    // Five bytes in, then left alone past its expiry: 410, parts removed.
    patch(&via_a)
        .header("content-type", CHUNK)
        .body("hello")
        .send()
        .await
        .expect(204);
    let id = url.rsplit('/').next().unwrap().to_owned();
    let parts = hub.data_dir.join("alpha/.ferry-partial/uploads").join(&id);
    assert!(parts.exists(), "the part was staged under {parts:?}");
    assert!(expires(&via_a, &url).await, "the upload did not expire");
    assert!(
        eventually(Duration::from_secs(10), async || !parts.exists()).await,
        "the expired upload's parts stayed"
    );
    via_hub.get(&t.file("x.bin")).send().await.expect(404);
}

/// A tus client the tests run unmodified.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// tus-js-client under node.
    Js,
    /// tuspy.
    Python,
}

/// Uploads a 300 MiB file with `client` through spoke A, kills A with
/// SIGKILL once 96 MiB are acknowledged, and lets the client resume
/// through spoke B; the object must be whole and the hub must have carried
/// none of its bytes.
async fn a_real_client_resumes_through_another_spoke(client: Client, provider: &str) {
    use std::io::BufRead as _;
    let (hub, s3, t) = hub_and_storage(provider, "tus").await;
    let mut a = Spoke::start(&hub, "fra1");
    let b = Spoke::start(&hub, "ams1");
    let size = 300 << 20;
    let data = pattern(size, 300);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("source.bin");
    std::fs::write(&file, &data).unwrap();
    let hub_before = hub_upload_bytes(&hub).await;

    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let mut cmd = match client {
        Client::Js => {
            let module = ferry_tests::tools::Tool::TusJsClient.path();
            let mut c = std::process::Command::new("node");
            c.env("NODE_PATH", module.parent().unwrap())
                .arg(scripts.join("tus_upload.js"));
            c
        }
        Client::Python => {
            let mut c = std::process::Command::new(ferry_tests::tools::Tool::TusPython.path());
            c.arg(scripts.join("tus_upload.py"));
            c
        }
    };
    cmd.arg(&file)
        .args(["big/300.bin", &t.key, &(8 << 20).to_string()])
        .args([a.url(), b.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut child = cmd.spawn().expect("the tus client starts");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut killed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.recv()).await {
        eprintln!("client: {line}");
        seen.push(line.clone());
        if !killed
            && let Some(n) = line.strip_prefix("progress ")
            && n.parse::<usize>().unwrap() >= 96 << 20
        {
            a.kill_for_good();
            killed = true;
        }
        if line.starts_with("done ") {
            break;
        }
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the client failed:\n{}", seen.join("\n"));
    assert!(
        killed,
        "the upload ended before spoke A was killed:\n{}",
        seen.join("\n")
    );
    assert!(
        seen.iter().any(|l| l.starts_with("switch ")),
        "the client never moved to spoke B:\n{}",
        seen.join("\n")
    );
    // One upload from start to end, resumed rather than begun again: the
    // id it finished under is the one it was created with, and spoke B
    // took fewer bytes than the whole.
    let id_of = |prefix: &str| {
        seen.iter()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|u| u.rsplit('/').next())
            .map(str::to_owned)
    };
    assert!(id_of("url ").is_some(), "{}", seen.join("\n"));
    assert_eq!(id_of("url "), id_of("done "), "{}", seen.join("\n"));
    let via_b = metric(
        &b.metrics_url(),
        "ferry_spoke_content_bytes_total",
        &[("direction", "upload")],
    )
    .await;
    assert!(
        via_b > 0.0 && via_b < size as f64,
        "spoke B took {via_b} bytes of {size}"
    );
    assert!(metric(&hub.metrics_url(), "ferry_upload_resumptions_total", &[]).await >= 1.0);

    let got = Api::new(b.url())
        .as_token(&t.key)
        .get(&t.file("big/300.bin"))
        .send()
        .await
        .expect(200);
    assert_eq!(got.body.len(), size);
    assert_eq!(
        sha256(&got.body),
        sha256(&data),
        "the object differs from the source"
    );
    assert_eq!(
        hub_upload_bytes(&hub).await,
        hub_before,
        "the hub carried upload bytes"
    );
    if let Some(server) = &s3 {
        // One multipart upload from the first chunk to the last, through
        // both spokes: 300 MiB in 8 MiB chunks are 38 parts, completed
        // at the provider, none read back.
        let etag = moto_etag(server, "tus", "big/300.bin");
        assert!(etag.ends_with("-38"), "{etag}");
        assert!(open_multipart_uploads(server, "tus").is_empty());
    }
}

#[tokio::test]
async fn tus_js_client_resumes_through_another_spoke_to_a_folder() {
    a_real_client_resumes_through_another_spoke(Client::Js, "fs").await;
}

#[tokio::test]
async fn tus_js_client_resumes_through_another_spoke_to_s3() {
    a_real_client_resumes_through_another_spoke(Client::Js, "s3").await;
}

#[tokio::test]
async fn tuspy_resumes_through_another_spoke_to_a_folder() {
    a_real_client_resumes_through_another_spoke(Client::Python, "fs").await;
}

#[tokio::test]
async fn tuspy_resumes_through_another_spoke_to_s3() {
    a_real_client_resumes_through_another_spoke(Client::Python, "s3").await;
}

#[tokio::test]
async fn two_writers_at_once_one_wins_and_the_other_is_told_to_wait() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let a = Spoke::start(&hub, "fra1");
    let b = Spoke::start(&hub, "ams1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let via_a = Api::new(a.url()).as_token(&t.key);
    let via_b = Api::new(b.url()).as_token(&t.key);
    let data = Bytes::from(pattern(4 << 20, 7));
    let url = create(&via_a, "race.bin", data.len()).await;

    // A's PATCH holds the lease while its body arrives …
    let (req, tx) = tus_append(&via_a, &url, 0).body_channel(data.len());
    let first = tokio::spawn(req.send());
    tx.send(data.slice(..1 << 20)).await.unwrap();
    let part_dir = hub.data_dir.join("alpha/.ferry-partial");
    assert!(
        eventually(Duration::from_secs(10), async || std::fs::read_dir(
            &part_dir
        )
        .map(|d| d.count() > 0)
        .unwrap_or(false))
        .await,
        "A's part never started"
    );
    // … so B's, at the same offset, is refused as locked.
    tus_append(&via_b, &url, 0)
        .body(Bytes::from_static(b"intruder"))
        .send()
        .await
        .expect_problem(423, "upload_locked");
    for i in 1..4 {
        tx.send(data.slice(i << 20..(i + 1) << 20)).await.unwrap();
    }
    drop(tx);
    first.await.unwrap().expect(204);
    let got = via_b.get(&t.file("race.bin")).send().await.expect(200);
    assert_eq!(sha256(&got.body), sha256(&data));
}

#[tokio::test]
async fn an_upload_continues_after_the_hub_restarts() {
    ferry_tests::install_crypto_provider();
    let mut hub = Hub::start();
    let a = Spoke::start(&hub, "fra1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let via_a = Api::new(a.url()).as_token(&t.key);
    let data = Bytes::from(pattern(3 << 20, 8));
    let url = create(&via_a, "restart.bin", data.len()).await;
    let patch = |at: usize, end: usize| tus_append(&via_a, &url, at).body(data.slice(at..end));
    patch(0, 1 << 20).send().await.expect(204);
    hub.restart_on_same_ports();
    // Once the spoke's tunnel is back, the store's offset is where it was.
    assert!(
        eventually(Duration::from_secs(20), async || {
            let r = via_a.head(&url).header(TUS.0, TUS.1).send().await;
            r.status == 200 && r.header("upload-offset") == Some((1 << 20).to_string())
        })
        .await,
        "the upload's offset did not come back after the restart"
    );
    patch(1 << 20, data.len()).send().await.expect(204);
    let got = via_a.get(&t.file("restart.bin")).send().await.expect(200);
    assert_eq!(sha256(&got.body), sha256(&data));
}

#[tokio::test]
async fn partial_uploads_through_two_spokes_are_joined_by_a_final_one() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let a = Spoke::start(&hub, "fra1");
    let b = Spoke::start(&hub, "ams1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let other = tenant(&hub.url(), "beta", &hub.data_dir).await;
    let via_a = Api::new(a.url()).as_token(&t.key);
    let via_b = Api::new(b.url()).as_token(&t.key);
    let data = Bytes::from(pattern(3 << 20, 21));
    let hub_before = hub_upload_bytes(&hub).await;

    // Two partial uploads, one through each spoke, at once.
    let halves = [data.slice(..1 << 20), data.slice(1 << 20..)];
    let send_partial = |api: Api, half: Bytes| async move {
        let url = api
            .post("/v1/connections/local/uploads")
            .header(TUS.0, TUS.1)
            .header("upload-concat", "partial")
            .header("upload-length", half.len().to_string())
            .send()
            .await
            .expect(201)
            .header("location")
            .unwrap();
        tus_append(&api, &url, 0)
            .body(half)
            .send()
            .await
            .expect(204);
        url
    };
    let (first, second) = tokio::join!(
        send_partial(via_a.clone(), halves[0].clone()),
        send_partial(via_b.clone(), halves[1].clone())
    );
    let head = via_b
        .head(&first)
        .header(TUS.0, TUS.1)
        .send()
        .await
        .expect(200);
    assert_eq!(head.header("upload-concat").as_deref(), Some("partial"));
    // A partial upload becomes no object.
    assert!(!hub.data_dir.join("alpha/joined.bin").exists());

    // Another tenant cannot join them; a final upload takes no bytes.
    Api::new(a.url())
        .as_token(&other.key)
        .post("/v1/connections/local/uploads?path=stolen.bin")
        .header(TUS.0, TUS.1)
        .header("upload-concat", format!("final;{first} {second}"))
        .send()
        .await
        .expect_problem(400, "invalid_field");
    // The final one, through spoke A, with absolute URLs as clients send them.
    let joined = via_a
        .post("/v1/connections/local/uploads?path=joined.bin")
        .header(TUS.0, TUS.1)
        .header(
            "upload-concat",
            format!("final;{}{first} {}{second}", a.url(), b.url()),
        )
        .send()
        .await
        .expect(201);
    let url = joined.header("location").unwrap();
    assert_eq!(joined.header("upload-offset"), Some(data.len().to_string()));
    let head = via_b
        .head(&url)
        .header(TUS.0, TUS.1)
        .send()
        .await
        .expect(200);
    assert_eq!(
        head.header("upload-concat"),
        Some(format!("final;{first} {second}"))
    );
    tus_append(&via_b, &url, data.len())
        .body(Bytes::from_static(b"x"))
        .send()
        .await
        .expect_problem(403, "upload_is_final");
    let got = via_b.get(&t.file("joined.bin")).send().await.expect(200);
    assert_eq!(sha256(&got.body), sha256(&data));
    assert_eq!(
        got.header("x-ferry-checksum-crc64nvme"),
        ferry_tests::crc64nvme_field(&data)
    );
    assert_eq!(
        hub_upload_bytes(&hub).await,
        hub_before,
        "the hub carried upload bytes"
    );
}

#[tokio::test]
async fn tus_js_client_uploads_in_parallel_parts() {
    parallel_parts("fs").await;
}

#[tokio::test]
async fn tus_js_client_uploads_in_parallel_parts_to_s3() {
    parallel_parts("s3").await;
}

#[tokio::test]
async fn tus_js_client_uploads_in_parallel_parts_to_azure() {
    parallel_parts("azblob").await;
}

/// tus-js-client sends a 40 MiB file as three partial uploads at once and
/// joins them with a final one.
async fn parallel_parts(provider: &str) {
    let (hub, server, t) = hub_and_storage(provider, "par").await;
    let s3 = server.as_ref().filter(|s| s.kind == "s3");
    let a = Spoke::start(&hub, "fra1");
    let data = pattern(40 << 20, 40);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("source.bin");
    std::fs::write(&file, &data).unwrap();
    let module = ferry_tests::tools::Tool::TusJsClient.path();
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let out = tokio::task::spawn_blocking({
        let (file, key, url) = (file.clone(), t.key.clone(), a.url());
        move || {
            std::process::Command::new("node")
                .env("NODE_PATH", module.parent().unwrap())
                .env("TUS_PARALLEL", "3")
                .arg(scripts.join("tus_upload.js"))
                .arg(&file)
                .args(["parallel.bin", &key, &(4 << 20).to_string(), &url])
                .output()
                .expect("node runs")
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tus-js-client failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = Api::new(hub.url())
        .as_token(&t.key)
        .get(&t.file("parallel.bin"))
        .send()
        .await
        .expect(200);
    assert_eq!(sha256(&got.body), sha256(&data));
    assert!(
        metric(&hub.metrics_url(), "ferry_uploads_completed_total", &[]).await >= 1.0,
        "{text}"
    );
    if let Some(server) = s3 {
        // The final upload is the three partial ones copied part by part
        // at the provider; nothing staged or open is left.
        let etag = moto_etag(server, "par", "parallel.bin");
        assert!(etag.ends_with("-3"), "{etag}");
        assert!(open_multipart_uploads(server, "par").is_empty());
        assert!(
            eventually(Duration::from_secs(10), async || keys_in_moto(
                server,
                "par",
                ".ferry-partial/"
            )
            .is_empty())
            .await,
            "{:?}",
            keys_in_moto(server, "par", ".ferry-partial/")
        );
    }
}

/// The keys moto's bucket `bucket` holds under `prefix` (moto answers
/// unsigned requests).
fn keys_in_moto(
    server: &ferry_tests::providers::StorageServer,
    bucket: &str,
    prefix: &str,
) -> Vec<String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!(
            "{}/{bucket}?list-type=2&prefix={prefix}",
            server.url()
        ))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "cannot list the bucket");
    let xml = String::from_utf8_lossy(&out.stdout);
    xml.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_owned)
        .collect()
}

/// The keys of the multipart uploads open in moto's `bucket`.
fn open_multipart_uploads(
    server: &ferry_tests::providers::StorageServer,
    bucket: &str,
) -> Vec<String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("{}/{bucket}?uploads", server.url()))
        .output()
        .expect("curl runs");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("ListMultipartUploadsResult"), "{listing}");
    listing
        .split("<Upload>")
        .skip(1)
        .filter_map(|u| u.split("<Key>").nth(1)?.split("</Key>").next())
        .map(str::to_owned)
        .collect()
}

/// The ETag moto gives the object at `key` in `bucket`.
fn moto_etag(server: &ferry_tests::providers::StorageServer, bucket: &str, key: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-I", "--max-time", "10"])
        .arg(format!("{}/{bucket}/{key}", server.url()))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("etag")
                .then(|| value.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn an_s3_upload_goes_straight_into_one_multipart_upload() {
    let (hub, server, t) = hub_and_storage("s3", "native").await;
    let server = server.expect("an S3 server");
    let a = Spoke::start(&hub, "fra1");
    let b = Spoke::start(&hub, "ams1");
    let via_a = Api::new(a.url()).as_token(&t.key);
    let via_b = Api::new(b.url()).as_token(&t.key);
    const MIB: usize = 1 << 20;
    let data = Bytes::from(pattern(23 * MIB, 9));
    let url = create(&via_a, "parts.bin", data.len()).await;
    // The hub started the multipart upload with the session, at the
    // object's own key: nothing is visible there until it completes.
    assert_eq!(open_multipart_uploads(&server, "native"), ["parts.bin"]);
    let offset_of = async |api: &Api| {
        api.head(&url)
            .header(TUS.0, TUS.1)
            .send()
            .await
            .expect(200)
            .header("upload-offset")
            .unwrap()
    };
    // 3 MiB: too little for an S3 part, staged as an object.
    tus_append(&via_a, &url, 0)
        .body(data.slice(0..3 * MIB))
        .send()
        .await
        .expect(204);
    assert_eq!(
        keys_in_moto(&server, "native", ".ferry-partial/uploads/").len(),
        1
    );
    // 3 MiB more, through the other spoke: the staged 3 MiB are carried
    // into one 6 MiB part.
    tus_append(&via_b, &url, 3 * MIB)
        .body(data.slice(3 * MIB..6 * MIB))
        .send()
        .await
        .expect(204);
    // 9 MiB of unknown length (chunked): staged whole, for the provider
    // to copy into the upload at the end.
    tus_append(&via_a, &url, 6 * MIB)
        .body_unsized(data.slice(6 * MIB..15 * MIB), 64 << 10)
        .send()
        .await
        .expect(204);
    assert_eq!(offset_of(&via_a).await, (15 * MIB).to_string());
    // 2 MiB, staged; then a chunk cut part way, and one that fails its
    // checksum: neither moves the offset.
    tus_append(&via_b, &url, 15 * MIB)
        .body(data.slice(15 * MIB..17 * MIB))
        .send()
        .await
        .expect(204);
    let cut = tus_append(&via_a, &url, 17 * MIB)
        .body_truncated(data.slice(17 * MIB..21 * MIB), 6 * MIB)
        .send_raw()
        .await;
    if let Ok(resp) = cut {
        assert!(!resp.status().is_success(), "{}", resp.status());
    }
    assert!(
        eventually(Duration::from_secs(20), async || offset_of(&via_b).await
            == (17 * MIB).to_string())
        .await,
        "a cut chunk moved the offset: {}",
        offset_of(&via_b).await
    );
    let last = data.slice(17 * MIB..);
    let wrong = format!("sha256 {}", STANDARD.encode([0u8; 32]));
    let refused = eventually(Duration::from_secs(20), async || {
        tus_append(&via_b, &url, 17 * MIB)
            .header("upload-checksum", &wrong)
            .body(last.clone())
            .send()
            .await
            .status
            .as_u16()
            == 460
    })
    .await;
    assert!(
        refused,
        "a chunk with the wrong checksum was not refused with 460"
    );
    assert_eq!(offset_of(&via_b).await, (17 * MIB).to_string());
    // The last 6 MiB, with its checksum: the staged 2 MiB carried into
    // the last part, and the upload completed at the provider.
    let right = sha256_field(&last);
    tus_append(&via_b, &url, 17 * MIB)
        .header("upload-checksum", &right)
        .body(last)
        .send()
        .await
        .expect(204);
    let got = via_a.get(&t.file("parts.bin")).send().await.expect(200);
    assert_eq!(sha256(&got.body), sha256(&data));
    // Three parts: 6 MiB sent, 9 MiB copied at the provider, 8 MiB sent.
    assert!(
        moto_etag(&server, "native", "parts.bin").ends_with("-3"),
        "{}",
        moto_etag(&server, "native", "parts.bin")
    );
    assert!(open_multipart_uploads(&server, "native").is_empty());
    assert!(
        eventually(Duration::from_secs(10), async || keys_in_moto(
            &server,
            "native",
            ".ferry-partial/"
        )
        .is_empty())
        .await,
        "staged parts were left: {:?}",
        keys_in_moto(&server, "native", ".ferry-partial/")
    );

    // A terminated upload's multipart upload is abandoned at once; so are
    // those of a deleted connection's open uploads.
    let gone = create(&via_a, "gone.bin", 10 * MIB).await;
    via_b
        .delete(&gone)
        .header(TUS.0, TUS.1)
        .send()
        .await
        .expect(204);
    assert!(open_multipart_uploads(&server, "native").is_empty());
    let open = create(&via_a, "open.bin", 10 * MIB).await;
    tus_append(&via_a, &open, 0)
        .body(data.slice(0..6 * MIB))
        .send()
        .await
        .expect(204);
    assert_eq!(open_multipart_uploads(&server, "native"), ["open.bin"]);
    t.api
        .delete("/v1/connections/local")
        .send()
        .await
        .expect(204);
    assert!(open_multipart_uploads(&server, "native").is_empty());
}

/// The names under `.ferry-partial/uploads/` in Azurite's container, as
/// ferry's own operator for the connection lists them (uncommitted blocks
/// are no blob, and are not listed).
async fn staged_in_azurite(config: &serde_json::Value) -> Vec<String> {
    use ferry_common::provider::{EndpointPolicy, Remote, remote};
    let op = remote::build(Remote::Azblob, config, EndpointPolicy::ANY).unwrap();
    match op
        .list_with(".ferry-partial/uploads/")
        .recursive(true)
        .await
    {
        Ok(entries) => entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| e.path().to_owned())
            .collect(),
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot list Azurite: {e}"),
    }
}

#[tokio::test]
async fn an_azure_upload_goes_into_blocks_of_one_blob() {
    let (hub, server, t) = hub_and_storage("azblob", "blocks").await;
    let server = server.expect("an Azurite server");
    let config = server.config("blocks", None);
    let a = Spoke::start(&hub, "fra1");
    let b = Spoke::start(&hub, "ams1");
    let via_a = Api::new(a.url()).as_token(&t.key);
    let via_b = Api::new(b.url()).as_token(&t.key);
    const MIB: usize = 1 << 20;
    let data = Bytes::from(pattern(20 * MIB, 11));
    let url = create(&via_a, "blocks.bin", data.len()).await;
    // 3 MiB of known length: blocks of the session's staging blob, not
    // yet a blob of their own, through one spoke…
    tus_append(&via_a, &url, 0)
        .body(data.slice(0..3 * MIB))
        .send()
        .await
        .expect(204);
    assert_eq!(staged_in_azurite(&config).await, Vec::<String>::new());
    // … then 5 MiB of unknown length through the other: staged as an
    // object, sent into a block at completion.
    tus_append(&via_b, &url, 3 * MIB)
        .body_unsized(data.slice(3 * MIB..8 * MIB), 64 << 10)
        .send()
        .await
        .expect(204);
    assert_eq!(staged_in_azurite(&config).await.len(), 1);
    // A chunk cut part way keeps the blocks sent whole before the cut.
    let cut = tus_append(&via_a, &url, 8 * MIB)
        .body_truncated(data.slice(8 * MIB..18 * MIB), 12 * MIB)
        .send_raw()
        .await;
    if let Ok(resp) = cut {
        assert!(!resp.status().is_success(), "{}", resp.status());
    }
    let offset_of = async || {
        via_b
            .head(&url)
            .header(TUS.0, TUS.1)
            .send()
            .await
            .expect(200)
            .header("upload-offset")
            .unwrap()
            .parse::<usize>()
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(20), async || offset_of().await
            == 16 * MIB)
        .await,
        "the offset after a chunk cut at 18 MiB is {}, not 16 MiB (two 8 MiB blocks)",
        offset_of().await
    );
    let at = offset_of().await;
    let last = data.slice(at..);
    let sum = sha256_field(&last);
    tus_append(&via_b, &url, at)
        .header("upload-checksum", &sum)
        .body(last)
        .send()
        .await
        .expect(204);
    let got = via_a.get(&t.file("blocks.bin")).send().await.expect(200);
    assert_eq!(sha256(&got.body), sha256(&data));
    assert!(
        eventually(Duration::from_secs(10), async || staged_in_azurite(&config)
            .await
            .is_empty())
        .await,
        "{:?}",
        staged_in_azurite(&config).await
    );
}

#[tokio::test]
async fn an_expired_upload_leaves_nothing_at_the_s3_provider() {
    ferry_tests::install_crypto_provider();
    let server = ferry_tests::providers::StorageServer::s3("expiry");
    let hub = Hub::start_with(HubOptions {
        extra_toml: "[providers.remote]\nallow_private_endpoints = true\n\n\
                     [uploads]\nexpiry_secs = 2\nsweep_interval_secs = 1\n"
            .into(),
        ..HubOptions::default()
    });
    let a = Spoke::start(&hub, "fra1");
    let t = ferry_tests::scenarios::remote_tenant(
        &hub.url(),
        "alpha",
        "s3",
        server.config("expiry", None),
    )
    .await;
    let via_a = Api::new(a.url()).as_token(&t.key);
    // 10 MiB go straight into the session's multipart upload; 1 MiB more,
    // too little for a part of its own, is staged as an object.
    let url = create(&via_a, "left.bin", 20 << 20).await;
    assert_eq!(open_multipart_uploads(&server, "expiry"), ["left.bin"]);
    tus_append(&via_a, &url, 0)
        .body(Bytes::from(pattern(10 << 20, 3)))
        .send()
        .await
        .expect(204);
    tus_append(&via_a, &url, 10 << 20)
        .body(Bytes::from(pattern(1 << 20, 4)))
        .send()
        .await
        .expect(204);
    let staged = keys_in_moto(&server, "expiry", ".ferry-partial/uploads/");
    assert_eq!(
        staged.len(),
        1,
        "one part staged at the provider: {staged:?}"
    );
    assert!(expires(&via_a, &url).await, "the upload did not expire");
    assert!(
        eventually(Duration::from_secs(10), async || keys_in_moto(
            &server,
            "expiry",
            ".ferry-partial/"
        )
        .is_empty())
        .await,
        "the expired upload left {:?} in the bucket",
        keys_in_moto(&server, "expiry", ".ferry-partial/")
    );
    assert!(keys_in_moto(&server, "expiry", "left.bin").is_empty());
    // No multipart upload is left open at the provider either.
    assert!(open_multipart_uploads(&server, "expiry").is_empty());
    assert_eq!(
        metric(&hub.metrics_url(), "ferry_uploads_expired_total", &[]).await,
        1.0
    );
}
