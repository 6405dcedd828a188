//! What an enrolled spoke can do at its hub, tried by a spoke the test
//! plays by hand (`ferry_tests::rogue`): only what a grant the hub issued
//! to it, for a client request, covers — one object of one connection of
//! one account, read or write. Everything else is refused with 403
//! `grant_refused`, and nothing of it is recorded.

use std::time::Duration;

use ferry_tests::rogue::{
    connect, connect_as, connect_as_with, enrol_as, hello, hello_announcing, own_call,
};
use ferry_tests::scenarios::{tenant, upload};
use ferry_tests::{Hub, HubOptions};
use serde_json::{Value, json};

/// What a spoke sends for an upload of `path` in `connection` of
/// `account`, reported as carried by `via`.
fn upload_commit(account: &str, connection: &str, path: &str, via: &str) -> Value {
    json!({
        "remove": [],
        "upsert": {
            "connection_id": connection, "path": path, "size": 6, "crc64nvme": 1,
            "sha256": null, "content_type": null, "etag": "\"forged\"",
            "provider_modified_ms": null, "updated_at": 1
        },
        "event": {
            "account_id": account, "connection_id": connection, "kind": "created",
            "path": path, "from_path": null, "size": 6, "at": 1
        },
        "transfer": {
            "account_id": account, "connection_id": connection, "path": path,
            "direction": "upload", "status": "complete", "bytes": 6, "crc64nvme": 1,
            "via": via, "started_at": 1, "duration_ms": 1
        }
    })
}

#[tokio::test]
async fn a_spoke_acts_only_within_the_grants_it_was_issued() {
    let hub = Hub::start_with(HubOptions {
        tunnel_extra: "grant_ttl_secs = 1\nreport_window_secs = 2\n".into(),
        ..HubOptions::default()
    });
    let alpha = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let beta = tenant(&hub.url(), "beta", &hub.data_dir).await;
    upload(&beta, "private.txt", b"beta's own").await;
    let beta_conn = beta
        .api
        .get("/v1/connections/local")
        .send()
        .await
        .expect(200)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let conn = connect_as(&hub, "rogue").await;
    let _control = hello(&conn, "rogue").await;
    let refused = |(status, body): (u16, Value)| {
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("grant_refused")),
            "{body}"
        );
    };

    // Without a grant, nothing: not even beta's metadata.
    let lookup_beta = json!({ "connection_id": beta_conn, "path": "private.txt" });
    refused(own_call(&conn, "/internal/v1/lookup", &[], &lookup_beta).await);
    refused(
        own_call(
            &conn,
            "/internal/v1/lookup",
            &[("x-ferry-grant", "fg1.e30.AAAA")],
            &lookup_beta,
        )
        .await,
    );

    // A client of alpha's asks this spoke to write one object: the spoke
    // gets a grant for exactly that.
    let auth = format!("Bearer {}", alpha.key);
    let (status, grant) = own_call(
        &conn,
        "/internal/v1/grant",
        &[("authorization", &auth)],
        &json!({ "connection": "local", "path": "mine.txt", "op": "write" }),
    )
    .await;
    assert_eq!(status, 200, "{grant}");
    let token = grant["token"].as_str().unwrap().to_owned();
    let (account, connection) = (
        grant["account_id"].as_str().unwrap().to_owned(),
        grant["connection_id"].as_str().unwrap().to_owned(),
    );
    let with = [("x-ferry-grant", token.as_str())];
    // A grant request of protocol version 1 names no object.
    let (status, _) = own_call(
        &conn,
        "/internal/v1/grant",
        &[("authorization", &auth)],
        &json!({ "connection": "local" }),
    )
    .await;
    assert_eq!(status, 400);

    // With that grant: beta's metadata, another of alpha's objects, events
    // and transfers for beta, another path, a transfer carried by another
    // node, a deletion — all refused.
    refused(own_call(&conn, "/internal/v1/lookup", &with, &lookup_beta).await);
    let other_path = json!({ "connection_id": connection, "path": "other.txt" });
    refused(own_call(&conn, "/internal/v1/lookup", &with, &other_path).await);
    for forged in [
        upload_commit(&account, &beta_conn, "private.txt", "rogue"),
        upload_commit(&account, &connection, "other.txt", "rogue"),
        upload_commit("acc_someone_else", &connection, "mine.txt", "rogue"),
        upload_commit(&account, &connection, "mine.txt", "fra1"),
    ] {
        refused(own_call(&conn, "/internal/v1/commit", &with, &forged).await);
    }
    let mut deleting = upload_commit(&account, &connection, "mine.txt", "rogue");
    deleting["remove"] = json!([[beta_conn, "private.txt"]]);
    refused(own_call(&conn, "/internal/v1/commit", &with, &deleting).await);
    let mut beta_transfer =
        upload_commit(&account, &connection, "mine.txt", "rogue")["transfer"].clone();
    beta_transfer["account_id"] = json!("acc_beta");
    refused(own_call(&conn, "/internal/v1/transfer", &with, &beta_transfer).await);

    // What it covers works.
    let (status, found) = own_call(
        &conn,
        "/internal/v1/lookup",
        &with,
        &json!({ "connection_id": connection, "path": "mine.txt" }),
    )
    .await;
    assert_eq!((status, &found["meta"]), (200, &Value::Null));
    let (status, body) = own_call(
        &conn,
        "/internal/v1/commit",
        &with,
        &upload_commit(&account, &connection, "mine.txt", "rogue"),
    )
    .await;
    assert_eq!(status, 204, "{body}");

    // A provider's 429, told for another tenant's connection or without a
    // grant: refused, nothing slowed. For the grant's connection: taken.
    let slow_beta = json!({ "connection_id": beta_conn });
    refused(own_call(&conn, "/internal/v1/slow_down", &with, &slow_beta).await);
    refused(own_call(&conn, "/internal/v1/slow_down", &[], &slow_beta).await);
    assert_eq!(
        ferry_tests::metric(&hub.metrics_url(), "ferry_connections_slowed", &[]).await,
        0.0
    );
    let (status, body) = own_call(
        &conn,
        "/internal/v1/slow_down",
        &with,
        &json!({ "connection_id": connection }),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        ferry_tests::metric(&hub.metrics_url(), "ferry_connections_slowed", &[]).await,
        1.0
    );

    // Another spoke cannot use this spoke's grant.
    let other = connect_as(&hub, "rogue2").await;
    let _control2 = hello(&other, "rogue2").await;
    let (status, body) = own_call(
        &other,
        "/internal/v1/lookup",
        &with,
        &json!({ "connection_id": connection, "path": "mine.txt" }),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("another spoke"),
        "{body}"
    );

    // The grant's reporting window closes (2 s here).
    let closed = tokio::time::Instant::now() + Duration::from_millis(2_200);
    tokio::time::sleep_until(closed).await;
    refused(
        own_call(
            &conn,
            "/internal/v1/commit",
            &with,
            &upload_commit(&account, &connection, "mine.txt", "rogue"),
        )
        .await,
    );

    // Beta's feed and object are as beta left them.
    let events = beta.api.get("/v1/events").send().await.expect(200).json();
    let paths: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["private.txt"], "{events}");
    let got = beta
        .api
        .get(&beta.file("private.txt"))
        .send()
        .await
        .expect(200);
    assert_eq!(&got.body[..], b"beta's own");
    assert_ne!(got.header("etag").as_deref(), Some("\"forged\""));
    assert!(
        ferry_tests::metric(&hub.metrics_url(), "ferry_grants_refused_total", &[]).await >= 10.0
    );
}

