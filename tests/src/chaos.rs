//! The fault campaign: a hub on PostgreSQL (a primary and a streaming
//! replica), two spokes, and moto's S3 behind the fault proxy, all real
//! processes on loopback. Clients upload, overwrite, download, copy and
//! delete through the hub and both spokes while faults come one after the
//! other: spokes and the hub killed (SIGKILL) or stopped (SIGTERM) and
//! started again, the primary stopped at once and started again, and the
//! provider answering 503, 429, slowly, or cutting requests and answers.
//! Then everything is healed and the invariants are checked:
//!
//! - every path holds what a client last saw acknowledged, or what one of
//!   the changes tried since (whose answer never came, or was an error)
//!   made — so an acknowledged upload is never lost, and nothing appears
//!   that no client tried;
//! - every object present has ferry's record, and the record's checksum
//!   is the content's;
//! - the event feed has each acknowledged change once: per path, no fewer
//!   events than acknowledged changes and no more than changes tried;
//! - no spoke holds a report the hub has not taken.
//!
//! Each client owns its paths, and all clients also upload to a few shared
//! paths at once, through different nodes. A change refused with `409
//! write_conflict` (or `412`) changed nothing: on its own path it does not
//! count as tried, and on a shared one the content a refused writer sent
//! must never be found. Every object's record must be its content's, so a
//! shared path never holds one writer's content with another's record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt as _;
use serde_json::json;

use crate::fault_proxy::FaultProxy;
use crate::postgres::Postgres;
use crate::providers::StorageServer;
use crate::scenarios::{Tenant, remote_tenant};
use crate::{Api, Hub, HubOptions, Spoke, eventually, metric, pattern};

/// How a campaign runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long clients work and faults come.
    pub duration: Duration,
    /// Clients working at once.
    pub clients: usize,
    /// Seeds the choices of operations, paths, sizes and faults.
    pub seed: u64,
    /// Paths each client works on.
    pub paths: usize,
    /// Paths every client uploads to (none for 0).
    pub shared: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(60),
            clients: 4,
            seed: 1,
            paths: 12,
            shared: 3,
        }
    }
}

/// What a campaign did and found.
#[derive(Debug, Default)]
pub struct Report {
    /// Operations by kind and answer (`upload ok`, `upload failed`, …).
    pub operations: BTreeMap<String, u64>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Broken invariants, each in a sentence.
    pub violations: Vec<String>,
    /// The daemons' log lines about the paths in violations.
    pub notes: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "operations:")?;
        for (k, n) in &self.operations {
            writeln!(f, "  {k:<24} {n}")?;
        }
        writeln!(f, "faults:")?;
        for (k, n) in &self.faults {
            writeln!(f, "  {k:<24} {n}")?;
        }
        writeln!(f, "violations: {}", self.violations.len())?;
        for v in &self.violations {
            writeln!(f, "  - {v}")?;
        }
        for n in &self.notes {
            writeln!(f, "{n}")?;
        }
        Ok(())
    }
}

/// A small deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What a path may hold: the content's SHA-256, or nothing.
type Content = Option<Vec<u8>>;

/// One path as its client knows it.
#[derive(Debug, Clone)]
struct PathState {
    /// What it may hold now: one value once a change was acknowledged,
    /// more while changes whose answer never came may have been made.
    may_hold: BTreeSet<Content>,
    /// Changes acknowledged, and changes tried (acknowledged or not).
    acknowledged: u64,
    tried: u64,
    /// The last operations on it, for the report.
    history: std::collections::VecDeque<String>,
}

impl PathState {
    fn new() -> Self {
        Self {
            may_hold: BTreeSet::from([None]),
            acknowledged: 0,
            tried: 0,
            history: std::collections::VecDeque::new(),
        }
    }

    fn note(&mut self, what: String) {
        if self.history.len() == 6 {
            self.history.pop_front();
        }
        self.history.push_back(what);
    }

    /// A change to `to` was tried; `ok` when it was acknowledged.
    fn changed(&mut self, to: Content, ok: bool) {
        self.tried += 1;
        if ok {
            self.acknowledged += 1;
            self.may_hold = BTreeSet::from([to]);
        } else {
            self.may_hold.insert(to);
        }
    }
}

/// A path every client uploads to, as one client saw it.
#[derive(Debug, Clone, Default)]
struct Shared {
    /// What the uploads acknowledged or unanswered may have put there.
    tried: BTreeSet<Content>,
    /// What uploads refused with a conflict sent (never to be found).
    refused: BTreeSet<Vec<u8>>,
    /// Uploads acknowledged, and tried but not refused.
    acknowledged: u64,
    attempts: u64,
}

