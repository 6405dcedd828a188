//! S3: an account makes access keys (the secret shown once), limits them
//! to some connections or to reading, lists and revokes them, another
//! account seeing none of them; and clients that speak S3, unmodified, use
//! them with the hub's S3 door.

use ferry_tests::Hub;
use ferry_tests::scenarios::tenant;
use serde_json::json;

#[tokio::test]
async fn an_account_makes_lists_and_revokes_its_s3_keys() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let other = tenant(&hub.url(), "beta", &hub.data_dir).await;

    // Without a body: every connection, reading and writing.
    let open = t.api.post("/v1/s3-keys").send().await.expect(201).json();
    let id = open["access_key_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("FRY") && id.len() == 20, "{open}");
    assert_eq!(open["secret_access_key"].as_str().unwrap().len(), 40);
    assert_eq!(open["connections"], json!(null));
    assert_eq!(open["read_only"], json!(false));

    // Limited to a connection, by name, and to reading.
    let limited = t
        .api
        .post("/v1/s3-keys")
        .json(&json!({ "connections": ["local"], "read_only": true }))
        .send()
        .await
        .expect(201)
        .json();
    let conn = t
        .api
        .get("/v1/connections/local")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(limited["connections"], json!([conn["id"]]));
    assert_eq!(limited["read_only"], json!(true));

    // Bad requests: a connection the account does not have, none, an
    // unknown member.
    t.api
        .post("/v1/s3-keys")
        .json(&json!({ "connections": ["nope"] }))
        .send()
        .await
        .expect_problem(404, "connection_not_found");
    t.api
        .post("/v1/s3-keys")
        .json(&json!({ "connections": [] }))
        .send()
        .await
        .expect_problem(400, "invalid_field");
    t.api
        .post("/v1/s3-keys")
        .json(&json!({ "colour": "red" }))
        .send()
        .await
        .expect(400);

    // Listed without secrets; another account sees none and cannot revoke.
    let listed = t.api.get("/v1/s3-keys").send().await.expect(200).json();
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.get("secret_access_key").is_none()));
    let theirs = other.api.get("/v1/s3-keys").send().await.expect(200).json();
    assert_eq!(theirs["keys"], json!([]));
    other
        .api
        .delete(&format!("/v1/s3-keys/{id}"))
        .send()
        .await
        .expect_problem(404, "key_not_found");
    t.api
        .delete(&format!("/v1/s3-keys/{id}"))
        .send()
        .await
        .expect(204);
    t.api
        .delete(&format!("/v1/s3-keys/{id}"))
        .send()
        .await
        .expect(204);
    let listed = t.api.get("/v1/s3-keys").send().await.expect(200).json();
    assert!(listed["keys"][0]["revoked_at"].is_i64(), "{listed}");
    // Without an API key: 401.
    ferry_tests::Api::new(hub.url())
        .get("/v1/s3-keys")
        .send()
        .await
        .expect(401);
}

/// boto3, unmodified, through the hub's S3 door: see
/// `tests/scripts/s3_boto3.py` for what it does and checks. Objects written
/// through S3 are then read through ferry's own API, and the other way
/// round.
#[tokio::test]
async fn boto3_speaks_s3_to_the_hub() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    boto3_against(&hub, &t, &hub.url(), "local").await;
}

/// Through a spoke: object reads, writes and parts streamed at the
/// spoke under the hub's check of their signature, everything else
/// forwarded to the hub's door as it is (the signature covers the host it
/// was sent to).
#[tokio::test]
async fn boto3_speaks_s3_through_a_spoke() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let spoke = ferry_tests::Spoke::start(&hub, "fra1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    boto3_against(&hub, &t, &spoke.url(), "local").await;
}

