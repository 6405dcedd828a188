//! The spoke's direct data path: file content streams between the client
//! and the provider here, never through the hub.
//!
//! For `GET`, `HEAD` and `PUT` of a file the spoke asks the hub for a grant
//! (the client's key and the connection → account, provider and its
//! configuration), caches it for its short lifetime, builds the provider's
//! operator in memory, and runs the same content code as the hub
//! (`ferry_common::content`). Metadata lookups and completion reports go to
//! the hub; a report the hub cannot take now waits in a bounded queue and is
//! delivered, in order, when the tunnel is back.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_common::body::{Body, full};
use ferry_common::content::locks::PathLocks;
use ferry_common::content::model::{Commit, Direction, ObjectMeta, Transfer};
use ferry_common::content::{MetaHost, Target};
use ferry_common::problem::{ErrorCode, Problem};
use ferry_common::provider::ProviderRegistry;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Response, StatusCode};
use opendal::Operator;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use crate::hub_client::HubClient;
use crate::metrics::{GrantResult, Metrics};

/// Reports kept while the hub cannot be reached; beyond this the oldest is
/// dropped (and counted).
const REPORT_QUEUE_LIMIT: usize = 10_000;

/// What the hub grants for one (key, connection).
#[derive(Debug, Clone, Deserialize)]
struct Grant {
    account_id: String,
    connection_id: String,
    provider: String,
    config: serde_json::Value,
    direct: bool,
    ttl_ms: u64,
}

#[derive(Debug)]
struct Cached {
    grant: Arc<Grant>,
    expires: Instant,
}

/// A completion report waiting for the hub.
#[derive(Debug, Clone)]
enum Report {
    /// A commit, and the principal of the client it is for.
    Commit(Box<Commit>, Option<Arc<str>>),
    Transfer(Transfer),
}

/// What to do with a content request.
#[derive(Debug)]
pub enum Decision {
    /// Stream it here.
    Serve(Target),
    /// Let the hub answer it (a provider only the hub can reach).
    Forward,
    /// Answer this (the hub refused the grant, or cannot be reached).
    Answer(Response<Body>),
}

/// The data path's state, shared by all requests.
#[derive(Debug)]
pub struct DataPath {
    client: HubClient,
    name: String,
    metrics: Arc<Metrics>,
    grants: Mutex<HashMap<(Vec<u8>, String), Cached>>,
    operators: Mutex<HashMap<String, (String, Operator)>>,
    locks: PathLocks,
    reports: Mutex<VecDeque<Report>>,
}

