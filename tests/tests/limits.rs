//! Quotas and limits per account, set through the admin API, against real
//! hub and spoke processes: bandwidth shared by an account's transfers on
//! a spoke, another account unaffected; the storage quota refusing an
//! upload before a byte reaches the provider; the monthly egress quota;
//! requests per second.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_tests::scenarios::{Tenant, tenant};
use ferry_tests::{Api, Hub, Spoke, eventually, pattern};
use serde_json::{Value, json};

async fn set_limits(t: &Tenant, limits: Value) -> Value {
    t.admin
        .req(
            http::Method::PUT,
            &format!("/v1/accounts/{}/limits", t.account_id),
        )
        .json(&limits)
        .send()
        .await
        .expect(200)
        .json()
}

/// Downloads `path` whole; returns its length.
async fn download(api: &Api, path: &str) -> usize {
    api.get(path).send().await.expect(200).body.len()
}

#[tokio::test]
async fn an_accounts_downloads_share_its_bandwidth_on_a_spoke_and_others_go_on_at_full_speed() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let spoke = Spoke::start(&hub, "fra1");
    let slow = tenant(&hub.url(), "slow", &hub.data_dir).await;
    let free = tenant(&hub.url(), "free", &hub.data_dir).await;
    const RATE: f64 = 20e6;
    const SIZE: usize = 100_000_000;
    let data = Bytes::from(pattern(SIZE, 7));
    for t in [&slow, &free] {
        t.api
            .put(&t.file("big.bin"))
            .body(data.clone())
            .send()
            .await
            .expect(201);
    }
    let part = SIZE / 8;
    for i in 0..8 {
        slow.api
            .put(&slow.file(&format!("part{i}.bin")))
            .body(data.slice(..part))
            .send()
            .await
            .expect(201);
    }
    let shown = set_limits(&slow, json!({ "download_bytes_per_second": RATE as i64 })).await;
    assert_eq!(shown["effective"]["download_bytes_per_second"], RATE as i64);
    let (via_slow, via_free) = (
        Api::new(spoke.url()).as_token(&slow.key),
        Api::new(spoke.url()).as_token(&free.key),
    );
    // The spoke's limits come with the grants it fetches from now on.

    // One download.
    let started = Instant::now();
    assert_eq!(download(&via_slow, &slow.file("big.bin")).await, SIZE);
    let one = SIZE as f64 / started.elapsed().as_secs_f64();

    // Eight at once, and the other account's download beside them.
    let started = Instant::now();
    let parts: Vec<String> = (0..8).map(|i| slow.file(&format!("part{i}.bin"))).collect();
    let eight = futures_util::future::join_all(parts.iter().map(|p| download(&via_slow, p)));
    let other = async {
        let t = Instant::now();
        let n = download(&via_free, &free.file("big.bin")).await;
        n as f64 / t.elapsed().as_secs_f64()
    };
    let (sizes, other_rate) = tokio::join!(eight, other);
    let all = sizes.iter().sum::<usize>() as f64 / started.elapsed().as_secs_f64();
    assert_eq!(sizes.iter().sum::<usize>(), 8 * part);
    eprintln!(
        "limited to {RATE} B/s: one download {one:.0} B/s, eight {all:.0} B/s; the other account {other_rate:.0} B/s"
    );
    for (what, rate) in [("one download", one), ("eight downloads", all)] {
        assert!(
            (rate - RATE).abs() <= 0.05 * RATE,
            "{what}: {rate:.0} B/s, not within 5 % of {RATE}"
        );
    }
    assert!(
        other_rate > 2.0 * RATE,
        "the other account was held back too: {other_rate:.0} B/s"
    );
}

