//! The API suite against a real `ferry-hub` process.

use ferry_tests::scenarios::{self, Tenant, tenant};
use ferry_tests::{Api, Hub};

/// What the server sends on `tcp` until it closes the connection (10 s at
/// most), and whether it did.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let closed = loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (got, closed)
}

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

/// The feed filtered to one connection and one path: that file's events,
/// a move away from it included; another account's connection is not
/// found.
#[tokio::test]
async fn events_are_filtered_by_connection_and_path() {
    let (hub, t) = hub_with_tenant().await;
    for name in ["a.txt", "b.txt"] {
        t.api.put(&t.file(name)).body("x").send().await.expect(201);
    }
    t.api
        .post("/v1/connections/local/move")
        .json(&serde_json::json!({ "from": "a.txt", "to": "c.txt" }))
        .send()
        .await
        .expect(201);
    let kinds = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["path"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let of_a = t
        .api
        .get("/v1/events?connection=local&path=a.txt")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(
        kinds(&of_a),
        [("created", "a.txt"), ("moved", "c.txt")].map(|(k, p)| (k.to_owned(), p.to_owned()))
    );
    let by_id = t
        .api
        .get(&format!(
            "/v1/events?connection={}&path=b.txt&limit=1",
            t.conn_id
        ))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(kinds(&by_id), [("created".to_owned(), "b.txt".to_owned())]);
    assert_eq!(by_id["has_more"], true, "a full page says so: {by_id}");
    // Resuming after it finds nothing more for that path.
    let next = by_id["next_cursor"].as_str().unwrap();
    let rest = t
        .api
        .get(&format!(
            "/v1/events?connection=local&path=b.txt&cursor={next}"
        ))
        .send()
        .await
        .expect(200)
        .json();
    assert!(kinds(&rest).is_empty(), "{rest}");
    let other = tenant(&hub.url(), "beta", &hub.data_dir).await;
    other
        .api
        .get(&format!("/v1/events?connection={}", t.conn_id))
        .send()
        .await
        .expect_problem(404, "connection_not_found");
    t.api
        .get("/v1/events?path=a.txt&path=b.txt")
        .send()
        .await
        .expect_problem(400, "invalid_query");
}

#[tokio::test]
async fn accounts_manage_their_own_keys() {
    let (hub, a) = hub_with_tenant().await;
    let b = tenant(&hub.url(), "beta", &hub.data_dir).await;
    scenarios::own_keys(&a, &b).await;
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

/// A client that sends its whole body before it reads the answer (as most
/// do) gets the answer to a request refused before its body was read —
/// here a 32 MiB `PUT` with a wrong key — rather than a failed write, and
/// its connection stays open for the next request.
#[tokio::test]
async fn a_refused_request_is_answered_after_its_body() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (hub, t) = hub_with_tenant().await;
    let size = 32usize << 20;
    let mut tcp = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nhost: ferry\r\nauthorization: Bearer fry_wrong\r\ncontent-length: {size}\r\n\r\n",
        t.file("refused.bin")
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let block = vec![7u8; 1 << 20];
    for i in 0..size / block.len() {
        tcp.write_all(&block)
            .await
            .unwrap_or_else(|e| panic!("the body's MiB {i} could not be sent: {e}"));
    }
    // The answer, then the next request on the same connection.
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: ferry\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains("HTTP/1.1 200") {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(
        text.contains("HTTP/1.1 200"),
        "the connection was not kept: {text}"
    );
    // The refusal mid-body is in the log, with what was refused.
    let said = hub
        .daemon()
        .wait_for(
            "answered before the request's body ended",
            std::time::Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("no log line:\n{}", hub.log()));
    assert!(
        said.contains("status=401") && said.contains("method=PUT"),
        "{said}"
    );
}

/// A refused body that stops arriving is read on for 5 seconds at most;
/// then the connection is closed, and the log says why the client saw it
/// closed.
#[tokio::test]
async fn a_refused_body_that_stalls_closes_its_connection_and_says_so() {
    use tokio::io::AsyncWriteExt as _;
    let (hub, t) = hub_with_tenant().await;
    let mut tcp = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nhost: ferry\r\nauthorization: Bearer fry_wrong\r\ncontent-length: {}\r\n\r\n",
        t.file("stalled.bin"),
        8 << 20
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&vec![7u8; 1 << 20]).await.unwrap();
    // Nothing more is sent: the rest never comes.
    let closed = hub.daemon().wait_for(
        "closed a connection: the request body its handler left did not end",
        std::time::Duration::from_secs(15),
    );
    assert!(closed.is_some(), "no log line:\n{}", hub.log());
    // The answer was sent, then the connection closed.
    let (got, ended) = read_until_closed(&mut tcp).await;
    assert!(ended, "the connection stayed open");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
}

/// A client that waits for `100 Continue` and is answered at once sends no
/// body: the server must not read its next request as that body (it
/// closes the connection instead, or answers the next request whole).
#[tokio::test]
async fn a_refused_request_that_expected_continue_does_not_swallow_the_next() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (hub, t) = hub_with_tenant().await;
    let mut tcp = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let next = b"GET /healthz HTTP/1.1\r\nhost: ferry\r\n\r\n";
    // The announced body is exactly as long as the next request: read as
    // that body, the next request would vanish without an answer.
    let head = format!(
        "PUT {} HTTP/1.1\r\nhost: ferry\r\nauthorization: Bearer fry_wrong\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        t.file("refused.bin"),
        next.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n{") {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let first = String::from_utf8_lossy(&got).into_owned();
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");
    // No body follows the refusal; the next request does.
    let _ = tcp.write_all(next).await;
    let mut rest = Vec::new();
    let ended = loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break "closed",
            Ok(Ok(n)) => {
                rest.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&rest).contains("\r\n\r\nok") {
                    break "answered";
                }
            }
            Err(_) => break "nothing",
        }
    };
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        ended != "nothing" && !rest.contains("100 Continue"),
        "the next request was read as the refused one's body ({ended}): {rest}"
    );
}

