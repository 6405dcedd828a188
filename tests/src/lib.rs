//! The end-to-end harness: runs the real ferry binaries on loopback, on
//! sockets it binds and hands them as a service manager would, and drives
//! them over real HTTP.
//!
//! Scenarios are written against an [`Api`] (a base URL and a client), not
//! against a hub, so the same scenarios can run against a spoke.

pub mod api_fuzz;
pub mod chaos;
pub mod client;
pub mod delay_proxy;
pub mod dns;
pub mod fault_proxy;
pub mod hub;
pub mod launch;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod providers;
pub mod rogue;
pub mod scenarios;
pub mod spoke;
pub mod tools;
pub mod udp_relay;
pub mod webhooks;

pub use client::{Api, Client, Resp};
pub use hub::{Hub, HubOptions};
pub use spoke::{Spoke, SpokeOptions};

/// A deterministic pseudo-random byte pattern of `len` bytes (xorshift), so
/// tests need no data files and any corruption shows.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// SHA-256 of `data`, as bytes.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// The `x-ferry-checksum-crc64nvme` value of `data`.
pub fn crc64nvme_field(data: &[u8]) -> Option<String> {
    let mut sums = ferry_common::checksum::StreamChecksums::new([]);
    sums.update(data);
    Some(ferry_common::checksum::encode_crc64(
        sums.finish().crc64nvme,
    ))
}

/// The `Repr-Digest` value (`sha-256=:…:`) of `data`.
pub fn repr_digest(data: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(sha256(data))
    )
}

/// Reads `/metrics` at `base` (a daemon's operator listener, such as
/// [`Hub::metrics_url`]) with a Prometheus text parser and returns the
/// value of the sample `name` whose labels include `labels` (0 if absent).
pub async fn metric(base: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let resp = Api::new(base).get("/metrics").send().await.expect(200);
    let text = String::from_utf8(resp.body.to_vec()).expect("metrics are text");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("metrics parse");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map_or(0.0, |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// The last `lines` lines of a log, for a failure message: a runner that
/// shortens long output keeps its ends, and a log's head rarely says why.
pub fn tail(log: &str, lines: usize) -> &str {
    match log
        .trim_end_matches('\n')
        .rmatch_indices('\n')
        .nth(lines.saturating_sub(1))
    {
        Some((i, _)) => &log[i + 1..],
        None => log,
    }
}

/// Polls `check` every 100 ms until it holds or `limit` passes; every wait
/// in the tests is bounded this way.
pub async fn eventually(limit: std::time::Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// Reads `body` into `got` until it holds at least `n` bytes (a download
/// under way that the test then disturbs).
pub async fn read_at_least(body: &mut hyper::body::Incoming, got: &mut Vec<u8>, n: usize) {
    use http_body_util::BodyExt as _;
    while got.len() < n {
        let frame = body
            .frame()
            .await
            .expect("the body goes on")
            .expect("the body is not cut");
        got.extend_from_slice(&frame.into_data().unwrap_or_default());
    }
}

/// Reads the rest of `body` into `got`; `what` names the expectation the
/// test checks (such as "the download is not cut").
pub async fn read_rest(body: &mut hyper::body::Incoming, got: &mut Vec<u8>, what: &str) {
    use http_body_util::BodyExt as _;
    while let Some(frame) = body.frame().await {
        got.extend_from_slice(&frame.expect(what).into_data().unwrap_or_default());
    }
}

/// The `name` of every entry of a listing answer.
pub fn entry_names(listing: &serde_json::Value) -> Vec<String> {
    listing["entries"]
        .as_array()
        .expect("a listing has entries")
        .iter()
        .map(|e| e["name"].as_str().expect("an entry has a name").to_owned())
        .collect()
}

/// Installs ring as the rustls provider for TLS clients in tests.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Waits (at most `timeout`) for `daemon` to log a line containing
/// `announcement` and returns the 127.0.0.1 port that line names: the port
/// a server started on port 0 says it got. `None` if no such line comes.
pub fn announced_port(
    daemon: &process::Daemon,
    announcement: &str,
    timeout: std::time::Duration,
) -> Option<u16> {
    let line = daemon.wait_for(announcement, timeout)?;
    let after = line.split("127.0.0.1:").nth(1)?;
    let digits = after
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after.len());
    after[..digits].parse().ok().filter(|&port| port != 0)
}
