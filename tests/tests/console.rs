//! The web console in a real browser: Debian's chromium, driven by
//! playwright-core (`tests/scripts/console_e2e.js`), against a hub and two
//! spokes on loopback. A developer signs in, makes a connection, uploads
//! 50 MiB and downloads it whole (both through a spoke: the hub carries
//! none of it), deletes it, makes and revokes a key; an operator sees both spokes
//! healthy and one down within seconds of its being killed. The page runs
//! under its Content-Security-Policy with no violation, and a file named
//! like an HTML tag is shown as text. Screenshots go to
//! `<target>/console-e2e/`.

use std::io::{BufRead as _, Write as _};
use std::time::{Duration, Instant};

use ferry_tests::hub::ADMIN_TOKEN;
use ferry_tests::scenarios::tenant;
use ferry_tests::{Api, Hub, Spoke, eventually, metric};

/// A file name a careless page would turn into markup.
const WEIRD: &str = "<img src=x onerror=alert(1)>.txt";

fn chromium() -> std::path::PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("chromium is not installed; run scripts/install-test-deps.sh")
}

async fn upload_bytes(metrics_url: &str, name: &str) -> f64 {
    content_bytes(metrics_url, name, "upload").await
}

async fn content_bytes(metrics_url: &str, name: &str, direction: &str) -> f64 {
    metric(
        metrics_url,
        name,
        &[("direction", direction), ("provider", "fs")],
    )
    .await
}

#[tokio::test]
async fn the_console_works_in_a_browser() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let page = Api::new(hub.url()).get("/console").send().await.expect(200);
    assert!(
        !String::from_utf8_lossy(&page.body).contains("not built"),
        "the hub was built without its console; run scripts/install-test-deps.sh"
    );
    let fra1 = Spoke::start(&hub, "fra1");
    let mut ams1 = Spoke::start(&hub, "ams1");
    let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
    let eligible = eventually(Duration::from_secs(20), async || {
        let v = admin.get("/v1/spokes").send().await.expect(200).json();
        v["spokes"]
            .as_array()
            .is_some_and(|s| s.len() == 2 && s.iter().all(|s| s["steering"] == "eligible"))
    })
    .await;
    assert!(eligible, "both spokes eligible for steering");
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;
    let root = hub.data_dir.join("web");
    std::fs::create_dir_all(&root).unwrap();
    // Written outside ferry: the connection finds it when it is made.
    std::fs::write(root.join(WEIRD), b"not markup\n").unwrap();
    let hub_before = upload_bytes(&hub.metrics_url(), "ferry_content_bytes_total").await;
    let hub_down_before =
        content_bytes(&hub.metrics_url(), "ferry_content_bytes_total", "download").await;
    let spokes_before = [
        upload_bytes(&fra1.metrics_url(), "ferry_spoke_content_bytes_total").await,
        upload_bytes(&ams1.metrics_url(), "ferry_spoke_content_bytes_total").await,
    ];

    let out = ferry_tests::tools::artefacts_dir("console-e2e");
    let playwright = ferry_tests::tools::Tool::PlaywrightCore.path();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/console_e2e.js");
    let mut child = std::process::Command::new("node")
        .arg(script)
        .env("NODE_PATH", playwright.parent().unwrap())
        .env("HUB", hub.url())
        .env("KEY", &t.key)
        .env("ADMIN", ADMIN_TOKEN)
        .env("ROOT", &root)
        .env("WEIRD", WEIRD)
        .env("OUT", &out)
        .env("CHROMIUM", chromium())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut steps = Vec::new();
    let mut via = None;
    let mut fleet_spoke = None;
    let finished = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break false;
        };
        eprintln!("console: {line}");
        let step: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| serde_json::json!({ "step": line }));
        match step["step"].as_str().unwrap_or_default() {
            "kill-a-spoke" => {
                ams1.kill();
                writeln!(stdin, "ams1").unwrap();
            }
            "uploaded" => via = step["via"].as_str().map(str::to_owned),
            "fleet-made" => {
                let token = step["token"].as_str().unwrap_or_default();
                let enrolled = Spoke::start_with_token(&hub, "e2e-1", token);
                writeln!(
                    stdin,
                    "{}",
                    if enrolled.is_ok() {
                        "enrolled"
                    } else {
                        "refused"
                    }
                )
                .unwrap();
                fleet_spoke = enrolled.ok();
            }
            "done" => break true,
            "failed" => break false,
            _ => {}
        }
        steps.push(step);
    };
    if !finished {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        finished,
        "the browser run did not finish: {steps:#?}\n{}\nstderr:\n{stderr}",
        rx.try_iter().collect::<Vec<_>>().join("\n")
    );

    // The upload went through a spoke; the hub carried none of its bytes.
    let via = via.expect("the page said which spoke it uploaded through");
    assert!(via == "fra1" || via == "ams1", "{via}");
    assert_eq!(
        upload_bytes(&hub.metrics_url(), "ferry_content_bytes_total").await,
        hub_before,
        "the hub carried no upload bytes"
    );
    assert_eq!(
        content_bytes(&hub.metrics_url(), "ferry_content_bytes_total", "download").await,
        hub_down_before,
        "the hub carried no download bytes"
    );
    if via == "fra1" {
        let after = upload_bytes(&fra1.metrics_url(), "ferry_spoke_content_bytes_total").await;
        assert!(after - spokes_before[0] >= (50 << 20) as f64, "{after}");
    }
    let down = steps
        .iter()
        .find(|s| s["step"] == "spoke-down")
        .and_then(|s| s["seconds"].as_f64())
        .expect("the operator view showed the killed spoke down");
    assert!(down < 15.0, "{down}");
    // The fleet token the page made enrolled a spoke, and the page revoked
    // it: the spoke stays, the token is listed revoked.
    let fleet_spoke = fleet_spoke.expect("the page's fleet token enrolled a spoke");
    assert_eq!(
        Api::new(fleet_spoke.url())
            .get("/readyz")
            .send()
            .await
            .status,
        200
    );
    let fleets = Api::new(hub.url())
        .as_token(ADMIN_TOKEN)
        .get("/v1/fleets")
        .send()
        .await
        .expect(200)
        .json();
    let e2e: Vec<_> = fleets["fleets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["prefix"] == "e2e")
        .collect();
    assert!(e2e.len() == 1 && e2e[0]["state"] == "revoked", "{fleets}");
    assert_eq!(
        e2e[0]["allowed_public"]["hosts"],
        serde_json::json!(["*.e2e.example.com"])
    );
    for name in [
        "console-sign-in",
        "console-files",
        "console-spokes",
        "console-spoke-down",
        "console-fleets",
    ] {
        assert!(out.join(format!("{name}.png")).exists(), "{name}.png saved");
    }
}