/// A refusal because another change to the path came first: nothing
/// changed.
fn conflict(answer: &Answer) -> bool {
    match answer {
        Answer::Got(409, body, _) => String::from_utf8_lossy(body).contains("write_conflict"),
        Answer::Got(412, ..) => true,
        _ => false,
    }
}

/// How one request ended.
enum Answer {
    /// A status and the whole body.
    Got(u16, Bytes, http::HeaderMap),
    /// No answer: refused, cut, or too slow.
    None,
}

const REQUEST_LIMIT: Duration = Duration::from_secs(30);

async fn request(
    api: &Api,
    method: Method,
    path: &str,
    body: Option<Bytes>,
    json: Option<serde_json::Value>,
) -> Answer {
    let mut req = api.req(method, path);
    if let Some(b) = body {
        req = req.body(b);
    }
    if let Some(j) = json {
        req = req.json(&j);
    }
    let sent = tokio::time::timeout(REQUEST_LIMIT, async {
        let resp = req.send_raw().await.ok()?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        Some((parts.status.as_u16(), body, parts.headers))
    })
    .await;
    match sent {
        Ok(Some((s, b, h))) => Answer::Got(s, b, h),
        _ => Answer::None,
    }
}

fn sha(data: &[u8]) -> Vec<u8> {
    crate::sha256(data)
}

/// What one client did: its own paths, the shared ones as it saw them,
/// operations by kind and answer, and violations seen on the way.
type ClientWork = (
    BTreeMap<String, PathState>,
    BTreeMap<String, Shared>,
    BTreeMap<String, u64>,
    Vec<String>,
);

/// One client's work until `until`: its own paths and the shared ones,
/// through random nodes.
async fn client(
    id: usize,
    settings: Settings,
    tenant: Tenant,
    nodes: Vec<String>,
    until: Instant,
) -> ClientWork {
    let mut rng = Rng::new(settings.seed ^ ((id as u64 + 1) * 0x1000_0001));
    let mut paths: BTreeMap<String, PathState> = (0..settings.paths)
        .map(|i| (format!("c{id}/p{i:02}.bin"), PathState::new()))
        .collect();
    let names: Vec<String> = paths.keys().cloned().collect();
    let mut ops: BTreeMap<String, u64> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut shared: BTreeMap<String, Shared> = BTreeMap::new();
    let mut version = 0u64;
    while Instant::now() < until {
        let node = &nodes[rng.below(nodes.len() as u64) as usize];
        let api = Api::new(node.clone()).as_token(&tenant.key);
        if settings.shared > 0 && rng.below(100) < 15 {
            // An upload to a path every client writes.
            version += 1;
            let path = format!("shared/p{:02}.bin", rng.below(settings.shared as u64));
            let size = 1 + rng.below(64 << 10) as usize;
            let data = Bytes::from(pattern(size, settings.seed ^ ((id as u64) << 32) ^ version));
            let answer = request(
                &api,
                Method::PUT,
                &tenant.file(&path),
                Some(data.clone()),
                None,
            )
            .await;
            let seen = shared.entry(path).or_default();
            let kind = if conflict(&answer) {
                seen.refused.insert(sha(&data));
                "shared upload conflict refused"
            } else {
                let ok = matches!(answer, Answer::Got(200 | 201, ..));
                seen.tried.insert(Some(sha(&data)));
                seen.attempts += 1;
                seen.acknowledged += u64::from(ok);
                if ok {
                    "shared upload ok"
                } else {
                    "shared upload failed"
                }
            };
            *ops.entry(kind.to_owned()).or_default() += 1;
            continue;
        }
        let path = names[rng.below(names.len() as u64) as usize].clone();
        let file = tenant.file(&path);
        let roll = rng.below(100);
        let (kind, outcome) = if roll < 55 {
            version += 1;
            let size = match rng.below(10) {
                0 => 3 << 20,
                1..=3 => 64 << 10,
                _ => 1 + rng.below(16 << 10) as usize,
            };
            let data = Bytes::from(pattern(size, settings.seed ^ ((id as u64) << 32) ^ version));
            let answer = request(&api, Method::PUT, &file, Some(data.clone()), None).await;
            let ok = matches!(answer, Answer::Got(200 | 201, ..));
            if conflict(&answer) {
                // An earlier change of its own still holds the path (its
                // answer never came, or its record is on its way).
                ("upload conflict", false)
            } else {
                paths.get_mut(&path).unwrap().changed(Some(sha(&data)), ok);
                ("upload", ok)
            }
        } else if roll < 75 {
            let answer = request(&api, Method::GET, &file, None, None).await;
            let state = &paths[&path];
            let ok = match &answer {
                Answer::Got(200, body, _) => {
                    if !state.may_hold.contains(&Some(sha(body))) {
                        violations.push(format!(
                            "{path}: a download through {node} returned content no change made"
                        ));
                    }
                    true
                }
                Answer::Got(404, ..) => {
                    if !state.may_hold.contains(&None) {
                        violations.push(format!(
                            "{path}: a download through {node} found nothing where an acknowledged upload is"
                        ));
                    }
                    true
                }
                _ => false,
            };
            ("download", ok)
        } else if roll < 88 {
            let answer = request(&api, Method::DELETE, &file, None, None).await;
            let state = paths.get_mut(&path).unwrap();
            let ok = matches!(answer, Answer::Got(204, ..));
            // A 404 changes nothing: nothing was there; nor does a
            // conflict.
            if !matches!(answer, Answer::Got(404, ..)) && !conflict(&answer) {
                state.changed(None, ok);
            }
            ("delete", ok)
        } else {
            let from = names[rng.below(names.len() as u64) as usize].clone();
            if from == path {
                continue;
            }
            let answer = request(
                &api,
                Method::POST,
                "/v1/connections/local/copy",
                None,
                Some(json!({ "from": from, "to": path, "overwrite": true })),
            )
            .await;
            let source = paths[&from].may_hold.clone();
            let state = paths.get_mut(&path).unwrap();
            let ok = matches!(answer, Answer::Got(201, ..));
            match &answer {
                // The source was not there, or another change to the
                // path came first: nothing changed.
                Answer::Got(404, ..) => {}
                _ if conflict(&answer) => {}
                _ if ok && source.len() == 1 => {
                    state.changed(source.into_iter().next().unwrap(), true)
                }
                _ => {
                    for c in source.into_iter().filter(Option::is_some) {
                        state.changed(c, false);
                    }
                }
            }
            ("copy", ok)
        };
        let answer = match (kind.ends_with("conflict"), outcome) {
            (true, _) => "refused",
            (false, true) => "ok",
            (false, false) => "failed",
        };
        *ops.entry(format!("{kind} {answer}")).or_default() += 1;
        if let Some(state) = paths.get_mut(&path) {
            let via = node.rsplit(':').next().unwrap_or_default();
            state.note(format!("{kind} via :{via} {answer}"));
        }
    }
    (paths, shared, ops, violations)
}

