//! The hub's HTTP API: one router for every route, serving the hub's own
//! listener and the requests spokes forward through their tunnels alike,
//! since it only sees `Request<Body>`.

mod admin;
mod auth;
mod connections;
mod content_host;
mod events;
mod guesses;
mod http_util;
pub mod intents;
mod internal;
mod keys;
mod operators;
mod spokes;
pub use spokes::{FLEET_TTL_MAX_SECS, FLEET_TTL_SECS, check_fleet_prefix, check_spoke_name};
pub mod routes;
mod s3_keys;
pub mod s3door;
mod steering;
mod tree;
mod uploads;
pub mod usage;
mod webhooks;

pub use events::retain as retain_events;
pub use uploads::{UploadSettings, sweep as sweep_uploads};

pub use content_host::HubHost;

use std::sync::Arc;
use std::time::Instant;

use ferry_common::body::{Body, full};
use ferry_common::problem::{ErrorCode, Problem};
use ferry_common::provider::ProviderRegistry;
use ferry_common::provider::answer::observed;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use crate::metrics::Metrics;
use crate::secrets::MasterKey;
use crate::store::{Store, StoreError};
use routes::{Route, RouteLabel};

/// What every request handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The metadata store.
    pub store: Store,
    /// Builds provider operators within the operator's policy.
    pub providers: ProviderRegistry,
    /// Seals and opens connection configurations.
    pub master_key: MasterKey,
    /// The admin token; `None` disables the admin API.
    pub admin_token: Option<crate::admin_token::AdminToken>,
    /// Wrong admin tokens per source, to slow guessing down.
    admin_guesses: guesses::WrongGuesses,
    /// The hub's metrics.
    pub metrics: Metrics,
    /// Largest JSON body accepted (a reload may change it).
    max_json_body_bytes: std::sync::atomic::AtomicUsize,
    /// Operators of connections in use.
    operators: operators::OperatorCache,
    /// Serialises the commit of writes to the same object.
    locks: ferry_common::content::locks::PathLocks,
    /// Spoke enrolment and tunnels, when `[tunnel]` is configured.
    pub spokes: Option<SpokeSupport>,
    /// Which spoke each client network is steered to.
    pub steering: Arc<crate::steering::Steering>,
    /// Signs and verifies the grants spokes hold.
    pub grants: crate::grant::GrantKey,
    /// Resumable uploads' settings.
    pub uploads: UploadSettings,
    /// The S3 door's host names (`api.s3_domains`).
    pub s3_hosts: ferry_common::s3_door::Hosts,
    /// Wakes the indexer to take a connection just made.
    pub index_nudge: tokio::sync::Notify,
    /// Downloads' transfer-log entries, written in batches.
    pub transfer_log: crate::store::TransferLog,
    /// Providers that asked this hub to slow down.
    pub pacing: Arc<ferry_common::content::pace::Pacing>,
    /// Accounts' quotas and limits, and their buckets at this hub.
    pub limits: crate::limits::AccountLimits,
    /// Requests answered, per account, until they are added to the usage.
    pub usage: usage::RequestCounter,
    /// Webhook settings (`[webhooks]`).
    pub webhooks: crate::webhooks::Settings,
    /// Connections whose index this hub has seen complete ([`AppState::index_complete`]).
    complete_indexes: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// What the spoke routes need.
#[derive(Debug, Clone)]
pub struct SpokeSupport {
    /// Signs spoke keys.
    pub ca: Arc<crate::ca::HubCa>,
    /// The live tunnels.
    pub registry: Arc<crate::tunnel::Registry>,
    /// The name in the tunnel's server certificate.
    pub server_name: String,
    /// Lifetime of join tokens made through the API.
    pub token_ttl_secs: u64,
    /// Lifetime of the grants spokes cache.
    pub grant_ttl_secs: u64,
    /// How long a spoke may report under a grant after it was made.
    pub report_window_secs: u64,
    /// How long the certificates signed for spokes are valid.
    pub spoke_cert_lifetime: std::time::Duration,
    /// The hubs sharing this hub's store, for spokes to hold tunnels to.
    pub hubs: Arc<crate::tunnel::HubList>,
}

