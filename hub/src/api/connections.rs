//! `/v1/connections`: an account's links to storage providers.

use ferry_common::body::Body;
use ferry_common::problem::{ErrorCode, Problem};
use ferry_common::provider::{redact, root_unavailable};
use http::{Method, Request, StatusCode};
use opendal::Operator;
use serde::{Deserialize, Serialize};

use super::auth::require_account;
use super::http_util::{json, no_content, read_json};
use super::operators::{open_config, operator_for};
use super::routes::Route;
use super::{ApiResult, AppState, store_problem};
use crate::store::{ConnectionRow, StoreError, new_id, now_ms};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateConnection {
    name: String,
    provider: String,
    #[serde(default = "empty_object")]
    config: serde_json::Value,
    /// Seconds between scans of the provider for changes made outside
    /// ferry; absent: the hub's default.
    #[serde(default, deserialize_with = "scan_seconds")]
    scan_interval_secs: Option<u64>,
}

fn scan_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    super::http_util::whole_seconds(d, "scan_interval_secs")
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

#[derive(Debug, Serialize)]
struct ConnectionView {
    id: String,
    name: String,
    provider: String,
    config: serde_json::Value,
    created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scan_interval_secs: Option<i64>,
}

fn view(row: &ConnectionRow, config: &serde_json::Value) -> ConnectionView {
    ConnectionView {
        id: row.id.clone(),
        name: row.name.clone(),
        provider: row.provider.clone(),
        config: redact(config),
        created_at: row.created_at,
        scan_interval_secs: row.scan_interval_secs,
    }
}

/// Checks a connection name: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a
/// letter or digit, and not shaped like an id.
fn check_name(name: &str) -> Result<(), Problem> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with("con_");
    if ok {
        Ok(())
    } else {
        Err(Problem::new(
            ErrorCode::InvalidField,
            "'name' must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-', start with a letter or digit, and not start with 'con_'",
        ))
    }
}

pub async fn handle(state: &AppState, route: Route, req: Request<Body>) -> ApiResult {
    let account = require_account(state, req.headers()).await?;
    match (route, req.method().clone()) {
        (Route::Connections, Method::POST) => create(state, &account, req).await,
        (Route::Connections, _) => {
            let rows = state
                .store
                .list_connections(&account)
                .await
                .map_err(|e| store_problem(state, e))?;
            let views = rows
                .iter()
                .map(|r| open_config(state, r).map(|c| view(r, &c)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "connections": views }),
            ))
        }
        (Route::Connection(id), Method::DELETE) => {
            let row = find(state, &account, &id).await?;
            remove(state, &account, &row).await?;
            super::invalidate_grants(state, "a connection was deleted").await;
            Ok(no_content())
        }
        (Route::Connection(id), _) => {
            let row = find(state, &account, &id).await?;
            let config = open_config(state, &row)?;
            Ok(json(StatusCode::OK, &view(&row, &config)))
        }
        _ => Err(Problem::new(ErrorCode::RouteNotFound, "no such route")),
    }
}

async fn create(state: &AppState, account: &str, req: Request<Body>) -> ApiResult {
    let body: CreateConnection = read_json(req, state.max_json_body_bytes()).await?;
    check_name(&body.name)?;
    if body.scan_interval_secs.is_some_and(|s| s > 86_400) {
        return Err(Problem::new(
            ErrorCode::InvalidField,
            "'scan_interval_secs' must be between 0 (no scans after the first) and 86400",
        ));
    }
    if !body.config.is_object() {
        return Err(Problem::new(
            ErrorCode::InvalidField,
            "'config' must be a JSON object",
        ));
    }
    // Where the data would live is checked against other accounts' claims
    // before anything is created there: a refused connection leaves no
    // folder behind, and every such refusal is the same answer.
    let location = state
        .providers
        .locate(&body.provider, &body.config)
        .await
        .map_err(|e| e.problem())?;
    if let Some(location) = &location
        && state
            .store
            .location_claimed_by_other(account, location)
            .await
            .map_err(|e| store_problem(state, e))?
    {
        tracing::info!(account.id = %account, %location, "refused a root another account's location overlaps");
        return Err(root_unavailable());
    }
    let built = state
        .providers
        .build_and_check(&body.provider, &body.config)
        .await
        .map_err(|e| e.problem())?;
    let id = new_id("con");
    let plain = serde_json::to_vec(&body.config).expect("a JSON value serialises");
    let row = ConnectionRow {
        config_sealed: state.master_key.seal(&plain, &id),
        id,
        account_id: account.to_owned(),
        name: body.name,
        provider: body.provider,
        created_at: now_ms(),
        scan_interval_secs: body.scan_interval_secs.map(|s| s as i64),
    };
    state
        .store
        .create_connection(&row, built.location.as_deref())
        .await
        .map_err(|e| match e {
            StoreError::LocationInUse => root_unavailable(),
            other => store_problem(state, other),
        })?;
    state.operators.insert(&row.id, built.op);
    // Its index is built by a scan, started now.
    state.index_nudge.notify_one();
    tracing::info!(account.id = %account, connection.id = %row.id, provider = %row.provider, "created a connection");
    Ok(json(StatusCode::CREATED, &view(&row, &body.config)))
}

/// Deletes `account`'s connection `row` with its metadata and upload
/// sessions; what those sessions staged at the provider is ferry's own and
/// goes too (best effort). The caller tells the spokes.
pub(crate) async fn remove(
    state: &AppState,
    account: &str,
    row: &ConnectionRow,
) -> Result<(), Problem> {
    let held = super::uploads::held_multipart(state, row).await;
    state
        .store
        .delete_connection(account, &row.id)
        .await
        .map_err(|e| store_problem(state, e))?;
    // With the operator this hub has in use: building one now could make a
    // folder connection's root again.
    if let Some(op) = state.operators.get(&row.id) {
        ferry_common::uploads::write::discard_all(&op).await;
    }
    super::uploads::abandon(held).await;
    state.operators.remove(&row.id);
    state.forget_index(&row.id);
    tracing::info!(account.id = %account, connection.id = %row.id, "deleted a connection");
    Ok(())
}

pub(crate) async fn find(
    state: &AppState,
    account: &str,
    id_or_name: &str,
) -> Result<ConnectionRow, Problem> {
    state
        .store
        .get_connection(account, id_or_name)
        .await
        .map_err(|e| store_problem(state, e))?
        .ok_or_else(|| {
            Problem::new(
                ErrorCode::ConnectionNotFound,
                format!("no connection '{id_or_name}' in this account"),
            )
        })
}

/// An account's connection and its operator, for the file routes.
#[derive(Debug)]
pub struct Resolved {
    /// The caller's account.
    pub account: String,
    /// The connection.
    pub row: ConnectionRow,
    /// Its provider.
    pub op: Operator,
}

/// Authenticates the request and finds the connection it names.
pub async fn resolve(
    state: &AppState,
    headers: &http::HeaderMap,
    conn: &str,
) -> Result<Resolved, Problem> {
    let account = require_account(state, headers).await?;
    let row = find(state, &account, conn).await?;
    let op = operator_for(state, &row).await?;
    Ok(Resolved { account, row, op })
}
