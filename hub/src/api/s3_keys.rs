//! `/v1/s3-keys`: an account's S3 access keys (see `store::s3_keys`).

use http::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use ferry_common::body::Body;
use ferry_common::problem::{ErrorCode, Problem};

use super::auth::require_account;
use super::connections::find;
use super::http_util::{json, no_content, read_json};
use super::routes::Route;
use super::{ApiResult, AppState, store_problem};
use crate::store::{S3Key, make_s3_key};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateS3Key {
    /// Names or ids of the connections the key may use; all when absent.
    #[serde(default)]
    connections: Option<Vec<String>>,
    /// Whether the key may only read.
    #[serde(default)]
    read_only: bool,
}

/// The most connections one key may name.
const MAX_CONNECTIONS: usize = 100;

pub async fn handle(state: &AppState, route: Route, req: Request<Body>) -> ApiResult {
    let account = require_account(state, req.headers()).await?;
    match (route, req.method().clone()) {
        (Route::S3Keys, Method::POST) => {
            let body: CreateS3Key = if ferry_common::uploads::serve::carries_body(&req) {
                read_json(req, state.max_json_body_bytes()).await?
            } else {
                CreateS3Key::default()
            };
            let connections = match body.connections {
                None => None,
                Some(names) if names.is_empty() || names.len() > MAX_CONNECTIONS => {
                    return Err(Problem::new(
                        ErrorCode::InvalidField,
                        format!(
                            "'connections' names 1 to {MAX_CONNECTIONS} connections, or is left out for all"
                        ),
                    ));
                }
                Some(names) => {
                    let mut ids = Vec::new();
                    for name in &names {
                        let id = find(state, &account, name).await?.id;
                        if !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                    Some(ids)
                }
            };
            let (id, secret) = make_s3_key();
            let key = S3Key {
                access_key_id: id.clone(),
                account_id: account.clone(),
                connections,
                read_only: body.read_only,
                created_at: ferry_common::content::model::now_ms(),
                revoked_at: None,
            };
            let sealed = state.master_key.seal(secret.as_bytes(), &id);
            state
                .store
                .create_s3_key(&key, &sealed)
                .await
                .map_err(|e| store_problem(state, e))?;
            tracing::info!(account.id = %account, s3_key.id = %id, "created an S3 key");
            let mut shown = serde_json::to_value(&key).expect("keys serialise");
            shown["secret_access_key"] = json!(secret);
            Ok(json(StatusCode::CREATED, &shown))
        }
        (Route::S3Keys, _) => {
            let keys = state
                .store
                .list_s3_keys(&account)
                .await
                .map_err(|e| store_problem(state, e))?;
            Ok(json(StatusCode::OK, &json!({ "keys": keys })))
        }
        (Route::S3Key(id), _) => {
            if !state
                .store
                .revoke_s3_key(&account, &id)
                .await
                .map_err(|e| store_problem(state, e))?
            {
                return Err(Problem::new(
                    ErrorCode::KeyNotFound,
                    format!("this account has no S3 key '{id}'"),
                ));
            }
            tracing::info!(account.id = %account, s3_key.id = %id, "revoked an S3 key");
            Ok(no_content())
        }
        _ => Err(Problem::new(ErrorCode::RouteNotFound, "no such route")),
    }
}
