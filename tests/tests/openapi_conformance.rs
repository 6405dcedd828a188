//! The API answers as `docs/openapi.yaml` says, checked by schemathesis
//! with every check on: generated requests, schema-valid and not, sent to
//! a hub and through a spoke, once with an account's API key and once with
//! the admin token. Any finding fails the test with schemathesis's report.

use std::path::PathBuf;

use ferry_tests::api_fuzz::{self, FuzzBounds, FuzzTarget};
use ferry_tests::hub::ADMIN_TOKEN;
use ferry_tests::scenarios::{Tenant, tenant, upload};
use ferry_tests::{Hub, Spoke};

/// The spec, as published.
fn spec() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml")
}

/// An account with a connection `local` holding `docs/hello.txt` (the
/// spec's own examples name both), so generated requests reach real files.
async fn seeded_tenant(base: &str, hub: &Hub) -> Tenant {
    let t = tenant(base, "fuzzed", &hub.data_dir).await;
    upload(&t, "docs/hello.txt", b"hello, world\n").await;
    t
}

/// Fuzzes the API at `base_url` with `bearer` and fails with the report on
/// any finding.
async fn fuzz(base_url: String, bearer: &str) {
    let target = FuzzTarget {
        spec: spec(),
        base_url,
        bearer: Some(bearer.to_owned()),
        // /metrics belongs to the operator listener.
        exclude_tags: vec!["operator".to_owned()],
    };
    let report = tokio::task::spawn_blocking(move || api_fuzz::run(&target, FuzzBounds::default()))
        .await
        .expect("the run is not cancelled");
    assert!(report.passed, "schemathesis found:\n{}", report.output);
}

#[tokio::test]
async fn a_hub_answers_an_api_key_as_the_spec_says() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let t = seeded_tenant(&hub.url(), &hub).await;
    fuzz(hub.url(), &t.key).await;
}

#[tokio::test]
async fn a_hub_answers_the_admin_token_as_the_spec_says() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    seeded_tenant(&hub.url(), &hub).await;
    fuzz(hub.url(), ADMIN_TOKEN).await;
}

#[tokio::test]
async fn a_spoke_answers_an_api_key_as_the_spec_says() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let spoke = Spoke::start(&hub, "fra1");
    let t = seeded_tenant(&spoke.url(), &hub).await;
    fuzz(spoke.url(), &t.key).await;
}

#[tokio::test]
async fn a_spoke_answers_the_admin_token_as_the_spec_says() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let spoke = Spoke::start(&hub, "fra1");
    seeded_tenant(&spoke.url(), &hub).await;
    fuzz(spoke.url(), ADMIN_TOKEN).await;
}