impl DataPath {
    /// A data path reporting to the hub through `client`, as spoke `name`.
    pub fn new(client: HubClient, name: String, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            client,
            name,
            metrics,
            grants: Mutex::default(),
            operators: Mutex::default(),
            locks: PathLocks::default(),
            reports: Mutex::default(),
        })
    }

    /// Decides how to serve a content request for `connection` by the
    /// holder of `authorization`.
    pub async fn decide(&self, authorization: &HeaderValue, connection: &str) -> Decision {
        let key = (
            ring::digest::digest(&ring::digest::SHA256, authorization.as_bytes())
                .as_ref()
                .to_vec(),
            connection.to_owned(),
        );
        let cached = {
            let mut grants = self.grants.lock().expect("grant cache poisoned");
            let now = Instant::now();
            grants.retain(|_, c| c.expires > now);
            grants.get(&key).map(|c| c.grant.clone())
        };
        let grant = match cached {
            Some(g) => {
                self.metrics.grant(GrantResult::cached);
                g
            }
            None => match self.fetch_grant(authorization, connection).await {
                Ok(g) => {
                    self.metrics.grant(GrantResult::fetched);
                    let g = Arc::new(g);
                    let expires = Instant::now() + Duration::from_millis(g.ttl_ms.min(3_600_000));
                    self.grants.lock().expect("grant cache poisoned").insert(
                        key,
                        Cached {
                            grant: g.clone(),
                            expires,
                        },
                    );
                    g
                }
                Err(answer) => return Decision::Answer(answer),
            },
        };
        if !grant.direct {
            return Decision::Forward;
        }
        match self.operator(&grant) {
            Ok(op) => Decision::Serve(Target {
                account_id: grant.account_id.clone(),
                connection_id: grant.connection_id.clone(),
                op,
            }),
            Err(p) => Decision::Answer(p.into_response()),
        }
    }

    async fn fetch_grant(
        &self,
        authorization: &HeaderValue,
        connection: &str,
    ) -> Result<Grant, Response<Body>> {
        let (status, headers, body) = self
            .client
            .call(
                "/internal/v1/grant",
                Some(authorization),
                &json!({ "connection": connection }),
            )
            .await
            .map_err(Problem::into_response)?;
        if status == StatusCode::OK {
            return serde_json::from_slice(&body).map_err(|e| {
                Problem::new(
                    ErrorCode::Internal,
                    format!("the hub's grant is unreadable: {e}"),
                )
                .into_response()
            });
        }
        // The hub's refusal (401, 404, …) goes to the client as it is.
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        for name in [http::header::CONTENT_TYPE, http::header::WWW_AUTHENTICATE] {
            if let Some(v) = headers.get(&name) {
                resp.headers_mut().insert(name, v.clone());
            }
        }
        Err(resp)
    }

    /// The operator of a granted connection, rebuilt when its configuration
    /// changes. Credentials stay in this process's memory.
    fn operator(&self, grant: &Grant) -> Result<Operator, Problem> {
        let fingerprint = format!("{}:{}", grant.provider, grant.config);
        let mut ops = self.operators.lock().expect("operator cache poisoned");
        if let Some((fp, op)) = ops.get(&grant.connection_id)
            && *fp == fingerprint
        {
            return Ok(op.clone());
        }
        let op = ProviderRegistry::build_granted(&grant.provider, &grant.config).map_err(|e| {
            Problem::new(
                e.code(),
                format!("the connection's provider cannot be used here: {e}"),
            )
        })?;
        ops.insert(grant.connection_id.clone(), (fingerprint, op.clone()));
        Ok(op)
    }

    /// Forgets every cached grant and operator (the hub revoked a key or
    /// deleted a connection); the next request asks the hub again.
    pub fn invalidate_grants(&self) {
        self.grants.lock().expect("grant cache poisoned").clear();
        self.operators
            .lock()
            .expect("operator cache poisoned")
            .clear();
    }

    /// Sends a report now, unless earlier ones still wait (order matters)
    /// or the hub cannot take it; then it queues.
    async fn report(&self, report: Report) {
        let waiting = !self
            .reports
            .lock()
            .expect("report queue poisoned")
            .is_empty();
        if waiting || self.send_report(&report).await == Err(false) {
            self.enqueue(report);
        }
    }

    fn enqueue(&self, report: Report) {
        let mut q = self.reports.lock().expect("report queue poisoned");
        if q.len() >= REPORT_QUEUE_LIMIT {
            q.pop_front();
            self.metrics.report_dropped();
            tracing::error!("the report queue is full: dropped the oldest completion report");
        }
        q.push_back(report);
        self.metrics.reports_queued(q.len());
    }

    /// Sends one report. `Err(true)`: the hub refused it for good (a 4xx,
    /// such as a connection deleted meanwhile), so retrying cannot help;
    /// `Err(false)`: try again later.
    async fn send_report(&self, report: &Report) -> Result<(), bool> {
        let (path, body, principal) = match report {
            Report::Commit(c, p) => ("/internal/v1/commit", serde_json::to_value(c), p.as_deref()),
            Report::Transfer(t) => ("/internal/v1/transfer", serde_json::to_value(t), None),
        };
        let body = body.expect("reports serialise");
        let (status, _, answer) = self
            .client
            .call_as(path, principal, &body)
            .await
            .map_err(|_| false)?;
        if status.is_success() {
            Ok(())
        } else if status.is_client_error() {
            tracing::error!(%status, answer = %String::from_utf8_lossy(&answer), "the hub refused a completion report; dropping it");
            self.metrics.report_dropped();
            Err(true)
        } else {
            Err(false)
        }
    }

    /// Waits (at most `limit`) for the queue to empty, for a clean exit.
    pub async fn flush_reports(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self
                .reports
                .lock()
                .expect("report queue poisoned")
                .is_empty()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Delivers queued reports, in order, whenever the hub can take them.
    pub async fn deliver_reports(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            loop {
                let next = self
                    .reports
                    .lock()
                    .expect("report queue poisoned")
                    .front()
                    .cloned();
                let Some(report) = next else { break };
                match self.send_report(&report).await {
                    Ok(()) | Err(true) => {
                        let mut q = self.reports.lock().expect("report queue poisoned");
                        q.pop_front();
                        self.metrics.reports_queued(q.len());
                        if q.is_empty() {
                            tracing::info!("delivered every queued completion report");
                        }
                    }
                    Err(false) => break,
                }
            }
        }
        let left = self.reports.lock().expect("report queue poisoned").len();
        if left > 0 {
            tracing::warn!(
                reports = left,
                "stopping with completion reports the hub never received"
            );
        }
    }
}

