//! Hubs on PostgreSQL, started by the tests: the API suite on that backend;
//! two hubs, one writing to the primary, one reading a streaming replica
//! that replays two seconds late, with read-your-writes across them; the
//! primary lost and back, the replica lost and back; spokes that learn
//! every hub, steered alike by all of them, moving to another hub when
//! theirs stops; the database password from a file or the environment;
//! TLS to the database, verified; a SQLite hub moved to PostgreSQL; two
//! hubs numbering one account's events at once, and events from a hub of
//! the previous release numbered by the store; a key revoked and a
//! connection deleted through one hub reaching the other's cache; one hub scanning a
//! connection for changes made outside ferry, the other taking over when
//! it dies; two hubs sending one outbox's webhooks, each delivery once.

use std::net::IpAddr;
use std::time::Duration;

use ferry_tests::dns::{addresses, ask, until_eligible};
use ferry_tests::hub::ADMIN_TOKEN;
use ferry_tests::postgres::Postgres;
use ferry_tests::scenarios::{self, tenant, upload};
use ferry_tests::{Api, Hub, HubOptions, Spoke, SpokeOptions, eventually, metric, tail};
use hickory_proto::rr::RecordType;
use serde_json::json;

fn hub_on(store_toml: String) -> Hub {
    Hub::start_with(HubOptions {
        extra_toml: store_toml,
        ..HubOptions::default()
    })
}

#[tokio::test]
async fn the_api_suite_passes_on_postgres() {
    ferry_tests::install_crypto_provider();
    let pg = Postgres::primary();
    let hub = hub_on(pg.store_toml(None));
    // Ready comes through the notification socket; the log line before it
    // may still be on its way through the pipe.
    assert!(
        hub.daemon()
            .wait_for("store=postgres", std::time::Duration::from_secs(5))
            .is_some(),
        "{}",
        hub.log()
    );
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    scenarios::large_round_trip(&t, 16 << 20).await;
    scenarios::range_reads(&t).await;
    scenarios::conditional_requests(&t).await;
    scenarios::listing_pagination(&t).await;
    scenarios::copy_and_move(&t).await;
    scenarios::digest_mismatch_leaves_nothing(&t).await;
    scenarios::wanted_digests(&t).await;
    scenarios::bad_inputs(&t, 1024 * 1024).await;
    scenarios::key_lifecycle(&t).await;
    let e = tenant(&hub.url(), "events", &hub.data_dir).await;
    scenarios::events_in_order(&e).await;
    let m = tenant(&hub.url(), "mem", &hub.data_dir).await;
    scenarios::memory_connection(&m).await;
    // Spokes enrol and connect against this store too.
    let spoke = Spoke::start(&hub, "fra1");
    let via = Api::new(spoke.url()).as_token(&t.key);
    via.put(&t.file("through-spoke.txt"))
        .body("hello")
        .send()
        .await
        .expect(201);
    assert_eq!(
        &t.api
            .get(&t.file("through-spoke.txt"))
            .send()
            .await
            .expect(200)
            .body[..],
        b"hello"
    );
}

#[tokio::test]
async fn tenants_are_isolated_on_postgres() {
    let pg = Postgres::primary();
    let hub = hub_on(pg.store_toml(None));
    let a = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let b = tenant(&hub.url(), "beta", &hub.data_dir).await;
    scenarios::tenant_isolation(&a, &b, &hub.data_dir).await;
    // Deleting goes by the same rows on PostgreSQL: folders, then an account.
    scenarios::folder_deletion(&a).await;
    scenarios::account_deletion(&a, &hub.data_dir.join("alpha"), &b).await;
}

#[tokio::test]
async fn one_name_enrolled_twice_at_once_with_a_fleet_token_is_enrolled_once() {
    let pg = Postgres::primary();
    let hub = hub_on(pg.store_toml(None));
    let (ok, token, err) = hub.spoke_command(&["fleet", "add", "edge"]);
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    let enrol = |name: String| {
        let (url, token) = (hub.url(), token.clone());
        async move {
            let body =
                ferry_tests::rogue::enrol_body(&token, &name, &ferry_tests::rogue::new_key());
            Api::new(url)
                .post("/v1/spokes/enrol")
                .json(&body)
                .send()
                .await
                .status
                .as_u16()
        }
    };
    // Six enrolments of each new name race; one must win, every time.
    for round in 0..16 {
        let name = format!("edge-{round}");
        let all = futures_util::future::join_all((0..6).map(|_| enrol(name.clone()))).await;
        let won = all.iter().filter(|s| **s == 201).count();
        assert_eq!(won, 1, "{name}: {all:?}");
        assert!(
            all.iter().all(|s| [201, 409].contains(s)),
            "{name}: {all:?}"
        );
    }
}

#[tokio::test]
async fn the_database_password_comes_from_a_file_or_the_environment() {
    ferry_tests::install_crypto_provider();
    let mut pg = Postgres::primary();
    // Characters that must be escaped in a URL.
    let password = "p@ss w:rd/%?#";
    let url = pg.add_password_user("ferry_pw", password);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store-password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let hub = hub_on(format!(
        "[store]\nbackend = \"postgres\"\nprimary_url = \"{url}\"\npassword_file = {file:?}\n"
    ));
    let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
    admin
        .post("/v1/accounts")
        .json(&json!({ "name": "with-password" }))
        .send()
        .await
        .expect(201);

    // The environment wins over the file: a wrong password there is
    // refused, and said so; the right one works.
    let run = |pw: &str| {
        std::process::Command::new(ferry_tests::hub::binary("ferry-hub"))
            .arg("--config")
            .arg(&hub.config)
            .args(["spoke", "list"])
            .env("FERRY_MASTER_KEY", &hub.master_key)
            .env("FERRY_STORE_PASSWORD", pw)
            .output()
            .unwrap()
    };
    let wrong = run("not the password");
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains(password), "the password is not shown: {err}");
    let right = run(password);
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
}