impl AppState {
    /// Builds the shared state.
    pub fn new(
        store: Store,
        providers: ProviderRegistry,
        master_key: MasterKey,
        admin_token: Option<crate::admin_token::AdminToken>,
        metrics: Metrics,
        max_json_body_bytes: usize,
        steering: Arc<crate::steering::Steering>,
    ) -> Self {
        Self {
            steering,
            store,
            providers,
            admin_token,
            admin_guesses: guesses::WrongGuesses::default(),
            metrics,
            max_json_body_bytes: std::sync::atomic::AtomicUsize::new(max_json_body_bytes),
            operators: operators::OperatorCache::default(),
            locks: ferry_common::content::locks::PathLocks::default(),
            spokes: None,
            grants: crate::grant::GrantKey::new(master_key.derive_hmac("spoke grants")),
            uploads: UploadSettings::default(),
            s3_hosts: ferry_common::s3_door::Hosts::default(),
            index_nudge: tokio::sync::Notify::new(),
            transfer_log: crate::store::TransferLog::default(),
            complete_indexes: Default::default(),
            webhooks: crate::webhooks::Settings::default(),
            usage: usage::RequestCounter::default(),
            limits: crate::limits::AccountLimits::default(),
            pacing: Arc::default(),
            master_key,
        }
    }

