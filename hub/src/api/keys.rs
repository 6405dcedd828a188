//! `/v1/keys`: an account's own API keys, for the account itself (the
//! console's key page, a script rotating its key). Any key of the account
//! may list its keys, make another and revoke one, its own included: an
//! account's keys are equals, as under the admin API's
//! `/v1/accounts/{account}/keys`, which the operator keeps.

use http::{Method, Request, StatusCode};
use serde_json::json;

use ferry_common::body::Body;
use ferry_common::problem::{ErrorCode, Problem};

use super::auth::require_account;
use super::http_util::json;
use super::routes::Route;
use super::{ApiResult, AppState, store_problem};

pub async fn handle(state: &AppState, route: Route, req: Request<Body>) -> ApiResult {
    let account = require_account(state, req.headers()).await?;
    let store_err = |e| store_problem(state, e);
    match (route, req.method().clone()) {
        (Route::Keys, Method::POST) => {
            let key = state.store.create_key(&account).await.map_err(store_err)?;
            // The account exists: the key that asked was just found in it.
            let key = key.ok_or_else(|| {
                Problem::new(ErrorCode::Unauthorized, "the account no longer exists")
            })?;
            tracing::info!(account.id = %account, key.id = %key.id, "an account made an API key");
            Ok(json(StatusCode::CREATED, &key))
        }
        (Route::Keys, _) => {
            let keys = state.store.list_keys(&account).await.map_err(store_err)?;
            Ok(json(StatusCode::OK, &json!({ "keys": keys })))
        }
        (Route::Key(id), _) => super::admin::revoke_key(state, &account, &id, "this account").await,
        _ => Err(Problem::new(ErrorCode::RouteNotFound, "no such route")),
    }
}