#[tokio::test]
async fn the_store_connection_can_require_verified_tls() {
    ferry_tests::install_crypto_provider();
    let mut pg = Postgres::primary();
    let url = pg.add_password_user("ferry_tls", "tls-password");
    let root = pg.require_tls_for("ferry_tls");
    let store = |query: &str| {
        format!(
            "[store]\nbackend = \"postgres\"\nprimary_url = \"{url}?{query}\"\npassword_env = \"FERRY_TEST_STORE_PASSWORD\"\n"
        )
    };
    let hub = Hub::start_with(HubOptions {
        extra_toml: store(&format!(
            "sslmode=verify-full&sslrootcert={}",
            root.display()
        )),
        env: vec![("FERRY_TEST_STORE_PASSWORD".into(), "tls-password".into())],
        ..HubOptions::default()
    });
    Api::new(hub.url())
        .as_token(ADMIN_TOKEN)
        .post("/v1/accounts")
        .json(&json!({ "name": "over-tls" }))
        .send()
        .await
        .expect(201);
    // Without TLS the server refuses; with TLS but a certificate nobody
    // vouches for, ferry refuses.
    let dir = tempfile::tempdir().unwrap();
    for (query, expect) in [
        ("sslmode=disable", "no encryption"),
        ("sslmode=verify-full", "certificate"),
    ] {
        let config = dir.path().join("hub.toml");
        let text = std::fs::read_to_string(&hub.config).unwrap();
        let text = text.replace(
            &format!("sslmode=verify-full&sslrootcert={}", root.display()),
            query,
        );
        std::fs::write(&config, text).unwrap();
        let out = std::process::Command::new(ferry_tests::hub::binary("ferry-hub"))
            .arg("--config")
            .arg(&config)
            .args(["spoke", "list"])
            .env("FERRY_MASTER_KEY", &hub.master_key)
            .env("FERRY_TEST_STORE_PASSWORD", "tls-password")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{query}: accepted");
        assert!(err.to_lowercase().contains(expect), "{query}: {err}");
    }
}