/// The spoke's [`MetaHost`]: metadata from and to the hub.
#[derive(Debug, Clone)]
pub struct SpokeHost(pub Arc<DataPath>, Option<Arc<str>>);

impl SpokeHost {
    /// The host for a request with this `Authorization`: its lookups and
    /// commits carry the client's principal, so the client's next reads
    /// through any hub see its writes.
    pub fn new(data: Arc<DataPath>, authorization: &http::HeaderValue) -> Self {
        let principal = ferry_common::principal::of(authorization.as_bytes());
        Self(data, Some(Arc::from(principal)))
    }
}

impl MetaHost for SpokeHost {
    fn lookup<'a>(
        &'a self,
        connection_id: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Option<ObjectMeta>, Problem>> {
        Box::pin(async move {
            let body = json!({ "connection_id": connection_id, "path": path });
            match self
                .0
                .client
                .call_as("/internal/v1/lookup", self.1.as_deref(), &body)
                .await
            {
                Ok((StatusCode::OK, _, answer)) => {
                    #[derive(Deserialize)]
                    struct Found {
                        meta: Option<ObjectMeta>,
                    }
                    Ok(serde_json::from_slice::<Found>(&answer)
                        .map(|f| f.meta)
                        .unwrap_or(None))
                }
                // Without the hub, serve what the provider says: no
                // recorded checksum, an entity tag from the provider.
                Ok((status, _, _)) => {
                    tracing::warn!(%status, "the hub could not look an object up; serving without its metadata");
                    Ok(None)
                }
                Err(_) => Ok(None),
            }
        })
    }

    fn commit(&self, commit: Commit) -> BoxFuture<'_, Result<(), Problem>> {
        Box::pin(async move {
            self.0
                .report(Report::Commit(Box::new(commit), self.1.clone()))
                .await;
            Ok(())
        })
    }

    fn log_transfer(&self, transfer: Transfer) -> BoxFuture<'static, ()> {
        let data = self.0.clone();
        Box::pin(async move { data.report(Report::Transfer(transfer)).await })
    }

    fn lock<'a>(
        &'a self,
        connection_id: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, OwnedMutexGuard<()>> {
        Box::pin(self.0.locks.lock(connection_id, path))
    }

    fn count_bytes(&self, direction: Direction, provider: &'static str, bytes: u64) {
        self.0
            .metrics
            .content
            .count_bytes(direction, provider, bytes);
    }

    fn transfer_ended(&self, transfer: &Transfer) {
        self.0.metrics.content.ended(transfer);
    }

    fn via(&self) -> &str {
        &self.0.name
    }

    fn track(&self, delta: i64) {
        self.0.metrics.active_transfers(delta);
    }
}