/// The same through a spoke over S3 (moto's server) and Azure Blob
/// (Azurite): the bytes of objects and parts stream between the spoke and
/// the provider, and the hub puts multipart uploads together with the
/// provider's own copies.
#[tokio::test]
async fn boto3_speaks_s3_through_a_spoke_over_s3_and_azure_blob() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start_with(ferry_tests::HubOptions {
        extra_toml: "[providers.remote]\nallow_private_endpoints = true\n".into(),
        ..ferry_tests::HubOptions::default()
    });
    let spoke = ferry_tests::Spoke::start(&hub, "fra1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let moto = ferry_tests::providers::StorageServer::s3("door");
    let azurite = ferry_tests::providers::StorageServer::azblob("door");
    for (name, provider, server) in [("over-s3", "s3", &moto), ("over-azure", "azblob", &azurite)] {
        t.api
            .post("/v1/connections")
            .json(&json!({ "name": name, "provider": provider, "config": server.config("door", None) }))
            .send()
            .await
            .expect(201);
        boto3_against(&hub, &t, &spoke.url(), name).await;
    }
    // A copy between the two (the hub reads one and writes the other).
    let key = t.new_s3_key().await;
    python_script(
        &hub,
        "s3_copy.py",
        "a copy between buckets",
        &[
            &spoke.url(),
            key["access_key_id"].as_str().unwrap(),
            key["secret_access_key"].as_str().unwrap(),
            "over-s3",
            "over-azure",
        ],
    )
    .await;
}

async fn boto3_against(
    hub: &Hub,
    t: &ferry_tests::scenarios::Tenant,
    endpoint: &str,
    bucket: &str,
) {
    let key = t.new_s3_key().await;
    let ro = t
        .api
        .post("/v1/s3-keys")
        .json(&json!({ "read_only": true }))
        .send()
        .await
        .expect(201)
        .json();
    // Written through ferry's API, read through S3 below.
    t.api
        .put(&format!(
            "/v1/connections/{bucket}/files/docs/from-ferry.txt"
        ))
        .body("ferry")
        .send()
        .await
        .expect(201);
    python_script(
        hub,
        "s3_boto3.py",
        "boto3",
        &[
            endpoint,
            key["access_key_id"].as_str().unwrap(),
            key["secret_access_key"].as_str().unwrap(),
            bucket,
            ro["access_key_id"].as_str().unwrap(),
            ro["secret_access_key"].as_str().unwrap(),
        ],
    )
    .await;
    // What boto3 wrote is a file of ferry's, with its checksum.
    let got = t
        .api
        .get(&format!("/v1/connections/{bucket}/files/docs/deep/big.bin"))
        .send()
        .await
        .expect(200);
    assert_eq!(got.body.len(), 6 << 20);
    assert!(got.header("x-ferry-checksum-crc64nvme").is_some());
}

/// Debian's AWS CLI (v2), unmodified, through a spoke: a 300 MiB file
/// (multipart) up and down, a tree synchronised both ways, a recursive
/// listing, `head-object`, a presigned URL fetched with curl, and a
/// recursive removal.
#[tokio::test]
async fn the_aws_cli_v2_speaks_s3_through_a_spoke() {
    let aws = std::path::Path::new("/usr/bin/aws");
    assert!(
        aws.exists(),
        "Debian's AWS CLI is missing: run ./scripts/install-test-deps.sh"
    );
    aws_cli_through_a_spoke(aws, 300 << 20).await;
}

/// The same with PyPI's AWS CLI (v1), which signs and sends otherwise
/// (a smaller file: the paths are the same).
#[tokio::test]
async fn the_aws_cli_v1_speaks_s3_through_a_spoke() {
    let aws = ferry_tests::tools::Tool::AwsCliV1.path();
    aws_cli_through_a_spoke(&aws, 40 << 20).await;
}

