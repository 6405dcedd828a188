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
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_common::body::{Body, full};
use ferry_common::content::locks::PathLocks;
use ferry_common::content::model::{Commit, Intent, ObjectMeta, Transfer};
use ferry_common::content::{MetaHost, Node, Target};
use ferry_common::contract::{
    Grant, GrantOp, GrantRequest, IntentRef, InternalCall, LookupAnswer, LookupRequest,
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
    expires: tokio::time::Instant,
}

/// The grants a spoke holds, each until its lifetime runs out, and the
/// invalidations that end them sooner.
#[derive(Debug)]
struct GrantCache {
    grants: Mutex<HashMap<GrantKey, Cached>>,
    /// Invalidations received: a grant whose fetch began before the last
    /// one is used for its request and not kept.
    invalidations: AtomicU64,
    /// The latest invalidation epoch the hubs announced: a grant made in
    /// an earlier one is not kept.
    epoch: AtomicI64,
}

impl Default for GrantCache {
    fn default() -> Self {
        Self {
            grants: Mutex::default(),
            invalidations: AtomicU64::new(0),
            epoch: AtomicI64::new(i64::MIN),
        }
    }
}

impl GrantCache {
    /// The grant held for `key`, if its lifetime has not run out.
    fn held(&self, key: &GrantKey) -> Option<Arc<Grant>> {
        let mut grants = self.grants.lock().expect("grant cache poisoned");
        let now = tokio::time::Instant::now();
        grants.retain(|_, c| c.expires > now);
        grants.get(key).map(|c| c.grant.clone())
    }

    /// The grant for `key`: the one held, or what `fetch` brings, and
    /// whether it was fetched now. What `fetch` brings is kept for its
    /// lifetime unless an invalidation arrived while it was on its way, or
    /// it was made in an epoch older than the last one announced
    /// ([`keepable`]); the request it was fetched for uses it either way.
    async fn get_or_fetch<E>(
        &self,
        key: GrantKey,
        fetch: impl Future<Output = Result<Grant, E>>,
    ) -> Result<(Arc<Grant>, bool), E> {
        if let Some(g) = self.held(&key) {
            return Ok((g, false));
        }
        let fetched_at = self.invalidations.load(Ordering::Acquire);
        let g = Arc::new(fetch.await?);
        let expires = tokio::time::Instant::now() + Duration::from_millis(g.ttl_ms.min(3_600_000));
        let mut grants = self.grants.lock().expect("grant cache poisoned");
        // (Decided under the cache's lock, which an invalidation takes
        // too: none slips in between.)
        if keepable(
            self.invalidations.load(Ordering::Acquire),
            fetched_at,
            self.epoch.load(Ordering::Acquire),
            g.epoch,
        ) {
            grants.insert(
                key,
                Cached {
                    grant: g.clone(),
                    expires,
                },
            );
        }
        Ok((g, true))
    }

    /// Forgets every grant held, and notes the invalidation (and its
    /// `epoch`, when the hub gave one) for grants still on their way.
    fn invalidate(&self, epoch: Option<i64>) {
        let mut grants = self.grants.lock().expect("grant cache poisoned");
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        if let Some(e) = epoch {
            self.epoch.fetch_max(e, Ordering::AcqRel);
        }
        grants.clear();
    }
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
    grants: GrantCache,
    operators: Mutex<HashMap<String, (String, Operator)>>,
    locks: PathLocks,
    /// Completion reports on their way to the hub.
    pub reports: Arc<Reports>,
    /// Accounts' bandwidth buckets at this spoke, at the rates their
    /// grants carry.
    throttles: ferry_common::content::throttle::Throttles,
    /// Providers that asked this spoke, or the hub, to slow down.
    pacing: Arc<ferry_common::content::pace::Pacing>,
}

