//! Credentials come first: every operation `docs/openapi.yaml` does not
//! declare public answers a request without credentials `401`, whatever
//! the hub's set-up (no `[tunnel]`, no admin token) and whether it is asked
//! directly or through a spoke; wrong admin tokens from one address are
//! slowed down without locking out another address.

use std::net::{IpAddr, Ipv4Addr};

use ferry_tests::hub::ADMIN_TOKEN;
use ferry_tests::{Api, Hub, HubOptions, Spoke};
use http::Method;

/// Every `(method, concrete path)` of `docs/openapi.yaml` that needs
/// credentials (an operation whose `security` is not `[]`).
fn protected_operations() -> Vec<(Method, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    let text = std::fs::read_to_string(&path).expect("docs/openapi.yaml");
    let spec: serde_json::Value = serde_yaml_ng::from_str(&text).expect("openapi.yaml is YAML");
    let mut ops = Vec::new();
    for (template, item) in spec["paths"].as_object().expect("paths") {
        let concrete = template
            .replace("{path}", "some/file.txt")
            .replace("{dir}", "some/dir")
            .replace(['{', '}'], "");
        for (verb, op) in item.as_object().expect("a path item") {
            let Ok(method) = verb.to_uppercase().parse::<Method>() else {
                continue;
            };
            if !op.is_object() || ["parameters", "summary", "description"].contains(&verb.as_str())
            {
                continue;
            }
            let public = op["security"].as_array().is_some_and(Vec::is_empty);
            if !public {
                ops.push((method, concrete.clone()));
            }
        }
    }
    assert!(ops.len() > 20, "the walk found too few operations: {ops:?}");
    ops
}

/// Asks every protected operation at `base` without credentials and
/// expects `401 unauthorized` from each.
async fn every_protected_operation_answers_401(base: &str) {
    let api = Api::new(base);
    let mut wrong = Vec::new();
    for (method, path) in protected_operations() {
        let resp = api.req(method.clone(), &path).send().await;
        if resp.status != 401 {
            wrong.push(format!(
                "{method} {path}: {} {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ));
        } else if method != Method::HEAD {
            let resp = resp.expect_problem(401, "unauthorized");
            assert!(resp.header("www-authenticate").is_some(), "{method} {path}");
        }
    }
    assert!(
        wrong.is_empty(),
        "answered before credentials were checked:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn a_hub_without_a_tunnel_asks_for_credentials_first() {
    let hub = Hub::start_with(HubOptions {
        tunnel: false,
        ..HubOptions::default()
    });
    every_protected_operation_answers_401(&hub.url()).await;
    // With the admin token, the spoke routes say why they cannot serve.
    Api::new(hub.url())
        .as_token(ADMIN_TOKEN)
        .get("/v1/spokes")
        .send()
        .await
        .expect_problem(409, "tunnel_disabled");
}

#[tokio::test]
async fn a_hub_without_an_admin_token_asks_for_credentials_first() {
    let hub = Hub::start_with(HubOptions {
        admin_token: false,
        ..HubOptions::default()
    });
    every_protected_operation_answers_401(&hub.url()).await;
    let spoke = Spoke::start(&hub, "fra1");
    every_protected_operation_answers_401(&spoke.url()).await;
    // A bearer token learns that the admin API is off.
    Api::new(hub.url())
        .as_token(ADMIN_TOKEN)
        .get("/v1/accounts")
        .send()
        .await
        .expect_problem(403, "admin_disabled");
}

#[tokio::test]
async fn wrong_admin_tokens_are_slowed_down_per_address() {
    let hub = Hub::start();
    let guesser = Api::new(hub.url());
    for i in 0..6 {
        guesser
            .as_token(&format!("{ADMIN_TOKEN}-wrong-{i}"))
            .get("/v1/accounts")
            .send()
            .await
            .expect_problem(401, "unauthorized");
    }
    let failures =
        ferry_tests::metric(&hub.metrics_url(), "ferry_admin_token_failures_total", &[]).await;
    assert_eq!(failures, 6.0);
    // Six wrong tokens: now even the right one waits.
    let resp = guesser
        .as_token(ADMIN_TOKEN)
        .get("/v1/accounts")
        .send()
        .await
        .expect_problem(429, "too_many_attempts");
    let retry: u64 = resp
        .header("retry-after")
        .expect("a Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    // Another address is not slowed down.
    let other = Api::from_source(hub.url(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    other
        .as_token(ADMIN_TOKEN)
        .get("/v1/accounts")
        .send()
        .await
        .expect(200);
    // Once the wait is over, the right token works and clears the count.
    let waited = ferry_tests::eventually(std::time::Duration::from_secs(5), async || {
        guesser
            .as_token(ADMIN_TOKEN)
            .get("/v1/accounts")
            .send()
            .await
            .status
            == 200
    })
    .await;
    assert!(waited, "the right token never got through again");
    guesser
        .as_token("wrong-once-more-0123456789abcdef0123")
        .get("/v1/accounts")
        .send()
        .await
        .expect_problem(401, "unauthorized");
}
