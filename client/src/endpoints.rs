//! The nearest spoke: each spoke the hub lists is probed on a warm
//! connection (the fastest of a few `GET /v1/probe` after one that opens
//! it), all at once and within a bounded time; the spokes that answered
//! come first, fastest first, then the hub. The times are reported to the
//! hub, so that its DNS learns what this client's network measures.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{Client, Error, error_chain};

/// Round trips timed per spoke, after the one that opens the connection.
const ROUNDS: usize = 3;

/// How long probing may take in all.
const PROBE_LIMIT: Duration = Duration::from_secs(3);

/// How long the order a probe found is kept before a transfer probes
/// again (unless [`Client::with_reprobe_after`] says otherwise): the
/// nearest spoke changes as the user moves and spokes come and go.
pub const REPROBE_AFTER: Duration = Duration::from_secs(300);

/// Where requests can go.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// The spoke's name, `hub`, or `given` for `--endpoint`.
    pub name: String,
    /// Its API's base URL.
    pub base: url::Url,
    /// The fastest probe, in milliseconds, if it was probed.
    pub rtt_ms: Option<f64>,
}

impl Endpoint {
    pub(crate) fn hub(base: url::Url) -> Self {
        Self::named("hub", base)
    }

    pub(crate) fn named(name: &str, base: url::Url) -> Self {
        Self {
            name: name.into(),
            base,
            rtt_ms: None,
        }
    }
}

/// One spoke's probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The spoke.
    pub spoke: String,
    /// Its API's base URL.
    pub base: url::Url,
    /// The fastest round trip, or why there was none.
    pub rtt: Result<f64, String>,
}

#[derive(Serialize)]
struct Sample<'a> {
    spoke: &'a str,
    rtt_ms: f64,
}

#[derive(Serialize)]
struct Report<'a> {
    samples: Vec<Sample<'a>>,
}

impl Client {
    /// Probes every spoke the hub lists, reports the times to the hub and
    /// orders the endpoints: spokes that answered, fastest first, then
    /// the hub. Returns the probes. With `--endpoint` given, does nothing.
    pub async fn choose_endpoint(&self) -> Result<Vec<Probe>, Error> {
        if self.fixed {
            return Ok(Vec::new());
        }
        let targets = self.probe_targets().await?;
        let probes =
            futures_util::future::join_all(targets.into_iter().map(|(spoke, url)| async move {
                let rtt = match tokio::time::timeout(PROBE_LIMIT, self.probe(&url)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {PROBE_LIMIT:?}")),
                };
                let base = url.join("/").unwrap_or(url);
                Probe { spoke, base, rtt }
            }))
            .await;
        let samples: Vec<Sample<'_>> = probes
            .iter()
            .filter_map(|p| {
                p.rtt.as_ref().ok().map(|&rtt_ms| Sample {
                    spoke: &p.spoke,
                    rtt_ms: rtt_ms.clamp(0.001, 10_000.0),
                })
            })
            .take(64)
            .collect();
        if !samples.is_empty() {
            // The report helps the DNS; a client works without it.
            if let Ok(url) = self.hub.join("v1/steering/reports") {
                let sent = self
                    .http
                    .post(url)
                    .bearer_auth(&self.key)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(&Report { samples }).unwrap_or_default())
                    .send()
                    .await;
                if let Err(e) = sent {
                    eprintln_debug(&format!("the probe report did not reach the hub: {e}"));
                }
            }
        }
        let mut answered: Vec<Endpoint> = probes
            .iter()
            .filter_map(|p| {
                p.rtt.as_ref().ok().map(|&rtt| Endpoint {
                    name: p.spoke.clone(),
                    base: p.base.clone(),
                    rtt_ms: Some(rtt),
                })
            })
            .collect();
        answered.sort_by(|a, b| {
            a.rtt_ms
                .partial_cmp(&b.rtt_ms)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        answered.push(Endpoint::hub(self.hub.clone()));
        *self.endpoints.lock().expect("endpoints poisoned") = answered;
        *self.probed_at.lock().expect("probed_at poisoned") = Some(Instant::now());
        Ok(probes)
    }

    /// Probes again if the last probe is older than the client's
    /// re-probe interval (transfers call it as they begin, so a long
    /// `sync` or a long-lived program follows the nearest spoke); returns
    /// whether it probed. A client that never probed, or was given its
    /// endpoint, keeps its order.
    pub async fn refresh_endpoints(&self) -> bool {
        if self.fixed {
            return false;
        }
        {
            let mut at = self.probed_at.lock().expect("probed_at poisoned");
            match *at {
                Some(t) if t.elapsed() >= self.reprobe_after => {
                    // Claimed, so that transfers starting together probe once.
                    *at = Some(Instant::now());
                }
                _ => return false,
            }
        }
        if let Err(e) = self.choose_endpoint().await {
            eprintln_debug(&format!("probing again failed; the order stays: {e}"));
            return false;
        }
        true
    }

    /// The fastest of [`ROUNDS`] round trips to `url`, after one that
    /// opens the connection.
    async fn probe(&self, url: &url::Url) -> Result<f64, String> {
        let once = async || -> Result<f64, String> {
            let started = Instant::now();
            let resp = self
                .http
                .get(url.clone())
                .send()
                .await
                .map_err(|e| error_chain(&e))?;
            if !resp.status().is_success() {
                return Err(format!("answered {}", resp.status()));
            }
            let _ = resp.bytes().await;
            Ok(started.elapsed().as_secs_f64() * 1000.0)
        };
        once().await?;
        let mut best = f64::MAX;
        for _ in 0..ROUNDS {
            best = best.min(once().await?);
        }
        Ok(best)
    }
}

/// Says something only when `FERRY_DEBUG` is set.
pub(crate) fn eprintln_debug(what: &str) {
    if std::env::var_os("FERRY_DEBUG").is_some() {
        eprintln!("ferry: {what}");
    }
}
