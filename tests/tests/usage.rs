//! Usage metering end to end: transfers through a hub and two spokes add
//! up to the bytes moved, exactly, also when a spoke crashes with a report
//! in its journal and sends it again.

use std::time::Duration;

use ferry_tests::scenarios::tenant;
use ferry_tests::{Api, Hub, Spoke, eventually, pattern};
use serde_json::{Value, json};

/// The account's usage grouped by node: node → its figures.
async fn by_node(api: &Api) -> serde_json::Map<String, Value> {
    let got = api
        .get("/v1/usage?group_by=node")
        .send()
        .await
        .expect(200)
        .json();
    got["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["node"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

fn figure(rows: &serde_json::Map<String, Value>, node: &str, name: &str) -> i64 {
    rows.get(node).map_or(0, |r| r[name].as_i64().unwrap())
}

#[tokio::test]
async fn transfers_through_the_hub_and_two_spokes_add_up_exactly_across_a_spoke_crash() {
    ferry_tests::install_crypto_provider();
    let mut hub = Hub::start();
    let mut a = Spoke::start(&hub, "fra1");
    let b = Spoke::start(&hub, "ams1");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let other = tenant(&hub.url(), "beta", &hub.data_dir).await;
    let via = |base: String| Api::new(base).as_token(&t.key);
    let (via_hub, via_a, via_b) = (via(hub.url()), via(a.url()), via(b.url()));

    let sizes = [
        (&via_hub, 100_000usize),
        (&via_a, 250_000),
        (&via_b, 1 << 20),
    ];
    for (i, (api, size)) in sizes.iter().enumerate() {
        api.put(&t.file(&format!("f{i}.bin")))
            .body(pattern(*size, i as u64))
            .send()
            .await
            .expect(201);
    }
    // Every file downloaded once through each node.
    for api in [&via_hub, &via_a, &via_b] {
        for i in 0..3 {
            api.get(&t.file(&format!("f{i}.bin")))
                .send()
                .await
                .expect(200);
        }
    }
    let total: i64 = sizes.iter().map(|(_, s)| *s as i64).sum();
    let settled = eventually(Duration::from_secs(20), async || {
        let rows = by_node(&t.api).await;
        ["hub", "fra1", "ams1"]
            .iter()
            .all(|n| figure(&rows, n, "bytes_out") == total)
    })
    .await;
    let rows = by_node(&t.api).await;
    assert!(settled, "{rows:#?}");
    for (node, i) in [("hub", 0), ("fra1", 1), ("ams1", 2)] {
        assert_eq!(figure(&rows, node, "bytes_in"), sizes[i].1 as i64, "{node}");
        assert_eq!(figure(&rows, node, "uploads"), 1, "{node}");
        assert_eq!(figure(&rows, node, "downloads"), 3, "{node}");
    }
    // The other account used nothing.
    let theirs = other.api.get("/v1/usage").send().await.expect(200).json();
    assert_eq!(theirs["total"]["bytes_out"], 0);
    assert_eq!(theirs["stored"][0]["objects"], 0);

    // A download through spoke A while the hub is away: its report waits in
    // the journal; the spoke dies, both come back, the report arrives.
    let journal = a.dir.path().join("state/reports.journal");
    let size0 = sizes[0].1 as i64;
    hub.kill();
    via_a.get(&t.file("f0.bin")).send().await.expect(200);
    assert!(
        eventually(Duration::from_secs(10), async || std::fs::metadata(
            &journal
        )
        .is_ok_and(|m| m.len() > 0))
        .await
    );
    let kept = std::fs::read(&journal).unwrap();
    a.kill();
    hub.restart_on_same_ports();
    a.restart();
    assert!(
        eventually(Duration::from_secs(20), async || figure(
            &by_node(&t.api).await,
            "fra1",
            "bytes_out"
        ) == total + size0)
        .await,
        "the journal's report was not counted:\n{}",
        a.log()
    );
    // The same report again, as after a crash before the spoke noted it
    // sent: applied once, counted once.
    assert!(
        a.resend_journal(&kept, &hub).await,
        "the report was not sent again:\n{}",
        a.log()
    );
    let rows = by_node(&t.api).await;
    assert_eq!(figure(&rows, "fra1", "bytes_out"), total + size0);
    assert_eq!(figure(&rows, "fra1", "downloads"), 4);

    // Requests the hub answered count where they came in (flushed every
    // few seconds).
    via_a.get("/v1/connections").send().await.expect(200);
    via_hub
        .post("/v1/connections")
        .json(&json!({ "name": "more", "provider": "memory", "config": {} }))
        .send()
        .await
        .expect(201);
    assert!(
        eventually(Duration::from_secs(20), async || {
            let rows = by_node(&t.api).await;
            figure(&rows, "fra1", "requests_read") >= 1
                && figure(&rows, "hub", "requests_write") >= 1
        })
        .await
    );

    // By day and connection, and as CSV for billing.
    let per_conn = t
        .api
        .get("/v1/usage?group_by=day,connection")
        .send()
        .await
        .expect(200)
        .json();
    let mine = per_conn["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["connection_id"] == t.conn_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["bytes_in"].as_i64(), Some(total));
    assert_eq!(mine["bytes_out"].as_i64(), Some(3 * total + size0));
    assert_eq!(mine["day"].as_str().map(str::len), Some(10));
    let csv = t
        .api
        .get("/v1/usage?group_by=node&format=csv")
        .send()
        .await
        .expect(200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = String::from_utf8(csv.body.to_vec()).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("node,bytes_in,bytes_out,uploads,downloads,requests_read,requests_write")
    );
    let fra1 = lines.find(|l| l.starts_with("fra1,")).unwrap();
    let cells: Vec<&str> = fra1.split(',').collect();
    assert_eq!(cells[2], (total + size0).to_string());
    let stored = per_conn["stored"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["connection_id"] == t.conn_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (stored["objects"].as_i64(), stored["bytes"].as_i64()),
        (Some(3), Some(total))
    );

    // The operator sees every account; an account cannot ask for others.
    let all = t
        .admin
        .get("/v1/usage?group_by=account")
        .send()
        .await
        .expect(200)
        .json();
    let accounts: Vec<&str> = all["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["account_id"].as_str().unwrap())
        .collect();
    assert!(accounts.contains(&t.account_id.as_str()), "{all:#}");
    t.api
        .get("/v1/usage?group_by=account")
        .send()
        .await
        .expect_problem(400, "invalid_query");
    // The S3 door's requests count too: an account that makes its
    // connection and an S3 key (two writes), then one S3 PutObject at the
    // hub.
    let other = tenant(&hub.url(), "gamma", &hub.data_dir).await;
    let key = other.new_s3_key().await;
    let url = ferry_tests::scenarios::presigned(
        &hub.url(),
        key["access_key_id"].as_str().unwrap(),
        key["secret_access_key"].as_str().unwrap(),
        "put_object",
        "local",
        "via-s3.txt",
    );
    Api::new(hub.url())
        .put(&url)
        .body("through the door")
        .send()
        .await
        .expect(200);
    let theirs = format!("/v1/usage?account={}&group_by=node", other.account_id);
    let counted = eventually(Duration::from_secs(20), async || {
        let got = t.admin.get(&theirs).send().await.expect(200).json();
        let hub_row = &got["usage"][0];
        hub_row["requests_write"] == 3 && hub_row["uploads"] == 1
    })
    .await;
    let got = t.admin.get(&theirs).send().await.expect(200).json();
    assert!(counted, "{got:#}");

    // A wrong token is no account's and counts as a wrong admin token.
    let metrics = hub.metrics_url();
    let failures = || ferry_tests::metric(&metrics, "ferry_admin_token_failures_total", &[]);
    let before = failures().await;
    Api::new(hub.url())
        .as_token("not-the-admin-token")
        .get("/v1/usage")
        .send()
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(failures().await, before + 1.0);
    t.api
        .get(&format!("/v1/usage?account={}", other.account_id))
        .send()
        .await
        .expect_problem(400, "invalid_query");
    for bad in [
        "from=yesterday",
        "group_by=day,month",
        "from=2026-12-01&to=2026-11-01",
        "format=xml",
    ] {
        t.api
            .get(&format!("/v1/usage?{bad}"))
            .send()
            .await
            .expect_problem(400, "invalid_query");
    }
}
