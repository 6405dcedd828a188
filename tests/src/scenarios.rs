//! The API suite: scenarios written against an [`Api`], so they run
//! unchanged against a hub today and a spoke later.

use std::path::Path;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use crate::client::Api;
use crate::hub::ADMIN_TOKEN;
use crate::{pattern, repr_digest, sha256};

/// An account with an API key and an `fs` connection named `local`.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// The API as the operator (admin token).
    pub admin: Api,
    /// The API as the account (its API key).
    pub api: Api,
    /// The account's id.
    pub account_id: String,
    /// Its API key.
    pub key: String,
    /// The id of its `local` connection.
    pub conn_id: String,
}

impl Tenant {
    /// Makes another API key for the account (through the admin API) and
    /// returns the answer: `{ "id", "key", … }`.
    pub async fn new_key(&self) -> serde_json::Value {
        self.admin
            .post(&format!("/v1/accounts/{}/keys", self.account_id))
            .send()
            .await
            .expect(201)
            .json()
    }
}

impl Tenant {
    /// Makes an S3 key for every connection of the account, reading and
    /// writing; returns the answer: `{ "access_key_id", "secret_access_key", … }`.
    pub async fn new_s3_key(&self) -> serde_json::Value {
        self.api.post("/v1/s3-keys").send().await.expect(201).json()
    }

    /// Revokes the account's key `key_id` (through the admin API).
    pub async fn revoke_key(&self, key_id: &str) {
        self.admin
            .delete(&format!("/v1/accounts/{}/keys/{key_id}", self.account_id))
            .send()
            .await
            .expect(204);
    }

    /// The URL path of a file in the `local` connection.
    pub fn file(&self, path: &str) -> String {
        format!("/v1/connections/local/files/{path}")
    }
}

/// Creates an account named `name` with an `fs` connection rooted at
/// `<data_dir>/<name>`.
pub async fn tenant(base: &str, name: &str, data_dir: &Path) -> Tenant {
    remote_tenant(base, name, "fs", json!({ "root": data_dir.join(name) })).await
}

/// Creates an account named `name` whose connection `local` uses
/// `provider` with `config`.
pub async fn remote_tenant(base: &str, name: &str, provider: &str, config: Value) -> Tenant {
    tenant_with(
        base,
        name,
        json!({ "name": "local", "provider": provider, "config": config }),
    )
    .await
}

/// Creates an account named `name` whose connection is made with `body`
/// (which names it `local`).
pub async fn tenant_with(base: &str, name: &str, body: Value) -> Tenant {
    let admin = Api::new(base).as_token(ADMIN_TOKEN);
    let created = admin
        .post("/v1/accounts")
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect(201)
        .json();
    let key = created["api_key"].as_str().expect("an api_key").to_owned();
    let api = admin.as_token(&key);
    let conn = api
        .post("/v1/connections")
        .json(&body)
        .send()
        .await
        .expect(201)
        .json();
    Tenant {
        admin,
        api,
        account_id: created["id"].as_str().unwrap().to_owned(),
        key,
        conn_id: conn["id"].as_str().unwrap().to_owned(),
    }
}

/// Uploads `data` to `path` and returns the answer's JSON.
pub async fn upload(t: &Tenant, path: &str, data: &[u8]) -> Value {
    let resp = t
        .api
        .put(&t.file(path))
        .body(Bytes::copy_from_slice(data))
        .send()
        .await;
    assert!(
        resp.status.is_success(),
        "upload of {path}: {} {}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    resp.json()
}

/// 64 MiB up and down, streamed in 1 MiB pieces, SHA-256 equal both ways.
pub async fn large_round_trip(t: &Tenant, size: usize) {
    let data = Bytes::from(pattern(size, 64));
    let want = sha256(&data);
    let up = t
        .api
        .put(&t.file("big/blob.bin"))
        .header("repr-digest", repr_digest(&data))
        .body_chunked(data.clone(), 1 << 20)
        .send()
        .await
        .expect(201);
    let info = up.json();
    assert_eq!(info["size"], size as u64);
    let crc = up
        .header("x-ferry-checksum-crc64nvme")
        .expect("a CRC64/NVME on upload");
    assert_eq!(info["checksums"]["crc64nvme"], crc.as_str());

    let resp = t.api.get(&t.file("big/blob.bin")).send_raw().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], size.to_string().as_str());
    assert_eq!(resp.headers()["x-ferry-checksum-crc64nvme"], crc.as_str());
    let mut body = resp.into_body();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut got = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame.expect("the download continues").into_data() {
            got += chunk.len();
            ctx.update(&chunk);
        }
    }
    assert_eq!(got, size);
    assert_eq!(
        ctx.finish().as_ref(),
        want.as_slice(),
        "SHA-256 of the download differs"
    );

    let head = t.api.head(&t.file("big/blob.bin")).send().await.expect(200);
    assert_eq!(head.header("content-length"), Some(size.to_string()));
    assert!(head.body.is_empty());
}