#[tokio::test]
async fn quotas_refuse_before_anything_is_written_and_requests_are_held_to_their_rate() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let spoke = Spoke::start(&hub, "fra1");
    let t = tenant(&hub.url(), "quota", &hub.data_dir).await;
    let via_spoke = Api::new(spoke.url()).as_token(&t.key);
    let root = hub.data_dir.join("quota");
    set_limits(
        &t,
        json!({ "stored_bytes": 1000, "egress_bytes_per_month": 1500 }),
    )
    .await;

    t.api
        .put(&t.file("a.bin"))
        .body(vec![1u8; 600])
        .send()
        .await
        .expect(201);
    // 600 + 600 > 1000: refused whole, before the provider sees a byte.
    let refused = t
        .api
        .put(&t.file("b.bin"))
        .body(vec![2u8; 600])
        .send()
        .await
        .expect_problem(507, "storage_quota_exceeded");
    assert!(refused.header("retry-after").is_none());
    assert!(!root.join("b.bin").exists());
    t.api
        .put(&t.file("c.bin"))
        .body(vec![3u8; 400])
        .send()
        .await
        .expect(201);
    // At the quota: through the spoke too, and a resumable upload.
    via_spoke
        .put(&t.file("d.bin"))
        .body(vec![4u8; 10])
        .send()
        .await
        .expect_problem(507, "storage_quota_exceeded");
    t.api
        .post("/v1/connections/local/uploads")
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10")
        .header("upload-metadata", "filename ZS5iaW4=")
        .send()
        .await
        .expect_problem(507, "storage_quota_exceeded");
    let names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["a.bin", "c.bin"],
        "nothing else reached the provider"
    );
    // An S3 multipart part, at the hub and through the spoke's door: boto3
    // is refused with ferry's 507.
    let key = t.new_s3_key().await;
    for endpoint in [hub.url(), spoke.url()] {
        assert_eq!(s3_part_status(&endpoint, &key), "507", "at {endpoint}");
    }
    // Deleting frees the room.
    t.api.delete(&t.file("a.bin")).send().await.expect(204);
    via_spoke
        .put(&t.file("d.bin"))
        .body(vec![4u8; 10])
        .send()
        .await
        .expect(201);

    // Egress: 1500 bytes this month. Downloads count as they are logged.
    for _ in 0..3 {
        t.api.get(&t.file("c.bin")).send().await.expect(200);
    }
    let mut last = None;
    let stopped = eventually(Duration::from_secs(10), async || {
        let r = t.api.get(&t.file("c.bin")).send().await;
        let done = r.status.as_u16() == 429;
        last = Some(r);
        done
    })
    .await;
    let last = last.unwrap();
    assert!(stopped, "{:?}", last.status);
    let last = last.expect_problem(429, "egress_quota_exceeded");
    let wait: u64 = last.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=31 * 86_400).contains(&wait),
        "until the next month: {wait}"
    );
    via_spoke
        .get(&t.file("c.bin"))
        .send()
        .await
        .expect_problem(429, "egress_quota_exceeded");
    // A HEAD is refused alike at the hub and through a spoke.
    for api in [&t.api, &via_spoke] {
        let r = api.head(&t.file("c.bin")).send().await;
        assert_eq!(r.status.as_u16(), 429, "HEAD at the egress quota");
    }

    // Lifted for this account (0: no limit), over the default.
    set_limits(
        &t,
        json!({ "stored_bytes": 0, "egress_bytes_per_month": 0, "requests_per_second": 5 }),
    )
    .await;
    t.api.get(&t.file("c.bin")).send().await.expect(200);
    // Five requests a second, a second's worth at once: the rest wait.
    let mut limited = None;
    for _ in 0..20 {
        let r = t.api.get("/v1/connections").send().await;
        if r.status.as_u16() == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("never held to 5 requests per second");
    let limited = limited.expect_problem(429, "rate_limited");
    assert!(limited.header("retry-after").is_some());
    // The operator's API is not the account's to use up.
    t.admin.get("/v1/accounts").send().await.expect(200);

    // Bad limits and unknown accounts.
    t.admin
        .req(
            http::Method::PUT,
            &format!("/v1/accounts/{}/limits", t.account_id),
        )
        .json(&json!({ "stored_bytes": -1 }))
        .send()
        .await
        .expect_problem(400, "invalid_field");
    t.admin
        .req(
            http::Method::PUT,
            "/v1/accounts/acc_00000000000000000000/limits",
        )
        .json(&json!({}))
        .send()
        .await
        .expect_problem(404, "account_not_found");
    t.api
        .get(&format!("/v1/accounts/{}/limits", t.account_id))
        .send()
        .await
        .expect_problem(401, "unauthorized");
}

