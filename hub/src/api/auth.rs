//! Who is calling: the operator with the admin token, or an account with one
//! of its API keys (`Authorization: Bearer …`).
//!
//! Every handler asks here before it looks at anything else about the
//! request or the hub, so a request without credentials learns nothing
//! but `401`: not whether a resource exists, nor how the hub is set up.
//! Wrong admin tokens are slowed down per source ([`super::guesses`]).

use std::time::Instant;

use ferry_common::body::Body;
use ferry_common::http_server::ClientAddr;
use ferry_common::problem::{ErrorCode, Problem};
use http::{HeaderMap, Request, header};

use super::{AppState, store_problem};

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(ErrorCode::Unauthorized, detail)
}

/// For routes that take an API key or the admin token: whether the request
/// carries the admin token. A bearer token shaped as an API key is left to
/// the account check; any other wrong token counts as a wrong admin token,
/// and a source that sent too many is not taken as the operator (it gets
/// the account check's `401`) until it has waited.
pub fn is_operator(state: &AppState, req: &Request<Body>) -> bool {
    let (Some(token), Some(expected)) = (bearer(req.headers()), &state.admin_token) else {
        return false;
    };
    if token.starts_with(crate::store::API_KEY_PREFIX) {
        return false;
    }
    let source = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
    let now = Instant::now();
    if state.admin_guesses.wait(source, now).is_some() {
        return false;
    }
    if expected.matches(token) {
        state.admin_guesses.succeeded(source);
        true
    } else {
        state.metrics.admin_token_refused();
        state.admin_guesses.failed(source, now);
        false
    }
}

/// Succeeds when the request carries the admin token. Without a bearer
/// token the answer is `401`, whether or not the admin API is enabled; a
/// source that sent too many wrong tokens gets `429` until it has waited.
pub fn require_admin(state: &AppState, req: &Request<Body>) -> Result<(), Problem> {
    let token = bearer(req.headers())
        .ok_or_else(|| unauthorized("send the admin token as 'Authorization: Bearer <token>'"))?;
    let Some(expected) = &state.admin_token else {
        return Err(Problem::new(
            ErrorCode::AdminDisabled,
            "set FERRY_ADMIN_TOKEN for the hub to enable the admin API",
        ));
    };
    let source = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
    let now = Instant::now();
    if let Some(wait) = state.admin_guesses.wait(source, now) {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return Err(Problem::new(
            ErrorCode::TooManyAttempts,
            "too many wrong admin tokens from this address; wait before trying again",
        )
        .with_retry_after(secs.max(1)));
    }
    if expected.matches(token) {
        state.admin_guesses.succeeded(source);
        Ok(())
    } else {
        state.admin_guesses.failed(source, now);
        state.metrics.admin_token_refused();
        tracing::info!(client.addr = ?source, "a wrong admin token was sent");
        Err(unauthorized("the admin token is wrong"))
    }
}

tokio::task_local! {
    /// The account a request was authenticated as, for its usage.
    static ACCOUNT: std::cell::RefCell<Option<String>>;
}

/// Runs `served` (one request's answer) and returns it with the account
/// it was authenticated as, if any.
pub async fn noting_account<T>(served: impl Future<Output = T>) -> (T, Option<String>) {
    ACCOUNT
        .scope(std::cell::RefCell::new(None), async {
            let out = served.await;
            (out, ACCOUNT.with(|a| a.borrow_mut().take()))
        })
        .await
}

/// Notes `account` as the one the request is served for (a request
/// authenticated otherwise than by [`require_account`]: the S3 door's).
pub fn note_account(account: &str) {
    let _ = ACCOUNT.try_with(|a| *a.borrow_mut() = Some(account.to_owned()));
}

/// The id of the account whose API key the request carries.
pub async fn require_account(state: &AppState, headers: &HeaderMap) -> Result<String, Problem> {
    let key = bearer(headers)
        .ok_or_else(|| unauthorized("send an API key as 'Authorization: Bearer <key>'"))?;
    match state.store.authenticate(key).await {
        Ok(Some(account)) => {
            let _ = ACCOUNT.try_with(|a| *a.borrow_mut() = Some(account.clone()));
            crate::limits::check_request_rate(state, &account).await?;
            Ok(account)
        }
        Ok(None) => Err(unauthorized("the API key is unknown or revoked")),
        Err(e) => Err(store_problem(state, e)),
    }
}
