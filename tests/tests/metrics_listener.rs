//! `/metrics` is the operator's: hubs and spokes serve it on their
//! operator listener (`[metrics]`), with `/healthz` and `/readyz`, and the
//! client listener answers `404` for it while health checks still answer
//! there; the example scrape configuration passes `promtool check config`.

use ferry_tests::prometheus::{promtool, rules_dir};
use ferry_tests::{Api, Hub, Spoke};

#[tokio::test]
async fn metrics_are_on_the_operator_listener_only() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let spoke = Spoke::start(&hub, "fra1");
    for (who, client, operator, family) in [
        ("hub", hub.url(), hub.metrics_url(), "ferry_build_info"),
        (
            "spoke",
            spoke.url(),
            spoke.metrics_url(),
            "ferry_spoke_build_info",
        ),
    ] {
        // The client listener: no metrics, health checks as before.
        let client = Api::new(client);
        let resp = client
            .get("/metrics")
            .send()
            .await
            .expect_problem(404, "route_not_found");
        assert!(
            !String::from_utf8_lossy(&resp.body).contains(family),
            "{who}"
        );
        client.get("/healthz").send().await.expect(200);
        client.get("/readyz").send().await.expect(200);
        // The operator listener: metrics, health, readiness, nothing else.
        let operator = Api::new(operator);
        let text = operator.get("/metrics").send().await.expect(200);
        assert!(
            String::from_utf8_lossy(&text.body).contains(family),
            "{who}"
        );
        operator.head("/metrics").send().await.expect(200);
        operator.get("/healthz").send().await.expect(200);
        operator.get("/readyz").send().await.expect(200);
        operator
            .get("/v1/accounts")
            .send()
            .await
            .expect_problem(404, "route_not_found");
    }
}

#[test]
fn the_example_scrape_configuration_passes_promtool() {
    let config = rules_dir().join("prometheus.example.yml");
    let (ok, out, err) = promtool(&["check", "config", config.to_str().unwrap()], None);
    assert!(ok, "{out}{err}");
}