#[tokio::test]
async fn rekey_on_postgres_moves_the_shared_tunnel_ca_too() {
    ferry_tests::install_crypto_provider();
    let pg = Postgres::primary();
    let mut hub = hub_on(pg.store_toml(None));
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let spoke = Spoke::start(&hub, "fra1");
    let via_spoke = Api::new(spoke.url()).as_token(&t.key);
    via_spoke
        .put(&t.file("kept.txt"))
        .body("before the new key")
        .send()
        .await
        .expect(201);
    hub.stop();

    let new_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let key_file = hub.dir.path().join("new.key");
    std::fs::write(&key_file, new_key).unwrap();
    let (ok, _, err) = hub.command(&["rekey", "--new-key-file", key_file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        err.contains("re-encrypted 1 connection(s), 0 S3 key(s), 0 webhook endpoint(s) and the shared tunnel CA"),
        "{err}"
    );
    // The old key opens nothing now, and a second run changes nothing.
    let (ok, _, err) = hub.command(&["rekey", "--new-key-file", key_file.to_str().unwrap()]);
    assert!(
        !ok && err.contains("does not open with the current key"),
        "{err}"
    );

    // The hub starts with the new key, the same CA: the spoke comes back
    // with its certificate, and the connection opens.
    hub.master_key = new_key.to_owned();
    hub.restart_on_same_ports();
    assert!(
        eventually(Duration::from_secs(20), async || {
            via_spoke.get(&t.file("kept.txt")).send().await.status == 200
        })
        .await,
        "{}\n{}",
        hub.log(),
        spoke.log()
    );
    let api = Api::new(hub.url()).as_token(&t.key);
    let got = api.get(&t.file("kept.txt")).send().await.expect(200);
    assert_eq!(&got.body[..], b"before the new key");
}

/// A hub on `primary`, reading `replica`, sharing `data_dir` for `fs`.
fn hub_reading(
    primary: &Postgres,
    replica: Option<&Postgres>,
    data_dir: Option<std::path::PathBuf>,
) -> Hub {
    Hub::start_with(HubOptions {
        extra_toml: primary.store_toml(replica),
        data_dir,
        ..HubOptions::default()
    })
}

#[tokio::test]
async fn two_hubs_share_one_store_and_read_their_own_writes() {
    ferry_tests::install_crypto_provider();
    let primary = Postgres::primary();
    // The replica replays two seconds late: without read-your-writes every
    // read below through hub B would miss the write just made.
    let replica = primary.replica(Some(Duration::from_secs(2)));
    let hub_a = hub_reading(&primary, None, None);
    let hub_b = hub_reading(&primary, Some(&replica), Some(hub_a.data_dir.clone()));
    // B reads its replica once that has replayed the schema.
    let admin_b = Api::new(hub_b.url()).as_token(ADMIN_TOKEN);
    assert!(
        eventually(Duration::from_secs(20), async || {
            admin_b.get("/v1/accounts").send().await;
            hub_b.log().contains("the replica has the schema")
        })
        .await
    );

    // An account made through A is usable at once through B.
    let t = tenant(&hub_a.url(), "alpha", &hub_a.data_dir).await;
    let via_b = Api::new(hub_b.url()).as_token(&t.key);
    let conns = via_b.get("/v1/connections").send().await.expect(200).json();
    assert_eq!(conns["connections"][0]["name"], "local", "{conns}");
    // A write through A, read at once through B.
    upload(&t, "a.txt", b"written through A").await;
    let got = via_b.get(&t.file("a.txt")).send().await.expect(200);
    assert!(
        got.header("x-ferry-checksum-crc64nvme").is_some(),
        "the metadata is seen"
    );
    let events = via_b.get("/v1/events").send().await.expect(200).json();
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");
    // A write through B, read at once through B (its replica is behind).
    via_b
        .post("/v1/connections")
        .json(&json!({ "name": "mem", "provider": "memory" }))
        .send()
        .await
        .expect(201);
    let conns = via_b.get("/v1/connections").send().await.expect(200).json();
    assert_eq!(conns["connections"].as_array().unwrap().len(), 2, "{conns}");

    // A spoke enrolled through B, on B's replica, serves the account at once.
    let spoke = Spoke::start(&hub_b, "fra1");
    let via_spoke = Api::new(spoke.url()).as_token(&t.key);
    via_spoke
        .put(&t.file("b.txt"))
        .body("through B's spoke")
        .send()
        .await
        .expect(201);
    assert_eq!(
        &t.api.get(&t.file("b.txt")).send().await.expect(200).body[..],
        b"through B's spoke"
    );
    // The spoke recorded it for this client: B reads its metadata at once.
    let head = via_b.head(&t.file("b.txt")).send().await.expect(200);
    assert!(head.header("x-ferry-checksum-crc64nvme").is_some());
    assert_eq!(
        &via_spoke
            .get(&t.file("a.txt"))
            .send()
            .await
            .expect(200)
            .body[..],
        b"written through A"
    );

    // Another client, which wrote nothing, reads B's replica; once it has
    // replayed, everything is there.
    assert!(
        eventually(Duration::from_secs(10), async || {
            admin_b
                .get(&format!("/v1/accounts/{}", t.account_id))
                .send()
                .await
                .status
                == 200
        })
        .await
    );

    // An upload through B's spoke is under way when the primary goes away.
    let total = 4 << 20;
    let spoke_up = async || {
        metric(
            &spoke.metrics_url(),
            "ferry_spoke_content_bytes_total",
            &[("direction", "upload")],
        )
        .await
    };
    let before = spoke_up().await;
    let (req, tx) = via_spoke.put(&t.file("in-flight.bin")).body_channel(total);
    let upload_task = tokio::spawn(req.send());
    tx.send(bytes::Bytes::from(vec![7u8; 1 << 20]))
        .await
        .unwrap();
    // Under way: the spoke has its grant and writes to the provider. (The
    // grant may wait for B's replica, two seconds late, to replay this
    // client's last write.)
    assert!(
        eventually(Duration::from_secs(10), async || spoke_up().await > before).await,
        "the upload did not start"
    );

    // The primary goes away: writes fail cleanly, reads go on. The upload
    // in flight gets its body through, and is then refused before it is
    // put in place: its intent cannot be recorded (nor could its record).
    let mut primary = primary;
    primary.stop();
    for _ in 0..3 {
        tx.send(bytes::Bytes::from(vec![7u8; 1 << 20]))
            .await
            .unwrap();
    }
    drop(tx);
    upload_task
        .await
        .unwrap()
        .expect_problem(503, "store_unavailable");
    // So is a new one through the spoke.
    via_spoke
        .put(&t.file("during.txt"))
        .body("while the primary is down")
        .send()
        .await
        .expect_problem(503, "store_unavailable");
    // The hub's check each second notices; then writes fail at once, and
    // what could not be recorded is not done either.
    assert!(
        eventually(Duration::from_secs(5), async || {
            metric(&hub_b.metrics_url(), "ferry_store_primary_up", &[]).await == 0.0
        })
        .await
    );
    let asked = std::time::Instant::now();
    let r = via_b.put(&t.file("c.txt")).body("no primary").send().await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(r.header("retry-after").is_some());
    eprintln!(
        "a write without the primary failed in {:?}",
        asked.elapsed()
    );
    assert_eq!(via_b.get(&t.file("c.txt")).send().await.status, 404);
    let r = via_b.delete(&t.file("a.txt")).send().await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    // This client's reads wait for the replica to replay its last write
    // (two seconds late): once it has replayed all it received from the
    // primary, they go there.
    assert!(
        eventually(Duration::from_secs(10), async || {
            replica.query("SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()") == "t"
        })
        .await,
        "the replica did not replay what it received:\n{}",
        replica.log()
    );
    let read = via_b.get(&t.file("a.txt")).send().await;
    assert_eq!(read.status, 200, "{:?}\n{}", read.body, hub_b.log());
    assert_eq!(&read.body[..], b"written through A");
    assert_eq!(
        Api::new(hub_b.url()).get("/readyz").send().await.status,
        200,
        "B still serves reads"
    );
    // It comes back at the same address: writes work again, nothing was lost.
    primary.start();
    let back = std::time::Instant::now();
    let mut last = None;
    assert!(
        eventually(Duration::from_secs(20), async || {
            let r = via_b
                .put(&t.file("c.txt"))
                .body("primary back")
                .send()
                .await;
            let ok = r.status == 201;
            last = Some((r.status, String::from_utf8_lossy(&r.body).into_owned()));
            ok
        })
        .await,
        "writes did not recover; last answer {last:?}\nhub B:\n{}\nthe primary:\n{}",
        tail(&hub_b.log(), 60),
        tail(&primary.log(), 20)
    );
    eprintln!(
        "writes through hub B worked again {:?} after the primary was back",
        back.elapsed()
    );
    // A request waits for the replica once at most: after a wait runs out
    // its other reads go to the primary.
    let mut waits = std::collections::HashMap::<&str, usize>::new();
    let log_b = hub_b.log();
    for line in log_b
        .lines()
        .filter(|l| l.contains("did not replay this client's last write") && !l.contains("tunnel{"))
    {
        if let Some(id) = line
            .split("request.id=")
            .nth(1)
            .and_then(|r| r.split('}').next())
        {
            *waits.entry(id).or_default() += 1;
        }
    }
    assert!(!waits.is_empty(), "no read waited for the replica");
    assert!(waits.values().all(|n| *n == 1), "{waits:?}");
    // (The metric follows the checks, which may come a little after the
    // first write that works.)
    assert!(
        eventually(Duration::from_secs(5), async || {
            metric(&hub_b.metrics_url(), "ferry_store_primary_up", &[]).await == 1.0
        })
        .await,
        "{}",
        tail(&hub_b.log(), 40)
    );
    for (path, body) in [
        ("a.txt", &b"written through A"[..]),
        ("b.txt", b"through B's spoke"),
        ("c.txt", b"primary back"),
    ] {
        assert_eq!(
            &t.api.get(&t.file(path)).send().await.expect(200).body[..],
            body
        );
    }
    // What was refused left nothing: no content, no event.
    let events = t.api.get("/v1/events").send().await.expect(200).json();
    for path in ["in-flight.bin", "during.txt"] {
        t.api.head(&t.file(path)).send().await.expect(404);
        assert!(
            !events["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["path"] == path),
            "{path}: {events}"
        );
    }
    // With the primary back, the spoke writes again.
    via_spoke
        .put(&t.file("during.txt"))
        .body("after the primary came back")
        .send()
        .await
        .expect(201);

    // B's replica goes away: B reads the primary, and says so.
    let mut replica = replica;
    replica.stop();
    let read = via_b.get(&t.file("c.txt")).send().await;
    assert_eq!(read.status, 200, "{:?}\n{}", read.body, hub_b.log());
    assert_eq!(&read.body[..], b"primary back");
    via_b
        .put(&t.file("d.txt"))
        .body("replica gone")
        .send()
        .await
        .expect(201);
    let listing = via_b
        .get("/v1/connections/local/list")
        .send()
        .await
        .expect(200)
        .json();
    let d = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "d.txt")
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        d["checksums"]["crc64nvme"].is_string(),
        "metadata read: {d}"
    );
    assert!(
        eventually(Duration::from_secs(10), async || {
            metric(&hub_b.metrics_url(), "ferry_store_replica_up", &[]).await == 0.0
        })
        .await
    );
    assert_eq!(
        Api::new(hub_b.url()).get("/readyz").send().await.status,
        200
    );
    assert!(
        hub_b
            .daemon()
            .wait_for(
                "the replica does not answer",
                std::time::Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        hub_b.log()
    );
    // It returns: B reads it again.
    replica.start();
    assert!(
        eventually(Duration::from_secs(20), async || {
            metric(&hub_b.metrics_url(), "ferry_store_replica_up", &[]).await == 1.0
        })
        .await,
        "{}",
        hub_b.log()
    );
    assert!(
        hub_b
            .daemon()
            .wait_for(
                "the replica answers again",
                std::time::Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        hub_b.log()
    );
    assert_eq!(
        &via_b.get(&t.file("d.txt")).send().await.expect(200).body[..],
        b"replica gone"
    );
}

#[tokio::test]
async fn a_replica_promoted_under_a_hub_is_no_longer_read() {
    ferry_tests::install_crypto_provider();
    let primary = Postgres::primary();
    let replica = primary.replica(None);
    let hub = hub_reading(&primary, Some(&replica), None);
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    // A second key of the account, which writes nothing: its reads are
    // not pinned to the primary by writes of its own.
    let key = t.new_key().await;
    let reader = Api::new(hub.url()).as_token(key["key"].as_str().unwrap());
    assert!(
        eventually(Duration::from_secs(10), async || {
            metric(&hub.metrics_url(), "ferry_store_replica_up", &[]).await == 1.0
                && reader.get("/v1/connections").send().await.status == 200
        })
        .await
    );
    // Promoted, it stops following the primary: what is written now is
    // not on it, so the hub must read the primary.
    replica.promote();
    assert!(
        eventually(Duration::from_secs(10), async || {
            metric(&hub.metrics_url(), "ferry_store_replica_up", &[]).await == 0.0
        })
        .await,
        "{}",
        hub.log()
    );
    assert!(
        hub.daemon()
            .wait_for(
                "the replica is not a standby",
                std::time::Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        hub.log()
    );
    upload(&t, "after.txt", b"written after the promotion").await;
    // The other key reads what was written since: only the primary has it.
    let head = reader.head(&t.file("after.txt")).send().await.expect(200);
    assert!(
        head.header("x-ferry-checksum-crc64nvme").is_some(),
        "read from the promoted replica"
    );
    let events = reader.get("/v1/events").send().await.expect(200).json();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "after.txt"),
        "{events}"
    );
}

const ZONE: &str = "ferry.test";

/// A hub with DNS on `primary` (reading `replica`), sharing `data_dir`.
fn dns_hub(
    primary: &Postgres,
    replica: Option<&Postgres>,
    data_dir: Option<std::path::PathBuf>,
    tunnel_extra: &str,
) -> Hub {
    Hub::start_with(HubOptions {
        extra_toml: format!(
            "{}\n[dns]\nlisten = \"127.0.0.1:0\"\nzone = \"{ZONE}\"\n",
            primary.store_toml(replica)
        ),
        tunnel_extra: tunnel_extra.to_owned(),
        data_dir,
        ..HubOptions::default()
    })
}

/// What the hub's DNS answers for `api.<zone>` (asked from 127.0.0.1).
async fn api_answer(hub: &Hub) -> Vec<IpAddr> {
    let server = hub.dns_addr.expect("the hub runs DNS");
    addresses(&ask(server, false, &format!("api.{ZONE}."), RecordType::A, None).await)
}

#[tokio::test]
async fn spokes_learn_every_hub_all_hubs_steer_alike_and_a_stopped_hub_loses_nothing() {
    ferry_tests::install_crypto_provider();
    let primary = Postgres::primary();
    let replica = primary.replica(None);
    let mut hub_a = dns_hub(&primary, None, None, "");
    let hub_b = dns_hub(&primary, Some(&replica), Some(hub_a.data_dir.clone()), "");
    // Hub C says its tunnel is where nothing listens: no spoke reaches it,
    // and its DNS knows the spokes only from what A and B share.
    let hub_c = dns_hub(
        &primary,
        Some(&replica),
        Some(hub_a.data_dir.clone()),
        "public_addr = \"127.0.0.1:9\"",
    );

    // Both spokes enrol through A and are configured with A alone.
    let spoke_on = |name: &str, ip: &str| {
        let opts = SpokeOptions {
            listen_ip: Some(ip.parse().unwrap()),
            ..SpokeOptions::default()
        };
        Spoke::start_with(&hub_a, name, &hub_a.spoke_token(name, None), &opts)
            .unwrap_or_else(|log| panic!("{log}"))
    };
    let mut fra1 = spoke_on("fra1", "127.0.0.2");
    let ams1 = spoke_on("ams1", "127.0.0.3");
    // They learn B from A's list and hold a tunnel to it too.
    let admin_b = Api::new(hub_b.url()).as_token(ADMIN_TOKEN);
    for name in ["fra1", "ams1"] {
        assert!(
            eventually(Duration::from_secs(20), async || {
                admin_b
                    .get(&format!("/v1/spokes/{name}"))
                    .send()
                    .await
                    .json()["tunnel"]
                    .is_object()
            })
            .await,
            "{name} never reached hub B:\n{}",
            fra1.log()
        );
    }
    for hub in [&hub_a, &hub_b, &hub_c] {
        until_eligible(hub, &["fra1", "ams1"]).await;
    }
    assert!(
        eventually(Duration::from_secs(10), async || {
            metric(&hub_b.metrics_url(), "ferry_hubs_known", &[]).await == 3.0
                && metric(&hub_b.metrics_url(), "ferry_store_replica_up", &[]).await == 1.0
        })
        .await
    );
    assert!(metric(&hub_b.metrics_url(), "ferry_store_replica_lag_bytes", &[]).await >= 0.0);
    // Hub C lists the three hubs, itself first: A and B each hear both
    // spokes over QUIC (their round trips shared through the store), C
    // none.
    let admin_c = Api::new(hub_c.url()).as_token(ADMIN_TOKEN);
    let mut listed = serde_json::Value::Null;
    let shared = eventually(Duration::from_secs(10), async || {
        listed = admin_c.get("/v1/hubs").send().await.expect(200).json();
        let hubs = listed["hubs"].as_array().cloned().unwrap_or_default();
        hubs.len() == 3
            && hubs[0]["this"] == true
            && hubs[0]["store"]
                == json!({ "backend": "postgres", "primary_up": true, "replica_up": true })
            && hubs[1..].iter().all(|h| h.get("store").is_none())
            && hubs[0]["spokes"].as_array().is_some_and(Vec::is_empty)
            && hubs[1..].iter().all(|h| {
                h["this"] == false
                    && h["spokes"].as_array().is_some_and(|s| {
                        s.len() == 2
                            && s.iter().all(|sp| sp["rtt_ms"].is_u64())
                            && s[0]["name"] == "ams1"
                            && s[1]["name"] == "fra1"
                    })
            })
    })
    .await;
    assert!(shared, "{listed:#}");

    // A client's probes, reported to A alone, steer it at every hub.
    let t = tenant(&hub_a.url(), "alpha", &hub_a.data_dir).await;
    for hub in [&hub_a, &hub_b, &hub_c] {
        assert_eq!(
            api_answer(hub).await,
            ["127.0.0.1".parse::<IpAddr>().unwrap()],
            "the hub, with no measurements"
        );
    }
    t.api
        .post("/v1/steering/reports")
        .json(&json!({ "samples": [
            { "spoke": "fra1", "rtt_ms": 5.0 },
            { "spoke": "ams1", "rtt_ms": 60.0 },
        ]}))
        .send()
        .await
        .expect(202);
    let fra1_ip: IpAddr = "127.0.0.2".parse().unwrap();
    for hub in [&hub_a, &hub_b, &hub_c] {
        assert!(
            eventually(Duration::from_secs(10), async || api_answer(hub).await
                == [fra1_ip])
            .await,
            "a hub did not take the shared samples:\n{}",
            hub.log()
        );
    }
    assert!(
        metric(
            &hub_c.metrics_url(),
            "ferry_steering_samples_total",
            &[("source", "hub"), ("result", "accepted")]
        )
        .await
            >= 2.0
    );

    // Hub A stops: requests go on through B, and B and C keep steering.
    let via_fra1 = Api::new(fra1.url()).as_token(&t.key);
    via_fra1
        .put(&t.file("before.txt"))
        .body("while A was up")
        .send()
        .await
        .expect(201);
    hub_a.stop();
    let stopped = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(10), async || {
            via_fra1
                .put(&t.file("after.txt"))
                .body("A is gone")
                .send()
                .await
                .status
                == 201
        })
        .await,
        "fra1 did not move to hub B:\n{}",
        fra1.log()
    );
    eprintln!(
        "writes through fra1 worked again {:?} after hub A stopped",
        stopped.elapsed()
    );
    // Its tunnel to A is down; of the two it learned (B, and C whose
    // announced address answers nothing, in the order of their ids) one is up.
    let up = async |hub: &str| {
        metric(
            &fra1.metrics_url(),
            "ferry_spoke_tunnel_up",
            &[("hub", hub)],
        )
        .await
    };
    assert!(eventually(Duration::from_secs(5), async || up("0").await == 0.0).await);
    assert_eq!(up("1").await + up("2").await, 1.0);
    for hub in [&hub_b, &hub_c] {
        assert_eq!(api_answer(hub).await, [fra1_ip]);
        until_eligible(hub, &["fra1", "ams1"]).await;
    }
    // A spoke started while A is down comes up through the hub it learned.
    fra1.restart();
    assert_eq!(
        &Api::new(fra1.url())
            .as_token(&t.key)
            .get(&t.file("before.txt"))
            .send()
            .await
            .expect(200)
            .body[..],
        b"while A was up"
    );
    let via_ams1 = Api::new(ams1.url()).as_token(&t.key);
    assert_eq!(
        &via_ams1
            .get(&t.file("after.txt"))
            .send()
            .await
            .expect(200)
            .body[..],
        b"A is gone"
    );
    assert!(
        fra1.log()
            .contains("a hub this spoke holds no tunnel to: opening one")
    );
}