#[tokio::test]
async fn a_spoke_announces_only_what_the_operator_allowed_and_moves_few_networks() {
    let hub = Hub::start_with(HubOptions {
        extra_toml: "[steering]\nspoke_new_networks_per_min = 100\n".into(),
        ..HubOptions::default()
    });
    let admin = ferry_tests::Api::new(hub.url()).as_token(ferry_tests::hub::ADMIN_TOKEN);
    let announce = |addrs: &[&str], url: &str| {
        Some(ferry_common::proto::SteeringAnnounce {
            public_addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            public_url: url.into(),
            capacity_transfers: 0,
        })
    };
    // Allowed one address: the other, and a URL elsewhere, are left out.
    let conn = connect_as_with(
        &hub,
        "rogue",
        json!({ "name": "rogue", "public_addrs": ["127.0.0.5/32"] }),
    )
    .await;
    let control = hello_announcing(
        &conn,
        "rogue",
        announce(
            &["127.0.0.5", "127.0.0.9"],
            "http://attacker.example.org:8080",
        ),
    )
    .await;
    let seen = admin
        .get("/v1/spokes/rogue")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(
        seen["allowed_public"]["addrs"],
        json!(["127.0.0.5/32"]),
        "{seen}"
    );
    assert_eq!(
        seen["tunnel"]["steering"]["public_addrs"],
        json!(["127.0.0.5"]),
        "{seen}"
    );
    assert_eq!(seen["tunnel"]["steering"]["public_url"], "", "{seen}");
    // Allowed nothing: nothing to steer to.
    let other = connect_as(&hub, "quiet").await;
    let _quiet = hello_announcing(
        &other,
        "quiet",
        announce(&["127.0.0.6"], "http://127.0.0.6:1"),
    )
    .await;
    let seen = admin
        .get("/v1/spokes/quiet")
        .send()
        .await
        .expect(200)
        .json();
    assert!(seen["tunnel"]["steering"].is_null(), "{seen}");
    assert!(
        ferry_tests::metric(
            &hub.metrics_url(),
            "ferry_tunnel_announcements_refused_total",
            &[]
        )
        .await
            >= 2.0
    );

    // Its own RTT samples claim 600 networks at 1 µs: it adds 100 a minute.
    let rtts = |from: u32| -> Vec<ferry_common::proto::PrefixRtt> {
        (from..from + 300)
            .map(|i| ferry_common::proto::PrefixRtt {
                prefix: format!("10.{}.{}.0/24", i / 256, i % 256),
                rtt_us: 1,
                samples: 1,
            })
            .collect()
    };
    control.report_rtts(rtts(0)).await;
    control.report_rtts(rtts(300)).await;
    let url = hub.metrics_url();
    let rejected = async || {
        ferry_tests::metric(
            &url,
            "ferry_steering_samples_total",
            &[("source", "spoke"), ("result", "rejected")],
        )
        .await
    };
    assert!(
        ferry_tests::eventually(Duration::from_secs(5), async || rejected().await >= 500.0).await,
        "the budget did not hold"
    );
    let accepted = ferry_tests::metric(
        &hub.metrics_url(),
        "ferry_steering_samples_total",
        &[("source", "spoke"), ("result", "accepted")],
    )
    .await;
    assert_eq!(accepted, 100.0);
}