    /// Largest JSON body accepted now.
    pub fn max_json_body_bytes(&self) -> usize {
        self.max_json_body_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the connection's index is complete, so that listings come
    /// from it. An index only ever becomes complete (a scan completes it;
    /// nothing makes it incomplete again), so once the store has said so
    /// the answer is kept, and a listing asks the store one query fewer.
    pub(crate) async fn index_complete(&self, connection_id: &str) -> Result<bool, Problem> {
        let known = |set: &std::collections::HashSet<String>| set.contains(connection_id);
        if known(&self.complete_indexes.lock().expect("index set poisoned")) {
            return Ok(true);
        }
        let complete = self
            .store
            .index_state(connection_id)
            .await
            .map_err(|e| store_problem(self, e))?
            .is_some_and(|s| s.complete);
        if complete {
            self.complete_indexes
                .lock()
                .expect("index set poisoned")
                .insert(connection_id.to_owned());
        }
        Ok(complete)
    }

    /// Forgets a deleted connection's index.
    pub(crate) fn forget_index(&self, connection_id: &str) {
        self.complete_indexes
            .lock()
            .expect("index set poisoned")
            .remove(connection_id);
    }

    /// Takes a reloaded `api.max_json_body_bytes`.
    pub fn set_max_json_body_bytes(&self, n: usize) {
        self.max_json_body_bytes
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The account's connection `connection_id`, for the indexer.
pub(crate) async fn find_connection(
    state: &AppState,
    account_id: &str,
    connection_id: &str,
) -> Result<crate::store::ConnectionRow, Problem> {
    connections::find(state, account_id, connection_id).await
}

/// The operator of the account's connection `connection_id`, for the
/// indexer.
pub(crate) async fn connection_operator(
    state: &AppState,
    account_id: &str,
    connection_id: &str,
) -> Result<opendal::Operator, Problem> {
    let row = connections::find(state, account_id, connection_id).await?;
    operators::operator_for(state, &row).await
}

/// The folder of an `fs` connection, as its configuration names it.
pub(crate) fn fs_root(
    state: &AppState,
    row: &crate::store::ConnectionRow,
) -> Option<std::path::PathBuf> {
    let config = operators::open_config(state, row).ok()?;
    config
        .get("root")
        .and_then(|r| r.as_str())
        .map(std::path::PathBuf::from)
}

/// What handlers return.
pub(crate) type ApiResult = Result<Response<Body>, Problem>;

/// The node that carried a transfer's bytes, for the transfer log.
pub(crate) const VIA_HUB: &str = "hub";

/// Answers one request.
pub async fn handle(state: Arc<AppState>, req: Request<Body>) -> Response<Body> {
    use tracing::Instrument as _;
    let id = ferry_common::request_id::for_request(req.headers());
    let span = tracing::info_span!("request", request.id = %id);
    let id: Arc<str> = Arc::from(id);
    let mut resp = ferry_common::cors::serve(req, |req| {
        // Boxed: the whole router's future is large.
        ferry_common::request_id::scope(id.clone(), Box::pin(answer(state, req))).instrument(span)
    })
    .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut()
            .insert(ferry_common::request_id::HEADER, v);
    }
    resp
}

async fn answer(state: Arc<AppState>, req: Request<Body>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    tracing::debug!(%method, path = req.uri().path(), "request");
    if s3door::speaks_s3(&req) {
        // A request signed with an S3 key: the S3 door answers it. The
        // service is made for the request, so that it holds no reference
        // back to the state that holds it.
        let principal = s3door::principal(&req).map(Arc::from);
        let node = node_of(&req);
        let door = s3door::Door::new(state.clone());
        // Boxed: the door's future is large.
        let served = Box::pin(door.serve(req));
        let (resp, account) =
            auth::noting_account(crate::store::replica::as_principal(principal, served)).await;
        if let Some(account) = account {
            state.usage.count_request(account, node, &method);
        }
        state.metrics.request(
            RouteLabel::S3,
            &method,
            resp.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        return resp;
    }
    let principal = principal(&state, &req);
    let node = node_of(&req);
    let (label, result) = match Route::parse(req.uri().path()) {
        Ok(Some(route)) => {
            let label = route.label();
            // Boxed: the router's future is large.
            let served = Box::pin(dispatch(&state, route, req));
            let (result, account) =
                auth::noting_account(crate::store::replica::as_principal(principal, served)).await;
            // A spoke's own calls for a client's request (its grant, its
            // report) are not requests of the account's: what the spoke
            // served is counted from its reports.
            if let Some(account) = account.filter(|_| label != RouteLabel::Internal) {
                state.usage.count_request(account, node, &method);
            }
            (label, result)
        }
        Ok(None) => (
            RouteLabel::Unmatched,
            Err(Problem::new(
                ErrorCode::RouteNotFound,
                "no route matches this path",
            )),
        ),
        Err(_) => (
            RouteLabel::Unmatched,
            Err(Problem::new(
                ErrorCode::InvalidPath,
                "the path is not valid percent-encoded UTF-8",
            )),
        ),
    };
    let mut resp = result.unwrap_or_else(Problem::into_response);
    if method == Method::HEAD {
        // HEAD answers carry the GET head; drop any body a problem added.
        *resp.body_mut() = ferry_common::body::empty();
    }
    state.metrics.request(
        label,
        &method,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    tracing::debug!(
        status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "answered"
    );
    resp
}

/// The node a request came through: a spoke's name, or [`VIA_HUB`].
pub(crate) fn node_of<B>(req: &Request<B>) -> String {
    req.extensions()
        .get::<crate::tunnel::ViaSpoke>()
        .map_or(VIA_HUB, |v| v.0.as_str())
        .to_owned()
}

/// Who is asking, for read-your-writes: a digest of the request's
/// credential (an API key or the admin token), never the credential. A
/// spoke's own calls for a client's request carry the client's principal
/// inside their grant.
fn principal(state: &AppState, req: &Request<Body>) -> Option<Arc<str>> {
    if let Some(grant) = internal::grant_of(state, req) {
        return grant.ok().map(|c| Arc::from(c.principal));
    }
    let value = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    Some(Arc::from(ferry_common::principal::of(value)))
}

async fn dispatch(state: &Arc<AppState>, route: Route, req: Request<Body>) -> ApiResult {
    if matches!(route, Route::Internal(_))
        && req.extensions().get::<crate::tunnel::SpokeOwn>().is_none()
    {
        // Spokes' own routes do not exist for anyone else, whatever the method.
        return Err(Problem::new(
            ErrorCode::RouteNotFound,
            "no route matches this path",
        ));
    }
    let method = req.method().clone();
    if !route.allowed().contains(&method) {
        let allow = route
            .allowed()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut resp = Problem::new(
            ErrorCode::MethodNotAllowed,
            format!("{method} is not allowed here; allowed: {allow}"),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&allow) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return Ok(resp);
    }
    match route {
        Route::Healthz => Ok(text(StatusCode::OK, "ok\n")),
        Route::Console(file) => crate::console::serve(state, &file, &req),
        Route::Readyz => match state.store.ping().await {
            Ok(()) => Ok(text(StatusCode::OK, "ready\n")),
            Err(e) => {
                state.metrics.store_error();
                tracing::warn!(error = %e, "not ready: the store does not answer");
                Err(Problem::new(
                    ErrorCode::StoreUnavailable,
                    "the metadata store does not answer",
                ))
            }
        },
        Route::Accounts
        | Route::Account(_)
        | Route::AccountKeys(_)
        | Route::AccountKey(..)
        | Route::AccountLimits(_) => admin::handle(state, route, req).await,
        Route::Connections | Route::Connection(_) => connections::handle(state, route, req).await,
        Route::Keys | Route::Key(_) => keys::handle(state, route, req).await,
        Route::S3Keys | Route::S3Key(_) => s3_keys::handle(state, route, req).await,
        Route::Usage => usage::report(state, req).await,
        Route::Webhooks
        | Route::Webhook(_)
        | Route::WebhookRotate(_)
        | Route::WebhookDeliveries(_)
        | Route::WebhookRedeliver(..) => webhooks::handle(state, route, req).await,
        Route::File(conn, path) => {
            let res = connections::resolve(state, req.headers(), &conn).await?;
            let host = Arc::new(HubHost::new(state.clone(), node_of(&req)));
            let what = match method {
                Method::PUT => Some(crate::limits::Use::Write(
                    req.headers()
                        .get(header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse().ok()),
                )),
                // A HEAD is held to the egress quota as a GET is, as at a
                // spoke, whose read grant covers both.
                Method::GET | Method::HEAD => Some(crate::limits::Use::Read),
                _ => None,
            };
            let throttle = match what {
                Some(what) => crate::limits::admit(state, &res.account, what).await?,
                None => Default::default(),
            };
            let target = ferry_common::content::Target {
                account_id: res.account,
                connection_id: res.row.id,
                op: res.op,
                multipart: None,
                throttle,
                pacing: Some(state.pacing.clone()),
            };
            ferry_common::content::files::serve(host, &target, &path, req).await
        }
        // The provider's answers are noted for the problems these may end
        // in; file content notes its own (`files::serve`).
        Route::List(conn, dir) => observed(tree::list(state, &conn, &dir, req)).await,
        Route::Folder(conn, path) if method == Method::DELETE => {
            observed(tree::delete_folder(state, &conn, &path, req)).await
        }
        Route::Folder(conn, path) => observed(tree::create_folder(state, &conn, &path, req)).await,
        Route::Copy(conn) => observed(tree::copy_or_move(state, &conn, false, req)).await,
        Route::Move(conn) => observed(tree::copy_or_move(state, &conn, true, req)).await,
        Route::Events => events::list(state, req).await,
        Route::Spokes
        | Route::Spoke(_)
        | Route::SpokeEnrol
        | Route::Fleets
        | Route::Fleet(_)
        | Route::Hubs => spokes::handle(state, route, req).await,
        Route::Probe => Ok(ferry_common::probe::response()),
        Route::ProbeTargets => steering::probe_targets(state, req).await,
        Route::Steering => steering::view(state, &req),
        Route::SteeringReports => steering::report(state, req).await,
        // Boxed: an upload's future is large.
        Route::Uploads(conn) => Box::pin(uploads::create(state, &conn, req)).await,
        Route::Upload(id) => Box::pin(uploads::upload(state, &id, req)).await,
        Route::Internal(op) => Box::pin(internal::handle(state, op, req)).await,
    }
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Tells connected spokes to drop cached grants (after a key revocation or
/// a connection deletion), with the invalidation epoch the change raised:
/// a grant made before it, arriving later, is not kept.
pub(crate) async fn invalidate_grants(state: &AppState, why: &str) {
    if let Some(s) = &state.spokes {
        let mut notice = ferry_common::proto::Notice::new(
            ferry_common::proto::NoticeKind::InvalidateGrants,
            why,
        );
        notice.epoch = state.store.current_epoch().await;
        s.registry.broadcast(notice);
    }
}

/// Slows `connection` down at this hub and, when that is news, tells the
/// spokes to ([`ferry_common::content::pace`]).
pub(crate) fn slow_down(state: &AppState, connection: &str) {
    let for_ = ferry_common::content::pace::SLOW_FOR;
    if !state.pacing.slow(connection, for_) {
        return;
    }
    state.metrics.pacing.provider_slowed();
    tracing::info!(connection.id = %connection, secs = for_.as_secs(), "a provider asked to slow down: starting its transfers at a slower pace on every node");
    if let Some(s) = &state.spokes {
        let mut notice = ferry_common::proto::Notice::new(
            ferry_common::proto::NoticeKind::SlowDown,
            "the provider asked to slow down",
        );
        notice.connection = Some(connection.to_owned());
        notice.for_ms = Some(for_.as_millis() as u64);
        s.registry.broadcast(notice);
    }
}

/// Maps a store failure to a problem, logging and counting it once.
pub(crate) fn store_problem(state: &AppState, err: StoreError) -> Problem {
    match err {
        StoreError::Conflict(what) => {
            Problem::new(ErrorCode::AlreadyExists, format!("{what} already exists"))
        }
        StoreError::WriteConflict(why) => Problem::new(
            ErrorCode::WriteConflict,
            match why {
                crate::store::Conflicting::UnderWay => {
                    "another change to this object is under way; nothing was changed; retry once it is done"
                }
                crate::store::Conflicting::Recorded => {
                    "another change to this object was recorded since this one began; nothing was changed"
                }
            },
        )
        .with_retry_after(1),
        other => {
            state.metrics.store_error();
            tracing::error!(error = %other, "metadata store operation failed");
            Problem::new(
                ErrorCode::StoreUnavailable,
                "the metadata store failed; retry later",
            )
            .with_retry_after(2)
        }
    }
}

/// Fails with `503 store_unavailable` when the store's primary does not
/// take writes now: asked before a provider's content is changed, so that
/// what cannot be recorded is not done.
pub(crate) async fn writable(state: &AppState) -> Result<(), Problem> {
    if state.store.writable() {
        return Ok(());
    }
    state.metrics.store_error();
    Err(Problem::new(
        ErrorCode::StoreUnavailable,
        "the metadata store does not take writes now; nothing was changed; retry later",
    )
    .with_retry_after(2))
}