#[tokio::test]
async fn a_sqlite_hub_moves_to_postgres_with_its_clients_and_spokes() {
    ferry_tests::install_crypto_provider();
    let pg = Postgres::primary();
    let mut hub = Hub::start();
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    upload(&t, "a.txt", b"made on SQLite").await;
    upload(&t, "b.txt", b"also").await;
    let events = t.api.get("/v1/events").send().await.expect(200).json();
    assert_eq!(events["events"].as_array().unwrap().len(), 2, "{events}");
    let spoke = Spoke::start(&hub, "fra1");
    hub.stop();

    // The operator keeps the old configuration and points this one at
    // PostgreSQL.
    let old = hub.dir.path().join("hub-sqlite.toml");
    std::fs::copy(&hub.config, &old).unwrap();
    let mut text = std::fs::read_to_string(&hub.config).unwrap();
    text.push_str(&format!("\n{}", pg.store_toml(None)));
    std::fs::write(&hub.config, text).unwrap();
    let old = old.to_str().unwrap();
    let (ok, _, err) = hub.command(&["migrate-store", "--from", old]);
    assert!(ok, "{err}");
    for line in [
        "accounts: 1 rows",
        "objects: 2 rows",
        "spokes: 1 rows",
        "tunnel CA",
    ] {
        assert!(err.contains(line), "{line:?} missing from:\n{err}");
    }
    // A second run finds the data there and copies nothing.
    let (ok, _, err) = hub.command(&["migrate-store", "--from", old]);
    assert!(!ok && err.contains("already holds accounts"), "{err}");
    // Backwards is refused with a clear reason.
    let (ok, _, err) = hub.command(&["migrate-store", "--from", hub.config.to_str().unwrap()]);
    assert!(
        !ok && err.contains("must use store.backend = \"sqlite\""),
        "{err}"
    );
    // The CA now comes from the store, not the state directory.
    std::fs::remove_dir_all(hub.dir.path().join("state").join("tunnel-ca")).unwrap();

    hub.restart_on_same_ports();
    // Ready comes through the notification socket, ahead of the log pipe.
    assert!(
        hub.daemon()
            .wait_for(
                "using the tunnel CA shared through the metadata store",
                Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        hub.log()
    );
    // A new client: the old one's kept-alive connection died with the hub.
    let t = ferry_tests::scenarios::Tenant {
        api: Api::new(hub.url()).as_token(&t.key),
        ..t
    };
    assert_eq!(
        &t.api.get(&t.file("a.txt")).send().await.expect(200).body[..],
        b"made on SQLite"
    );
    let after = t.api.get("/v1/events").send().await.expect(200).json();
    assert_eq!(after, events, "the same events with the same ids");
    // New events number on from the old ones.
    upload(&t, "c.txt", b"made on PostgreSQL").await;
    let last = t.api.get("/v1/events").send().await.expect(200).json();
    let ids: Vec<i64> = last["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]) && ids.len() == 3,
        "{last}"
    );
    // The spoke, enrolled on SQLite, reconnects with its certificate.
    let via = Api::new(spoke.url()).as_token(&t.key);
    assert!(
        eventually(Duration::from_secs(15), async || {
            via.get(&t.file("b.txt")).send().await.status == 200
        })
        .await,
        "{}",
        spoke.log()
    );
}

#[tokio::test]
async fn two_hubs_number_one_accounts_events_without_gap_or_duplicate() {
    ferry_tests::install_crypto_provider();
    let pg = Postgres::primary();
    let hub_a = hub_on(pg.store_toml(None));
    let hub_b = Hub::start_with(HubOptions {
        extra_toml: pg.store_toml(None),
        data_dir: Some(hub_a.data_dir.clone()),
        ..HubOptions::default()
    });
    let t = tenant(&hub_a.url(), "alpha", &hub_a.data_dir).await;
    let other = tenant(&hub_b.url(), "beta", &hub_a.data_dir).await;
    let via_b = Api::new(hub_b.url()).as_token(&t.key);
    // Both hubs commit events of the one account at once, while another
    // account writes beside them.
    let writes = (0..24).map(|i| {
        let (api, path) = match i % 3 {
            0 => (&t.api, format!("/v1/connections/local/files/a{i}.txt")),
            1 => (&via_b, format!("/v1/connections/local/files/b{i}.txt")),
            _ => (&other.api, format!("/v1/connections/local/files/o{i}.txt")),
        };
        async move { api.put(&path).body("x").send().await.expect(201) }
    });
    futures_util::future::join_all(writes).await;
    let feed = via_b.get("/v1/events").send().await.expect(200).json();
    let events = feed["events"].as_array().unwrap();
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=16).collect::<Vec<i64>>(), "{feed}");
    let mut paths: Vec<&str> = events.iter().map(|e| e["path"].as_str().unwrap()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), 16, "{feed}");
    let theirs = other.api.get("/v1/events").send().await.expect(200).json();
    assert_eq!(theirs["events"].as_array().unwrap().len(), 8, "{theirs}");

    // A hub of the release before the numbering inserts events without a
    // number while the hubs are upgraded in turn: the store numbers them.
    pg.sql(&format!(
        "INSERT INTO events (account_id, connection_id, kind, path, at) \
         VALUES ('{}', '{}', 'created', 'old-hub.txt', 1)",
        t.account_id, t.conn_id
    ));
    let more = t
        .api
        .get(&format!(
            "/v1/events?cursor={}",
            feed["next_cursor"].as_str().unwrap()
        ))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(more["events"][0]["id"], 17, "{more}");
    assert_eq!(more["events"][0]["path"], "old-hub.txt", "{more}");
}

