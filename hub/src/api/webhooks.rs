//! `/v1/webhooks`: an account's webhook endpoints, their secrets and
//! their delivery log (see `crate::webhooks` and `store::webhooks`).

use http::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use ferry_common::body::Body;
use ferry_common::problem::{ErrorCode, Problem};

use super::auth::require_account;
use super::http_util::{json, no_content, paging, read_json};
use super::routes::Route;
use super::{ApiResult, AppState, store_problem};
use crate::store::webhooks::{EVENT_TYPES, EndpointChange, WebhookEndpoint};
use crate::webhooks::{check_url, endpoint_context, new_secret};

/// The longest description kept.
const MAX_DESCRIPTION: usize = 512;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateEndpoint {
    url: String,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeEndpoint {
    #[serde(default)]
    url: Option<String>,
    /// Present and `null`: every type.
    #[serde(default, with = "present")]
    events: Option<Option<Vec<String>>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// Tells a member given as `null` from one left out.
mod present {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// Checks the event types asked for: known, at least one, no repeats.
fn checked_events(events: Option<Vec<String>>) -> Result<Option<Vec<String>>, Problem> {
    let Some(mut events) = events else {
        return Ok(None);
    };
    if events.is_empty() {
        return Err(Problem::new(
            ErrorCode::InvalidField,
            "'events' names at least one event type, or is left out (or null) for all",
        ));
    }
    if let Some(bad) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
        return Err(Problem::new(
            ErrorCode::InvalidField,
            format!(
                "'events' holds {bad:?}, which is not one of {}",
                EVENT_TYPES.join(", ")
            ),
        ));
    }
    events.sort();
    events.dedup();
    Ok(Some(events))
}

fn checked_description(d: Option<String>) -> Result<Option<String>, Problem> {
    match d {
        Some(d) if d.len() > MAX_DESCRIPTION || d.chars().any(char::is_control) => {
            Err(Problem::new(
                ErrorCode::InvalidField,
                format!(
                    "'description' is at most {MAX_DESCRIPTION} bytes, without control characters"
                ),
            ))
        }
        d => Ok(d),
    }
}

fn checked(state: &AppState, url: &str) -> Result<String, Problem> {
    check_url(url, state.webhooks.policy).map_err(|why| Problem::new(ErrorCode::InvalidField, why))
}

fn not_found(id: &str) -> Problem {
    Problem::new(
        ErrorCode::WebhookNotFound,
        format!("this account has no webhook endpoint '{id}'"),
    )
}

/// The endpoint as shown, with its secret when it was just made.
fn shown(e: &WebhookEndpoint, secret: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::to_value(e).expect("endpoints serialise");
    if let Some(s) = secret {
        v["secret"] = json!(s);
    }
    v
}

pub async fn handle(state: &AppState, route: Route, req: Request<Body>) -> ApiResult {
    let account = require_account(state, req.headers()).await?;
    let problem = |e| store_problem(state, e);
    match (route, req.method().clone()) {
        (Route::Webhooks, Method::POST) => {
            let body: CreateEndpoint = read_json(req, state.max_json_body_bytes()).await?;
            let url = checked(state, &body.url)?;
            let events = checked_events(body.events)?;
            let description = checked_description(body.description)?.unwrap_or_default();
            let endpoint = WebhookEndpoint {
                id: crate::store::new_id("wh"),
                account_id: account.clone(),
                url,
                events,
                description,
                created_at: crate::store::now_ms(),
                previous_secret_expires_at: None,
                disabled_at: None,
                disabled_reason: None,
            };
            let secret = new_secret();
            let sealed = state
                .master_key
                .seal(secret.as_bytes(), &endpoint_context(&endpoint.id));
            if let Some(have) = state
                .store
                .create_webhook_endpoint(&endpoint, &sealed, state.webhooks.max_endpoints)
                .await
                .map_err(problem)?
            {
                return Err(Problem::new(
                    ErrorCode::WebhookLimit,
                    format!(
                        "this account has {have} webhook endpoints, as many as it may; delete one first"
                    ),
                ));
            }
            tracing::info!(account.id = %account, endpoint.id = %endpoint.id, "created a webhook endpoint");
            Ok(json(StatusCode::CREATED, &shown(&endpoint, Some(&secret))))
        }
        (Route::Webhooks, _) => {
            let endpoints = state
                .store
                .list_webhook_endpoints(&account)
                .await
                .map_err(problem)?;
            Ok(json(StatusCode::OK, &json!({ "endpoints": endpoints })))
        }
        (Route::Webhook(id), Method::DELETE) => {
            if !state
                .store
                .delete_webhook_endpoint(&account, &id)
                .await
                .map_err(problem)?
            {
                return Err(not_found(&id));
            }
            tracing::info!(account.id = %account, endpoint.id = %id, "deleted a webhook endpoint");
            Ok(no_content())
        }
        (Route::Webhook(id), Method::PATCH) => {
            let body: ChangeEndpoint = read_json(req, state.max_json_body_bytes()).await?;
            let change = EndpointChange {
                url: body.url.as_deref().map(|u| checked(state, u)).transpose()?,
                events: body.events.map(checked_events).transpose()?,
                description: checked_description(body.description)?,
                enabled: body.enabled,
            };
            if !state
                .store
                .update_webhook_endpoint(&account, &id, &change)
                .await
                .map_err(problem)?
            {
                return Err(not_found(&id));
            }
            let e = endpoint(state, &account, &id).await?;
            Ok(json(StatusCode::OK, &shown(&e, None)))
        }
        (Route::Webhook(id), _) => {
            let e = endpoint(state, &account, &id).await?;
            Ok(json(StatusCode::OK, &shown(&e, None)))
        }
        (Route::WebhookRotate(id), _) => {
            let secret = new_secret();
            let sealed = state
                .master_key
                .seal(secret.as_bytes(), &endpoint_context(&id));
            let until = crate::store::now_ms() + state.webhooks.rotation_overlap.as_millis() as i64;
            if !state
                .store
                .rotate_webhook_secret(&account, &id, &sealed, until)
                .await
                .map_err(problem)?
            {
                return Err(not_found(&id));
            }
            tracing::info!(account.id = %account, endpoint.id = %id, "rotated a webhook secret");
            let e = endpoint(state, &account, &id).await?;
            Ok(json(StatusCode::OK, &shown(&e, Some(&secret))))
        }
        (Route::WebhookDeliveries(id), _) => {
            endpoint(state, &account, &id).await?;
            let page = paging(&req, 50, 200)?;
            let before = match &page.cursor {
                None => None,
                Some(c) => Some(
                    c.strip_prefix('d')
                        .and_then(|n| n.parse::<i64>().ok())
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            Problem::new(
                                ErrorCode::InvalidCursor,
                                "use a 'next_cursor' from an earlier answer",
                            )
                        })?,
                ),
            };
            let deliveries = state
                .store
                .list_deliveries(&account, &id, before, page.limit as i64)
                .await
                .map_err(problem)?;
            let next = (deliveries.len() == page.limit)
                .then(|| deliveries.last().map(|d| format!("d{}", d.row)))
                .flatten();
            Ok(json(
                StatusCode::OK,
                &json!({ "deliveries": deliveries, "next_cursor": next }),
            ))
        }
        (Route::WebhookRedeliver(id, msg), _) => {
            endpoint(state, &account, &id).await?;
            if !state
                .store
                .redeliver(&account, &id, &msg)
                .await
                .map_err(problem)?
            {
                return Err(Problem::new(
                    ErrorCode::DeliveryNotFound,
                    format!("webhook endpoint '{id}' has no delivery '{msg}'"),
                ));
            }
            tracing::info!(account.id = %account, endpoint.id = %id, msg.id = %msg, "redelivering a webhook");
            Ok(json(
                StatusCode::ACCEPTED,
                &json!({ "id": msg, "state": "pending" }),
            ))
        }
        _ => Err(Problem::new(ErrorCode::RouteNotFound, "no such route")),
    }
}

async fn endpoint(state: &AppState, account: &str, id: &str) -> Result<WebhookEndpoint, Problem> {
    state
        .store
        .webhook_endpoint(account, id)
        .await
        .map_err(|e| store_problem(state, e))?
        .ok_or_else(|| not_found(id))
}