async fn aws_cli_through_a_spoke(aws: &std::path::Path, size: usize) {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let spoke = ferry_tests::Spoke::start(&hub, "fra1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let key = t.new_s3_key().await;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    // Presigned URLs in SigV4, as ferry takes them (the v1 CLI's default
    // is SigV2; v2's is SigV4 already).
    let config = home.join("aws-config");
    std::fs::write(&config, "[default]\ns3 =\n    signature_version = s3v4\n").unwrap();
    let endpoint = spoke.url();
    let run = |args: &[&str]| {
        let out = ferry_tests::tools::aws_cli(
            aws,
            &endpoint,
            &home,
            key["access_key_id"].as_str().unwrap(),
            key["secret_access_key"].as_str().unwrap(),
        )
        .args(args)
        .env("AWS_CONFIG_FILE", &config)
        .output()
        .expect("aws runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "aws {args:?}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    assert!(run(&["s3", "ls"]).contains("local"));

    // In parts of 8 MiB, sent ten at a time, streamed at the spoke: the
    // hub carries none of the bytes.
    let hub_bytes = || async {
        let mut sum = 0.0;
        for direction in ["upload", "download"] {
            sum += ferry_tests::metric(
                &hub.metrics_url(),
                "ferry_content_bytes_total",
                &[("direction", direction)],
            )
            .await;
        }
        sum
    };
    let spoke_bytes = |direction: &'static str| {
        let url = spoke.metrics_url();
        async move {
            ferry_tests::metric(
                &url,
                "ferry_spoke_content_bytes_total",
                &[("direction", direction)],
            )
            .await
        }
    };
    let hub_before = hub_bytes().await;
    let data = ferry_tests::pattern(size, 5);
    let want = ferry_tests::sha256(&data);
    let up = dir.path().join("up.bin");
    std::fs::write(&up, &data).unwrap();
    drop(data);
    run(&["s3", "cp", up.to_str().unwrap(), "s3://local/big/up.bin"]);
    // Each copy on disk goes once used: the suite runs many tests at once
    // on machines with little disk to spare.
    std::fs::remove_file(&up).unwrap();
    let down = dir.path().join("down.bin");
    run(&["s3", "cp", "s3://local/big/up.bin", down.to_str().unwrap()]);
    assert_eq!(ferry_tests::sha256(&std::fs::read(&down).unwrap()), want);
    std::fs::remove_file(&down).unwrap();
    assert_eq!(hub_bytes().await, hub_before, "the hub carried S3 bytes");
    assert!(spoke_bytes("download").await >= size as f64);
    assert!(
        ferry_tests::metric(
            &spoke.metrics_url(),
            "ferry_spoke_http_requests_total",
            &[("route", "s3"), ("method", "PUT")]
        )
        .await
            >= 5.0
    );
    let head = run(&[
        "s3api",
        "head-object",
        "--bucket",
        "local",
        "--key",
        "big/up.bin",
    ]);
    assert!(head.contains(&size.to_string()), "{head}");

    // A tree, both ways.
    let tree = dir.path().join("tree");
    for (path, body) in [("a.txt", "a"), ("b/c.txt", "c"), ("b/d/e.txt", "e")] {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    run(&["s3", "sync", tree.to_str().unwrap(), "s3://local/tree/"]);
    let listed = run(&["s3", "ls", "--recursive", "s3://local/tree/"]);
    for key in ["tree/a.txt", "tree/b/c.txt", "tree/b/d/e.txt"] {
        assert!(listed.contains(key), "{listed}");
    }
    let back = dir.path().join("back");
    run(&["s3", "sync", "s3://local/tree/", back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(back.join("b/d/e.txt")).unwrap(),
        "e"
    );

    // A presigned URL, fetched without credentials.
    let url = run(&[
        "s3",
        "presign",
        "s3://local/tree/a.txt",
        "--expires-in",
        "60",
    ]);
    let fetched = std::process::Command::new("curl")
        .args(["-sS", "--fail", url.trim()])
        .output()
        .unwrap();
    assert_eq!(
        fetched.stdout,
        b"a",
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );

    run(&["s3", "rm", "--recursive", "s3://local/tree/"]);
    assert!(!run(&["s3", "ls", "--recursive", "s3://local/"]).contains("tree/"));
    // Listings, deletes and the multipart upload's creation and
    // completion went through the spoke to the hub's door.
    assert!(
        ferry_tests::metric(
            &hub.metrics_url(),
            "ferry_http_requests_total",
            &[("route", "s3")]
        )
        .await
            > 0.0
    );
}

/// rclone's S3 backend, unmodified, against the hub: copy a tree, check
/// it (sizes: ferry's entity tags are not MD5s, so rclone has no hash in
/// common), sync a changed tree (what left it is deleted), delete.
#[tokio::test]
async fn rclone_speaks_s3_to_the_hub() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    rclone_against(&hub, &hub.url()).await;
}

/// The same through a spoke.
#[tokio::test]
async fn rclone_speaks_s3_through_a_spoke() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let spoke = ferry_tests::Spoke::start(&hub, "fra1");
    rclone_against(&hub, &spoke.url()).await;
    // Its object requests were served at the spoke, by operation.
    let puts = ferry_tests::metric(
        &spoke.metrics_url(),
        "ferry_spoke_s3_requests_total",
        &[("operation", "PutObject"), ("status", "200")],
    )
    .await;
    assert!(puts >= 3.0, "{puts} PutObject at the spoke");
}

async fn rclone_against(hub: &Hub, url: &str) {
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let key = t.new_s3_key().await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    for (path, size) in [
        ("a.bin", 1000usize),
        ("b/c.bin", 3 << 20),
        ("b/d/e.bin", 10),
    ] {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, ferry_tests::pattern(size, size as u64 % 251)).unwrap();
    }
    let rclone = |args: &[&str]| {
        let out = std::process::Command::new("rclone")
            .args(args)
            .args(["--config", "/dev/null", "--retries", "1"])
            // Nothing of the machine's AWS set-up (a CA bundle, say).
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", dir.path())
            .env("RCLONE_CONFIG_FERRY_TYPE", "s3")
            .env("RCLONE_CONFIG_FERRY_PROVIDER", "Other")
            .env("RCLONE_CONFIG_FERRY_ENDPOINT", url)
            .env("RCLONE_CONFIG_FERRY_REGION", "us-east-1")
            .env("RCLONE_CONFIG_FERRY_FORCE_PATH_STYLE", "true")
            .env(
                "RCLONE_CONFIG_FERRY_ACCESS_KEY_ID",
                key["access_key_id"].as_str().unwrap(),
            )
            .env(
                "RCLONE_CONFIG_FERRY_SECRET_ACCESS_KEY",
                key["secret_access_key"].as_str().unwrap(),
            )
            .output()
            .expect("rclone runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let src = tree.to_str().unwrap();
    let (ok, out) = rclone(&["copy", src, "ferry:local/rc"]);
    assert!(ok, "{out}");
    let (ok, out) = rclone(&["check", src, "ferry:local/rc"]);
    assert!(ok && out.contains("0 differences found"), "{out}");
    let got = t.api.get(&t.file("rc/b/c.bin")).send().await.expect(200);
    assert_eq!(got.body.len(), 3 << 20);

    // Changed locally: one file gone, one new; sync makes the bucket match.
    std::fs::remove_file(tree.join("a.bin")).unwrap();
    std::fs::write(tree.join("new.bin"), b"new").unwrap();
    let (ok, out) = rclone(&["sync", src, "ferry:local/rc"]);
    assert!(ok, "{out}");
    let (ok, listed) = rclone(&["lsf", "-R", "ferry:local/rc"]);
    assert!(ok, "{listed}");
    assert!(
        listed.contains("new.bin") && !listed.contains("a.bin"),
        "{listed}"
    );
    t.api.get(&t.file("rc/a.bin")).send().await.expect(404);

    let (ok, out) = rclone(&["delete", "ferry:local/rc"]);
    assert!(ok, "{out}");
    let (ok, listed) = rclone(&["lsf", "-R", "ferry:local/rc"]);
    assert!(ok && !listed.contains(".bin"), "{listed}");
}

/// Requests no SDK sends on purpose (`tests/scripts/s3_raw.py`, signed by
/// hand): a clock 20 minutes off, signed `aws-chunked` bodies — one with a
/// wrong chunk signature in the middle —, trailing and header checksums
/// (CRC32, SHA-1, SHA-256, Content-MD5) right and wrong. Each bad one is
/// refused with S3's code and leaves no object; against the hub, and
/// through a spoke, where the body is checked as it streams there.
async fn raw_requests_against(hub: &Hub, endpoint: &str) {
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let key = t.new_s3_key().await;
    python_script(
        hub,
        "s3_raw.py",
        "raw S3 requests",
        &[
            endpoint,
            key["access_key_id"].as_str().unwrap(),
            key["secret_access_key"].as_str().unwrap(),
            "local",
        ],
    )
    .await;
}

#[tokio::test]
async fn bad_signatures_clocks_and_checksums_are_refused_by_the_hub() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    raw_requests_against(&hub, &hub.url()).await;
}

#[tokio::test]
async fn bad_signatures_clocks_and_checksums_are_refused_at_a_spoke() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let spoke = ferry_tests::Spoke::start(&hub, "fra1");
    raw_requests_against(&hub, &spoke.url()).await;
    // Every PUT was checked and refused (or taken) at the spoke.
    let mut at_spoke = 0.0;
    for status in ["200", "400", "403"] {
        at_spoke += ferry_tests::metric(
            &spoke.metrics_url(),
            "ferry_spoke_http_requests_total",
            &[("route", "s3"), ("method", "PUT"), ("status", status)],
        )
        .await;
    }
    assert_eq!(at_spoke, 10.0, "PUTs at the spoke");
}

/// Virtual-host style (`<bucket>.s3.test`, `api.s3_domains`) with boto3,
/// against the hub and through a spoke (whose S3 requests the hub checks
/// with the same domains); path style keeps working by address.
async fn virtual_hosts_against(hub: &Hub, t: &ferry_tests::scenarios::Tenant, addr: &str) {
    let key = t.new_s3_key().await;
    python_script(
        hub,
        "s3_vhost.py",
        "virtual-host style",
        &[
            addr,
            key["access_key_id"].as_str().unwrap(),
            key["secret_access_key"].as_str().unwrap(),
            "local",
        ],
    )
    .await;
}

const S3_DOMAINS: &str = "s3_domains = [\"s3.test\"]\n";

#[tokio::test]
async fn virtual_host_style_works_at_the_hub_and_a_spoke() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start_with(ferry_tests::HubOptions {
        api_extra: S3_DOMAINS.into(),
        ..ferry_tests::HubOptions::default()
    });
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    virtual_hosts_against(&hub, &t, &hub.addr.to_string()).await;
    let spoke = ferry_tests::Spoke::start_with(
        &hub,
        "fra1",
        &hub.spoke_token("fra1", None),
        &ferry_tests::SpokeOptions {
            api_extra: S3_DOMAINS.into(),
            ..ferry_tests::SpokeOptions::default()
        },
    )
    .expect("the spoke starts");
    virtual_hosts_against(&hub, &t, &spoke.addr.to_string()).await;
    let at_spoke = ferry_tests::metric(
        &spoke.metrics_url(),
        "ferry_spoke_http_requests_total",
        &[("route", "s3"), ("method", "PUT"), ("status", "200")],
    )
    .await;
    assert!(at_spoke >= 4.0, "{at_spoke} PUTs served at the spoke");
}

/// Runs `tests/scripts/{script}` with the test tools' Python and `args`,
/// and asserts it ended saying `ok` (the scripts stop at the first
/// difference, saying what it was).
async fn python_script(hub: &Hub, script: &str, what: &str, args: &[&str]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let out = tokio::process::Command::new(ferry_tests::tools::Tool::Python.path())
        .arg(path)
        .args(args)
        .output()
        .await
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.trim_end().ends_with("ok"),
        "{what}:\n{text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        hub.log()
    );
}