/// Two hubs on one store cache which account a key is and an account's
/// connections: a key revoked and a connection deleted through one hub
/// stop working at the other within a few seconds (each hub reads the
/// store's cache epoch every second), and at the first at once.
#[tokio::test]
async fn a_revocation_through_one_hub_reaches_the_other_hubs_cache() {
    ferry_tests::install_crypto_provider();
    let pg = Postgres::primary();
    let hub_a = hub_on(pg.store_toml(None));
    let hub_b = Hub::start_with(HubOptions {
        extra_toml: pg.store_toml(None),
        data_dir: Some(hub_a.data_dir.clone()),
        ..HubOptions::default()
    });
    let t = tenant(&hub_a.url(), "alpha", &hub_a.data_dir).await;
    let key = t.new_key().await;
    let second = key["key"].as_str().unwrap().to_owned();
    let at_a = Api::new(hub_a.url()).as_token(&second);
    let at_b = Api::new(hub_b.url()).as_token(&second);
    // Used at both hubs for a while, so that both have it cached.
    for _ in 0..30 {
        at_a.get("/v1/connections/local/list/")
            .send()
            .await
            .expect(200);
        at_b.get("/v1/connections/local/list/")
            .send()
            .await
            .expect(200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.revoke_key(key["id"].as_str().unwrap()).await;
    at_a.get("/v1/connections")
        .send()
        .await
        .expect_problem(401, "unauthorized");
    let refused = ferry_tests::eventually(Duration::from_secs(5), async || {
        at_b.get("/v1/connections").send().await.status == 401
    })
    .await;
    assert!(refused, "hub B still takes the revoked key");

    // The connection, looked up at both by name, deleted through A.
    let via_b = Api::new(hub_b.url()).as_token(&t.key);
    for _ in 0..10 {
        via_b
            .get("/v1/connections/local/list/")
            .send()
            .await
            .expect(200);
        t.api
            .get("/v1/connections/local/list/")
            .send()
            .await
            .expect(200);
    }
    t.api
        .delete(&format!("/v1/connections/{}", t.conn_id))
        .send()
        .await
        .expect(204);
    t.api
        .get("/v1/connections/local/list/")
        .send()
        .await
        .expect_problem(404, "connection_not_found");
    let gone = ferry_tests::eventually(Duration::from_secs(5), async || {
        via_b.get("/v1/connections/local/list/").send().await.status == 404
    })
    .await;
    assert!(gone, "hub B still serves the deleted connection");
}

/// Two hubs on one store: one of them holds a connection's scans and
/// reports a change made outside ferry once, in the feed both serve; when
/// it is killed, the other takes the scans over within the lease and
/// reports the next change, once.
#[tokio::test]
async fn one_hub_scans_a_connection_and_another_takes_over_when_it_dies() {
    ferry_tests::install_crypto_provider();
    let pg = Postgres::primary();
    // Folder notifications off: the scans (every second) find the changes.
    let index = "\n[index]\nscan_interval_secs = 1\nlease_secs = 3\nnotify = false\n";
    let mut hubs = vec![hub_on(format!("{}{index}", pg.store_toml(None)))];
    hubs.push(Hub::start_with(HubOptions {
        extra_toml: format!("{}{index}", pg.store_toml(None)),
        data_dir: Some(hubs[0].data_dir.clone()),
        ..HubOptions::default()
    }));
    let t = tenant(&hubs[0].url(), "alpha", &hubs[0].data_dir).await;
    let root = hubs[0].data_dir.join("alpha");
    let held =
        async |hub: &Hub| metric(&hub.metrics_url(), "ferry_index_connections_held", &[]).await;
    let full_scans = async |hub: &Hub| {
        metric(
            &hub.metrics_url(),
            "ferry_index_scans_total",
            &[("kind", "full"), ("result", "ok")],
        )
        .await
    };
    assert!(
        eventually(Duration::from_secs(10), async || {
            held(&hubs[0]).await + held(&hubs[1]).await == 1.0
        })
        .await,
        "one hub holds the connection's scans"
    );
    let holder = usize::from(held(&hubs[1]).await == 1.0);
    let other = 1 - holder;
    assert_eq!(
        full_scans(&hubs[other]).await,
        0.0,
        "the other hub scans nothing"
    );

    // A change outside ferry: one event, whichever hub is asked.
    let events_at = async |hub: &Hub, path: &str| -> usize {
        let feed = Api::new(hub.url())
            .as_token(&t.key)
            .get("/v1/events?limit=1000")
            .send()
            .await
            .expect(200)
            .json();
        feed["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["path"] == path && e["origin"] == "provider")
            .count()
    };
    std::fs::write(root.join("first.txt"), b"outside").unwrap();
    assert!(
        eventually(Duration::from_secs(15), async || events_at(
            &hubs[other],
            "first.txt"
        )
        .await
            == 1)
        .await,
        "the change was reported"
    );
    // Two more scans by the holder: still one event.
    let scans = full_scans(&hubs[holder]).await;
    assert!(
        eventually(Duration::from_secs(15), async || full_scans(&hubs[holder])
            .await
            >= scans + 2.0)
        .await
    );
    assert_eq!(events_at(&hubs[other], "first.txt").await, 1);

    // The holder dies without giving its lease up: the other takes over
    // once it lapses.
    hubs[holder].kill();
    assert!(
        eventually(Duration::from_secs(15), async || held(&hubs[other]).await
            == 1.0)
        .await,
        "the surviving hub took the scans over"
    );
    std::fs::write(root.join("second.txt"), b"outside again").unwrap();
    assert!(
        eventually(Duration::from_secs(15), async || events_at(
            &hubs[other],
            "second.txt"
        )
        .await
            == 1)
        .await,
        "the surviving hub reported the next change"
    );
    assert_eq!(
        events_at(&hubs[other], "first.txt").await,
        1,
        "nothing reported twice"
    );
}

/// Two hubs on one primary take an upload of one path at the same
/// moment, round after round: their intents meet on the primary under its
/// advisory lock, so each round leaves one writer's content with that
/// writer's record, the other (when the two overlapped) is refused with
/// `409 write_conflict`, and the feed has one event per upload answered
/// `2xx`.
#[tokio::test]
async fn two_hubs_racing_on_one_path_leave_one_writers_content_and_record() {
    ferry_tests::install_crypto_provider();
    let primary = Postgres::primary();
    let hub_a = hub_reading(&primary, None, None);
    let hub_b = hub_reading(&primary, None, Some(hub_a.data_dir.clone()));
    let t = tenant(&hub_a.url(), "alpha", &hub_a.data_dir).await;
    let apis = [
        Api::new(hub_a.url()).as_token(&t.key),
        Api::new(hub_b.url()).as_token(&t.key),
    ];
    let file = t.file("raced.txt");
    let (mut answered, mut refused) = (0, 0);
    for round in 0..20 {
        let bodies = [0, 1].map(|w| format!("round {round}, written through hub {w}"));
        let (a, b) = tokio::join!(
            apis[0].put(&file).body(bodies[0].clone()).send(),
            apis[1].put(&file).body(bodies[1].clone()).send(),
        );
        let mut won = Vec::new();
        for (r, body) in [(a, &bodies[0]), (b, &bodies[1])] {
            match r.status.as_u16() {
                200 | 201 => won.push(body.clone()),
                409 => {
                    r.expect_problem(409, "write_conflict");
                    refused += 1;
                }
                _ => panic!("round {round}: {:?} {:?}", r.status, r.body),
            }
        }
        assert!(!won.is_empty(), "round {round}: neither writer won");
        answered += won.len();
        let got = apis[round % 2].get(&file).send().await.expect(200);
        let held = String::from_utf8_lossy(&got.body).into_owned();
        assert!(
            won.contains(&held),
            "round {round}: {held:?} is no winner's"
        );
        assert_eq!(
            got.header("x-ferry-checksum-crc64nvme"),
            ferry_tests::crc64nvme_field(held.as_bytes()),
            "round {round}: the record is the content's"
        );
    }
    let feed = apis[0]
        .get("/v1/events?limit=1000")
        .send()
        .await
        .expect(200)
        .json();
    let events = feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] == "raced.txt")
        .count();
    assert_eq!(events, answered, "one event per upload answered 2xx");
    eprintln!("{answered} uploads taken, {refused} refused in 20 rounds");
}

#[tokio::test]
async fn two_hubs_send_each_webhook_delivery_once_and_in_order() {
    ferry_tests::install_crypto_provider();
    let primary = Postgres::primary();
    let r = ferry_tests::webhooks::Receiver::start();
    let hub = |data_dir| {
        Hub::start_with(HubOptions {
            extra_toml: format!(
                "{}\n[webhooks]\nallow_private_endpoints = true\nretry_schedule_secs = [1, 1, 1]\n",
                primary.store_toml(None)
            ),
            data_dir,
            ..HubOptions::default()
        })
    };
    let hub_a = hub(None);
    let hub_b = hub(Some(hub_a.data_dir.clone()));
    let t = tenant(&hub_a.url(), "alpha", &hub_a.data_dir).await;
    let made =
        ferry_tests::webhooks::endpoint(&t, &r, "/both", Some(json!(["object.deleted"]))).await;
    // Changed through the other hub: every type again.
    let changed = Api::new(hub_b.url())
        .as_token(&t.key)
        .req(
            http::Method::PATCH,
            &format!("/v1/webhooks/{}", made["id"].as_str().unwrap()),
        )
        .json(&json!({ "events": null, "description": "both hubs" }))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(
        (&changed["events"], &changed["description"]),
        (&serde_json::Value::Null, &json!("both hubs"))
    );
    // Every other delivery fails once, so that retries pass between hubs too.
    let script: Vec<_> = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                json!([503, {}])
            } else {
                json!([200, {}])
            }
        })
        .collect();
    r.control("/_script", json!({ "/both": script })).await;
    let apis = [
        Api::new(hub_a.url()).as_token(&t.key),
        Api::new(hub_b.url()).as_token(&t.key),
    ];
    const N: usize = 30;
    for i in 0..N {
        apis[i % 2]
            .put(&t.file(&format!("f{i}.txt")))
            .body(format!("file {i}"))
            .send()
            .await
            .expect(201);
    }
    let mut taken = Vec::new();
    let all = eventually(Duration::from_secs(90), async || {
        taken = r
            .deliveries("/both")
            .await
            .into_iter()
            .filter(|d| d["answered"] == 200)
            .collect();
        taken.len() >= N
    })
    .await;
    assert!(all, "{} of {N} delivered", taken.len());
    assert!(taken.iter().all(|d| d["verified"] == true));
    let order: Vec<i64> = taken
        .iter()
        .map(|d| d["payload"]["data"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        order,
        (1..=N as i64).collect::<Vec<_>>(),
        "each once, in order"
    );
    let delivered = |h: &Hub| {
        let url = h.metrics_url();
        async move {
            metric(
                &url,
                "ferry_webhook_attempts_total",
                &[("result", "delivered")],
            )
            .await
        }
    };
    let (a, b) = (delivered(&hub_a).await, delivered(&hub_b).await);
    assert_eq!(
        a + b,
        N as f64,
        "no delivery sent twice (hub A {a}, hub B {b})"
    );
    eprintln!("hub A delivered {a}, hub B {b}");
}
