//! The spoke's direct data path: file content streams between the client
//! and the provider here, never through the hub.
//!
//! For `GET`, `HEAD` and `PUT` of a file the spoke asks the hub for a grant
//! (the client's key and the connection → account, provider and its
//! configuration), caches it for its short lifetime, builds the provider's
//! operator in memory, and runs the same content code as the hub
//! (`ferry_common::content`). Metadata lookups and completion reports go to
//! the hub (`crate::reports`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_common::body::{Body, full};
use ferry_common::content::locks::PathLocks;
use ferry_common::content::model::{Commit, ObjectMeta, Transfer};
use ferry_common::content::{MetaHost, Node, Target};
use ferry_common::contract::{
    Grant, GrantOp, GrantRequest, InternalCall, LookupAnswer, LookupRequest,
};
use ferry_common::problem::{ErrorCode, Problem};
use ferry_common::provider::ProviderRegistry;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Response, StatusCode};
use opendal::Operator;

use crate::hub_client::{HubClient, OnBehalf};
use crate::metrics::{GrantResult, Metrics};
use crate::reports::{Report, Reports};

/// A cached grant's key: the client's credential (hashed), the connection
/// as named in the path, the object's path and the operation.
type GrantKey = (Vec<u8>, String, String, GrantOp);

#[derive(Debug)]
struct Cached {
    grant: Arc<Grant>,
    expires: Instant,
}

/// What a request streamed here holds from the hub.
#[derive(Debug)]
pub struct Granted {
    /// The grant's token, for the request's lookups and reports.
    token: Arc<str>,
    /// What ferry recorded for the object, when the grant was fetched for
    /// this very request (a cached grant's may be stale).
    fresh_meta: Option<Option<ObjectMeta>>,
}

impl Granted {
    /// What a request holds under the grant `token`, with no metadata
    /// fetched along.
    pub fn new(token: Arc<str>) -> Self {
        Self {
            token,
            fresh_meta: None,
        }
    }
}

/// What to do with a content request.
#[derive(Debug)]
pub enum Decision {
    /// Stream it here.
    Serve(Box<Target>, Granted),
    /// Let the hub answer it (a provider only the hub can reach).
    Forward,
    /// Answer this (the hub refused the grant, or cannot be reached).
    Answer(Response<Body>),
}

/// The answer to a write while the report journal is full.
pub fn journal_full() -> Problem {
    Problem::new(
        ErrorCode::ReportJournalFull,
        "this spoke holds as many completion reports for the hub as it may; it takes no uploads until the hub has them",
    )
    .with_retry_after(10)
}

/// The data path's state, shared by all requests.
#[derive(Debug)]
pub struct DataPath {
    client: HubClient,
    name: String,
    metrics: Arc<Metrics>,
    grants: Mutex<HashMap<GrantKey, Cached>>,
    operators: Mutex<HashMap<String, (String, Operator)>>,
    locks: PathLocks,
    /// Completion reports on their way to the hub.
    pub reports: Arc<Reports>,
}

impl DataPath {
    /// A data path reporting to the hub through `client`, as spoke `name`,
    /// with `reports` (and their journal).
    pub fn new(
        client: HubClient,
        name: String,
        metrics: Arc<Metrics>,
        reports: Reports,
    ) -> Arc<Self> {
        Arc::new(Self {
            reports: Arc::new(reports),
            client,
            name,
            metrics,
            grants: Mutex::default(),
            operators: Mutex::default(),
            locks: PathLocks::default(),
        })
    }