/// Single ranges: 206 with Content-Range, suffix ranges, 416 outside.
pub async fn range_reads(t: &Tenant) {
    let data = pattern(10_000, 7);
    upload(t, "r.bin", &data).await;
    let r = t
        .api
        .get(&t.file("r.bin"))
        .header("range", "bytes=100-199")
        .send()
        .await
        .expect(206);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes 100-199/10000")
    );
    assert_eq!(&r.body[..], &data[100..200]);
    let r = t
        .api
        .get(&t.file("r.bin"))
        .header("range", "bytes=-10")
        .send()
        .await
        .expect(206);
    assert_eq!(&r.body[..], &data[9990..]);
    let r = t
        .api
        .get(&t.file("r.bin"))
        .header("range", "bytes=9000-")
        .send()
        .await
        .expect(206);
    assert_eq!(&r.body[..], &data[9000..]);
    let r = t
        .api
        .get(&t.file("r.bin"))
        .header("range", "bytes=9999-20000")
        .send()
        .await
        .expect(206);
    assert_eq!(&r.body[..], &data[9999..]);
    let r = t
        .api
        .get(&t.file("r.bin"))
        .header("range", "bytes=10000-")
        .send()
        .await
        .expect_problem(416, "range_not_satisfiable");
    assert_eq!(r.header("content-range").as_deref(), Some("bytes */10000"));
    // Several ranges are answered with the whole object, as RFC 9110 allows.
    let r = t
        .api
        .get(&t.file("r.bin"))
        .header("range", "bytes=0-1,5-6")
        .send()
        .await
        .expect(200);
    assert_eq!(r.body.len(), 10_000);
    // If-Range with a stale tag sends everything.
    let r = t
        .api
        .get(&t.file("r.bin"))
        .header("range", "bytes=0-9")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .expect(200);
    assert_eq!(r.body.len(), 10_000);
}