/// Whether a grant fetched while `fetched_at` invalidations had been
/// received (`now` have by its answer), made in `grant_epoch`, may be kept
/// when the hubs have announced epoch `seen`: only if no invalidation came
/// in between and it is not older than the last one announced.
fn keepable(now: u64, fetched_at: u64, seen: i64, grant_epoch: Option<i64>) -> bool {
    now == fetched_at && grant_epoch.is_none_or(|e| e >= seen)
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
            grants: GrantCache::default(),
            operators: Mutex::default(),
            locks: PathLocks::default(),
            throttles: Default::default(),
            pacing: Arc::default(),
        })
    }

    /// Slows `connection` down here for `for_`; true when that is news.
    pub fn slow_down(&self, connection: &str, for_: std::time::Duration) -> bool {
        let news = self.pacing.slow(connection, for_);
        if news {
            self.metrics.pacing.provider_slowed();
            tracing::info!(connection.id = %connection, secs = for_.as_secs(), "a provider asked to slow down: starting its transfers at a slower pace");
        }
        news
    }

    /// Acts on a notice of the hub's: drops cached grants, or slows a
    /// provider down.
    pub fn on_notice(&self, n: &ferry_common::proto::Notice) {
        match n.kind {
            ferry_common::proto::NoticeKind::InvalidateGrants => self.invalidate_grants(n.epoch),
            ferry_common::proto::NoticeKind::SlowDown => {
                if let (Some(c), Some(ms)) = (&n.connection, n.for_ms) {
                    self.slow_down(c, std::time::Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }

    /// Providers slowed down here now, and transfers that waited their turn.
    pub fn pacing(&self) -> &Arc<ferry_common::content::pace::Pacing> {
        &self.pacing
    }

    /// The buckets the account's transfers under `grant` draw from here.
    pub fn throttle(&self, grant: &Grant) -> ferry_common::content::throttle::Throttle {
        self.throttles.for_account(&grant.account_id, grant.limits)
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
        let fetch = self.fetch_grant(authorization, connection, path, op);
        let (grant, fresh) = match self.grants.get_or_fetch(key, fetch).await {
            Ok(got) => got,
            Err(answer) => return Decision::Answer(answer),
        };
        self.metrics.grant(match fresh {
            true => GrantResult::fetched,
            false => GrantResult::cached,
        });
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
                    throttle: self.throttle(&grant),
                    pacing: Some(self.pacing.clone()),
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
        for name in [
            http::header::CONTENT_TYPE,
            http::header::WWW_AUTHENTICATE,
            http::header::RETRY_AFTER,
        ] {
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
    /// deleted a connection, raising the invalidation epoch to `epoch`);
    /// the next request asks the hub again, and no grant made before is
    /// kept again.
    pub fn invalidate_grants(&self, epoch: Option<i64>) {
        self.grants.invalidate(epoch);
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

    /// The hub records the upload before it is put in place, and refuses
    /// it when another change to the object came first (through any
    /// node): so an upload at a spoke needs its hub, as one at the hub
    /// needs the store's primary.
    fn intend<'a>(&'a self, intent: &'a Intent) -> BoxFuture<'a, Result<Option<String>, Problem>> {
        Box::pin(async move {
            let answer = self
                .data
                .client
                .call(InternalCall::Intend, OnBehalf::Grant(&self.token), intent)
                .await
                .map_err(|_| {
                    crate::hub_client::unreachable(
                        "the hub, which orders the changes to each object, cannot be reached; nothing was changed",
                    )
                })?;
            match crate::uploads::read::<IntentRef>(answer) {
                Ok(a) => Ok(Some(a.intent)),
                // A hub of an earlier release (spokes are upgraded first)
                // keeps no intents for spokes: the upload goes on as it
                // did there, recorded by its report alone.
                Err(p) if p.error_code() == ErrorCode::RouteNotFound => Ok(None),
                Err(p) if p.error_code() == ErrorCode::WriteConflict => Err(p.with_retry_after(1)),
                Err(p) => Err(p),
            }
        })
    }

    fn abandon(&self, id: Option<&str>) {
        let Some(id) = id else { return };
        let (client, token) = (self.data.client.clone(), self.token.clone());
        let body = IntentRef {
            intent: id.to_owned(),
        };
        tokio::spawn(async move {
            // Not answered: the hub drops the intent after a minute anyway.
            if let Err(e) = client
                .call(InternalCall::Abandon, OnBehalf::Grant(&token), &body)
                .await
            {
                tracing::debug!(problem = %e, "could not tell the hub of a failed upload");
            }
        });
    }

    fn commit(&self, commit: Commit) -> BoxFuture<'_, Result<(), Problem>> {
        Box::pin(async move {
            let report = Report::Commit(Box::new(commit), self.token.clone());
            self.data.reports.report(report).await.map_err(|e| {
                Problem::new(
                    ErrorCode::ReportJournalFull,
                    format!(
                        "the upload is in place, but this spoke could not keep its record for the hub ({e}); send it again"
                    ),
                )
                .with_retry_after(10)
            })
        })
    }

    fn log_transfer(&self, transfer: Transfer) -> BoxFuture<'static, ()> {
        let (reports, token) = (self.data.reports.clone(), self.token.clone());
        Box::pin(async move {
            // (A transfer-log entry that could not be journalled waits in
            // memory; the transfer itself is done.)
            let _ = reports.report(Report::Transfer(transfer, token)).await;
        })
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

    fn provider_rate_limited(&self, connection: &str) {
        if !self
            .data
            .slow_down(connection, ferry_common::content::pace::SLOW_FOR)
        {
            return;
        }
        // The hub slows it down too and tells the other spokes.
        let (client, token) = (self.data.client.clone(), self.token.clone());
        let body = ferry_common::contract::SlowDownReport {
            connection_id: connection.to_owned(),
        };
        tokio::spawn(async move {
            if let Err(e) = client
                .call(InternalCall::SlowDown, OnBehalf::Grant(&token), &body)
                .await
            {
                tracing::debug!(problem = %e, "could not tell the hub a provider asked to slow down");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(epoch: Option<i64>) -> Grant {
        Grant {
            account_id: "acc_1".into(),
            connection_id: "con_1".into(),
            provider: "fs".into(),
            config: serde_json::json!({}),
            direct: true,
            ttl_ms: 30_000,
            allow_private_endpoints: false,
            token: format!("fg1.{epoch:?}"),
            meta: None,
            epoch,
            limits: Default::default(),
        }
    }

    fn key() -> GrantKey {
        (vec![1], "local".into(), "a.txt".into(), GrantOp::Write)
    }

    /// The race an invalidation must win: a grant the hub made just before
    /// a revocation (epoch 4), whose answer reaches the spoke after the
    /// revocation's invalidation (epoch 5). On a paused clock the fetch is
    /// held open until the invalidation is in.
    #[tokio::test(start_paused = true)]
    async fn a_grant_fetched_across_an_invalidation_is_used_once_and_never_kept() {
        let cache = Arc::new(GrantCache::default());
        cache.invalidate(Some(4));
        let (answer, answered) = tokio::sync::oneshot::channel::<Grant>();
        let (began, fetching) = tokio::sync::oneshot::channel::<()>();
        let request = tokio::spawn({
            let cache = cache.clone();
            async move {
                let fetch = async move {
                    began.send(()).unwrap();
                    Ok::<_, ()>(answered.await.unwrap())
                };
                cache.get_or_fetch(key(), fetch).await
            }
        });
        fetching.await.unwrap();
        cache.invalidate(Some(5));
        answer.send(grant(Some(4))).unwrap();
        let (used, fresh) = request.await.unwrap().unwrap();
        assert!(fresh && used.epoch == Some(4), "its request uses it");
        assert!(cache.held(&key()).is_none(), "not kept");

        // Nor is one made in the old epoch and fetched after the
        // invalidation (a hub whose view lagged behind it).
        let late = cache.get_or_fetch(key(), async { Ok::<_, ()>(grant(Some(4))) });
        assert!(late.await.unwrap().1);
        assert!(
            cache.held(&key()).is_none(),
            "an older epoch's grant is not kept"
        );

        // One of the new epoch is kept for its lifetime, and no longer.
        let (_, fresh) = cache
            .get_or_fetch(key(), async { Ok::<_, ()>(grant(Some(5))) })
            .await
            .unwrap();
        assert!(fresh);
        tokio::time::advance(Duration::from_millis(29_999)).await;
        let (held, fresh) = cache
            .get_or_fetch(key(), async { Err::<Grant, _>("asked again") })
            .await
            .unwrap();
        assert!(!fresh && held.epoch == Some(5), "held for its lifetime");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(cache.held(&key()).is_none(), "its lifetime ran out");
        // And the next invalidation ends it at once.
        cache
            .get_or_fetch(key(), async { Ok::<_, ()>(grant(Some(5))) })
            .await
            .unwrap();
        assert!(cache.held(&key()).is_some());
        cache.invalidate(Some(6));
        assert!(cache.held(&key()).is_none());
    }

    #[test]
    fn a_grant_is_kept_only_when_no_invalidation_overtook_it() {
        // Fetched and answered with nothing in between, made in the
        // epoch the spoke knows or a later one: kept.
        assert!(keepable(3, 3, 7, Some(7)));
        assert!(keepable(3, 3, 7, Some(8)));
        // An invalidation arrived while the grant was on its way: the
        // request uses it, the cache does not keep it.
        assert!(!keepable(4, 3, 7, Some(9)));
        // Made before the epoch the hubs last announced (a hub whose view
        // lagged): not kept.
        assert!(!keepable(3, 3, 8, Some(7)));
        // No epoch (a hub of an earlier release): the count alone decides.
        assert!(keepable(3, 3, 8, None));
        assert!(!keepable(4, 3, i64::MIN, None));
        // Before any announcement, any epoch will do.
        assert!(keepable(0, 0, i64::MIN, Some(0)));
    }
}
