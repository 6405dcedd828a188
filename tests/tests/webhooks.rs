//! Webhooks end to end: a receiver of the tests' own (Python's
//! `standardwebhooks`, the specification's reference library, checks every
//! signature — not ferry's code), real hub and spoke processes, uploads
//! through the spoke.

use std::collections::HashMap;
use std::time::Duration;

use ferry_tests::scenarios::{Tenant, tenant};
use ferry_tests::webhooks::{Receiver, endpoint};
use ferry_tests::{Api, Hub, HubOptions, Spoke, eventually, metric};
use http::Method;
use serde_json::{Value, json};

fn hub_options() -> HubOptions {
    HubOptions {
        extra_toml: "[webhooks]\nallow_private_endpoints = true\n\
                     retry_schedule_secs = [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]\ntimeout_secs = 2\n"
            .into(),
        ..HubOptions::default()
    }
}

async fn put(api: &Api, t: &Tenant, path: &str, body: &'static [u8]) {
    api.put(&t.file(path)).body(body).send().await.expect(201);
}

#[tokio::test]
async fn deliveries_arrive_signed_in_order_are_retried_and_stop_at_410() {
    ferry_tests::install_crypto_provider();
    let r = Receiver::start();
    let hub = Hub::start_with(hub_options());
    let spoke = Spoke::start(&hub, "fra1");

    // Uploads through a spoke: each event, signed, in the feed's order.
    let a = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let made = endpoint(&a, &r, "/alpha", None).await;
    let only_deletes = endpoint(&a, &r, "/alpha-deletes", Some(json!(["object.deleted"]))).await;
    assert_eq!(only_deletes["events"], json!(["object.deleted"]));
    let via_spoke = Api::new(spoke.url()).as_token(&a.key);
    let hub_up = metric(
        &hub.metrics_url(),
        "ferry_content_bytes_total",
        &[("direction", "upload")],
    )
    .await;
    for i in 0..5 {
        put(&via_spoke, &a, &format!("f{i}.txt"), b"hello").await;
    }
    via_spoke
        .put(&a.file("f0.txt"))
        .body(&b"again"[..])
        .send()
        .await
        .expect(200);
    via_spoke.delete(&a.file("f1.txt")).send().await.expect(204);
    assert_eq!(
        metric(
            &hub.metrics_url(),
            "ferry_content_bytes_total",
            &[("direction", "upload")]
        )
        .await,
        hub_up,
        "the spoke carried the bytes"
    );
    let got = r.wait_for("/alpha", 7, Duration::from_secs(30)).await;
    assert!(got.iter().all(|d| d["verified"] == true), "{got:#?}");
    let ids: Vec<i64> = got
        .iter()
        .map(|d| d["payload"]["data"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=7).collect::<Vec<_>>(), "in the feed's order");
    let types: Vec<&str> = got
        .iter()
        .map(|d| d["payload"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "object.created",
            "object.created",
            "object.created",
            "object.created",
            "object.created",
            "object.updated",
            "object.deleted"
        ]
    );
    let feed = a.api.get("/v1/events").send().await.expect(200).json();
    for (d, e) in got.iter().zip(feed["events"].as_array().unwrap()) {
        assert_eq!(
            &d["payload"]["data"], e,
            "the payload's data is the feed's event"
        );
    }
    let mut seen: Vec<&str> = got.iter().map(|d| d["id"].as_str().unwrap()).collect();
    seen.dedup();
    assert_eq!(seen.len(), 7, "one message id each");
    let deletes = r
        .wait_for("/alpha-deletes", 1, Duration::from_secs(10))
        .await;
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0]["payload"]["data"]["path"], "f1.txt");

    // The log shows each attempt; the secret is never shown again.
    let id = made["id"].as_str().unwrap();
    let shown = a
        .api
        .get(&format!("/v1/webhooks/{id}"))
        .send()
        .await
        .expect(200)
        .json();
    assert!(shown.get("secret").is_none(), "{shown}");
    let log = a
        .api
        .get(&format!("/v1/webhooks/{id}/deliveries?limit=3"))
        .send()
        .await
        .expect(200)
        .json();
    let page = log["deliveries"].as_array().unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(page[0]["payload"]["data"]["id"], 7, "newest first");
    assert_eq!(page[0]["state"], "delivered");
    assert_eq!(page[0]["attempts"][0]["status"], 200);
    let next = log["next_cursor"].as_str().unwrap();
    let rest = a
        .api
        .get(&format!(
            "/v1/webhooks/{id}/deliveries?limit=10&cursor={next}"
        ))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(rest["deliveries"].as_array().unwrap().len(), 4);
    assert_eq!(rest["next_cursor"], Value::Null);
    // Another account sees nothing of it.
    let b = tenant(&hub.url(), "beta", &hub.data_dir).await;
    b.api
        .get(&format!("/v1/webhooks/{id}/deliveries"))
        .send()
        .await
        .expect_problem(404, "webhook_not_found");

    // 503 with Retry-After, then 200: sent again no sooner than asked,
    // with the same id, and taken once.
    let flaky = endpoint(&b, &r, "/beta", None).await;
    r.control(
        "/_script",
        json!({ "/beta": [[503, { "Retry-After": "4" }]] }),
    )
    .await;
    put(&via_spoke.as_token(&b.key), &b, "x.txt", b"x").await;
    let got = r.wait_for("/beta", 2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0]["answered"].as_i64(), got[1]["answered"].as_i64()),
        (Some(503), Some(200))
    );
    assert_eq!(got[0]["id"], got[1]["id"]);
    assert!(got.iter().all(|d| d["verified"] == true));
    let (t0, t1): (i64, i64) = (
        got[0]["timestamp"].as_str().unwrap().parse().unwrap(),
        got[1]["timestamp"].as_str().unwrap().parse().unwrap(),
    );
    assert!(
        t1 >= t0 + 3,
        "signed anew for the second attempt, after Retry-After"
    );
    let fid = flaky["id"].as_str().unwrap();
    let log = b
        .api
        .get(&format!("/v1/webhooks/{fid}/deliveries"))
        .send()
        .await
        .expect(200)
        .json();
    let attempts = &log["deliveries"][0]["attempts"];
    assert_eq!(
        (
            attempts[0]["status"].as_i64(),
            attempts[1]["status"].as_i64()
        ),
        (Some(503), Some(200))
    );
    assert!(
        attempts[1]["at"].as_i64().unwrap() - attempts[0]["at"].as_i64().unwrap() >= 4_000,
        "not before Retry-After: {attempts}"
    );

    // Redelivery: the same message again, on request.
    let msg = log["deliveries"][0]["id"].as_str().unwrap();
    b.api
        .post(&format!("/v1/webhooks/{fid}/deliveries/{msg}/redeliver"))
        .send()
        .await
        .expect(202);
    let got = r.wait_for("/beta", 3, Duration::from_secs(30)).await;
    assert_eq!(got[2]["id"], msg);
    assert!(got[2]["verified"] == true);
    b.api
        .post(&format!("/v1/webhooks/{fid}/deliveries/msg_nope/redeliver"))
        .send()
        .await
        .expect_problem(404, "delivery_not_found");

    // A rotated secret: both sign for a while, so a receiver that has
    // either verifies.
    let rotated = b
        .api
        .post(&format!("/v1/webhooks/{fid}/rotate-secret"))
        .send()
        .await
        .expect(200)
        .json();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(rotated["previous_secret_expires_at"].as_i64().is_some());
    r.control("/_secrets", json!({ "/beta": [new_secret] }))
        .await;
    put(&via_spoke.as_token(&b.key), &b, "y.txt", b"y").await;
    let got = r.wait_for("/beta", 4, Duration::from_secs(30)).await;
    assert!(got[3]["verified"] == true, "{:#?}", got[3]);

    // 410 Gone: disabled, its later events not sent.
    let c = tenant(&hub.url(), "gamma", &hub.data_dir).await;
    let gone = endpoint(&c, &r, "/gamma", None).await;
    r.control("/_script", json!({ "/gamma": [[410, {}]] }))
        .await;
    put(&via_spoke.as_token(&c.key), &c, "a.txt", b"a").await;
    r.wait_for("/gamma", 1, Duration::from_secs(30)).await;
    let gid = gone["id"].as_str().unwrap();
    let mut shown = Value::Null;
    assert!(
        eventually(Duration::from_secs(10), async || {
            shown = c
                .api
                .get(&format!("/v1/webhooks/{gid}"))
                .send()
                .await
                .expect(200)
                .json();
            shown["disabled_reason"] == "gone"
        })
        .await,
        "{shown}"
    );
    put(&via_spoke.as_token(&c.key), &c, "b.txt", b"b").await;
    let settled = eventually(Duration::from_secs(3), async || {
        r.deliveries("/gamma").await.len() > 1
    })
    .await;
    assert!(!settled, "nothing sent to a disabled endpoint");
    assert!(
        metric(
            &hub.metrics_url(),
            "ferry_webhook_attempts_total",
            &[("result", "endpoint_gone")]
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &hub.metrics_url(),
            "ferry_webhook_attempts_total",
            &[("result", "delivered")]
        )
        .await
            >= 10.0
    );
    // Enabled again by the account, it gets what follows.
    let enabled = c
        .api
        .req(Method::PATCH, &format!("/v1/webhooks/{gid}"))
        .json(&json!({ "enabled": true }))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(enabled["disabled_at"], Value::Null);
    put(&via_spoke.as_token(&c.key), &c, "c.txt", b"c").await;
    let got = r.wait_for("/gamma", 2, Duration::from_secs(30)).await;
    assert_eq!(got[1]["payload"]["data"]["path"], "c.txt");

    // What the API refuses.
    for (body, code) in [
        (json!({ "url": "ftp://x.example.com/" }), "invalid_field"),
        (
            json!({ "url": r.url("/x"), "events": ["object.exploded"] }),
            "invalid_field",
        ),
        (json!({ "url": r.url("/x"), "events": [] }), "invalid_field"),
        (
            json!({ "url": r.url("/x"), "colour": "red" }),
            "invalid_json",
        ),
    ] {
        c.api
            .post("/v1/webhooks")
            .json(&body)
            .send()
            .await
            .expect_problem(400, code);
    }
    c.api
        .delete(&format!("/v1/webhooks/{gid}"))
        .send()
        .await
        .expect(204);
    c.api
        .get(&format!("/v1/webhooks/{gid}"))
        .send()
        .await
        .expect_problem(404, "webhook_not_found");
}