/// ETag, If-Match, If-None-Match on reads and writes.
pub async fn conditional_requests(t: &Tenant) {
    let first = upload(t, "c.txt", b"one").await;
    let etag = first["etag"].as_str().unwrap().to_owned();
    let r = t.api.get(&t.file("c.txt")).send().await.expect(200);
    assert_eq!(r.header("etag").as_deref(), Some(etag.as_str()));
    t.api
        .get(&t.file("c.txt"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect(304);
    t.api
        .get(&t.file("c.txt"))
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .expect(200);
    t.api
        .get(&t.file("c.txt"))
        .header("if-match", "\"other\"")
        .send()
        .await
        .expect_problem(412, "precondition_failed");
    // Create-only: fails when something is there.
    t.api
        .put(&t.file("c.txt"))
        .header("if-none-match", "*")
        .body("two")
        .send()
        .await
        .expect_problem(412, "precondition_failed");
    t.api
        .put(&t.file("fresh.txt"))
        .header("if-none-match", "*")
        .body("new")
        .send()
        .await
        .expect(201);
    // Compare-and-swap.
    t.api
        .put(&t.file("c.txt"))
        .header("if-match", "\"stale\"")
        .body("two")
        .send()
        .await
        .expect_problem(412, "precondition_failed");
    let second = t
        .api
        .put(&t.file("c.txt"))
        .header("if-match", &etag)
        .body("two")
        .send()
        .await
        .expect(200);
    let etag2 = second.header("etag").unwrap();
    assert_ne!(etag2, etag);
    assert_eq!(
        &t.api.get(&t.file("c.txt")).send().await.expect(200).body[..],
        b"two"
    );
    t.api
        .delete(&t.file("c.txt"))
        .header("if-match", &etag)
        .send()
        .await
        .expect_problem(412, "precondition_failed");
    t.api
        .delete(&t.file("c.txt"))
        .header("if-match", &etag2)
        .send()
        .await
        .expect(204);
    t.api
        .get(&t.file("c.txt"))
        .send()
        .await
        .expect_problem(404, "not_found");
}

/// Listing across several pages, folders first-class, cursor resumes.
pub async fn listing_pagination(t: &Tenant) {
    let n = 230;
    for i in 0..n {
        upload(t, &format!("many/f{i:04}.txt"), format!("{i}").as_bytes()).await;
    }
    t.api
        .post("/v1/connections/local/folders/many/sub")
        .send()
        .await
        .expect(201);
    t.api
        .post("/v1/connections/local/folders/many/sub")
        .send()
        .await
        .expect(200);
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=100&cursor={c}"),
            None => "?limit=100".to_owned(),
        };
        let page = t
            .api
            .get(&format!("/v1/connections/local/list/many{q}"))
            .send()
            .await
            .expect(200)
            .json();
        pages += 1;
        for e in page["entries"].as_array().unwrap() {
            names.push((
                e["name"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            ));
            if e["type"] == "file" {
                assert!(e["size"].as_u64().is_some() && e["etag"].is_string(), "{e}");
                assert!(e["path"].as_str().unwrap().starts_with("many/"));
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), n + 1);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries come in name order");
    sorted.dedup();
    assert_eq!(sorted.len(), n + 1, "no entry twice");
    assert!(names.contains(&("sub".to_owned(), "folder".to_owned())));

    let root = t
        .api
        .get("/v1/connections/local/list")
        .send()
        .await
        .expect(200)
        .json();
    let root_names = crate::entry_names(&root);
    assert!(root_names.contains(&"many".to_owned()));
    assert!(
        !root_names.contains(&".ferry-partial".to_owned()),
        "the staging folder stays hidden"
    );
    t.api
        .get("/v1/connections/local/list/nope")
        .send()
        .await
        .expect_problem(404, "not_found");
    t.api
        .get("/v1/connections/local/list/many/f0001.txt")
        .send()
        .await
        .expect_problem(409, "not_a_folder");
    t.api
        .get("/v1/connections/local/list/many?cursor=%%%")
        .send()
        .await
        .expect(400);
    t.api
        .get("/v1/connections/local/list/many?cursor=@@")
        .send()
        .await
        .expect_problem(400, "invalid_cursor");
    t.api
        .get("/v1/connections/local/list/many?limit=0")
        .send()
        .await
        .expect_problem(400, "invalid_query");
    t.api
        .get("/v1/connections/local/list/many?limit=5000")
        .send()
        .await
        .expect_problem(400, "invalid_query");
    t.api
        .get("/v1/connections/local/list/many?limt=5")
        .send()
        .await
        .expect_problem(400, "invalid_query");
}

/// Copy and move keep content and checksums; conflicts need `overwrite`.
pub async fn copy_and_move(t: &Tenant) {
    let data = pattern(300_000, 3);
    let up = upload(t, "src/a.bin", &data).await;
    let c = t
        .api
        .post("/v1/connections/local/copy")
        .json(&json!({ "from": "src/a.bin", "to": "dst/b.bin" }))
        .send()
        .await
        .expect(201)
        .json();
    assert_eq!(c["checksums"]["crc64nvme"], up["checksums"]["crc64nvme"]);
    assert_eq!(
        &t.api
            .get(&t.file("dst/b.bin"))
            .send()
            .await
            .expect(200)
            .body[..],
        &data[..]
    );
    assert_eq!(
        &t.api
            .get(&t.file("src/a.bin"))
            .send()
            .await
            .expect(200)
            .body[..],
        &data[..]
    );
    t.api
        .post("/v1/connections/local/copy")
        .json(&json!({ "from": "src/a.bin", "to": "dst/b.bin" }))
        .send()
        .await
        .expect_problem(409, "already_exists");
    t.api
        .post("/v1/connections/local/move")
        .json(&json!({ "from": "dst/b.bin", "to": "moved/c.bin" }))
        .send()
        .await
        .expect(201);
    t.api
        .get(&t.file("dst/b.bin"))
        .send()
        .await
        .expect_problem(404, "not_found");
    let moved = t.api.get(&t.file("moved/c.bin")).send().await.expect(200);
    assert_eq!(&moved.body[..], &data[..]);
    assert_eq!(
        moved.header("x-ferry-checksum-crc64nvme").as_deref(),
        up["checksums"]["crc64nvme"].as_str()
    );
    upload(t, "other.bin", b"x").await;
    t.api
        .post("/v1/connections/local/move")
        .json(&json!({ "from": "other.bin", "to": "moved/c.bin", "overwrite": true }))
        .send()
        .await
        .expect(201);
    assert_eq!(
        &t.api
            .get(&t.file("moved/c.bin"))
            .send()
            .await
            .expect(200)
            .body[..],
        b"x"
    );
    for (body, code) in [
        (
            json!({ "from": "nope.bin", "to": "x.bin" }),
            (404, "not_found"),
        ),
        (
            json!({ "from": "moved/c.bin", "to": "moved/c.bin", "overwrite": true }),
            (409, "already_exists"),
        ),
        (
            json!({ "from": "../etc/passwd", "to": "x.bin" }),
            (400, "invalid_path"),
        ),
        (json!({ "from": "moved/c.bin" }), (400, "invalid_json")),
        (
            json!({ "from": "moved/c.bin", "to": "src" }),
            (409, "already_exists"),
        ),
    ] {
        t.api
            .post("/v1/connections/local/copy")
            .json(&body)
            .send()
            .await
            .expect_problem(code.0, code.1);
    }

    // Conditions: If-Match on the source (the version the client saw),
    // If-None-Match on the destination; failing, nothing changes.
    let seen = etag_of(t, "moved/c.bin").await;
    let copy = json!({ "from": "moved/c.bin", "to": "cond/c.bin" });
    for (route, name, value) in [
        ("copy", "if-match", "\"another-version\""),
        ("move", "if-match", "\"another-version\""),
        ("copy", "if-none-match", "*"),
    ] {
        if name == "if-none-match" {
            upload(t, "cond/c.bin", b"already here").await;
        }
        t.api
            .post(&format!("/v1/connections/local/{route}"))
            .header(name, value)
            .json(&json!({ "from": "moved/c.bin", "to": "cond/c.bin", "overwrite": true }))
            .send()
            .await
            .expect_problem(412, "precondition_failed");
        t.api.get(&t.file("moved/c.bin")).send().await.expect(200);
    }
    assert_eq!(
        &t.api
            .get(&t.file("cond/c.bin"))
            .send()
            .await
            .expect(200)
            .body[..],
        b"already here"
    );
    t.api.delete(&t.file("cond/c.bin")).send().await.expect(204);
    t.api
        .post("/v1/connections/local/copy")
        .header("if-match", &seen)
        .header("if-none-match", "*")
        .json(&copy)
        .send()
        .await
        .expect(201);
    let copied = etag_of(t, "cond/c.bin").await;
    t.api
        .post("/v1/connections/local/move")
        .header("if-match", &copied)
        .json(&json!({ "from": "cond/c.bin", "to": "cond/d.bin" }))
        .send()
        .await
        .expect(201);
    assert_eq!(
        &t.api
            .get(&t.file("cond/d.bin"))
            .send()
            .await
            .expect(200)
            .body[..],
        b"x"
    );
}

/// The entity tag a `HEAD` of `path` (which must be there) answers.
async fn etag_of(t: &Tenant, path: &str) -> String {
    t.api
        .head(&t.file(path))
        .send()
        .await
        .expect(200)
        .header("etag")
        .expect("an entity tag")
}

/// The feed lists changes in order and resumes from a cursor.
pub async fn events_in_order(t: &Tenant) {
    let start = t.api.get("/v1/events").send().await.expect(200).json();
    let cursor = start["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(
        start["events"].as_array().unwrap().len(),
        0,
        "a new account has no events"
    );
    upload(t, "e/one.txt", b"1").await;
    upload(t, "e/one.txt", b"11").await;
    t.api
        .post("/v1/connections/local/copy")
        .json(&json!({ "from": "e/one.txt", "to": "e/two.txt" }))
        .send()
        .await
        .expect(201);
    t.api
        .post("/v1/connections/local/move")
        .json(&json!({ "from": "e/two.txt", "to": "e/three.txt" }))
        .send()
        .await
        .expect(201);
    t.api.delete(&t.file("e/one.txt")).send().await.expect(204);
    t.api
        .post("/v1/connections/local/folders/e/sub")
        .send()
        .await
        .expect(201);

    let page = t
        .api
        .get(&format!("/v1/events?cursor={cursor}"))
        .send()
        .await
        .expect(200)
        .json();
    let events = page["events"].as_array().unwrap();
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        ("created", "e/one.txt"),
        ("updated", "e/one.txt"),
        ("copied", "e/two.txt"),
        ("moved", "e/three.txt"),
        ("deleted", "e/one.txt"),
        ("created", "e/sub"),
    ];
    assert_eq!(
        seen,
        want.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );
    assert_eq!(events[2]["from"], "e/one.txt");
    assert_eq!(events[1]["size"], 2);
    assert!(
        events
            .iter()
            .all(|e| e["connection_id"] == t.conn_id.as_str())
    );
    // The account's own events, numbered from one with no gap.
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
    assert_eq!(cursor, "s0");
    assert_eq!(page["next_cursor"], "s6");
    // A cursor of the earlier kind (a bare number) is still taken.
    let legacy = t
        .api
        .get("/v1/events?cursor=0")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(legacy, page);

    // Page by two and resume: the same events, none twice.
    let mut resumed = Vec::new();
    let mut c = cursor.clone();
    for _ in 0..10 {
        let p = t
            .api
            .get(&format!("/v1/events?cursor={c}&limit=2"))
            .send()
            .await
            .expect(200)
            .json();
        let batch = p["events"].as_array().unwrap().clone();
        c = p["next_cursor"].as_str().unwrap().to_owned();
        if batch.is_empty() {
            break;
        }
        resumed.extend(batch);
    }
    assert_eq!(&resumed, events);
    t.api
        .get("/v1/events?cursor=abc")
        .send()
        .await
        .expect_problem(400, "invalid_cursor");
}

/// A digest or checksum that does not match leaves no object behind, and
/// an earlier version survives.
pub async fn digest_mismatch_leaves_nothing(t: &Tenant) {
    let data = pattern(2 << 20, 9);
    let wrong = repr_digest(b"something else");
    let r = t
        .api
        .put(&t.file("d/new.bin"))
        .header("repr-digest", &wrong)
        .body_chunked(Bytes::from(data.clone()), 64 << 10)
        .send()
        .await
        .expect_problem(400, "digest_mismatch");
    assert!(r.json()["detail"].as_str().unwrap().contains("sha-256"));
    t.api
        .get(&t.file("d/new.bin"))
        .send()
        .await
        .expect_problem(404, "not_found");

    upload(t, "d/kept.bin", b"version one").await;
    t.api
        .put(&t.file("d/kept.bin"))
        .header("repr-digest", &wrong)
        .body(data.clone())
        .send()
        .await
        .expect_problem(400, "digest_mismatch");
    assert_eq!(
        &t.api
            .get(&t.file("d/kept.bin"))
            .send()
            .await
            .expect(200)
            .body[..],
        b"version one"
    );
    t.api
        .put(&t.file("d/kept.bin"))
        .header("x-ferry-checksum-crc64nvme", "AAAAAAAAAAA=")
        .body(data.clone())
        .send()
        .await
        .expect_problem(400, "digest_mismatch");
    assert_eq!(
        &t.api
            .get(&t.file("d/kept.bin"))
            .send()
            .await
            .expect(200)
            .body[..],
        b"version one"
    );

    // A client that dies mid-upload leaves nothing either.
    let r = t
        .api
        .put(&t.file("d/partial.bin"))
        .body_truncated(Bytes::from(data[..1 << 20].to_vec()), 2 << 20)
        .send_raw()
        .await;
    if let Ok(resp) = r {
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    t.api
        .get(&t.file("d/partial.bin"))
        .send()
        .await
        .expect_problem(404, "not_found");

    // The right digest is accepted and echoed.
    let ok = t
        .api
        .put(&t.file("d/good.bin"))
        .header("repr-digest", repr_digest(&data))
        .body(data.clone())
        .send()
        .await;
    let ok = ok.expect(201);
    assert_eq!(ok.header("repr-digest"), Some(repr_digest(&data)));
    let listed = t
        .api
        .get("/v1/connections/local/list/d")
        .send()
        .await
        .expect(200)
        .json();
    let names = crate::entry_names(&listed);
    assert_eq!(names, vec!["good.bin", "kept.bin"]);
}

/// `Want-Repr-Digest` is answered on GET and HEAD, computed when missing.
pub async fn wanted_digests(t: &Tenant) {
    let data = pattern(500_000, 11);
    upload(t, "w.bin", &data).await;
    let r = t
        .api
        .get(&t.file("w.bin"))
        .header("want-repr-digest", "sha-256=5")
        .send()
        .await
        .expect(200);
    assert_eq!(r.header("repr-digest"), Some(repr_digest(&data)));
    let h = t
        .api
        .head(&t.file("w.bin"))
        .header("want-repr-digest", "sha-256=1")
        .send()
        .await
        .expect(200);
    assert_eq!(h.header("repr-digest"), Some(repr_digest(&data)));
    let h = t
        .api
        .head(&t.file("w.bin"))
        .header("want-repr-digest", "sha-512=3, sha-256=1")
        .send()
        .await
        .expect(200);
    assert!(h.header("repr-digest").unwrap().starts_with("sha-512=:"));
    let up = t
        .api
        .put(&t.file("w2.bin"))
        .header("want-repr-digest", "sha-256=1")
        .body(data.clone())
        .send()
        .await;
    assert_eq!(
        up.expect(201).header("repr-digest"),
        Some(repr_digest(&data))
    );
    t.api
        .get(&t.file("w.bin"))
        .header("want-repr-digest", "sha-256=high")
        .send()
        .await
        .expect_problem(400, "invalid_digest");
    t.api
        .put(&t.file("w3.bin"))
        .header("repr-digest", "sha-256=:not base64!:")
        .body("x")
        .send()
        .await
        .expect_problem(400, "invalid_digest");
}

/// Bad input gets a clear 4xx with a stable code, never a 5xx or a hang.
pub async fn bad_inputs(t: &Tenant, max_json_body_bytes: usize) {
    let f = |p: &str| format!("/v1/connections/local/files/{p}");
    for (path, code) in [
        ("..%2F..%2Fetc%2Fpasswd", "invalid_path"),
        ("a/%2e%2e/%2e%2e/etc/passwd", "invalid_path"),
        ("%2Fetc%2Fpasswd", "invalid_path"),
        ("/etc/passwd", "invalid_path"),
        ("a%00b", "invalid_path"),
        ("a//b", "invalid_path"),
        (".ferry-partial/x", "invalid_path"),
        ("%ff%fe", "invalid_path"),
    ] {
        t.api.get(&f(path)).send().await.expect_problem(400, code);
        t.api
            .put(&f(path))
            .body("x")
            .send()
            .await
            .expect_problem(400, code);
    }
    let long = "x".repeat(300);
    t.api
        .put(&f(&long))
        .body("x")
        .send()
        .await
        .expect_problem(400, "invalid_path");
    // A folder connection stages a file under its name and a suffix: the
    // longest name it can write is refused no later than the file system
    // would, and with a 400, not a failure of the provider.
    let staged = "y".repeat(218);
    t.api.put(&f(&staged)).body("y").send().await.expect(201);
    t.api
        .put(&f(&format!("{staged}z")))
        .body("y")
        .send()
        .await
        .expect_problem(400, "invalid_path");
    let deep = vec!["abcdefghij"; 120].join("/");
    t.api
        .put(&f(&deep))
        .body("x")
        .send()
        .await
        .expect_problem(400, "invalid_path");
    t.api
        .get(&f("folder-not-file"))
        .send()
        .await
        .expect_problem(404, "not_found");
    t.api
        .post("/v1/connections/local/folders/fold")
        .send()
        .await
        .expect(201);
    t.api
        .get(&f("fold"))
        .send()
        .await
        .expect_problem(409, "not_a_file");
    t.api
        .put(&f("fold"))
        .body("x")
        .send()
        .await
        .expect_problem(409, "not_a_file");

    t.api
        .get("/v1/connections/nope/files/a.txt")
        .send()
        .await
        .expect_problem(404, "connection_not_found");
    t.api
        .get("/v1/connections/nope")
        .send()
        .await
        .expect_problem(404, "connection_not_found");
    t.api
        .get(&f("a.txt"))
        .bearer(None)
        .send()
        .await
        .expect_problem(401, "unauthorized");
    let r = t
        .api
        .get(&f("a.txt"))
        .bearer(Some("fry_wrong"))
        .send()
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    t.api
        .get("/v1/connections")
        .bearer(Some("garbage"))
        .send()
        .await
        .expect_problem(401, "unauthorized");
    t.api
        .get("/v1/accounts")
        .send()
        .await
        .expect_problem(401, "unauthorized");
    t.admin
        .get("/v1/connections")
        .send()
        .await
        .expect_problem(401, "unauthorized");

    let big = json!({ "name": "x".repeat(max_json_body_bytes + 10), "provider": "fs" });
    t.api
        .post("/v1/connections")
        .json(&big)
        .send()
        .await
        .expect_problem(413, "body_too_large");
    t.api
        .post("/v1/connections")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect_problem(400, "invalid_json");
    t.api
        .post("/v1/connections")
        .json(&json!({ "name": "x", "provider": "fs", "config": {}, "surprise": 1 }))
        .send()
        .await
        .expect_problem(400, "invalid_json");
    t.api
        .post("/v1/connections")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect_problem(415, "unsupported_media_type");
    for (body, status, code) in [
        (
            json!({ "name": "bad name!", "provider": "fs", "config": {} }),
            400,
            "invalid_field",
        ),
        (
            json!({ "name": "etc", "provider": "fs", "config": { "root": "/etc" } }),
            422,
            "invalid_provider_config",
        ),
        (
            json!({ "name": "rel", "provider": "fs", "config": { "root": "relative" } }),
            422,
            "invalid_provider_config",
        ),
        (
            json!({ "name": "ftp", "provider": "ftp", "config": {} }),
            422,
            "unknown_provider",
        ),
        (
            json!({ "name": "local", "provider": "memory", "config": {} }),
            409,
            "already_exists",
        ),
        (
            json!({ "name": "cfg", "provider": "memory", "config": [] }),
            400,
            "invalid_field",
        ),
    ] {
        t.api
            .post("/v1/connections")
            .json(&body)
            .send()
            .await
            .expect_problem(status, code);
    }
    let r = t
        .api
        .req(http::Method::PATCH, &f("a.txt"))
        .send()
        .await
        .expect_problem(405, "method_not_allowed");
    assert!(r.header("allow").unwrap().contains("PUT"));
    t.api
        .get("/v2/nothing")
        .send()
        .await
        .expect_problem(404, "route_not_found");
    t.admin
        .get("/v1/accounts/acc_nope")
        .send()
        .await
        .expect_problem(404, "account_not_found");
    t.admin
        .delete(&format!("/v1/accounts/{}/keys/key_nope", t.account_id))
        .send()
        .await
        .expect_problem(404, "key_not_found");
    t.admin
        .post("/v1/accounts")
        .json(&json!({ "name": "" }))
        .send()
        .await
        .expect_problem(400, "invalid_field");
}

/// Account B can neither see nor touch account A's connections or files,
/// and every miss looks the same as a connection that does not exist.
pub async fn tenant_isolation(a: &Tenant, b: &Tenant, data_dir: &Path) {
    // A's feed numbers A's events alone: B's writes move neither A's event
    // ids nor A's cursor.
    upload(a, "first.txt", b"a").await;
    let before = a.api.get("/v1/events").send().await.expect(200).json();
    for name in ["b1.txt", "b2.txt", "b3.txt"] {
        upload(b, name, b"b").await;
    }
    let after = a.api.get("/v1/events").send().await.expect(200).json();
    assert_eq!(after, before, "B's writes moved A's feed");
    let last = before["events"].as_array().unwrap().last().unwrap()["id"]
        .as_i64()
        .unwrap();
    upload(a, "secret.txt", b"only for a").await;
    let cursor = before["next_cursor"].as_str().unwrap();
    let next = a
        .api
        .get(&format!("/v1/events?cursor={cursor}"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(next["events"][0]["id"], last + 1, "{next}");
    assert_eq!(next["events"][0]["path"], "secret.txt", "{next}");
    let list = b.api.get("/v1/connections").send().await.expect(200).json();
    let names: Vec<&str> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&a.conn_id.as_str()));
    let by_id = |p: &str| format!("/v1/connections/{}{p}", a.conn_id);
    b.api
        .get(&by_id(""))
        .send()
        .await
        .expect_problem(404, "connection_not_found");
    b.api
        .delete(&by_id(""))
        .send()
        .await
        .expect_problem(404, "connection_not_found");
    b.api
        .get(&by_id("/files/secret.txt"))
        .send()
        .await
        .expect_problem(404, "connection_not_found");
    b.api
        .put(&by_id("/files/secret.txt"))
        .body("overwritten")
        .send()
        .await
        .expect_problem(404, "connection_not_found");
    b.api
        .delete(&by_id("/files/secret.txt"))
        .send()
        .await
        .expect_problem(404, "connection_not_found");
    b.api
        .get(&by_id("/list"))
        .send()
        .await
        .expect_problem(404, "connection_not_found");
    b.api
        .post(&by_id("/copy"))
        .json(&json!({ "from": "secret.txt", "to": "x.txt" }))
        .send()
        .await
        .expect_problem(404, "connection_not_found");
    // B's own connection named `local` is B's, not A's.
    b.api
        .get(&b.file("secret.txt"))
        .send()
        .await
        .expect_problem(404, "not_found");
    // A's files stay A's, and B's feed shows nothing of A's.
    assert_eq!(
        &a.api
            .get(&a.file("secret.txt"))
            .send()
            .await
            .expect(200)
            .body[..],
        b"only for a"
    );
    let feed = b
        .api
        .get("/v1/events?limit=1000")
        .send()
        .await
        .expect(200)
        .json();
    assert!(
        feed["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["connection_id"] != a.conn_id.as_str())
    );
    // B cannot claim A's folder, a folder inside it, or one around it; A can
    // open a second connection onto its own folder.
    let a_root = data_dir.join("alpha");
    for root in [a_root.clone(), a_root.join("inner"), data_dir.to_path_buf()] {
        b.api
            .post("/v1/connections")
            .json(&json!({ "name": "grab", "provider": "fs", "config": { "root": root } }))
            .send()
            .await
            .expect_problem(409, "location_in_use");
    }
    a.api
        .post("/v1/connections")
        .json(&json!({ "name": "again", "provider": "fs", "config": { "root": a_root.join("inner") } }))
        .send()
        .await
        .expect(201);
    // B cannot point a connection at a folder outside the allowed roots either.
    b.api
        .post("/v1/connections")
        .json(&json!({ "name": "escape", "provider": "fs", "config": { "root": "/etc" } }))
        .send()
        .await
        .expect_problem(422, "invalid_provider_config");
}

/// Keys are made, listed without secrets and revoked.
/// An account manages its own keys through `/v1/keys` with one of them:
/// makes one, sees it listed without its secret, revokes it (then it
/// fails), and cannot touch another account's keys.
pub async fn own_keys(t: &Tenant, other: &Tenant) {
    let made = t.api.post("/v1/keys").send().await.expect(201).json();
    let second = made["key"]
        .as_str()
        .expect("the clear key, once")
        .to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    let as_second = t.api.as_token(&second);
    as_second.get("/v1/connections").send().await.expect(200);
    let listed = as_second.get("/v1/keys").send().await.expect(200);
    assert!(
        !String::from_utf8_lossy(&listed.body).contains(&second),
        "listing shows no secret"
    );
    let keys = listed.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().any(|k| k["id"] == id.as_str()));
    // Another account's key is not found, and stays valid.
    let theirs = other.api.get("/v1/keys").send().await.expect(200).json();
    let theirs = theirs["keys"][0]["id"].as_str().unwrap().to_owned();
    t.api
        .delete(&format!("/v1/keys/{theirs}"))
        .send()
        .await
        .expect_problem(404, "key_not_found");
    other.api.get("/v1/connections").send().await.expect(200);
    // The admin token is not an account's credential here.
    t.admin
        .get("/v1/keys")
        .send()
        .await
        .expect_problem(401, "unauthorized");
    // A key revokes itself; the other keeps working.
    as_second
        .delete(&format!("/v1/keys/{id}"))
        .send()
        .await
        .expect(204);
    as_second
        .get("/v1/connections")
        .send()
        .await
        .expect_problem(401, "unauthorized");
    t.api.get("/v1/connections").send().await.expect(200);
    let keys = t.api.get("/v1/keys").send().await.expect(200).json();
    let revoked = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert!(revoked["revoked_at"].is_i64(), "{revoked}");
}

pub async fn key_lifecycle(t: &Tenant) {
    let key = t.new_key().await;
    let second = key["key"].as_str().unwrap().to_owned();
    let as_second = t.api.as_token(&second);
    as_second.get("/v1/connections").send().await.expect(200);
    let keys = t
        .admin
        .get(&format!("/v1/accounts/{}/keys", t.account_id))
        .send()
        .await
        .expect(200);
    assert!(
        !String::from_utf8_lossy(&keys.body).contains(&second),
        "listing shows no secret"
    );
    assert_eq!(keys.json()["keys"].as_array().unwrap().len(), 2);
    t.revoke_key(key["id"].as_str().unwrap()).await;
    as_second
        .get("/v1/connections")
        .send()
        .await
        .expect_problem(401, "unauthorized");
    t.api.get("/v1/connections").send().await.expect(200);
    // Accounts page one at a time, ending with a null cursor, none twice.
    for name in ["second", "third"] {
        t.admin
            .post("/v1/accounts")
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect(201);
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let page = t
            .admin
            .get(&format!("/v1/accounts?limit=1&cursor={cursor}"))
            .send()
            .await
            .expect(200)
            .json();
        let batch = page["accounts"].as_array().unwrap();
        assert_eq!(batch.len(), 1, "{page}");
        seen.push(batch[0]["id"].as_str().unwrap().to_owned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.contains(&t.account_id));
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3);
    // HEAD answers wherever GET does, without a body.
    let head = t.api.head("/v1/connections").send().await.expect(200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-type").as_deref(),
        Some("application/json")
    );
}

/// A memory connection: files live in the hub's memory; copy and move work
/// even where the provider has no native copy.
pub async fn memory_connection(t: &Tenant) {
    t.api
        .post("/v1/connections")
        .json(&json!({ "name": "mem", "provider": "memory" }))
        .send()
        .await
        .expect(201);
    let data = pattern(100_000, 5);
    t.api
        .put("/v1/connections/mem/files/m/a.bin")
        .body(data.clone())
        .send()
        .await
        .expect(201);
    t.api
        .post("/v1/connections/mem/copy")
        .json(&json!({ "from": "m/a.bin", "to": "m/b.bin" }))
        .send()
        .await
        .expect(201);
    t.api
        .post("/v1/connections/mem/move")
        .json(&json!({ "from": "m/b.bin", "to": "m/c.bin" }))
        .send()
        .await
        .expect(201);
    assert_eq!(
        &t.api
            .get("/v1/connections/mem/files/m/c.bin")
            .send()
            .await
            .expect(200)
            .body[..],
        &data[..]
    );
    t.api
        .get("/v1/connections/mem/files/m/b.bin")
        .send()
        .await
        .expect_problem(404, "not_found");
    let conns = t.api.get("/v1/connections").send().await.expect(200).json();
    assert_eq!(conns["connections"].as_array().unwrap().len(), 2);
    t.api.delete("/v1/connections/mem").send().await.expect(204);
    t.api
        .get("/v1/connections/mem/files/m/c.bin")
        .send()
        .await
        .expect_problem(404, "connection_not_found");
}

/// Folders are deleted empty, or with `recursive=true` with all they hold:
/// a `deleted` event for each file, the folder's own last.
pub async fn folder_deletion(t: &Tenant) {
    for (path, data) in [
        ("gone/a.txt", &b"a"[..]),
        ("gone/sub/b.txt", b"bb"),
        ("gone/sub/deep/c.txt", b"ccc"),
        ("kept.txt", b"k"),
    ] {
        upload(t, path, data).await;
    }
    let folder = |p: &str| format!("/v1/connections/local/folders/{p}");
    t.api.post(&folder("gone/empty")).send().await.expect(201);
    let deleted = t
        .api
        .delete(&folder("gone/empty/"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(deleted["path"], "gone/empty");
    assert_eq!(deleted["deleted_files"], 0);
    let names = crate::entry_names(
        &t.api
            .get("/v1/connections/local/list/gone")
            .send()
            .await
            .expect(200)
            .json(),
    );
    assert!(!names.contains(&"empty".to_owned()), "{names:?}");

    // Not empty, and not asked for all of it: nothing happens.
    t.api
        .delete(&folder("gone"))
        .send()
        .await
        .expect_problem(409, "folder_not_empty");
    t.api
        .get(&t.file("gone/sub/deep/c.txt"))
        .send()
        .await
        .expect(200);
    for bad in ["?recursive=yes", "?recursiv=true"] {
        t.api
            .delete(&format!("{}{bad}", folder("gone")))
            .send()
            .await
            .expect_problem(400, "invalid_query");
    }
    t.api
        .delete(&folder(""))
        .send()
        .await
        .expect_problem(400, "invalid_path");
    t.api
        .delete(&folder("kept.txt"))
        .send()
        .await
        .expect_problem(409, "not_a_folder");
    t.api
        .delete(&folder("nowhere"))
        .send()
        .await
        .expect_problem(404, "not_found");

    let cursor = t
        .api
        .get("/v1/events?limit=1000")
        .send()
        .await
        .expect(200)
        .json()["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = t
        .api
        .delete(&format!("{}?recursive=true", folder("gone")))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(deleted["deleted_files"], 3, "{deleted}");
    for path in ["gone/a.txt", "gone/sub/b.txt", "gone/sub/deep/c.txt"] {
        t.api
            .get(&t.file(path))
            .send()
            .await
            .expect_problem(404, "not_found");
    }
    t.api
        .get("/v1/connections/local/list/gone")
        .send()
        .await
        .expect_problem(404, "not_found");
    let root = crate::entry_names(
        &t.api
            .get("/v1/connections/local/list")
            .send()
            .await
            .expect(200)
            .json(),
    );
    assert!(
        !root.contains(&"gone".to_owned()) && root.contains(&"kept.txt".to_owned()),
        "{root:?}"
    );
    t.api.get(&t.file("kept.txt")).send().await.expect(200);

    let feed = t
        .api
        .get(&format!("/v1/events?cursor={cursor}"))
        .send()
        .await
        .expect(200)
        .json();
    let mut seen: Vec<(String, String, Value)> = feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
                e["size"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen.pop(),
        Some(("deleted".to_owned(), "gone".to_owned(), Value::Null)),
        "the folder's event comes last"
    );
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        seen,
        [
            ("gone/a.txt", 1),
            ("gone/sub/b.txt", 2),
            ("gone/sub/deep/c.txt", 3)
        ]
        .map(|(p, n)| ("deleted".to_owned(), p.to_owned(), json!(n))),
        "one event per file, each once"
    );
    t.api
        .delete(&format!("{}?recursive=true", folder("gone")))
        .send()
        .await
        .expect_problem(404, "not_found");
}

/// The operator deletes an account: its key stops working at once, what
/// its upload sessions staged is removed, its storage location can be
/// claimed again, and `other` is untouched. `t` is reached where its
/// requests go (a hub, or a spoke with grants cached); its files live in
/// `<data_dir>/<t's name>`.
pub async fn account_deletion(t: &Tenant, root: &Path, other: &Tenant) {
    upload(t, "doomed.txt", b"bye").await;
    upload(other, "safe.txt", b"stay").await;
    // A resumable upload begun, with bytes staged.
    let session = t
        .api
        .post("/v1/connections/local/uploads?path=half.bin")
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10")
        .send()
        .await
        .expect(201)
        .header("location")
        .expect("a Location");
    t.api
        .req(http::Method::PATCH, &session)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(&b"12345"[..])
        .send()
        .await
        .expect(204);
    t.api.get(&t.file("doomed.txt")).send().await.expect(200);
    let staged = root.join(".ferry-partial/uploads");
    let staged_now = || std::fs::read_dir(&staged).map(|d| d.count()).unwrap_or(0);
    assert!(
        staged_now() > 0,
        "the session staged its bytes in {staged:?}"
    );
    let claim = json!({ "name": "grab", "provider": "fs", "config": { "root": root } });
    other
        .api
        .post("/v1/connections")
        .json(&claim)
        .send()
        .await
        .expect_problem(409, "location_in_use");

    let account = format!("/v1/accounts/{}", t.account_id);
    t.admin.delete(&account).send().await.expect(204);
    t.admin
        .get(&account)
        .send()
        .await
        .expect_problem(404, "account_not_found");
    t.admin
        .delete(&account)
        .send()
        .await
        .expect_problem(404, "account_not_found");
    t.api
        .get(&t.file("doomed.txt"))
        .send()
        .await
        .expect_problem(401, "unauthorized");
    t.api
        .get("/v1/events")
        .send()
        .await
        .expect_problem(401, "unauthorized");
    // What the session staged went with it; the files are the tenant's own
    // and stay in its storage.
    assert_eq!(staged_now(), 0, "parts left in {staged:?}");
    assert_eq!(std::fs::read(root.join("doomed.txt")).unwrap(), b"bye");
    // The location is free again; the other account goes on as before.
    other
        .api
        .post("/v1/connections")
        .json(&claim)
        .send()
        .await
        .expect(201);
    other
        .api
        .get(&other.file("safe.txt"))
        .send()
        .await
        .expect(200);
    let accounts = t.admin.get("/v1/accounts").send().await.expect(200).json();
    let ids: Vec<&str> = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&t.account_id.as_str()) && ids.contains(&other.account_id.as_str()),
        "{ids:?}"
    );
    // Deleting needs the admin token.
    other
        .api
        .delete(&format!("/v1/accounts/{}", other.account_id))
        .send()
        .await
        .expect(401);
}

/// A SigV4 presigned URL's path and query, as boto3 signs it for `method`
/// (`get_object`, `put_object`, …) of `key` (none when empty) in `bucket`
/// at `endpoint`.
pub fn presigned(
    endpoint: &str,
    access_key: &str,
    secret: &str,
    method: &str,
    bucket: &str,
    key: &str,
) -> String {
    let script = "import sys, boto3\n\
from botocore.config import Config\n\
s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
    aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],\n\
    config=Config(s3={'addressing_style': 'path'}, signature_version='s3v4'))\n\
print(s3.generate_presigned_url(sys.argv[4], Params={'Bucket': sys.argv[5], **({'Key': sys.argv[6]} if sys.argv[6] else {})}, ExpiresIn=300))\n";
    crate::tools::python(script, &[endpoint, access_key, secret, method, bucket, key])
        .strip_prefix(endpoint)
        .expect("the endpoint's URL")
        .to_owned()
}