/// The console's TypeScript passes the compiler's checks (strict mode, no
/// unused names), as `npm run check --prefix console` runs them.
#[test]
fn the_consoles_typescript_checks() {
    let console = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../console");
    let tsc = console.join("node_modules/typescript/bin/tsc");
    assert!(
        tsc.exists(),
        "the console's packages are not installed; run scripts/install-test-deps.sh"
    );
    let out = std::process::Command::new("node")
        .arg(&tsc)
        .args(["--noEmit", "-p"])
        .arg(&console)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "tsc found errors:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/console` and its files: the policy (naming the spoke's origin), the
/// caching rules, brotli and gzip as asked, `304` for a current copy, and
/// `404` for a file it does not have.
#[tokio::test]
async fn the_console_is_served_with_its_policy_caching_and_compression() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let spoke = Spoke::start(&hub, "fra1");
    let api = Api::new(hub.url());
    let origin = spoke.url();
    let mut policy = String::new();
    let listed = eventually(Duration::from_secs(20), async || {
        let page = api.get("/console").send().await.expect(200);
        policy = page.header("content-security-policy").unwrap_or_default();
        policy.contains(&origin)
    })
    .await;
    assert!(listed, "the spoke's origin in connect-src: {policy}");
    assert!(policy.contains("script-src 'self';") && policy.contains("default-src 'none'"));
    assert!(!policy.contains("unsafe"), "{policy}");

    let page = api
        .get("/console/")
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .expect(200);
    assert_eq!(page.header("content-encoding").as_deref(), Some("br"));
    assert_eq!(page.header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(
        page.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(page.header("vary").as_deref(), Some("Accept-Encoding"));
    let etag = page.header("etag").expect("an entity tag");
    api.get("/console")
        .header("if-none-match", &etag)
        .send()
        .await
        .expect(304);

    let plain = api.get("/console").send().await.expect(200);
    assert!(plain.header("content-encoding").is_none());
    let html = String::from_utf8(plain.body.to_vec()).unwrap();
    let script = html
        .split('"')
        .find(|s| s.starts_with("/console/app-") && s.ends_with(".js"))
        .expect("index.html names its script")
        .to_owned();
    let js = api
        .get(&script)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect(200);
    assert_eq!(js.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(
        js.header("cache-control").as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        js.header("content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    // The download worker's URL is fixed: revalidated, as the page is.
    let worker = api
        .get("/console/download-worker.js")
        .send()
        .await
        .expect(200);
    assert_eq!(worker.header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(
        worker.header("content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    assert!(
        policy.contains("worker-src 'self';") && policy.contains("frame-src 'self';"),
        "{policy}"
    );
    api.get("/console/nothing.js")
        .send()
        .await
        .expect_problem(404, "route_not_found");
    // The files need no credential, and the API still does.
    api.get("/v1/connections")
        .send()
        .await
        .expect_problem(401, "unauthorized");
}
