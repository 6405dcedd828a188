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
    boto3_against(&hub, &hub.url()).await;
}

/// Through a spoke, S3 requests are forwarded to the hub's door as they
/// are (their signature covers the host they were sent to).
#[tokio::test]
async fn boto3_speaks_s3_through_a_spoke() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let spoke = ferry_tests::Spoke::start(&hub, "fra1");
    boto3_against(&hub, &spoke.url()).await;
}

async fn boto3_against(hub: &Hub, endpoint: &str) {
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let key = t.api.post("/v1/s3-keys").send().await.expect(201).json();
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
        .put(&t.file("docs/from-ferry.txt"))
        .body("ferry")
        .send()
        .await
        .expect(201);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3_boto3.py");
    let out = tokio::process::Command::new(ferry_tests::tools::Tool::Python.path())
        .arg(script)
        .arg(endpoint)
        .arg(key["access_key_id"].as_str().unwrap())
        .arg(key["secret_access_key"].as_str().unwrap())
        .arg("local")
        .arg(ro["access_key_id"].as_str().unwrap())
        .arg(ro["secret_access_key"].as_str().unwrap())
        .output()
        .await
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.trim_end().ends_with("ok"),
        "boto3:\n{text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        hub.log()
    );
    // What boto3 wrote is a file of ferry's, with its checksum.
    let got = t
        .api
        .get(&t.file("docs/deep/big.bin"))
        .send()
        .await
        .expect(200);
    assert_eq!(got.body.len(), 6 << 20);
    assert!(got.header("x-ferry-checksum-crc64nvme").is_some());
}