/// The same through a spoke, with a body of one byte: whoever reads what
/// (the spoke, the hub, a 100 sent late), the answer closes the
/// connection, so the next request cannot lose its first byte to it.
#[tokio::test]
async fn a_refused_request_that_expected_continue_closes_its_connection_at_a_spoke() {
    use tokio::io::AsyncWriteExt as _;
    let (hub, t) = hub_with_tenant().await;
    let spoke = ferry_tests::Spoke::start(&hub, "fra1");
    for addr in [hub.addr, spoke.addr] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "PUT {} HTTP/1.1\r\nhost: ferry\r\nauthorization: Bearer fry_wrong\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            t.file("refused.bin"),
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let (got, closed) = read_until_closed(&mut tcp).await;
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 401"), "{addr}: {text}");
        assert!(
            text.contains("connection: close") && closed,
            "{addr}: the connection stays open after a refusal whose body never came: {text}"
        );
    }
}

#[tokio::test]
async fn events_past_their_retention_go_and_a_cursor_before_them_is_told() {
    // About 2.6 s of retention; the hub looks each second.
    let hub = Hub::start_with(ferry_tests::HubOptions {
        extra_toml: "[events]\nretention_days = 0.00003\n".into(),
        ..Default::default()
    });
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    for name in ["1.txt", "2.txt", "3.txt"] {
        scenarios::upload(&t, name, b"x").await;
    }
    let first = t
        .api
        .get("/v1/events?limit=1")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(first["next_cursor"], "s1");
    // The first two go; the account's newest stays, whatever its age, so
    // that numbers go on from it.
    let gone = ferry_tests::eventually(std::time::Duration::from_secs(30), async || {
        let feed = t.api.get("/v1/events").send().await.expect(200).json();
        let ids: Vec<i64> = feed["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        ids == [3]
    })
    .await;
    assert!(gone, "the old events were not removed:\n{}", hub.log());
    t.api
        .get("/v1/events?cursor=s1")
        .send()
        .await
        .expect_problem(410, "cursor_expired");
    let at_horizon = t
        .api
        .get("/v1/events?cursor=s2")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(at_horizon["events"][0]["id"], 3);
    scenarios::upload(&t, "4.txt", b"x").await;
    let next = t
        .api
        .get("/v1/events?cursor=s3")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(next["events"][0]["id"], 4);
    assert_eq!(next["events"][0]["path"], "4.txt");
}

#[tokio::test]
async fn folders_are_deleted_empty_or_with_all_they_hold() {
    let (_hub, t) = hub_with_tenant().await;
    scenarios::folder_deletion(&t).await;
}

#[tokio::test]
async fn a_deleted_account_keeps_nothing() {
    let (hub, t) = hub_with_tenant().await;
    let other = tenant(&hub.url(), "beta", &hub.data_dir).await;
    scenarios::account_deletion(&t, &hub.data_dir.join("alpha"), &other).await;
}