#[tokio::test]
async fn enrolling_a_spoke_again_closes_the_tunnels_of_its_earlier_certificate() {
    let hub = Hub::start();
    let beside = hub.start_beside();
    let first = enrol_as(&hub, "fra9", json!({ "name": "fra9" })).await;
    let here = connect(&first, hub.tunnel_addr).await;
    let there = connect(&first, beside.tunnel_addr).await;
    let _c1 = hello(&here, "fra9").await;
    let _c2 = hello(&there, "fra9").await;
    // The spoke's name enrols again (a lost state folder, or a stolen key
    // the operator replaces): the hub that enrols it closes the old
    // certificate's tunnel at once, the other hub within its sweep.
    let _second = enrol_as(&hub, "fra9", json!({ "name": "fra9" })).await;
    tokio::time::timeout(Duration::from_secs(2), here.closed())
        .await
        .expect("the enrolling hub closed the old tunnel");
    tokio::time::timeout(Duration::from_secs(10), there.closed())
        .await
        .expect("the other hub closed the old tunnel");
    assert!(
        beside
            .daemon()
            .wait_for("it enrolled again", Duration::from_secs(5))
            .is_some(),
        "{}",
        beside.log()
    );
}

#[tokio::test]
async fn a_spoke_renews_only_its_own_certificate_with_a_key_it_holds() {
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let hub = Hub::start();
    let conn = connect_as(&hub, "fra7").await;
    let _control = hello(&conn, "fra7").await;
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &ferry_tests::rogue::new_key(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let call =
        async |body: Value| own_call(&conn, "/internal/v1/renew_certificate", &[], &body).await;
    // A proof made for another spoke's name, or a key swapped in after
    // the proof: refused, nothing signed.
    for body in [
        json!(ferry_common::contract::RenewRequest::signed("fra8", &key)),
        {
            let mut b = json!(ferry_common::contract::RenewRequest::signed("fra7", &key));
            b["public_key"] = json!(
                ferry_common::contract::RenewRequest::signed(
                    "fra7",
                    &EcdsaKeyPair::from_pkcs8(
                        &ECDSA_P256_SHA256_ASN1_SIGNING,
                        &ferry_tests::rogue::new_key(),
                        &ring::rand::SystemRandom::new(),
                    )
                    .unwrap()
                )
                .public_key
            );
            b
        },
        json!({ "public_key": "AAAA", "proof": "AAAA", "name": "fra8" }),
    ] {
        let (status, answer) = call(body).await;
        assert_eq!(status, 400, "{answer}");
    }
    assert_eq!(hub.daemon().count("renewed a spoke's certificate"), 0);
    // Its own name and a key it holds: a certificate for that name.
    let (status, answer) = call(json!(ferry_common::contract::RenewRequest::signed(
        "fra7", &key
    )))
    .await;
    assert_eq!(status, 200, "{answer}");
    let pem = answer["certificate"].as_str().unwrap();
    assert!(
        ferry_common::cert_time::not_after_pem(pem).is_some(),
        "{pem}"
    );
    let line = hub
        .daemon()
        .wait_for("renewed a spoke's certificate", Duration::from_secs(5))
        .unwrap();
    assert!(line.contains("spoke.id=fra7"), "{line}");
}

/// A SigV4 presigned URL's path and query, as boto3 signs it for
/// `method` of `key` (none when empty) in `bucket` at
/// `http://spoke.test:8080`.
fn presigned(access_key: &str, secret: &str, method: &str, bucket: &str, key: &str) -> String {
    ferry_tests::scenarios::presigned(
        "http://spoke.test:8080",
        access_key,
        secret,
        method,
        bucket,
        key,
    )
}

/// The S3 door at a spoke: the hub checks a client's signed head before
/// it hands the spoke anything, and what it hands over (the key's secret
/// for that request, and a pass) covers that one object and operation,
/// for that spoke only. A head changed after signing, a key that may not
/// write, a bucket that is not the key's: nothing but "forward it" or
/// S3's refusal.
#[tokio::test]
async fn a_spoke_gets_an_s3_pass_only_for_a_request_the_hub_checked() {
    let hub = Hub::start();
    let alpha = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    upload(&alpha, "a.txt", b"alpha's").await;
    let key = alpha.new_s3_key().await;
    let ro = alpha
        .api
        .post("/v1/s3-keys")
        .json(&json!({ "read_only": true }))
        .send()
        .await
        .expect(201)
        .json();
    let (id, secret) = (
        key["access_key_id"].as_str().unwrap(),
        key["secret_access_key"].as_str().unwrap(),
    );
    // The client's signed requests, made first: python blocks this
    // test's runtime, which also sends the rogue spoke's heartbeats.
    let get_a = presigned(id, secret, "get_object", "local", "a.txt");
    let ro_put = presigned(
        ro["access_key_id"].as_str().unwrap(),
        ro["secret_access_key"].as_str().unwrap(),
        "put_object",
        "local",
        "a.txt",
    );
    let no_bucket = presigned(id, secret, "get_object", "nosuch", "a.txt");
    let list = presigned(id, secret, "list_objects_v2", "local", "");
    let conn = connect_as(&hub, "rogue").await;
    let _control = hello(&conn, "rogue").await;
    let head = |method: &str, uri: &str| json!({ "method": method, "uri": uri, "headers": [["host", "spoke.test:8080"]] });
    let authorize = |body: Value| {
        let conn = conn.clone();
        async move { own_call(&conn, "/internal/v1/s3_authorize", &[], &body).await }
    };

    // A GET the client signed: the spoke may serve it.
    let (status, answer) = authorize(head("GET", &get_a)).await;
    assert_eq!(status, 200, "{answer}");
    let serve = &answer["serve"];
    assert_eq!(serve["access_key"], id);
    let pass = format!("FerryS3 {}", serve["pass"].as_str().unwrap());
    let connection = serve["connection_id"].as_str().unwrap().to_owned();
    let with = [("authorization", pass.as_str())];
    let grant = |path: &str, op: &str| json!({ "connection": connection, "path": path, "op": op });
    let (status, granted) =
        own_call(&conn, "/internal/v1/grant", &with, &grant("a.txt", "read")).await;
    assert_eq!(status, 200, "{granted}");
    // Nothing else with that pass: another object, a write, an upload.
    for (path, op) in [("b.txt", "read"), ("a.txt", "write")] {
        let (status, body) = own_call(&conn, "/internal/v1/grant", &with, &grant(path, op)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("grant_refused")),
            "{body}"
        );
    }
    let part = json!({ "connection": connection, "upload": {
        "path": "", "length": 5, "metadata": "", "content_type": null, "concat": "partial" } });
    let (status, body) = own_call(&conn, "/internal/v1/upload_create", &with, &part).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("grant_refused")),
        "{body}"
    );
    // Nor through another spoke.
    let other = connect_as(&hub, "other").await;
    let _other_control = hello(&other, "other").await;
    let (status, body) =
        own_call(&other, "/internal/v1/grant", &with, &grant("a.txt", "read")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("grant_refused")),
        "{body}"
    );

    // The same signature on another object: S3's refusal, nothing handed over.
    let tampered = get_a.replacen("/local/a.txt", "/local/b.txt", 1);
    let (status, answer) = authorize(head("GET", &tampered)).await;
    assert_eq!(status, 403);
    assert!(
        answer
            .as_str()
            .is_some_and(|xml| xml.contains("<Code>SignatureDoesNotMatch</Code>")),
        "{answer}"
    );
    // A read-only key's PUT, a bucket the account does not have, an
    // operation that is not an object's bytes: forwarded to the hub's door.

    for asked in [
        head("PUT", &ro_put),
        head("GET", &no_bucket),
        head("GET", &list),
    ] {
        let (status, answer) = authorize(asked).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer["serve"].is_null(), "{answer}");
    }
}