#[tokio::test]
async fn a_providers_429_slows_its_connection_down_on_every_node() {
    ferry_tests::install_crypto_provider();
    let server = ferry_tests::providers::StorageServer::s3("paced");
    let proxy = ferry_tests::fault_proxy::FaultProxy::start(server.addr).await;
    let hub = Hub::start_with(ferry_tests::HubOptions {
        extra_toml: "[providers.remote]\nallow_private_endpoints = true\n".into(),
        ..ferry_tests::HubOptions::default()
    });
    let a = Spoke::start(&hub, "fra1");
    let b = Spoke::start(&hub, "ams1");
    let t = ferry_tests::scenarios::remote_tenant(
        &hub.url(),
        "alpha",
        "s3",
        server.config("paced", Some(&proxy.url())),
    )
    .await;
    t.api
        .put(&t.file("x.txt"))
        .body("hello")
        .send()
        .await
        .expect(201);
    let slowed =
        |url: String, name: &'static str| async move { ferry_tests::metric(&url, name, &[]).await };
    assert_eq!(
        slowed(b.metrics_url(), "ferry_spoke_connections_slowed").await,
        0.0
    );

    // The provider asks spoke A to slow down, every try of its request.
    proxy.answer_next(1000, 429, 0);
    let via_a = Api::new(a.url()).as_token(&t.key);
    via_a
        .get(&t.file("x.txt"))
        .send()
        .await
        .expect_problem(429, "provider_rate_limited");
    proxy.answer_next(0, 429, 0);

    // A slows it down, tells the hub, and the hub tells spoke B.
    let everywhere = eventually(Duration::from_secs(10), async || {
        slowed(a.metrics_url(), "ferry_spoke_connections_slowed").await == 1.0
            && slowed(hub.metrics_url(), "ferry_connections_slowed").await == 1.0
            && slowed(b.metrics_url(), "ferry_spoke_connections_slowed").await == 1.0
    })
    .await;
    assert!(everywhere, "hub:\n{}\nspoke B:\n{}", hub.log(), b.log());
    // B goes on serving it, in turn.
    let via_b = Api::new(b.url()).as_token(&t.key);
    let got =
        futures_util::future::join_all((0..5).map(|_| via_b.get(&t.file("x.txt")).send())).await;
    for r in got {
        assert_eq!(&r.expect(200).body[..], b"hello");
    }
    assert!(b.log().contains("a provider asked to slow down"));
    let paced = async || {
        ferry_tests::metric(&b.metrics_url(), "ferry_spoke_paced_transfers_total", &[]).await
    };
    let after_gets = paced().await;
    assert!(
        after_gets >= 1.0,
        "five downloads at once waited their turn"
    );

    // Appends to a resumable upload take their turn too.
    let session = via_b
        .post("/v1/connections/local/uploads?path=paced.bin")
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "6")
        .send()
        .await
        .expect(201)
        .header("location")
        .expect("a Location");
    for (i, part) in [&b"ab"[..], b"cd", b"ef"].into_iter().enumerate() {
        via_b
            .req(http::Method::PATCH, &session)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", (2 * i).to_string())
            .header("content-type", "application/offset+octet-stream")
            .body(part)
            .send()
            .await
            .expect(204);
    }
    assert!(
        paced().await > after_gets,
        "appends on a slowed connection wait their turn"
    );
    assert_eq!(
        &via_b
            .get(&t.file("paced.bin"))
            .send()
            .await
            .expect(200)
            .body[..],
        b"abcdef"
    );
}

/// Starts an S3 multipart upload of `mp.bin` in bucket `local` with boto3
/// and sends one part: the part's HTTP status (`200` when taken).
fn s3_part_status(endpoint: &str, key: &Value) -> String {
    let script = r#"
import sys, boto3, botocore
from botocore.config import Config
s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',
    aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],
    config=Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))
up = s3.create_multipart_upload(Bucket='local', Key='mp.bin')
try:
    s3.upload_part(Bucket='local', Key='mp.bin', UploadId=up['UploadId'], PartNumber=1, Body=b'x' * 10)
    print(200)
except botocore.exceptions.ClientError as e:
    print(e.response['ResponseMetadata']['HTTPStatusCode'])
"#;
    ferry_tests::tools::python(
        script,
        &[
            endpoint,
            key["access_key_id"].as_str().unwrap(),
            key["secret_access_key"].as_str().unwrap(),
        ],
    )
}
