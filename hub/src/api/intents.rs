//! Settling intents no commit settled (`crate::store::intents`): every
//! [`EVERY`], each intent older than [`SETTLE_AFTER_MS`] is compared with
//! what the provider holds at its path — the content's size and
//! CRC64/NVME, read back, or nothing there (and nothing at a move's
//! source) — and its change is recorded when the provider holds what the
//! change made. One the provider does not hold yet is looked at again
//! every [`AGAIN_MS`] and dropped once older than [`DROP_AFTER_MS`]; one
//! whose provider does not answer is put off [`AGAIN_UNANSWERED_MS`], so
//! it does not hold the others up. A commit that arrives after its intent was settled records nothing
//! if the intent was applied, and its change if it was dropped (the
//! provider was slower than the settling), so each change is recorded once.

use std::sync::Arc;
use std::time::Duration;

use ferry_common::content::model::Intent;
use ferry_common::content::transfer::checksums_of;
use ferry_common::problem::{ErrorCode, Problem};
use ferry_common::provider::problem as provider_problem;
use opendal::{ErrorKind, Operator};
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::store::{Outcome, PendingIntent, now_ms};

/// How old an intent must be before it is looked at: a change being made
/// now is settled by its own commit.
pub const SETTLE_AFTER_MS: i64 = 5_000;
/// How old an intent must be before it is dropped when the provider does
/// not hold its change: a copy may still be under way before that (and a
/// connection just made may not be on the replica yet).
pub const DROP_AFTER_MS: i64 = 60_000;
/// How long an intent its writer gave up is kept before it is dropped if
/// the provider does not hold its change.
pub const ABANDONED_DROP_AFTER_MS: i64 = 3_000;
/// When an intent that could not be settled is looked at again.
const AGAIN_MS: i64 = 5_000;
/// … and one whose provider did not answer.
const AGAIN_UNANSWERED_MS: i64 = 30_000;
/// How often intents are looked for.
const EVERY: Duration = Duration::from_secs(2);
/// How long settled intents are kept (a commit arriving later learns of
/// the settling from them).
const KEEP_SETTLED_MS: i64 = 86_400_000;

/// Settles what is left, every [`EVERY`], until `stop`.
pub async fn settle(state: Arc<AppState>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
        if !state.store.writable() {
            continue;
        }
        let now = now_ms();
        match state
            .store
            .pending_intents(now - SETTLE_AFTER_MS, now, 100)
            .await
        {
            Ok(pending) => {
                for p in pending {
                    settle_one(&state, p).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not look for unsettled intents"),
        }
        if let Err(e) = state.store.forget_intents(now - KEEP_SETTLED_MS).await {
            tracing::debug!(error = %e, "could not forget settled intents");
        }
    }
}

/// Intent `id`'s writer gave it up (its provider write failed, or its
/// request went away before the commit): looked at now, and dropped
/// [`ABANDONED_DROP_AFTER_MS`] from now if the provider does not hold its
/// change by then (a write whose failure was only a lost answer may still
/// land), so the path is free for other writers within seconds rather
/// than a minute. Runs apart from the writer's answer.
pub async fn abandoned(state: Arc<AppState>, id: String) {
    let drop_at = now_ms() + ABANDONED_DROP_AFTER_MS;
    let pending = match state.store.abandon_intent(&id, drop_at).await {
        Ok(()) => state.store.pending_intent(&id).await,
        Err(e) => Err(e),
    };
    match pending {
        Ok(Some(p)) => settle_one(&state, p).await,
        Ok(None) => {}
        Err(e) => tracing::debug!(intent = %id, error = %e, "could not give an intent up"),
    }
}

async fn settle_one(state: &AppState, p: PendingIntent) {
    let mut change = p.intent.change.clone();
    let account = change.event.as_ref().map(|e| e.account_id.clone());
    let op = match account {
        Some(a) => super::connection_operator(state, &a, &p.intent.connection_id).await,
        None => Err(Problem::new(ErrorCode::ConnectionNotFound, "no account")),
    };
    let held = match op {
        Ok(op) => holds(&op, &p.intent).await,
        // The connection (or its account) is gone: nothing to record.
        Err(e) if e.error_code() == ErrorCode::ConnectionNotFound => Ok(None),
        Err(e) => Err(e),
    };
    let drop_at = p.drop_at.unwrap_or(p.created_at + DROP_AFTER_MS);
    let id = p.id.as_str();
    let again = |after: i64| async move {
        if let Err(e) = state.store.retry_intent(id, now_ms() + after).await {
            tracing::debug!(intent = %id, error = %e, "could not put an intent off");
        }
    };
    let (outcome, modified_ms) = match held {
        Ok(Some(modified_ms)) => (Outcome::Applied, modified_ms),
        Ok(None) if now_ms() >= drop_at => (Outcome::Dropped, None),
        Ok(None) => return again(AGAIN_MS.min(drop_at - now_ms()).max(250)).await,
        Err(e) => {
            tracing::warn!(intent = %p.id, path = %p.intent.path, problem = %e, "cannot settle an intent yet: the provider does not answer");
            return again(AGAIN_UNANSWERED_MS).await;
        }
    };
    if let Some(meta) = change.upsert.as_mut() {
        meta.provider_modified_ms = modified_ms;
    }
    match state.store.settle_intent(&p.id, outcome, &change).await {
        Ok(Some(outcome)) => {
            state.metrics.intent_settled(outcome);
            tracing::info!(
                intent = %p.id,
                connection.id = %p.intent.connection_id,
                path = %p.intent.path,
                outcome = ?outcome,
                age_ms = now_ms() - p.created_at,
                "settled a change whose record was lost, by what the provider holds"
            );
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(intent = %p.id, error = %e, "could not settle an intent"),
    }
}

/// Whether the provider holds at the intent's path what its change made:
/// `Some` with its modification time (Unix ms) when it does.
async fn holds(op: &Operator, intent: &Intent) -> Result<Option<Option<i64>>, Problem> {
    let scheme = op.info().scheme();
    let stat = match op.stat(&intent.path).await {
        Ok(m) => Some(m),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(provider_problem(&e, scheme, "stat")),
    };
    if let Some(gone) = &intent.also_absent {
        match op.stat(gone).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Ok(_) => return Ok(None),
            Err(e) => return Err(provider_problem(&e, scheme, "stat")),
        }
    }
    let (size, crc, m) = match (intent.expect, stat) {
        (None, None) => return Ok(Some(None)),
        (None, Some(_)) | (Some(_), None) => return Ok(None),
        (Some((size, crc)), Some(m)) if m.is_file() && m.content_length() == size => (size, crc, m),
        (Some(_), Some(_)) => return Ok(None),
    };
    let sums = checksums_of(op, &intent.path, size, Vec::new(), "reading a change back").await?;
    let modified = m.last_modified().map(|t| t.into_inner().as_millisecond());
    Ok((sums.crc64nvme == crc).then_some(modified))
}
