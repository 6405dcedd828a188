//! The hub as the content path's metadata host: lookups and commits go to
//! the store, commits to one object are serialised by in-process locks.

use std::sync::Arc;

use ferry_common::content::model::{Commit, Intent, ObjectMeta, Transfer};
use ferry_common::content::{MetaHost, Node};
use ferry_common::problem::{ErrorCode, Problem};
use futures_util::future::BoxFuture;

use super::{AppState, store_problem};
use crate::store::{Conflicting, StoreError};

/// Records `intent` on the primary, for the spoke `made_by` (`None`: the
/// hub's own change), or the change is not made: a store that cannot take
/// this cannot take the commit either (`503`). Another change first is
/// `409 write_conflict`, or `412 precondition_failed` for a change with
/// conditions whose path was recorded since it began.
pub(super) async fn record_intent(
    state: &AppState,
    intent: &Intent,
    made_by: Option<&str>,
) -> Result<String, Problem> {
    super::writable(state).await?;
    match state.store.record_intent(intent, made_by).await {
        Ok(id) => Ok(id),
        Err(StoreError::WriteConflict(Conflicting::Recorded)) if intent.conditional => {
            Err(Problem::new(
                ErrorCode::PreconditionFailed,
                "another change to the object was recorded since this one began: the request's conditions no longer hold; nothing was changed",
            ))
        }
        Err(e) => Err(store_problem(state, e)),
    }
}

/// The hub's [`MetaHost`].
#[derive(Debug, Clone)]
pub struct HubHost {
    state: Arc<AppState>,
    via: String,
}

impl HubHost {
    /// A host recording transfers as carried by `via` (`hub`, or the spoke
    /// that forwarded the request).
    pub fn new(state: Arc<AppState>, via: impl Into<String>) -> Self {
        Self {
            state,
            via: via.into(),
        }
    }
}

impl MetaHost for HubHost {
    fn lookup<'a>(
        &'a self,
        connection_id: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Option<ObjectMeta>, Problem>> {
        Box::pin(async move {
            self.state
                .store
                .get_object(connection_id, path)
                .await
                .map_err(|e| store_problem(&self.state, e))
        })
    }

    fn commit(&self, commit: Commit) -> BoxFuture<'_, Result<(), Problem>> {
        Box::pin(async move {
            self.state
                .store
                .commit(&commit)
                .await
                .map_err(|e| store_problem(&self.state, e))
        })
    }

    fn ready_to_commit(&self) -> BoxFuture<'_, Result<(), Problem>> {
        Box::pin(super::writable(&self.state))
    }

    fn intend<'a>(&'a self, intent: &'a Intent) -> BoxFuture<'a, Result<Option<String>, Problem>> {
        Box::pin(async move { record_intent(&self.state, intent, None).await.map(Some) })
    }

    fn abandon(&self, id: Option<&str>) {
        if let Some(id) = id {
            tokio::spawn(super::intents::abandoned(self.state.clone(), id.to_owned()));
        }
    }

    fn log_transfer(&self, transfer: Transfer) -> BoxFuture<'static, ()> {
        let state = self.state.clone();
        Box::pin(async move {
            if let Err(e) = state.transfer_log.push(&state.store, transfer).await {
                tracing::warn!(error = %e, "could not log a transfer");
            }
        })
    }

    fn node(&self) -> Node<'_> {
        Node {
            locks: &self.state.locks,
            metrics: &self.state.metrics.content,
        }
    }

    fn via(&self) -> &str {
        &self.via
    }

    fn track(&self, delta: i64) {
        self.state.metrics.active_transfers(delta);
    }

    fn provider_rate_limited(&self, connection: &str) {
        super::slow_down(&self.state, connection);
    }
}
