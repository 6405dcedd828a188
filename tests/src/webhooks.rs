//! A webhook receiver for the tests: a Python process of the tests' own
//! that verifies every delivery with `standardwebhooks`, the Standard
//! Webhooks reference library from PyPI (`tests/scripts/webhook_receiver.py`),
//! and answers what a test scripts.

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::Api;
use crate::eventually;
use crate::process::Daemon;
use crate::scenarios::Tenant;
use crate::tools::Tool;

/// The receiver process and its address.
#[derive(Debug)]
pub struct Receiver {
    _daemon: Daemon,
    base: String,
}

impl Receiver {
    /// Starts the receiver and waits for its port.
    pub fn start() -> Receiver {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/webhook_receiver.py");
        let mut cmd = std::process::Command::new(Tool::WebhooksPython.path());
        cmd.arg(script);
        let daemon = Daemon::spawn(cmd);
        let port = crate::announced_port(&daemon, "listening on", Duration::from_secs(20))
            .unwrap_or_else(|| panic!("the receiver did not start:\n{}", daemon.log()));
        Receiver {
            _daemon: daemon,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The URL of `path` at the receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts `body` to the control route `what` (`/_secrets`, `/_script`).
    pub async fn control(&self, what: &str, body: Value) {
        Api::new(&self.base)
            .post(what)
            .json(&body)
            .send()
            .await
            .expect(204);
    }

    /// The deliveries made to `path`, oldest first.
    pub async fn deliveries(&self, path: &str) -> Vec<Value> {
        let all = Api::new(&self.base)
            .get("/_deliveries")
            .send()
            .await
            .expect(200)
            .json();
        all.as_array()
            .unwrap()
            .iter()
            .filter(|d| d["path"] == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` has at least `n` deliveries; returns them.
    pub async fn wait_for(&self, path: &str, n: usize, limit: Duration) -> Vec<Value> {
        let mut got = Vec::new();
        let arrived = eventually(limit, async || {
            got = self.deliveries(path).await;
            got.len() >= n
        })
        .await;
        assert!(
            arrived,
            "{path}: {} of {n} deliveries arrived: {got:#?}",
            got.len()
        );
        got
    }
}

/// Makes an endpoint at the receiver's `path` for `t` and gives the
/// receiver its secret; returns the endpoint.
pub async fn endpoint(t: &Tenant, r: &Receiver, path: &str, events: Option<Value>) -> Value {
    let mut body = json!({ "url": r.url(path), "description": "tests" });
    if let Some(e) = events {
        body["events"] = e;
    }
    let made = t
        .api
        .post("/v1/webhooks")
        .json(&body)
        .send()
        .await
        .expect(201)
        .json();
    let secret = made["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{made}");
    r.control("/_secrets", json!({ path: [secret] })).await;
    made
}
