//! A spoke holds tunnels to its primary hub and to a hot standby; when the
//! primary dies, requests go on through the standby within seconds, and
//! come back to the primary when it returns. (The two hubs share one state
//! directory here, as hubs share metadata and CA.)

use std::time::Duration;

use ferry_tests::hub::ADMIN_TOKEN;
use ferry_tests::scenarios::tenant;
use ferry_tests::{Api, Hub, Spoke, SpokeOptions, eventually, metric};

#[tokio::test]
async fn requests_fail_over_to_the_standby_hub_and_back() {
    ferry_tests::install_crypto_provider();
    let mut primary = Hub::start();
    let standby = primary.start_beside();
    let opts = SpokeOptions {
        standby: vec![(standby.tunnel_addr, standby.tunnel_tcp_addr)],
        ..SpokeOptions::default()
    };
    let token = primary.spoke_token("fra1", None);
    let spoke =
        Spoke::start_with(&primary, "fra1", &token, &opts).unwrap_or_else(|log| panic!("{log}"));
    let up = |hub: &'static str| {
        let url = spoke.metrics_url();
        async move { metric(&url, "ferry_spoke_tunnel_up", &[("hub", hub)]).await }
    };
    // The spoke is up once either tunnel is; wait for both.
    assert!(
        eventually(Duration::from_secs(10), async || {
            up("0").await == 1.0 && up("1").await == 1.0
        })
        .await,
        "{}",
        spoke.log()
    );
    for hub in [&primary, &standby] {
        let spokes = Api::new(hub.url())
            .as_token(ADMIN_TOKEN)
            .get("/v1/spokes/fra1")
            .send()
            .await
            .json();
        assert!(
            spokes["tunnel"].is_object(),
            "both hubs hold a tunnel: {spokes}"
        );
    }

    let t = tenant(&spoke.url(), "alpha", &primary.data_dir).await;
    let via_spoke = Api::new(spoke.url()).as_token(&t.key);
    via_spoke
        .put(&t.file("a.txt"))
        .body("before")
        .send()
        .await
        .expect(201);

    // The primary dies: the spoke goes on through the standby.
    primary.kill();
    assert!(
        eventually(Duration::from_secs(10), async || {
            via_spoke.get("/v1/connections").send().await.status == 200
        })
        .await,
        "no failover:\n{}",
        spoke.log()
    );
    via_spoke
        .put(&t.file("b.txt"))
        .body("during")
        .send()
        .await
        .expect(201);
    let events = via_spoke.get("/v1/events").send().await.expect(200).json();
    let paths: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["a.txt", "b.txt"], "one feed across both hubs");
    assert_eq!(up("0").await, 0.0);

    // The primary returns: the spoke holds both tunnels again.
    primary.restart_on_same_ports();
    assert!(
        eventually(Duration::from_secs(15), async || up("0").await == 1.0).await,
        "the spoke did not reconnect to the primary:\n{}",
        spoke.log()
    );
    assert_eq!(
        &via_spoke
            .get(&t.file("b.txt"))
            .send()
            .await
            .expect(200)
            .body[..],
        b"during"
    );
}