#[tokio::test]
async fn deliveries_pending_when_the_hub_is_killed_are_sent_after_it_restarts() {
    ferry_tests::install_crypto_provider();
    let r = Receiver::start();
    let mut hub = Hub::start_with(hub_options());
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let made = endpoint(&t, &r, "/down", None).await;
    // The receiver fails everything for now.
    let failing: Vec<Value> = (0..200).map(|_| json!([503, {}])).collect();
    r.control("/_script", json!({ "/down": failing })).await;
    for i in 0..3 {
        put(&t.api, &t, &format!("f{i}.txt"), b"data").await;
    }
    // An attempt failed: the deliveries are pending in the outbox.
    r.wait_for("/down", 1, Duration::from_secs(20)).await;
    let pending = metric(&hub.metrics_url(), "ferry_webhook_outbox_pending", &[]).await;
    hub.kill();
    r.control("/_script", json!({ "/down": [] })).await;
    hub.restart_on_same_ports();

    let mut taken: Vec<Value> = Vec::new();
    let delivered = eventually(Duration::from_secs(60), async || {
        taken = r
            .deliveries("/down")
            .await
            .into_iter()
            .filter(|d| d["answered"] == 200)
            .collect();
        taken.len() >= 3
    })
    .await;
    assert!(
        delivered,
        "pending {pending}, delivered after the restart: {taken:#?}"
    );
    assert!(taken.iter().all(|d| d["verified"] == true));
    let ids: Vec<i64> = taken
        .iter()
        .map(|d| d["payload"]["data"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3], "each taken once, in order");
    let mut per_message: HashMap<String, usize> = HashMap::new();
    for d in &taken {
        *per_message
            .entry(d["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(per_message.values().all(|&n| n == 1), "{per_message:?}");
    let id = made["id"].as_str().unwrap();
    let log = t
        .api
        .get(&format!("/v1/webhooks/{id}/deliveries"))
        .send()
        .await
        .expect(200)
        .json();
    assert!(
        log["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["state"] == "delivered"),
        "{log:#}"
    );
    assert!(
        eventually(Duration::from_secs(10), async || {
            metric(&hub.metrics_url(), "ferry_webhook_outbox_pending", &[]).await == 0.0
        })
        .await
    );
}
