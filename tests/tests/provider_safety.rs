//! What a tenant cannot make ferry do with a connection: reach internal
//! addresses however they are spelled or whatever a name resolves to, slip
//! a host, path or fragment into a URL through a bucket or region, read a
//! provider's own answer back, or learn of (or write into) another
//! tenant's folders through an `fs` root.

use std::collections::BTreeSet;
use std::path::Path;

use ferry_tests::fault_proxy::{FaultProxy, MARKER, REQUEST_ID};
use ferry_tests::providers::StorageServer;
use ferry_tests::scenarios::{Tenant, remote_tenant, tenant};
use ferry_tests::{Api, Hub, HubOptions, Resp, Spoke};
use serde_json::{Value, json};

/// Creates a connection as a new account of `hub`; the answer.
async fn create(hub: &Hub, provider: &str, config: Value) -> Resp {
    let admin = Api::new(hub.url()).as_token(ferry_tests::hub::ADMIN_TOKEN);
    let account = admin
        .post("/v1/accounts")
        .json(&json!({ "name": format!("t{}", rand_suffix()) }))
        .send()
        .await
        .expect(201)
        .json();
    admin
        .as_token(account["api_key"].as_str().unwrap())
        .post("/v1/connections")
        .json(&json!({ "name": "c", "provider": provider, "config": config }))
        .send()
        .await
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Names in `/etc/hosts` for a loopback address that are not spelled as
/// `localhost`: only a resolver can tell they are internal.
fn loopback_names_in_etc_hosts() -> Vec<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut names = BTreeSet::new();
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<std::net::IpAddr>) else {
            continue;
        };
        if ip.is_loopback() {
            names.extend(
                words
                    .filter(|w| !w.trim_end_matches('.').ends_with("localhost"))
                    .map(str::to_owned),
            );
        }
    }
    names.into_iter().collect()
}

#[tokio::test]
async fn endpoints_that_lead_inward_are_refused_at_creation() {
    ferry_tests::install_crypto_provider();
    let server = StorageServer::webdav("ferry", "secret");
    let proxy = FaultProxy::start(server.addr).await;
    let port = proxy.addr.port();
    let hub = Hub::start();
    let mut endpoints: Vec<String> = [
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
        "127.0.0.1.",
        "localhost.",
        "[::ffff:127.0.0.1]",
        "[::1]",
    ]
    .iter()
    .map(|host| format!("http://{host}:{port}/"))
    .collect();
    let resolved_only: Vec<String> = loopback_names_in_etc_hosts()
        .into_iter()
        .map(|name| format!("http://{name}:{port}/"))
        .collect();
    assert!(
        !resolved_only.is_empty(),
        "this test needs a name in /etc/hosts for a loopback address (the machine's own name, or Debian's ip6-localhost)"
    );
    endpoints.extend(resolved_only.iter().cloned());
    for endpoint in &endpoints {
        let config = json!({ "endpoint": endpoint, "username": "ferry", "password": "secret" });
        let r = create(&hub, "webdav", config).await;
        let p = r
            .clone()
            .expect_problem(422, "invalid_provider_config")
            .json();
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains("internal address"), "{endpoint}: {p}");
        if !resolved_only.contains(endpoint) {
            assert!(detail.contains("'endpoint'"), "{endpoint}: {p}");
        }
    }
    assert_eq!(
        proxy.counts().0,
        0,
        "no request reached the server behind the refused endpoints"
    );
}

#[tokio::test]
async fn members_that_would_change_a_url_are_refused_at_creation() {
    let hub = Hub::start();
    let s3 =
        json!({ "bucket": "ferry-test", "anonymous": true, "endpoint": "https://s3.example.com" });
    let az = json!({ "container": "ferry-test", "account_name": "acct", "account_key": "a2V5" });
    for (provider, base, member, value) in [
        ("s3", &s3, "region", "us-east-1.evil.example/#"),
        ("s3", &s3, "region", "x/../../y"),
        ("s3", &s3, "bucket", "a/../b"),
        ("s3", &s3, "bucket", "evil.example/#"),
        ("s3", &s3, "root", "a/../../b"),
        ("s3", &s3, "endpoint", "https://s3.example.com/?x=#y"),
        ("azblob", &az, "account_name", "evil.example/#"),
        ("azblob", &az, "container", "c/../d"),
        ("azblob", &az, "sas_token", "sv=1#frag"),
    ] {
        let mut config = base.clone();
        config[member] = json!(value);
        if member == "sas_token" {
            config.as_object_mut().unwrap().remove("account_key");
        }
        let p = create(&hub, provider, config)
            .await
            .expect_problem(422, "invalid_provider_config")
            .json();
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("'{member}'")),
            "{member}={value}: {p}"
        );
    }
}