    /// Decides how to serve a content request (`op` of `path` in
    /// `connection`) by the holder of `authorization`.
    pub async fn decide(
        &self,
        authorization: &HeaderValue,
        connection: &str,
        path: &str,
        op: GrantOp,
    ) -> Decision {
        if op == GrantOp::Write && !self.reports.has_room() {
            return Decision::Answer(journal_full().into_response());
        }
        let key = (
            ring::digest::digest(&ring::digest::SHA256, authorization.as_bytes())
                .as_ref()
                .to_vec(),
            connection.to_owned(),
            path.to_owned(),
            op,
        );
        let cached = {
            let mut grants = self.grants.lock().expect("grant cache poisoned");
            let now = Instant::now();
            grants.retain(|_, c| c.expires > now);
            grants.get(&key).map(|c| c.grant.clone())
        };
        let fresh = cached.is_none();
        let grant = match cached {
            Some(g) => {
                self.metrics.grant(GrantResult::cached);
                g
            }
            None => match self.fetch_grant(authorization, connection, path, op).await {
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
            Ok(op) => Decision::Serve(
                Box::new(Target {
                    account_id: grant.account_id.clone(),
                    connection_id: grant.connection_id.clone(),
                    op,
                    multipart: None,
                }),
                Granted {
                    token: Arc::from(grant.token.as_str()),
                    fresh_meta: fresh.then(|| grant.meta.clone()),
                },
            ),
            Err(p) => Decision::Answer(p.into_response()),
        }
    }

    async fn fetch_grant(
        &self,
        authorization: &HeaderValue,
        connection: &str,
        path: &str,
        op: GrantOp,
    ) -> Result<Grant, Response<Body>> {
        let request = GrantRequest {
            connection: connection.to_owned(),
            path: path.to_owned(),
            op,
        };
        let answer = self
            .client
            .call(
                InternalCall::Grant,
                OnBehalf::Client(authorization),
                &request,
            )
            .await
            .map_err(Problem::into_response)?;
        if answer.status == StatusCode::OK {
            return serde_json::from_slice(&answer.body).map_err(|e| {
                Problem::new(
                    ErrorCode::Internal,
                    format!("the hub's grant is unreadable: {e}"),
                )
                .into_response()
            });
        }
        // The hub's refusal (401, 404, …) goes to the client as it is.
        let mut resp = Response::new(full(answer.body));
        *resp.status_mut() = answer.status;
        for name in [http::header::CONTENT_TYPE, http::header::WWW_AUTHENTICATE] {
            if let Some(v) = answer.headers.get(&name) {
                resp.headers_mut().insert(name, v.clone());
            }
        }
        Err(resp)
    }

    /// The spoke's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The client for the spoke's own calls to the hub.
    pub fn client(&self) -> &HubClient {
        &self.client
    }

    /// The operator of a granted connection, rebuilt when its configuration
    /// changes. Credentials stay in this process's memory.
    pub fn operator(&self, grant: &Grant) -> Result<Operator, Problem> {
        let fingerprint = format!(
            "{}:{}:{}",
            grant.provider, grant.config, grant.allow_private_endpoints
        );
        let mut ops = self.operators.lock().expect("operator cache poisoned");
        if let Some((fp, op)) = ops.get(&grant.connection_id)
            && *fp == fingerprint
        {
            return Ok(op.clone());
        }
        let op = ProviderRegistry::build_granted(
            &grant.provider,
            &grant.config,
            grant.endpoint_policy(),
        )
        .map_err(|e| {
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
}

/// The spoke's [`MetaHost`] for one request: metadata from and to the
/// hub, every call under the request's grant.
#[derive(Debug)]
pub struct SpokeHost {
    data: Arc<DataPath>,
    token: Arc<str>,
    /// What the grant brought, used by the first lookup.
    prefetched: Mutex<Option<Option<ObjectMeta>>>,
}

impl SpokeHost {
    /// The host for a request served under `granted`.
    pub fn new(data: Arc<DataPath>, granted: Granted) -> Self {
        Self {
            data,
            token: granted.token,
            prefetched: Mutex::new(granted.fresh_meta),
        }
    }
}

impl MetaHost for SpokeHost {
    fn lookup<'a>(
        &'a self,
        connection_id: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Option<ObjectMeta>, Problem>> {
        Box::pin(async move {
            if let Some(meta) = self.prefetched.lock().expect("poisoned").take() {
                return Ok(meta);
            }
            let request = LookupRequest {
                connection_id: connection_id.to_owned(),
                path: path.to_owned(),
            };
            match self
                .data
                .client
                .call(InternalCall::Lookup, OnBehalf::Grant(&self.token), &request)
                .await
            {
                Ok(a) if a.status == StatusCode::OK => {
                    Ok(serde_json::from_slice::<LookupAnswer>(&a.body)
                        .map(|f| f.meta)
                        .unwrap_or(None))
                }
                // Without the hub, serve what the provider says: no
                // recorded checksum, an entity tag from the provider.
                Ok(a) => {
                    tracing::warn!(status = %a.status, "the hub could not look an object up; serving without its metadata");
                    Ok(None)
                }
                Err(_) => Ok(None),
            }
        })
    }

    fn commit(&self, commit: Commit) -> BoxFuture<'_, Result<(), Problem>> {
        Box::pin(async move {
            let report = Report::Commit(Box::new(commit), self.token.clone());
            self.data.reports.report(report).await;
            Ok(())
        })
    }

    fn log_transfer(&self, transfer: Transfer) -> BoxFuture<'static, ()> {
        let (reports, token) = (self.data.reports.clone(), self.token.clone());
        Box::pin(async move { reports.report(Report::Transfer(transfer, token)).await })
    }

    fn node(&self) -> Node<'_> {
        Node {
            locks: &self.data.locks,
            metrics: &self.data.metrics.content,
        }
    }

    fn via(&self) -> &str {
        &self.data.name
    }

    fn track(&self, delta: i64) {
        self.data.metrics.active_transfers(delta);
    }
}
