//! Enrolment, revocation and reconnection of real spokes.

use std::time::Duration;

use ferry_tests::hub::ADMIN_TOKEN;
use ferry_tests::hub::HubOptions;
use ferry_tests::{Api, Hub, Spoke, eventually, metric};
use serde_json::json;

/// Waits until the token that `ferry-hub spoke add` or `spoke fleet add`
/// just made has expired: until the clock passes the `until unix ms …` its
/// message names (a token of the tests lives a second or two).
fn wait_until_expired(message: &str) {
    let expires_ms: u64 = message
        .split("until unix ms ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("the message names no expiry: {message}"));
    let now_ms = || {
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    };
    let left = Duration::from_millis(expires_ms.saturating_sub(now_ms()));
    assert!(left <= Duration::from_secs(5), "the token lives {left:?}");
    std::thread::sleep(left);
    while now_ms() <= expires_ms {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test]
async fn wrong_reused_and_expired_tokens_are_refused() {
    let hub = Hub::start();
    let err = Spoke::start_with_token(&hub, "fra1", "fjt_wrong").unwrap_err();
    assert!(err.contains("invalid_join_token"), "{err}");

    let token = hub.spoke_token("ams1", None);
    let first = Spoke::start_with_token(&hub, "ams1", &token).expect("the first use works");
    let err = Spoke::start_with_token(&hub, "ams1", &token).unwrap_err();
    assert!(
        err.contains("invalid_join_token") && err.contains("already used"),
        "{err}"
    );
    drop(first);

    let (ok, token, message) = hub.spoke_command(&["add", "lhr1", "--ttl-secs", "1"]);
    assert!(ok, "{message}");
    wait_until_expired(&message);
    let err = Spoke::start_with_token(&hub, "lhr1", token.trim()).unwrap_err();
    assert!(err.contains("expired"), "{err}");

    let (ok, stdout, _) = hub.spoke_command(&["list"]);
    assert!(ok);
    assert!(stdout.contains("ams1\tenrolled"), "{stdout}");
    assert!(stdout.contains("lhr1\twaiting for enrolment"), "{stdout}");
    let (ok, _, stderr) = hub.spoke_command(&["add", "Bad_Name"]);
    assert!(!ok && stderr.contains("a-z"), "{stderr}");
}

#[tokio::test]
async fn a_revoked_spoke_is_cut_off_and_cannot_return() {
    let hub = Hub::start();
    let mut spoke = Spoke::start(&hub, "fra1");
    let via_spoke = Api::new(spoke.url()).as_token(ADMIN_TOKEN);
    via_spoke.get("/v1/accounts").send().await.expect(200);

    let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
    let list = admin.get("/v1/spokes").send().await.expect(200).json();
    assert_eq!(list["spokes"][0]["name"], "fra1");
    let tunnel = &list["spokes"][0]["tunnel"];
    assert!(tunnel["connected_secs"].is_u64(), "{list}");
    // What the spoke said it runs, and when the certificate it holds
    // expires (the hub's CA signed it for days, not seconds).
    assert_eq!(tunnel["software"], env!("CARGO_PKG_VERSION"), "{list}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let expires = tunnel["certificate_expires_at"]
        .as_i64()
        .expect("an expiry");
    assert!(expires > now_ms + 3_600_000, "{list}");

    admin.delete("/v1/spokes/fra1").send().await.expect(204);
    assert!(
        spoke.until_readyz(503, Duration::from_secs(5)).await,
        "the spoke still reports ready"
    );
    via_spoke
        .get("/v1/accounts")
        .send()
        .await
        .expect_problem(503, "hub_unreachable");
    // Reconnection attempts keep being refused.
    assert!(
        eventually(Duration::from_secs(10), async || spoke
            .daemon()
            .count("refused")
            >= 2)
        .await,
        "{}",
        spoke.log()
    );
    let list = admin.get("/v1/spokes/fra1").send().await.expect(200).json();
    assert!(
        list["revoked_at"].is_i64() && list["tunnel"].is_null(),
        "{list}"
    );
    admin
        .delete("/v1/spokes/nope")
        .send()
        .await
        .expect_problem(404, "spoke_not_found");
    let (ok, _, _) = hub.spoke_command(&["add", "fra1"]);
    assert!(!ok, "a revoked name cannot get a new token");
    spoke.stop();
}

#[tokio::test]
async fn revoking_with_the_cli_closes_a_running_tunnel() {
    let hub = Hub::start();
    let spoke = Spoke::start(&hub, "fra1");
    let (ok, _, stderr) = hub.spoke_command(&["revoke", "fra1"]);
    assert!(ok, "{stderr}");
    assert!(
        spoke.until_readyz(503, Duration::from_secs(8)).await,
        "the tunnel stayed up:\n{}",
        hub.log()
    );
}

#[tokio::test]
async fn the_spoke_reconnects_after_the_hub_restarts() {
    let mut hub = Hub::start();
    let mut spoke = Spoke::start(&hub, "fra1");
    let api = Api::new(spoke.url());
    let admin = api.as_token(ADMIN_TOKEN);
    admin
        .post("/v1/accounts")
        .json(&json!({ "name": "before" }))
        .send()
        .await
        .expect(201);

    // The hub dies and comes back on the same sockets (the harness holds
    // them, as systemd holds a socket unit's).
    hub.kill();
    assert!(
        eventually(Duration::from_secs(10), async || api
            .get("/readyz")
            .send()
            .await
            .status
            == 503)
        .await,
        "the spoke did not notice the hub died"
    );
    admin
        .get("/v1/accounts")
        .send()
        .await
        .expect_problem(503, "hub_unreachable");
    hub.restart_on_same_ports();
    assert!(
        eventually(Duration::from_secs(15), async || api
            .get("/readyz")
            .send()
            .await
            .status
            == 200)
        .await,
        "the spoke did not reconnect:\n{}",
        spoke.log()
    );
    let accounts = admin.get("/v1/accounts").send().await.expect(200).json();
    assert_eq!(accounts["accounts"][0]["name"], "before");
    assert!(spoke.daemon().count("tunnel up") >= 2);
    spoke.restart();
    Api::new(spoke.url())
        .as_token(ADMIN_TOKEN)
        .get("/v1/accounts")
        .send()
        .await
        .expect(200);
}

#[tokio::test]
async fn the_hub_refuses_spokes_when_it_has_no_tunnel_but_enrolment_needs_one() {
    let hub = Hub::start();
    let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
    let made = admin
        .post("/v1/spokes")
        .json(&json!({ "name": "ams1" }))
        .send()
        .await
        .expect(201)
        .json();
    assert!(made["join_token"].as_str().unwrap().starts_with("fjt_"));
    admin
        .post("/v1/spokes")
        .json(&json!({ "name": "enrol" }))
        .send()
        .await
        .expect_problem(400, "invalid_field");
    Api::new(hub.url())
        .post("/v1/spokes/enrol")
        .json(&json!({ "token": made["join_token"], "public_key": "AAAA", "proof": "AAAA" }))
        .send()
        .await
        .expect_problem(400, "invalid_field");
    Api::new(hub.url())
        .get("/v1/spokes")
        .send()
        .await
        .expect_problem(401, "unauthorized");
}

#[tokio::test]
async fn a_fleet_token_enrols_new_spokes_of_its_prefix_and_nothing_else() {
    let hub = Hub::start();
    let (ok, token, err) = hub.spoke_command(&["fleet", "add", "iad"]);
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("fft_"), "{token}");
    // Any number of new spokes named iad-…, with the one token.
    let a = Spoke::start_with_token(&hub, "iad-0a1b2c", &token).expect("a first spoke");
    let b = Spoke::start_with_token(&hub, "iad-3d4e5f", &token).expect("a second spoke");
    for s in [&a, &b] {
        assert_eq!(Api::new(s.url()).get("/readyz").send().await.status, 200);
    }
    // Not a name outside the prefix, nor the prefix itself.
    for name in ["sin-1", "iad", "iadx-1"] {
        let err = Spoke::start_with_token(&hub, name, &token).unwrap_err();
        assert!(
            err.contains("invalid_join_token") && err.contains("prefix"),
            "{name}: {err}"
        );
    }
    // Never a spoke that is enrolled already: a fleet token cannot take
    // one over.
    let err = Spoke::start_with_token(&hub, "iad-0a1b2c", &token).unwrap_err();
    assert!(err.contains("already_exists"), "{err}");
    // Nor a revoked one.
    let (ok, _, err) = hub.spoke_command(&["revoke", "iad-3d4e5f"]);
    assert!(ok, "{err}");
    let err = Spoke::start_with_token(&hub, "iad-3d4e5f", &token).unwrap_err();
    assert!(err.contains("revoked"), "{err}");
    // Listed, then revoked: no new spoke, the enrolled ones stay.
    let (ok, list, _) = hub.spoke_command(&["fleet", "list"]);
    assert!(ok && list.contains("iad-…\tactive"), "{list}");
    let id = list.split('\t').next().unwrap().to_owned();
    assert!(id.starts_with("flt_"), "{list}");
    let (ok, _, err) = hub.spoke_command(&["fleet", "revoke", &id]);
    assert!(ok, "{err}");
    let err = Spoke::start_with_token(&hub, "iad-777777", &token).unwrap_err();
    assert!(err.contains("invalid_join_token"), "{err}");
    assert_eq!(Api::new(a.url()).get("/readyz").send().await.status, 200);
    let (_, list, _) = hub.spoke_command(&["fleet", "list"]);
    assert!(list.contains("\trevoked\t"), "{list}");
    // An expired one does not work either.
    let (ok, expiring, message) = hub.spoke_command(&["fleet", "add", "sin", "--ttl-secs", "1"]);
    assert!(ok, "{message}");
    wait_until_expired(&message);
    let err = Spoke::start_with_token(&hub, "sin-1", expiring.trim()).unwrap_err();
    assert!(err.contains("expired"), "{err}");
    // A join token names its spoke: sent with another name, it enrols
    // nothing.
    let join = hub.spoke_token("lhr1", None);
    let body = ferry_tests::rogue::enrol_body(&join, "lhr2", &ferry_tests::rogue::new_key());
    let r = Api::new(hub.url())
        .post("/v1/spokes/enrol")
        .json(&body)
        .send()
        .await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert!(String::from_utf8_lossy(&r.body).contains("another spoke"));
    Spoke::start_with_token(&hub, "lhr1", &join).expect("the token still works for its spoke");
    let (ok, _, err) = hub.spoke_command(&["fleet", "add", "Bad_Prefix"]);
    assert!(!ok && err.contains("a-z"), "{err}");
}

#[tokio::test]
async fn the_hubs_list_shows_this_hub_with_its_spokes_round_trips() {
    let hub = Hub::start();
    let spoke = Spoke::start(&hub, "fra1");
    let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
    let listed = admin.get("/v1/hubs").send().await.expect(200).json();
    let hubs = listed["hubs"].as_array().unwrap();
    assert_eq!(hubs.len(), 1, "{listed}");
    let this = &hubs[0];
    assert_eq!(this["this"], true, "{listed}");
    assert!(
        this["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{listed}"
    );
    assert!(
        this["tunnel_addr"].is_string() && this["last_seen"].is_i64(),
        "{listed}"
    );
    assert_eq!(
        this["store"],
        json!({ "backend": "sqlite", "primary_up": true, "replica_up": null })
    );
    let spokes = this["spokes"].as_array().unwrap();
    assert_eq!(spokes.len(), 1, "{listed}");
    assert_eq!(spokes[0]["name"], "fra1");
    assert!(
        spokes[0]["rtt_ms"].is_u64(),
        "a QUIC tunnel's round trip: {listed}"
    );
    drop(spoke);
    assert!(
        eventually(Duration::from_secs(15), async || {
            admin.get("/v1/hubs").send().await.json()["hubs"][0]["spokes"]
                .as_array()
                .is_some_and(Vec::is_empty)
        })
        .await,
        "the stopped spoke left the list"
    );
    Api::new(hub.url())
        .get("/v1/hubs")
        .send()
        .await
        .expect_problem(401, "unauthorized");
}

#[tokio::test]
async fn fleet_tokens_are_made_listed_and_revoked_over_http() {
    let hub = Hub::start();
    let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
    let made = admin
        .post("/v1/fleets")
        .json(&json!({ "prefix": "ord", "token_ttl_secs": 3600, "public_hosts": ["*.ord.edge.example.com"] }))
        .send()
        .await
        .expect(201)
        .json();
    let token = made["fleet_token"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(
        token.starts_with("fft_") && id.starts_with("flt_"),
        "{made}"
    );
    assert_eq!(made["prefix"], "ord");
    assert_eq!(
        made["allowed_public"]["hosts"],
        json!(["*.ord.edge.example.com"])
    );
    // The default lifetime is 90 days.
    let default = admin
        .post("/v1/fleets")
        .json(&json!({ "prefix": "sea" }))
        .send()
        .await
        .expect(201)
        .json();
    let days = (default["expires_at"].as_i64().unwrap() - made["expires_at"].as_i64().unwrap())
        as f64
        / 86_400_000.0;
    assert!((89.9..90.1).contains(&days), "{default} {made}");
    let spoke = Spoke::start_with_token(&hub, "ord-1", &token).expect("the token enrols");
    let listed = admin.get("/v1/fleets").send().await.expect(200).json();
    let ord = listed["fleets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{listed}"))
        .clone();
    assert_eq!(ord["state"], "active", "{ord}");
    assert_eq!(ord["prefix"], "ord");
    assert!(ord.get("token_hash").is_none() && !listed.to_string().contains(&token));
    admin
        .delete(&format!("/v1/fleets/{id}"))
        .send()
        .await
        .expect(204);
    let err = Spoke::start_with_token(&hub, "ord-2", &token).unwrap_err();
    assert!(err.contains("invalid_join_token"), "{err}");
    assert_eq!(
        Api::new(spoke.url()).get("/readyz").send().await.status,
        200
    );
    let listed = admin.get("/v1/fleets").send().await.expect(200).json();
    assert!(
        listed["fleets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == id.as_str() && f["state"] == "revoked"),
        "{listed}"
    );
    admin
        .delete("/v1/fleets/flt_nothing")
        .send()
        .await
        .expect_problem(404, "fleet_not_found");
    for bad in [
        json!({ "prefix": "Bad_Prefix" }),
        json!({ "prefix": "" }),
        json!({ "prefix": "x".repeat(41) }),
        json!({ "prefix": "ok", "public_addrs": ["not a network"] }),
        json!({ "prefix": "ok", "token_ttl_secs": -1 }),
        json!({ "prefix": "ok", "extra": 1 }),
    ] {
        let r = admin.post("/v1/fleets").json(&bad).send().await;
        assert_eq!(
            r.status,
            400,
            "{bad}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Operators only (three wrong tokens: under the free failures before
    // the hub slows a source down).
    let key = admin
        .post("/v1/accounts")
        .json(&json!({ "name": "tenant" }))
        .send()
        .await
        .expect(201)
        .json()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    for api in [Api::new(hub.url()), Api::new(hub.url()).as_token(&key)] {
        api.get("/v1/fleets")
            .send()
            .await
            .expect_problem(401, "unauthorized");
        api.post("/v1/fleets")
            .json(&json!({ "prefix": "evil" }))
            .send()
            .await
            .expect_problem(401, "unauthorized");
        api.delete(&format!("/v1/fleets/{}", default["id"].as_str().unwrap()))
            .send()
            .await
            .expect_problem(401, "unauthorized");
    }
}

#[tokio::test]
async fn a_hub_restarted_at_once_resets_the_tunnel_without_waiting_out_heartbeats() {
    let mut hub = Hub::start_with(ferry_tests::HubOptions {
        default_timings: true,
        ..Default::default()
    });
    let opts = ferry_tests::SpokeOptions {
        default_timings: true,
        ..Default::default()
    };
    let spoke = Spoke::start_with(&hub, "fra1", &hub.spoke_token("fra1", None), &opts)
        .unwrap_or_else(|log| panic!("{log}"));
    assert!(spoke.until_readyz(200, Duration::from_secs(10)).await);
    let reconnects = async |cause: &str| {
        ferry_tests::metric(
            &spoke.metrics_url(),
            "ferry_spoke_tunnel_reconnects_total",
            &[("cause", cause)],
        )
        .await
    };
    // Killed and started again on the same ports, the hub answers the
    // spoke's next packet with a stateless reset made with the same key
    // (derived from its CA), which the spoke honours: it reconnects at
    // once, not after three missed heartbeats.
    hub.kill();
    hub.restart_on_same_ports();
    let mut seen = serde_json::Value::Null;
    let back = eventually(Duration::from_secs(20), async || {
        let tunnels = Api::new(hub.url())
            .as_token(ADMIN_TOKEN)
            .get("/v1/spokes/fra1")
            .send()
            .await;
        seen = tunnels.json();
        tunnels.status == 200 && !seen["tunnel"].is_null()
    })
    .await;
    assert!(back, "the tunnel did not come back:\n{}", spoke.log());
    // The answer that first shows the tunnel shows its standing too.
    assert!(!seen["steering"].is_null(), "{seen}");
    assert_eq!(reconnects("heartbeat").await, 0.0, "{}", spoke.log());
    assert!(reconnects("lost").await >= 1.0, "{}", spoke.log());
}

#[tokio::test]
async fn a_spoke_renews_its_certificate_before_it_expires_and_keeps_its_tunnel() {
    // Certificates of 30 s: renewed about 20 s after they are signed.
    let hub = Hub::start_with(HubOptions {
        tunnel_extra: "spoke_cert_lifetime_secs = 30\n".to_owned(),
        ..HubOptions::default()
    });
    let mut spoke = Spoke::start(&hub, "fra1");
    let state = spoke.state_dir();
    let cert_of = || std::fs::read_to_string(state.join("spoke-cert.pem")).unwrap();
    let key_of = || std::fs::read(state.join("spoke-key.pem")).unwrap();
    let (first_cert, first_key) = (cert_of(), key_of());
    let first_expiry = ferry_common::cert_time::not_after_pem(&first_cert).unwrap();
    let via_spoke = Api::new(spoke.url()).as_token(ADMIN_TOKEN);
    via_spoke.get("/v1/accounts").send().await.expect(200);

    assert!(
        spoke
            .daemon()
            .wait_for("renewed this spoke's certificate", Duration::from_secs(40))
            .is_some(),
        "{}",
        spoke.log()
    );
    assert!(
        hub.daemon()
            .wait_for("renewed a spoke's certificate", Duration::from_secs(5))
            .is_some(),
        "{}",
        hub.log()
    );
    // A new key and a certificate that lasts longer, both in place.
    let second_cert = cert_of();
    assert_ne!(second_cert, first_cert);
    assert_ne!(key_of(), first_key, "a renewal makes a new key");
    assert!(!state.join("renewed.pem").exists());
    let second_expiry = ferry_common::cert_time::not_after_pem(&second_cert).unwrap();
    assert!(
        second_expiry > first_expiry,
        "{second_expiry} <= {first_expiry}"
    );
    assert!(
        eventually(Duration::from_secs(5), async || metric(
            &spoke.metrics_url(),
            "ferry_spoke_certificate_expiry_timestamp_seconds",
            &[]
        )
        .await
            == second_expiry as f64)
        .await,
        "the expiry metric follows the renewal"
    );
    // The tunnel opened with the first certificate stayed up.
    via_spoke.get("/v1/accounts").send().await.expect(200);
    assert_eq!(spoke.daemon().count("tunnel up"), 1, "{}", spoke.log());
    assert_eq!(hub.daemon().count("closed the tunnel"), 0, "{}", hub.log());

    // Killed and started again, the spoke opens its tunnel with the new one,
    // also once the first has expired.
    spoke.kill();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if now <= first_expiry {
        std::thread::sleep(Duration::from_secs((first_expiry - now + 1) as u64));
    }
    spoke.restart();
    let via_restarted = Api::new(spoke.url()).as_token(ADMIN_TOKEN);
    via_restarted.get("/v1/accounts").send().await.expect(200);
    assert_eq!(cert_of(), second_cert);
}

/// A spoke that dials its hub at another address than the one the hub
/// announces (here through a UDP relay, as through NAT or a proxy) holds
/// one tunnel to it, also across restarts that give the hub a new id.
#[tokio::test]
async fn a_spoke_behind_a_relay_keeps_one_tunnel_across_hub_restarts() {
    let mut hub = Hub::start();
    let relay = ferry_tests::udp_relay::UdpRelay::start(hub.tunnel_addr, false).await;
    let opts = ferry_tests::SpokeOptions {
        quic_via: Some(relay.addr),
        ..Default::default()
    };
    let spoke = Spoke::start_with(&hub, "fra1", &hub.spoke_token("fra1", None), &opts)
        .unwrap_or_else(|log| panic!("{log}"));
    let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
    for round in 1..=3 {
        hub.kill();
        hub.restart_on_same_ports();
        assert!(
            eventually(Duration::from_secs(20), async || spoke
                .daemon()
                .count("tunnel up")
                > round)
            .await,
            "{}",
            spoke.log()
        );
        assert!(
            eventually(Duration::from_secs(10), async || !admin
                .get("/v1/spokes/fra1")
                .send()
                .await
                .json()["tunnel"]
                .is_null())
            .await,
            "the hub lists no tunnel:\\n{}",
            hub.log()
        );
    }
    // The hub's list, which the spoke heard at each welcome, named this
    // hub at its own address: never a second tunnel to it.
    assert_eq!(
        spoke.daemon().count("holds no tunnel to: opening one"),
        0,
        "{}",
        spoke.log()
    );
    let scrape = Api::new(spoke.metrics_url()).get("/metrics").send().await;
    let up: Vec<String> = String::from_utf8_lossy(&scrape.body)
        .lines()
        .filter(|l| l.starts_with("ferry_spoke_tunnel_up{") && l.ends_with(" 1"))
        .map(str::to_owned)
        .collect();
    assert_eq!(up.len(), 1, "{up:?}");
}
