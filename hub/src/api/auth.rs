//! Who is calling: the operator with the admin token, or an account with one
//! of its API keys (`Authorization: Bearer …`).

use ferry_common::problem::{ErrorCode, Problem};
use http::{HeaderMap, header};

use super::{AppState, store_problem};

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(ErrorCode::Unauthorized, detail)
}

/// Succeeds when the request carries the admin token.
pub fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    let Some(expected) = &state.admin_token else {
        return Err(Problem::new(
            ErrorCode::AdminDisabled,
            "set FERRY_ADMIN_TOKEN for the hub to enable the admin API",
        ));
    };
    let token = bearer(headers)
        .ok_or_else(|| unauthorized("send the admin token as 'Authorization: Bearer <token>'"))?;
    // Compare digests, so the comparison's time depends on neither length.
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let (a, b) = (digest(token), digest(expected.expose()));
    let equal = a
        .as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0;
    if equal {
        Ok(())
    } else {
        Err(unauthorized("the admin token is wrong"))
    }
}

/// The id of the account whose API key the request carries.
pub async fn require_account(state: &AppState, headers: &HeaderMap) -> Result<String, Problem> {
    let key = bearer(headers)
        .ok_or_else(|| unauthorized("send an API key as 'Authorization: Bearer <key>'"))?;
    match state.store.authenticate(key).await {
        Ok(Some(account)) => Ok(account),
        Ok(None) => Err(unauthorized("the API key is unknown or revoked")),
        Err(e) => Err(store_problem(state, e)),
    }
}
