//! Steering's routes: `GET /v1/probe` (what clients time), `GET
//! /v1/spokes/probe-targets` (whom to time), `POST /v1/steering/reports`
//! (what they measured) and `GET /v1/steering` (the operator's view of
//! the map).

use std::net::IpAddr;

use ferry_common::body::Body;
use ferry_common::http_server::ClientAddr;
use ferry_common::problem::{ErrorCode, Problem};
use http::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::auth::{require_account, require_admin};
use super::http_util::{json, read_json};
use super::routes::query_pairs;
use super::{ApiResult, AppState};
use crate::steering::model::PLAUSIBLE_RTT_MS;
use crate::store::valid_spoke_name;

/// The most samples one report may carry.
pub const MAX_REPORT_SAMPLES: usize = 64;
/// The largest report body.
const MAX_REPORT_BYTES: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    samples: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sample {
    /// The spoke probed, as `GET /v1/spokes/probe-targets` names it.
    spoke: String,
    /// The time `GET /v1/probe` took there, in milliseconds.
    rtt_ms: f64,
}

/// `GET /v1/spokes/probe-targets`: every spoke the DNS may answer, with
/// the URL to time.
pub async fn probe_targets(state: &AppState, req: Request<Body>) -> ApiResult {
    require_account(state, req.headers()).await?;
    let targets: Vec<_> = state
        .steering
        .probe_targets()
        .into_iter()
        .map(|(spoke, url)| json!({ "spoke": &*spoke, "url": url }))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "targets": targets, "report_to": "/v1/steering/reports" }),
    ))
}

/// `POST /v1/steering/reports`: probe times a client measured, for the
/// network it is in (its address as this node or the spoke saw it).
pub async fn report(state: &AppState, req: Request<Body>) -> ApiResult {
    require_account(state, req.headers()).await?;
    let client = client_ip(&req)?;
    let body: Report = read_json(req, MAX_REPORT_BYTES.min(state.max_json_body_bytes())).await?;
    if body.samples.is_empty() || body.samples.len() > MAX_REPORT_SAMPLES {
        return Err(Problem::new(
            ErrorCode::InvalidField,
            format!("'samples' must hold 1 to {MAX_REPORT_SAMPLES} samples"),
        ));
    }
    for (i, s) in body.samples.iter().enumerate() {
        if !PLAUSIBLE_RTT_MS.contains(&s.rtt_ms) {
            return Err(Problem::new(
                ErrorCode::InvalidField,
                format!(
                    "samples[{i}].rtt_ms must be from {} to {} milliseconds",
                    PLAUSIBLE_RTT_MS.start(),
                    PLAUSIBLE_RTT_MS.end()
                ),
            ));
        }
        if !valid_spoke_name(&s.spoke) {
            return Err(Problem::new(
                ErrorCode::InvalidField,
                format!(
                    "samples[{i}].spoke is not a spoke name: it {}",
                    ferry_common::proto::SPOKE_NAME_RULE
                ),
            ));
        }
    }
    // One report counts a spoke once: a spoke named again is ignored.
    let mut seen = std::collections::HashSet::new();
    let (samples, repeated): (Vec<_>, Vec<_>) = body
        .samples
        .into_iter()
        .map(|s| (s.spoke, s.rtt_ms))
        .partition(|(spoke, _)| seen.insert(spoke.clone()));
    let mut outcome = state.steering.observe_report(client, &samples);
    outcome.ignored += repeated.len();
    Ok(json(StatusCode::ACCEPTED, &outcome))
}

/// `GET /v1/steering` (admin): the map, `?limit=` prefixes at most (default
/// 1000, at most 100000), or `?client=ADDR` for one client's network and
/// the answer it gets now.
pub fn view(state: &AppState, req: &Request<Body>) -> ApiResult {
    require_admin(state, req)?;
    let mut limit = 1000usize;
    let mut client = None;
    let bad = |what: &str| Problem::new(ErrorCode::InvalidQuery, what.to_owned());
    let pairs = query_pairs(req.uri().query())
        .map_err(|_| bad("the query is not valid percent-encoded UTF-8"))?;
    for (k, v) in pairs {
        match k.as_str() {
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or_else(|| bad("'limit' must be from 1 to 100000"))?;
            }
            "client" => {
                client = Some(
                    v.parse::<IpAddr>()
                        .map_err(|_| bad("'client' must be an IP address"))?,
                );
            }
            other => return Err(bad(&format!("unknown query parameter '{other}'"))),
        }
    }
    Ok(json(StatusCode::OK, &state.steering.view(client, limit)))
}

fn client_ip(req: &Request<Body>) -> Result<IpAddr, Problem> {
    let addr = req
        .extensions()
        .get::<ClientAddr>()
        .map(|c| c.0.ip())
        .ok_or_else(|| Problem::new(ErrorCode::Internal, "the client's address is unknown"))?;
    // A v4 client on a dual-stack socket belongs to its v4 network.
    Ok(match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    })
}
