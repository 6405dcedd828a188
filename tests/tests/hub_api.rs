//! The API suite against a real `ferry-hub` process.

use ferry_tests::scenarios::{self, Tenant, tenant};
use ferry_tests::{Api, Hub};

async fn hub_with_tenant() -> (Hub, Tenant) {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    (hub, t)
}

#[tokio::test]
async fn large_upload_and_download_keep_every_byte() {
    let (_hub, t) = hub_with_tenant().await;
    scenarios::large_round_trip(&t, 64 << 20).await;
}

#[tokio::test]
async fn range_reads() {
    let (_hub, t) = hub_with_tenant().await;
    scenarios::range_reads(&t).await;
}

#[tokio::test]
async fn conditional_requests() {
    let (_hub, t) = hub_with_tenant().await;
    scenarios::conditional_requests(&t).await;
}

#[tokio::test]
async fn listing_pages_through_more_entries_than_one_page() {
    let (_hub, t) = hub_with_tenant().await;
    scenarios::listing_pagination(&t).await;
}

#[tokio::test]
async fn copy_and_move() {
    let (_hub, t) = hub_with_tenant().await;
    scenarios::copy_and_move(&t).await;
}

#[tokio::test]
async fn events_come_in_order_and_resume_from_a_cursor() {
    let (_hub, t) = hub_with_tenant().await;
    scenarios::events_in_order(&t).await;
}

#[tokio::test]
async fn a_digest_mismatch_leaves_no_object() {
    let (_hub, t) = hub_with_tenant().await;
    scenarios::digest_mismatch_leaves_nothing(&t).await;
}

#[tokio::test]
async fn wanted_digests_are_answered() {
    let (_hub, t) = hub_with_tenant().await;
    scenarios::wanted_digests(&t).await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let (_hub, t) = hub_with_tenant().await;
    scenarios::bad_inputs(&t, 1024 * 1024).await;
}

#[tokio::test]
async fn tenants_are_isolated() {
    let (hub, a) = hub_with_tenant().await;
    let b = tenant(&hub.url(), "beta", &hub.data_dir).await;
    scenarios::tenant_isolation(&a, &b, &hub.data_dir).await;
}

#[tokio::test]
async fn api_keys_are_made_and_revoked() {
    let (_hub, t) = hub_with_tenant().await;
    scenarios::key_lifecycle(&t).await;
}

#[tokio::test]
async fn memory_connections_work() {
    let (_hub, t) = hub_with_tenant().await;
    scenarios::memory_connection(&t).await;
}

#[tokio::test]
async fn health_and_readiness() {
    let hub = Hub::start();
    let api = Api::new(hub.url());
    assert_eq!(
        &api.get("/healthz").send().await.expect(200).body[..],
        b"ok\n"
    );
    assert_eq!(
        &api.get("/readyz").send().await.expect(200).body[..],
        b"ready\n"
    );
}