/// The processes of a campaign.
struct Cast {
    pg: Postgres,
    _replica: Postgres,
    hub: Hub,
    spokes: Vec<Spoke>,
}

/// Kinds of fault there are (see [`fault`]).
const FAULT_KINDS: u64 = 10;

/// Injects fault `kind` and heals it; returns its name. The sleeps here
/// are the faults' own lengths (how long a process stays down, how long
/// the provider is slow), chosen at random, not waits for something to
/// happen: each restart waits for the process's readiness itself.
fn fault(cast: &mut Cast, proxy: &FaultProxy, rng: &mut Rng, kind: u64) -> &'static str {
    match kind {
        0 | 1 => {
            let s = &mut cast.spokes[rng.below(2) as usize];
            s.kill();
            std::thread::sleep(Duration::from_millis(200 + rng.below(800)));
            s.restart();
            "spoke SIGKILL"
        }
        2 => {
            let s = &mut cast.spokes[rng.below(2) as usize];
            s.restart();
            "spoke SIGTERM"
        }
        3 => {
            cast.hub.kill();
            std::thread::sleep(Duration::from_millis(200 + rng.below(800)));
            cast.hub.restart();
            "hub SIGKILL"
        }
        4 => {
            cast.hub.restart();
            "hub SIGTERM"
        }
        5 => {
            cast.pg.stop();
            std::thread::sleep(Duration::from_millis(500 + rng.below(1500)));
            cast.pg.start();
            "primary restart"
        }
        6 => {
            proxy.fail_next(1 + rng.below(8) as usize, 1);
            "provider 503"
        }
        7 => {
            proxy.answer_next(1 + rng.below(8) as usize, 429, 1);
            "provider 429"
        }
        8 => {
            proxy.delay(Duration::from_millis(300));
            std::thread::sleep(Duration::from_secs(2));
            proxy.delay(Duration::ZERO);
            "provider slow"
        }
        _ => {
            if rng.below(2) == 0 {
                proxy.cut_next_request_after(1 + rng.below(32 << 10) as usize);
                "provider cut request"
            } else {
                proxy.cut_next_response_after(1 + rng.below(32 << 10) as usize);
                "provider cut answer"
            }
        }
    }
}

