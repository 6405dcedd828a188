//! Operators of the connections in use, built once from their sealed
//! configuration and kept while the connection exists. (A `memory`
//! connection's files live in its operator, so it is never rebuilt.)

use std::collections::HashMap;
use std::sync::Mutex;

use ferry_common::problem::{ErrorCode, Problem};
use opendal::Operator;

use super::AppState;
use crate::store::ConnectionRow;

/// Connection id → operator.
#[derive(Debug, Default)]
pub struct OperatorCache {
    ops: Mutex<HashMap<String, Operator>>,
}

impl OperatorCache {
    /// Remembers the operator of a connection just created.
    pub fn insert(&self, connection_id: &str, op: Operator) {
        self.ops
            .lock()
            .expect("operator cache poisoned")
            .insert(connection_id.to_owned(), op);
    }

    /// Forgets a deleted connection.
    pub fn remove(&self, connection_id: &str) {
        self.ops
            .lock()
            .expect("operator cache poisoned")
            .remove(connection_id);
    }

    pub(super) fn get(&self, connection_id: &str) -> Option<Operator> {
        self.ops
            .lock()
            .expect("operator cache poisoned")
            .get(connection_id)
            .cloned()
    }
}

/// Opens a connection's sealed configuration.
pub fn open_config(state: &AppState, row: &ConnectionRow) -> Result<serde_json::Value, Problem> {
    let plain = state.master_key.open(&row.config_sealed, &row.id).map_err(|e| {
        tracing::error!(connection.id = %row.id, error = %e, "cannot open a connection's configuration");
        Problem::new(ErrorCode::Internal, "the connection's configuration cannot be decrypted")
    })?;
    serde_json::from_slice(&plain).map_err(|e| {
        tracing::error!(connection.id = %row.id, error = %e, "a connection's configuration is not JSON");
        Problem::new(ErrorCode::Internal, "the connection's configuration is damaged")
    })
}

/// The operator of a stored connection, built on first use.
pub async fn operator_for(state: &AppState, row: &ConnectionRow) -> Result<Operator, Problem> {
    if let Some(op) = state.operators.get(&row.id) {
        return Ok(op);
    }
    let config = open_config(state, row)?;
    let built = state.providers.build(&row.provider, &config).await.map_err(|e| {
        let why = ferry_common::provider::scrub(&e.to_string());
        tracing::warn!(connection.id = %row.id, error = %why, "cannot build a stored connection's provider");
        Problem::new(e.code(), format!("the connection's provider cannot be used: {why}"))
    })?;
    state.operators.insert(&row.id, built.op.clone());
    Ok(built.op)
}