/// Asserts that nothing of the fault proxy's answer is in `r` but the
/// provider's request id, which is.
#[track_caller]
fn carries_only_the_request_id(r: &Resp, what: &str) {
    let body = String::from_utf8_lossy(&r.body);
    for leak in [MARKER, "AccessDenied", "x-amz", "x-fault-marker", "<Error>"] {
        assert!(!body.contains(leak), "{what}: {leak} in {body}");
    }
    for (name, value) in &r.headers {
        assert!(
            !name.as_str().contains("fault") && !value.to_str().unwrap_or("").contains(MARKER),
            "{what}: header {name}"
        );
    }
    assert_eq!(
        r.json()["provider_request_id"].as_str(),
        Some(REQUEST_ID),
        "{what}: {body}"
    );
}

#[tokio::test]
async fn a_providers_answer_never_reaches_the_client_but_its_request_id_does() {
    ferry_tests::install_crypto_provider();
    let server = StorageServer::s3("answers");
    let proxy = FaultProxy::start(server.addr).await;
    // No scans: every request the proxy sees is one of the test's, and
    // listings are asked of the provider (no index is ever complete).
    let hub = Hub::start_with(HubOptions {
        extra_toml:
            "[providers.remote]\nallow_private_endpoints = true\n[index]\nenabled = false\n".into(),
        ..HubOptions::default()
    });
    let config = server.config("answers", Some(&proxy.url()));
    // The connection's check refused by the provider.
    proxy.answer_next(1, 403, 1);
    let r = create(&hub, "s3", config.clone())
        .await
        .expect_problem(403, "provider_rejected");
    carries_only_the_request_id(&r, "creation");

    let t = remote_tenant(&hub.url(), "alpha", "s3", config).await;
    t.api
        .put(&t.file("d/a.txt"))
        .body("a")
        .send()
        .await
        .expect(201);
    let spoke = Spoke::start(&hub, "fra1");
    let through_spoke = Tenant {
        api: Api::new(spoke.url()).as_token(&t.key),
        ..t.clone()
    };
    for (who, t) in [("hub", &t), ("spoke", &through_spoke)] {
        proxy.answer_next(1000, 403, 1);
        let answers = [
            ("put", t.api.put(&t.file("d/b.txt")).body("b").send().await),
            ("get", t.api.get(&t.file("d/a.txt")).send().await),
            (
                "list",
                t.api.get("/v1/connections/local/list/d/").send().await,
            ),
            (
                "copy",
                t.api
                    .post("/v1/connections/local/copy")
                    .json(&json!({ "from": "d/a.txt", "to": "d/c.txt" }))
                    .send()
                    .await,
            ),
            (
                "move",
                t.api
                    .post("/v1/connections/local/move")
                    .json(&json!({ "from": "d/a.txt", "to": "d/m.txt" }))
                    .send()
                    .await,
            ),
        ];
        proxy.answer_next(0, 403, 1);
        for (what, r) in answers {
            let what = format!("{what} through the {who}");
            assert_eq!(r.status.as_u16(), 403, "{what}: {:?}", r.body);
            carries_only_the_request_id(&r, &what);
        }
    }
    let log = hub.log();
    assert!(
        log.contains(MARKER),
        "the provider's answer is logged for the operator"
    );
}

/// Every file and folder under `dir`, symbolic links not followed.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            out.insert(path.display().to_string());
            if path.is_dir() && !path.is_symlink() {
                todo.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn roots_in_another_tenants_folder_create_nothing_and_all_answer_alike() {
    let hub = Hub::start();
    let data = hub.data_dir.clone();
    let a = tenant(&hub.url(), "alpha", &data).await;
    a.api
        .put(&a.file("secret.txt"))
        .body("only for a")
        .send()
        .await
        .expect(201);
    let outside = tempfile::tempdir().unwrap();
    let a_root = data.join("alpha");
    std::os::unix::fs::symlink(outside.path(), a_root.join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path(), data.join("escape")).unwrap();
    let before = (tree(&data), tree(outside.path()));

    let b = tenant(&hub.url(), "beta", &data).await;
    let mut answers = Vec::new();
    for root in [
        a_root.clone(),
        a_root.join("secret.txt"),
        a_root.join("secret.txt/below"),
        a_root.join("new/deeper"),
        a_root.join("link"),
        a_root.join("link/sub"),
        data.join("escape"),
        data.join("escape/sub"),
        data.clone(),
    ] {
        let r = b
            .api
            .post("/v1/connections")
            .json(&json!({ "name": "grab", "provider": "fs", "config": { "root": root } }))
            .send()
            .await;
        let p = r.json();
        answers.push((r.status.as_u16(), p["code"].clone(), p["detail"].clone()));
        assert_eq!(r.status.as_u16(), 409, "{}: {p}", root.display());
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "one answer for every refused root: {answers:?}"
    );
    let mut after_data = tree(&data);
    after_data.retain(|p| !p.contains("/beta"));
    let mut before_data = before.0;
    before_data.retain(|p| !p.contains("/beta"));
    assert_eq!(
        after_data, before_data,
        "nothing appeared in the data folder"
    );
    assert_eq!(tree(outside.path()), before.1, "nothing appeared outside");
}