/// Runs a campaign and reports what it did and found.
pub async fn run(settings: Settings) -> Report {
    crate::install_crypto_provider();
    let server = StorageServer::s3("chaos");
    let proxy = Arc::new(FaultProxy::start(server.addr).await);
    let pg = Postgres::primary();
    let replica = pg.replica(None);
    let hub = Hub::start_with(HubOptions {
        extra_toml: format!(
            "{}\n[providers.remote]\nallow_private_endpoints = true\n[index]\nenabled = false\n",
            pg.store_toml(Some(&replica))
        ),
        ..HubOptions::default()
    });
    let spokes = vec![Spoke::start(&hub, "fra1"), Spoke::start(&hub, "ams1")];
    let tenant = remote_tenant(
        &hub.url(),
        "chaos",
        "s3",
        server.config("chaos", Some(&proxy.url())),
    )
    .await;
    let nodes: Vec<String> = std::iter::once(hub.url())
        .chain(spokes.iter().map(Spoke::url))
        .collect();
    let metrics: Vec<String> = spokes.iter().map(Spoke::metrics_url).collect();
    let hub_url = hub.url();
    let mut cast = Cast {
        pg,
        _replica: replica,
        hub,
        spokes,
    };

    let until = Instant::now() + settings.duration;
    let workers: Vec<_> = (0..settings.clients)
        .map(|id| {
            tokio::spawn(client(
                id,
                settings.clone(),
                tenant.clone(),
                nodes.clone(),
                until,
            ))
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let faults = {
        let (proxy, done, seed) = (proxy.clone(), done.clone(), settings.seed);
        tokio::task::spawn_blocking(move || {
            let mut rng = Rng::new(seed ^ 0xFA17);
            let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
            // Every kind once in each round of ten, in an order of its own;
            // the pause between two faults is the campaign's pace, not a
            // wait for a signal.
            let mut round: Vec<u64> = Vec::new();
            while Instant::now() < until && !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1000 + rng.below(2000)));
                if Instant::now() >= until {
                    break;
                }
                if round.is_empty() {
                    round = (0..FAULT_KINDS).collect();
                    for i in (1..round.len()).rev() {
                        round.swap(i, rng.below(i as u64 + 1) as usize);
                    }
                }
                let kind = round.pop().expect("a kind left in the round");
                *faults
                    .entry(fault(&mut cast, &proxy, &mut rng, kind))
                    .or_default() += 1;
            }
            (cast, faults)
        })
    };
    let mut report = Report::default();
    let mut paths: BTreeMap<String, PathState> = BTreeMap::new();
    let mut shared: BTreeMap<String, Shared> = BTreeMap::new();
    for w in workers {
        let (p, s, ops, violations) = w.await.expect("a client ran");
        paths.extend(p);
        for (path, seen) in s {
            let all = shared.entry(path).or_default();
            all.tried.extend(seen.tried);
            all.refused.extend(seen.refused);
            all.acknowledged += seen.acknowledged;
            all.attempts += seen.attempts;
        }
        for (k, n) in ops {
            *report.operations.entry(k).or_default() += n;
        }
        report.violations.extend(violations);
    }
    done.store(true, Ordering::Relaxed);
    let (cast, faults) = faults.await.expect("the faults ran");
    report.faults = faults;

    // Healed: the provider answers, the processes run. Wait until the
    // spokes' journals are empty and no intent is left to settle.
    proxy.delay(Duration::ZERO);
    proxy.fail_next(0, 0);
    for (i, url) in metrics.iter().enumerate() {
        let empty = eventually(Duration::from_secs(60), async || {
            metric(url, "ferry_spoke_report_journal_bytes", &[]).await == 0.0
                && metric(url, "ferry_spoke_reports_queued", &[]).await == 0.0
        })
        .await;
        if !empty {
            report.violations.push(format!(
                "spoke {i}'s report journal is not empty a minute after the faults"
            ));
        }
    }
    // An intent the provider does not hold is dropped once a minute old.
    let settled = eventually(Duration::from_secs(120), async || {
        cast.pg
            .query("SELECT count(*) FROM intents WHERE outcome IS NULL")
            .trim()
            == "0"
    })
    .await;
    if !settled {
        report
            .violations
            .push("intents were left unsettled two minutes after the faults".into());
    }
    // A shared path may hold nothing (no upload made it) or what any
    // upload not refused tried; its feed has one event per acknowledged
    // upload at least, one per upload tried at most.
    let mut refused: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (path, seen) in shared {
        let mut state = PathState::new();
        state.may_hold.extend(seen.tried);
        state.acknowledged = seen.acknowledged;
        state.tried = seen.attempts;
        paths.insert(path.clone(), state);
        refused.insert(path, seen.refused);
    }
    check(&hub_url, &tenant, &paths, &refused, &mut report).await;
    // The daemons' own lines about each path in a violation, for whoever
    // reads the report.
    let logs: Vec<String> = std::iter::once(cast.hub.log())
        .chain(cast.spokes.iter().map(Spoke::log))
        .collect();
    let broken: BTreeSet<String> = report
        .violations
        .iter()
        .filter_map(|v| v.split(':').next().map(str::to_owned))
        .filter(|p| paths.contains_key(p))
        .collect();
    for path in broken {
        let lines: Vec<&str> = logs
            .iter()
            .flat_map(|l| l.lines())
            .filter(|l| l.contains(path.as_str()) && !l.contains(" DEBUG "))
            .collect();
        report
            .notes
            .push(format!("{path}:\n    {}", lines.join("\n    ")));
    }
    drop(cast);
    report
}

