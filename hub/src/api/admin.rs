//! The admin API (`/v1/accounts…`), for the operator holding the admin
//! token: accounts, their API keys, and deleting an account with all it has.

use ferry_common::body::Body;
use ferry_common::problem::{ErrorCode, Problem};
use http::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::auth::require_admin;
use super::http_util::{json, no_content, paging, read_json};
use super::routes::Route;
use super::{ApiResult, AppState, store_problem};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    name: String,
}

fn account_missing(id: &str) -> Problem {
    Problem::new(ErrorCode::AccountNotFound, format!("no account '{id}'"))
}

/// Fails with `404 account_not_found` unless account `id` exists.
async fn existing(state: &AppState, id: &str) -> Result<(), Problem> {
    match state.store.get_account(id).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(account_missing(id)),
        Err(e) => Err(store_problem(state, e)),
    }
}

/// An account's limits as set, and as they apply with the defaults.
fn limits_json(state: &AppState, set: crate::store::limits::Limits) -> serde_json::Value {
    json!({ "set": set, "effective": set.or(state.limits.defaults()) })
}

/// Revokes `account`'s key `key_id` (the admin API's and the account's own
/// route); `whose` names the account in the `404`.
pub(super) async fn revoke_key(
    state: &AppState,
    account: &str,
    key_id: &str,
    whose: &str,
) -> ApiResult {
    if !state
        .store
        .revoke_key(account, key_id)
        .await
        .map_err(|e| store_problem(state, e))?
    {
        return Err(Problem::new(
            ErrorCode::KeyNotFound,
            format!("{whose} has no key '{key_id}'"),
        ));
    }
    tracing::info!(account.id = %account, key.id = %key_id, "revoked an API key");
    super::invalidate_grants(state, "an API key was revoked").await;
    Ok(no_content())
}

/// Whether `text` has the shape of an account id: `acc_` and 20 lower-case
/// hex digits.
fn is_account_id(text: &str) -> bool {
    text.strip_prefix("acc_").is_some_and(|hex| {
        hex.len() == 20 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

pub async fn handle(state: &AppState, route: Route, req: Request<Body>) -> ApiResult {
    require_admin(state, &req)?;
    let store_err = |e| store_problem(state, e);
    match (route, req.method().clone()) {
        (Route::Accounts, Method::POST) => {
            let body: CreateAccount = read_json(req, state.max_json_body_bytes()).await?;
            let name = body.name.trim();
            if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
                return Err(Problem::new(
                    ErrorCode::InvalidField,
                    "'name' must be 1 to 200 characters with no control characters",
                ));
            }
            let (account, key) = state.store.create_account(name).await.map_err(store_err)?;
            tracing::info!(account.id = %account.id, "created an account");
            Ok(json(
                StatusCode::CREATED,
                &json!({
                    "id": account.id,
                    "name": account.name,
                    "created_at": account.created_at,
                    "api_key": key.key,
                    "api_key_id": key.id,
                }),
            ))
        }
        (Route::Accounts, _) => {
            let page = paging(&req, 100, 1000)?;
            // The cursor is the last account id of a page: anything else
            // was not made here.
            if page.cursor.as_deref().is_some_and(|c| !is_account_id(c)) {
                return Err(Problem::new(
                    ErrorCode::InvalidCursor,
                    "use a 'next_cursor' from an earlier answer",
                ));
            }
            let mut accounts = state
                .store
                .list_accounts(page.cursor.as_deref(), page.limit as i64 + 1)
                .await
                .map_err(store_err)?;
            // One more than asked shows whether another page follows.
            let more = accounts.len() > page.limit;
            accounts.truncate(page.limit);
            let next = more
                .then(|| accounts.last().map(|a| a.id.clone()))
                .flatten();
            Ok(json(
                StatusCode::OK,
                &json!({ "accounts": accounts, "next_cursor": next }),
            ))
        }
        (Route::Account(id), Method::DELETE) => {
            existing(state, &id).await?;
            // Connections one by one first, each with what its sessions
            // staged at the provider; then the account and the rest of what
            // the store holds of it. Cut short, the same request finishes it.
            let connections = state.store.list_connections(&id).await.map_err(store_err)?;
            let deleted = async {
                for row in &connections {
                    super::connections::remove(state, &id, row).await?;
                }
                match state.store.delete_account(&id).await.map_err(store_err)? {
                    true => Ok(()),
                    false => Err(account_missing(&id)),
                }
            }
            .await;
            // Told even when cut short: what was deleted is gone for spokes too.
            super::invalidate_grants(state, "an account was deleted").await;
            deleted?;
            tracing::info!(account.id = %id, connections = connections.len(), "deleted an account");
            Ok(no_content())
        }
        (Route::Account(id), _) => {
            let account = state.store.get_account(&id).await.map_err(store_err)?;
            let account = account.ok_or_else(|| account_missing(&id))?;
            Ok(json(StatusCode::OK, &account))
        }
        (Route::AccountKeys(id), Method::POST) => {
            let key = state.store.create_key(&id).await.map_err(store_err)?;
            let key = key.ok_or_else(|| account_missing(&id))?;
            tracing::info!(account.id = %id, key.id = %key.id, "created an API key");
            Ok(json(StatusCode::CREATED, &key))
        }
        (Route::AccountKeys(id), _) => {
            existing(state, &id).await?;
            let keys = state.store.list_keys(&id).await.map_err(store_err)?;
            Ok(json(StatusCode::OK, &json!({ "keys": keys })))
        }
        (Route::AccountLimits(id), Method::PUT) => {
            let limits: crate::store::limits::Limits =
                read_json(req, state.max_json_body_bytes()).await?;
            if let Some(name) = limits.negative().next() {
                return Err(Problem::new(
                    ErrorCode::InvalidField,
                    format!("'{name}' must not be negative (0: no limit; null: the default)"),
                ));
            }
            if !state
                .store
                .set_account_limits(&id, &limits)
                .await
                .map_err(store_err)?
            {
                return Err(account_missing(&id));
            }
            state.limits.forget(&id);
            tracing::info!(account.id = %id, ?limits, "set an account's limits");
            Ok(json(StatusCode::OK, &limits_json(state, limits)))
        }
        (Route::AccountLimits(id), _) => {
            existing(state, &id).await?;
            let limits = state.store.account_limits(&id).await.map_err(store_err)?;
            Ok(json(StatusCode::OK, &limits_json(state, limits)))
        }
        (Route::AccountKey(id, key_id), _) => {
            revoke_key(state, &id, &key_id, &format!("account '{id}'")).await
        }
        _ => Err(Problem::new(ErrorCode::RouteNotFound, "no such route")),
    }
}