/// The invariants, checked through the hub once everything is healed.
async fn check(
    hub: &str,
    tenant: &Tenant,
    paths: &BTreeMap<String, PathState>,
    refused: &BTreeMap<String, BTreeSet<Vec<u8>>>,
    report: &mut Report,
) {
    let api = Api::new(hub).as_token(&tenant.key);
    // Every path holds what it may hold, with ferry's record of it.
    for (path, state) in paths {
        let before = report.violations.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        let found = loop {
            match request(&api, Method::GET, &tenant.file(path), None, None).await {
                Answer::Got(200, body, headers) => break Some((body, headers)),
                Answer::Got(404, ..) => break None,
                _ if Instant::now() > deadline => break None,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        if Instant::now() > deadline {
            report.violations.push(format!(
                "{path}: the hub did not answer for it within a minute"
            ));
            continue;
        }
        let holds = found.as_ref().map(|(b, _)| sha(b));
        if let Some(h) = &holds
            && refused.get(path).is_some_and(|r| r.contains(h))
        {
            report.violations.push(format!(
                "{path}: holds what an upload refused with a conflict sent"
            ));
        }
        if !state.may_hold.contains(&holds) {
            report.violations.push(match holds {
                Some(_) if state.may_hold.len() == 1 && state.may_hold.contains(&None) => {
                    format!("{path}: holds an object no client completed (deleted, acknowledged)")
                }
                Some(_) => format!("{path}: holds content no acknowledged or tried change made"),
                None => format!("{path}: an acknowledged upload is missing"),
            });
        }
        if let Some((body, headers)) = &found {
            let recorded = headers
                .get("x-ferry-checksum-crc64nvme")
                .and_then(|v| v.to_str().ok())
                .and_then(ferry_common::checksum::decode_crc64);
            match recorded {
                None => report
                    .violations
                    .push(format!("{path}: content without ferry's record")),
                Some(crc) if crc != ferry_common::checksum::crc64nvme(body) => {
                    report.violations.push(format!(
                        "{path}: the record's checksum is not the content's"
                    ))
                }
                Some(_) => {}
            }
        }
        let history: Vec<&str> = state.history.iter().map(String::as_str).collect();
        for v in &mut report.violations[before..] {
            v.push_str(&format!(" (its last operations: {})", history.join(", ")));
        }
    }
    // The feed: per path, ferry's events between the changes acknowledged
    // and the changes tried.
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let q = if cursor.is_empty() {
            "/v1/events?limit=1000".to_owned()
        } else {
            format!("/v1/events?limit=1000&cursor={cursor}")
        };
        let Answer::Got(200, body, _) = request(&api, Method::GET, &q, None, None).await else {
            report
                .violations
                .push("the event feed could not be read".into());
            return;
        };
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let batch = page["events"].as_array().cloned().unwrap_or_default();
        for e in &batch {
            if e["origin"] == "provider" {
                continue;
            }
            *events
                .entry(e["path"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        cursor = page["next_cursor"].as_str().unwrap_or_default().to_owned();
        if batch.is_empty() {
            break;
        }
    }
    for (path, state) in paths {
        let n = events.get(path).copied().unwrap_or(0);
        if n < state.acknowledged || n > state.tried {
            report.violations.push(format!(
                "{path}: {n} events for {} acknowledged and {} tried changes",
                state.acknowledged, state.tried
            ));
        }
    }
}
