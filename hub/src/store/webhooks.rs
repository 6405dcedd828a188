//! Webhooks: an account's endpoints, and the deliveries of its events to
//! them (see `crate::webhooks` for sending).
//!
//! A delivery is written in the transaction that records its event
//! ([`Store::enqueue_webhooks`], called by `insert_event`), so an event is
//! never recorded without its deliveries nor a delivery sent for an event
//! that was not. The pending deliveries are the outbox; delivered and
//! failed ones stay as the delivery log, with every attempt, until they
//! are removed for their age.
//!
//! Each endpoint's deliveries are sent one at a time in the order of their
//! events: only the oldest pending delivery of an endpoint (its head) is
//! taken, and a hub takes it with a lease ([`Store::claim_deliveries`]), so
//! with several hubs sharing the store one hub at a time sends it. The
//! lease is taken by an `UPDATE` that checks the row is still free: on
//! PostgreSQL a second hub's `UPDATE` of the same row waits for the first
//! to commit, then finds the lease taken and skips it.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{EventRecord, Store, StoreError, WriteTx, now_ms};

/// The event types an endpoint may ask for: `object.` and the feed's
/// kind (an object is a file or a folder).
pub const EVENT_TYPES: &[&str] = &[
    "object.created",
    "object.updated",
    "object.deleted",
    "object.moved",
    "object.copied",
];

/// The webhook type of an event of `kind`.
pub fn event_type(kind: super::EventKind) -> &'static str {
    match kind {
        super::EventKind::Created => "object.created",
        super::EventKind::Updated => "object.updated",
        super::EventKind::Deleted => "object.deleted",
        super::EventKind::Moved => "object.moved",
        super::EventKind::Copied => "object.copied",
    }
}

/// An endpoint, without its secrets.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// Its id (`wh_…`).
    pub id: String,
    /// The account it belongs to.
    #[serde(skip)]
    pub account_id: String,
    /// Where deliveries are posted.
    pub url: String,
    /// The event types it receives; every type when `None`.
    pub events: Option<Vec<String>>,
    /// The account's note about it.
    pub description: String,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// Until when the secret replaced by the last rotation still signs
    /// deliveries too, unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<i64>,
    /// When it was disabled (no deliveries are made for it), if it is.
    pub disabled_at: Option<i64>,
    /// Why: `gone` (it answered 410), `failing` (a delivery used its whole
    /// retry schedule) or `account` (the account disabled it).
    pub disabled_reason: Option<String>,
}

/// What sending to an endpoint needs: where, and its secrets (sealed).
#[derive(Debug, Clone)]
pub struct EndpointTarget {
    /// The URL.
    pub url: String,
    /// The current secret, sealed.
    pub secret_sealed: Vec<u8>,
    /// The secret a rotation replaced, sealed, while it still signs.
    pub old_secret_sealed: Option<Vec<u8>>,
    /// Whether the endpoint is disabled.
    pub disabled: bool,
}

/// A change to an endpoint; `None` leaves a member as it is.
#[derive(Debug, Default, Clone)]
pub struct EndpointChange {
    /// A new URL.
    pub url: Option<String>,
    /// New event types (`Some(None)`: every type).
    pub events: Option<Option<Vec<String>>>,
    /// A new description.
    pub description: Option<String>,
    /// Enable (true) or disable (false).
    pub enabled: Option<bool>,
}

/// One attempt to send a delivery.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attempt {
    /// 1, 2, 3… for the delivery.
    pub attempt: i64,
    /// When it began, unix milliseconds.
    pub at: i64,
    /// The HTTP status the endpoint answered, if it answered.
    pub status: Option<i64>,
    /// Why there was no answer: `timeout`, `connect`, `refused` (an
    /// internal address), `request` (another failure of the request),
    /// `secret` (the endpoint's secret could not be opened).
    pub error: Option<String>,
    /// How long it took, milliseconds.
    pub latency_ms: i64,
}

/// A delivery as the account sees it in the log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Delivery {
    /// The message id, sent as `webhook-id` (the same on every attempt).
    pub id: String,
    /// The endpoint's id.
    pub endpoint_id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// When it was made (its event was recorded), unix milliseconds.
    pub created_at: i64,
    /// When the next attempt is due, while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<i64>,
    /// When it was delivered or given up.
    pub done_at: Option<i64>,
    /// The payload sent.
    pub payload: serde_json::Value,
    /// Every attempt, first first.
    pub attempts: Vec<Attempt>,
    /// Its position in the log (for paging).
    #[serde(skip)]
    pub row: i64,
}

/// A delivery a hub has taken to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The row's id.
    pub row: i64,
    /// The message id.
    pub msg_id: String,
    /// The endpoint's id.
    pub endpoint_id: String,
    /// The payload, as sent.
    pub payload: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// Attempts made in the current round (a redelivery starts a new one).
    pub in_round: i64,
    /// When it was made, unix milliseconds.
    pub created_at: i64,
}

/// What became of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    /// The endpoint took it (2xx).
    Delivered,
    /// Try again at this time (unix ms).
    Retry(i64),
    /// Given up: the schedule is over. The endpoint is disabled, and its
    /// pending deliveries fail with it.
    Failed,
    /// The endpoint answered 410 Gone: it is disabled, and its pending
    /// deliveries with it.
    Gone,
    /// The endpoint is disabled or deleted: nothing was sent.
    Dropped,
}

/// Pending deliveries, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    /// How many.
    pub pending: i64,
    /// When the oldest was made, unix ms.
    pub oldest: Option<i64>,
}

const ENDPOINT_COLUMNS: &str = "id, account_id, url, event_types, description, created_at, \
     old_secret_until, disabled_at, disabled_why";

fn endpoint_from(row: &AnyRow, now: i64) -> Result<WebhookEndpoint, sqlx::Error> {
    let types: Option<String> = row.try_get("event_types")?;
    let old_until: Option<i64> = row.try_get("old_secret_until")?;
    Ok(WebhookEndpoint {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        url: row.try_get("url")?,
        events: types.map(|t| t.split(',').map(str::to_owned).collect()),
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        previous_secret_expires_at: old_until.filter(|&u| u > now),
        disabled_at: row.try_get("disabled_at")?,
        disabled_reason: row.try_get("disabled_why")?,
    })
}

/// An endpoint's event types as stored: joined by commas, `NULL` for all.
fn stored_types(events: &Option<Vec<String>>) -> Option<String> {
    events.as_ref().map(|e| e.join(","))
}

/// Whether an endpoint whose stored types are `types` wants `event_type`.
fn wants(types: Option<&str>, event_type: &str) -> bool {
    types.is_none_or(|t| t.split(',').any(|x| x == event_type))
}

impl Store {
    /// Records a new endpoint with its secret sealed as `secret_sealed`.
    ///
    /// An account may have at most `max` endpoints: at that many this
    /// writes nothing and answers `Some` of how many it has. The count and
    /// the insert share a transaction serialised per account, so two
    /// creations at once cannot both pass the cap.
    pub async fn create_webhook_endpoint(
        &self,
        e: &WebhookEndpoint,
        secret_sealed: &[u8],
        max: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.write_tx().await?;
        self.serialise(&mut tx, &format!("webhook_endpoints:{}", e.account_id))
            .await?;
        let have: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_endpoints WHERE account_id = $1")
                .bind(&e.account_id)
                .fetch_one(&mut *tx)
                .await?;
        if have >= max {
            return Ok(Some(have));
        }
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, account_id, url, event_types, description, \
             secret_sealed, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&e.id)
        .bind(&e.account_id)
        .bind(&e.url)
        .bind(stored_types(&e.events))
        .bind(&e.description)
        .bind(secret_sealed)
        .bind(e.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(None)
    }

    /// The account's endpoints, oldest first.
    pub async fn list_webhook_endpoints(
        &self,
        account_id: &str,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE account_id = $1 \
             ORDER BY created_at, id"
        )))
        .bind(account_id)
        .fetch_all(self.read_pool().await)
        .await?;
        let now = now_ms();
        Ok(rows
            .iter()
            .map(|r| endpoint_from(r, now))
            .collect::<Result<_, _>>()?)
    }

    /// The account's endpoint `id`.
    pub async fn webhook_endpoint(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE account_id = $1 AND id = $2"
        )))
        .bind(account_id)
        .bind(id)
        .fetch_optional(self.read_pool().await)
        .await?;
        Ok(row.map(|r| endpoint_from(&r, now_ms())).transpose()?)
    }

    /// Changes the account's endpoint `id`; false if it has none. Enabling
    /// it again leaves the deliveries failed while it was disabled as they
    /// are (they can be sent again one by one).
    pub async fn update_webhook_endpoint(
        &self,
        account_id: &str,
        id: &str,
        change: &EndpointChange,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        // A member left out keeps its value (`events` may be set to null:
        // every type).
        let found = sqlx::query(
            "UPDATE webhook_endpoints SET url = COALESCE($1, url), \
             description = COALESCE($2, description), \
             event_types = CASE WHEN $3 = 1 THEN $4 ELSE event_types END \
             WHERE account_id = $5 AND id = $6",
        )
        .bind(change.url.as_deref())
        .bind(change.description.as_deref())
        .bind(i64::from(change.events.is_some()))
        .bind(change.events.as_ref().and_then(stored_types))
        .bind(account_id)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !found {
            return Ok(false);
        }
        match change.enabled {
            Some(true) => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET disabled_at = NULL, disabled_why = NULL \
                     WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            Some(false) => disable(&mut tx, id, "account", now).await?,
            None => {}
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Makes `new_sealed` the endpoint's secret; the one it replaces still
    /// signs deliveries (beside the new one) until `old_until` (unix ms).
    /// False if the account has no such endpoint.
    pub async fn rotate_webhook_secret(
        &self,
        account_id: &str,
        id: &str,
        new_sealed: &[u8],
        old_until: i64,
    ) -> Result<bool, StoreError> {
        self.refuse_if_down()?;
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET old_secret_sealed = secret_sealed, \
             old_secret_until = $1, secret_sealed = $2 WHERE account_id = $3 AND id = $4",
        )
        .bind(old_until)
        .bind(new_sealed)
        .bind(account_id)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.note_write().await;
        Ok(done > 0)
    }

    /// Deletes the account's endpoint `id` with its deliveries; false if it
    /// has none.
    pub async fn delete_webhook_endpoint(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        self.refuse_if_down()?;
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        self.note_write().await;
        Ok(done > 0)
    }

    /// Where and how to send to endpoint `id` now: `None` if it is gone.
    /// The secret a rotation replaced is given while it still signs.
    pub async fn webhook_target(&self, id: &str) -> Result<Option<EndpointTarget>, StoreError> {
        let row = sqlx::query(
            "SELECT url, secret_sealed, old_secret_sealed, old_secret_until, disabled_at \
             FROM webhook_endpoints WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let now = now_ms();
        row.map(|r| {
            let old_until: Option<i64> = r.try_get("old_secret_until")?;
            let disabled: Option<i64> = r.try_get("disabled_at")?;
            Ok(EndpointTarget {
                url: r.try_get("url")?,
                secret_sealed: r.try_get("secret_sealed")?,
                old_secret_sealed: if old_until.is_some_and(|u| u > now) {
                    r.try_get("old_secret_sealed")?
                } else {
                    None
                },
                disabled: disabled.is_some(),
            })
        })
        .transpose()
        .map_err(StoreError::Database)
    }

    /// Adds a delivery of the event just inserted in `tx` as number `seq`
    /// of its account's feed for each enabled endpoint of its account that
    /// wants its type; called by `insert_event`.
    pub(super) async fn enqueue_webhooks(
        &self,
        tx: &mut WriteTx<'_>,
        e: &EventRecord,
        seq: i64,
    ) -> Result<(), sqlx::Error> {
        let endpoints: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT id, event_types FROM webhook_endpoints \
             WHERE account_id = $1 AND disabled_at IS NULL ORDER BY id",
        )
        .bind(&e.account_id)
        .fetch_all(&mut **tx)
        .await?;
        let event_type = event_type(e.kind);
        let wanted: Vec<&String> = endpoints
            .iter()
            .filter(|(_, types)| wants(types.as_deref(), event_type))
            .map(|(id, _)| id)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        tx.outbox = true;
        let payload = payload(e, seq).to_string();
        let now = now_ms();
        for endpoint in wanted {
            sqlx::query(
                "INSERT INTO webhook_deliveries (msg_id, endpoint_id, account_id, event_type, \
                 payload, created_at, state, next_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $6)",
            )
            .bind(super::new_id("msg"))
            .bind(endpoint)
            .bind(&e.account_id)
            .bind(event_type)
            .bind(&payload)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// What wakes this hub's sender when a commit added deliveries.
    pub fn outbox_nudge(&self) -> Arc<tokio::sync::Notify> {
        self.outbox.clone()
    }

    /// Takes up to `limit` deliveries due at `now`, each the oldest pending
    /// one of its endpoint and not leased by another hub, leasing them to
    /// `holder` until `until` (unix ms).
    pub async fn claim_deliveries(
        &self,
        holder: &str,
        now: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.refuse_if_down()?;
        // Most of the time nothing is due: a read, not a write, says so
        // (on SQLite a write takes the one writer's lock).
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_at <= $1 LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let free = "next_at <= $3 AND (lease_until IS NULL OR lease_until < $3)";
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_deliveries SET lease_holder = $1, lease_until = $2 \
             WHERE state = 'pending' AND {free} AND id IN ( \
               SELECT d.id FROM webhook_deliveries d JOIN ( \
                 SELECT MIN(id) AS id FROM webhook_deliveries WHERE state = 'pending' \
                 GROUP BY endpoint_id) h ON d.id = h.id \
               WHERE d.next_at <= $3 AND (d.lease_until IS NULL OR d.lease_until < $3) \
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries l WHERE l.state = 'pending' \
                 AND l.endpoint_id = d.endpoint_id AND l.lease_until >= $3) \
               ORDER BY d.id LIMIT CAST($4 AS BIGINT)) \
             RETURNING id, msg_id, endpoint_id, payload, attempts, round_from, created_at"
        )))
        .bind(holder)
        .bind(until)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                let attempts: i64 = r.try_get("attempts")?;
                let round_from: i64 = r.try_get("round_from")?;
                Ok(Claimed {
                    row: r.try_get("id")?,
                    msg_id: r.try_get("msg_id")?,
                    endpoint_id: r.try_get("endpoint_id")?,
                    payload: r.try_get("payload")?,
                    attempts,
                    in_round: attempts - round_from,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        if !claimed.is_empty() {
            self.note_write().await;
        }
        claimed.sort_by_key(|c| c.row);
        Ok(claimed)
    }

    /// Records an attempt `holder` made of delivery `c` and what follows
    /// from it, in one transaction. An attempt of a delivery whose lease
    /// another hub has taken since (this one overran it) is still logged,
    /// but changes nothing else.
    pub async fn finish_attempt(
        &self,
        holder: &str,
        c: &Claimed,
        a: &Attempt,
        after: AfterAttempt,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        let (state, next_at, done_at) = match after {
            AfterAttempt::Delivered => ("delivered", now, Some(now)),
            AfterAttempt::Retry(at) => ("pending", at, None),
            AfterAttempt::Failed | AfterAttempt::Gone | AfterAttempt::Dropped => {
                ("failed", now, Some(now))
            }
        };
        let counted = i64::from(after != AfterAttempt::Dropped);
        // Only while the lease is still this hub's: the update locks the
        // row, and re-checks the lease against what is committed.
        let ours = sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, next_at = $2, done_at = $3, \
             attempts = attempts + $4, last_status = $5, last_error = $6, \
             lease_holder = NULL, lease_until = NULL \
             WHERE id = $7 AND state = 'pending' AND lease_holder = $8",
        )
        .bind(state)
        .bind(next_at)
        .bind(done_at)
        .bind(counted)
        .bind(a.status)
        .bind(a.error.as_deref())
        .bind(c.row)
        .bind(holder)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !ours {
            // Another hub took the lease since (this one overran it): the
            // attempt is still logged, the row locked first so that the
            // attempts are numbered one at a time.
            let exists =
                sqlx::query("UPDATE webhook_deliveries SET attempts = attempts WHERE id = $1")
                    .bind(c.row)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
            if !exists {
                // Its endpoint was deleted meanwhile.
                return Ok(());
            }
        }
        if after != AfterAttempt::Dropped {
            sqlx::query(
                "INSERT INTO webhook_attempts (delivery_id, attempt, at, status, error, \
                 latency_ms, sent_by) VALUES ($1, \
                 (SELECT COALESCE(MAX(attempt), 0) + 1 FROM webhook_attempts WHERE delivery_id = $1), \
                 $2, $3, $4, $5, $6)",
            )
            .bind(c.row)
            .bind(a.at)
            .bind(a.status)
            .bind(a.error.as_deref())
            .bind(a.latency_ms)
            .bind(holder)
            .execute(&mut *tx)
            .await?;
        }
        if ours {
            match after {
                AfterAttempt::Gone => disable(&mut tx, &c.endpoint_id, "gone", now).await?,
                // A delivery that used its whole schedule: the endpoint has
                // failed for a day, and its backlog would only grow.
                AfterAttempt::Failed => disable(&mut tx, &c.endpoint_id, "failing", now).await?,
                _ => {}
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The endpoint's deliveries, newest first, below row `before` (all
    /// when `None`), with their attempts.
    pub async fn list_deliveries(
        &self,
        account_id: &str,
        endpoint_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, msg_id, endpoint_id, event_type, payload, created_at, state, next_at, \
             done_at FROM webhook_deliveries WHERE account_id = $1 AND endpoint_id = $2 \
             AND id < $3 ORDER BY id DESC LIMIT CAST($4 AS BIGINT)",
        )
        .bind(account_id)
        .bind(endpoint_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(self.read_pool().await)
        .await?;
        // The page's attempts in one query: rows between its first and
        // last delivery of this endpoint.
        let mut attempts: HashMap<i64, Vec<Attempt>> = HashMap::new();
        if let (Some(newest), Some(oldest)) = (rows.first(), rows.last()) {
            let (newest, oldest): (i64, i64) = (newest.try_get("id")?, oldest.try_get("id")?);
            for a in sqlx::query(
                "SELECT a.delivery_id, a.attempt, a.at, a.status, a.error, a.latency_ms \
                 FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id \
                 WHERE d.endpoint_id = $1 AND a.delivery_id BETWEEN $2 AND $3 \
                 ORDER BY a.delivery_id, a.attempt",
            )
            .bind(endpoint_id)
            .bind(oldest)
            .bind(newest)
            .fetch_all(self.read_pool().await)
            .await?
            {
                attempts
                    .entry(a.try_get("delivery_id")?)
                    .or_default()
                    .push(Attempt {
                        attempt: a.try_get("attempt")?,
                        at: a.try_get("at")?,
                        status: a.try_get("status")?,
                        error: a.try_get("error")?,
                        latency_ms: a.try_get("latency_ms")?,
                    });
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let row: i64 = r.try_get("id")?;
            let state: String = r.try_get("state")?;
            let payload: String = r.try_get("payload")?;
            let attempts = attempts.remove(&row).unwrap_or_default();
            out.push(Delivery {
                id: r.try_get("msg_id")?,
                endpoint_id: r.try_get("endpoint_id")?,
                event_type: r.try_get("event_type")?,
                next_attempt_at: if state == "pending" {
                    Some(r.try_get("next_at")?)
                } else {
                    None
                },
                state,
                created_at: r.try_get("created_at")?,
                done_at: r.try_get("done_at")?,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| StoreError::Corrupt(format!("a webhook payload: {e}")))?,
                attempts,
                row,
            });
        }
        Ok(out)
    }

    /// Sends the account's delivery `msg_id` to endpoint `endpoint_id`
    /// again, with the same message id and a new round of attempts, due
    /// now. Its earlier attempts stay in its log. Returns false if there is
    /// no such delivery, and `Err(Conflict)` while it is pending.
    pub async fn redeliver(
        &self,
        account_id: &str,
        endpoint_id: &str,
        msg_id: &str,
    ) -> Result<bool, StoreError> {
        self.refuse_if_down()?;
        let mut tx = self.write_tx().await?;
        let state: Option<String> = sqlx::query_scalar(
            "SELECT state FROM webhook_deliveries WHERE account_id = $1 AND endpoint_id = $2 \
             AND msg_id = $3",
        )
        .bind(account_id)
        .bind(endpoint_id)
        .bind(msg_id)
        .fetch_optional(&mut *tx)
        .await?;
        match state.as_deref() {
            None => return Ok(false),
            Some("pending") => {
                return Err(StoreError::Conflict("a pending delivery of this message"));
            }
            Some(_) => {}
        }
        sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', next_at = $1, done_at = NULL, \
             round_from = attempts, lease_holder = NULL, lease_until = NULL WHERE msg_id = $2",
        )
        .bind(now_ms())
        .bind(msg_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The outbox's depth.
    pub async fn outbox_depth(&self) -> Result<OutboxDepth, StoreError> {
        let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries WHERE state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(OutboxDepth { pending, oldest })
    }

    /// Removes up to `batch` delivered or failed deliveries done before
    /// `before` (unix ms), with their attempts; returns how many.
    pub async fn purge_deliveries(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
        self.refuse_if_down()?;
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE state <> 'pending' AND done_at < $1 ORDER BY id LIMIT CAST($2 AS BIGINT))",
        )
        .bind(before)
        .bind(batch)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if done > 0 {
            self.note_write().await;
        }
        Ok(done)
    }
}

/// Disables endpoint `id` for `why` and fails its pending deliveries.
async fn disable(tx: &mut WriteTx<'_>, id: &str, why: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_endpoints SET disabled_at = COALESCE(disabled_at, $1), disabled_why = $2 \
         WHERE id = $3",
    )
    .bind(now)
    .bind(why)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE webhook_deliveries SET state = 'failed', done_at = $1, last_error = 'endpoint_disabled', \
         lease_holder = NULL, lease_until = NULL WHERE endpoint_id = $2 AND state = 'pending'",
    )
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The payload of the delivery of event `e`, numbered `seq` in its
/// account's feed: `{type, timestamp, data}`, `data` being the event as
/// the feed lists it.
pub fn payload(e: &EventRecord, seq: i64) -> serde_json::Value {
    let event = super::Event {
        id: seq,
        kind: e.kind,
        connection_id: e.connection_id.clone(),
        path: e.path.clone(),
        from: e.from_path.clone(),
        size: e.size,
        at: e.at,
        origin: e.origin,
    };
    let timestamp = jiff::Timestamp::from_millisecond(e.at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    serde_json::json!({
        "type": event_type(e.kind),
        "timestamp": timestamp,
        "data": event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{account_with_connection, store};
    use crate::store::{Commit, EventKind, Origin};

    fn endpoint(account: &str, id: &str, events: Option<Vec<&str>>) -> WebhookEndpoint {
        WebhookEndpoint {
            id: id.into(),
            account_id: account.into(),
            url: format!("https://hooks.example.com/{id}"),
            events: events.map(|e| e.into_iter().map(str::to_owned).collect()),
            description: String::new(),
            created_at: now_ms(),
            previous_secret_expires_at: None,
            disabled_at: None,
            disabled_reason: None,
        }
    }

    async fn event(store: &Store, account: &str, conn: &str, kind: EventKind, path: &str) {
        let e = EventRecord {
            account_id: account.into(),
            connection_id: conn.into(),
            kind,
            path: path.into(),
            from_path: None,
            size: Some(3),
            at: now_ms(),
            origin: Origin::Ferry,
        };
        store
            .commit(&Commit {
                event: Some(e),
                ..Commit::default()
            })
            .await
            .unwrap();
    }

    /// What `holder` takes at `now`, leased for a minute.
    async fn claim(store: &Store, holder: &str, now: i64) -> Vec<Claimed> {
        store
            .claim_deliveries(holder, now, now + 60_000, 10)
            .await
            .unwrap()
    }

    /// The endpoint `wh_1` of `account`, as stored now.
    async fn wh_1(store: &Store, account: &str) -> WebhookEndpoint {
        store
            .webhook_endpoint(account, "wh_1")
            .await
            .unwrap()
            .expect("wh_1 exists")
    }

    /// A store with an account, its connection and the endpoint `wh_1`
    /// for every event type.
    async fn with_endpoint() -> (Store, tempfile::TempDir, String, String) {
        let (store, dir) = store().await;
        let (account, conn) = account_with_connection(&store, "con_1").await;
        store
            .create_webhook_endpoint(&endpoint(&account, "wh_1", None), b"s", 20)
            .await
            .unwrap();
        (store, dir, account, conn.id)
    }

    /// Records an attempt `holder` made of `c`, answered `status`.
    async fn finish(
        store: &Store,
        holder: &str,
        c: &Claimed,
        status: Option<i64>,
        after: AfterAttempt,
    ) {
        store
            .finish_attempt(holder, c, &attempt(status), after)
            .await
            .unwrap();
    }

    fn attempt(status: Option<i64>) -> Attempt {
        Attempt {
            attempt: 0,
            at: now_ms(),
            status,
            error: status.is_none().then(|| "connect".into()),
            latency_ms: 3,
        }
    }

    #[tokio::test]
    async fn deliveries_are_queued_with_their_events_and_sent_in_order_one_hub_at_a_time() {
        let (store, _dir) = store().await;
        let (account, conn) = account_with_connection(&store, "con_1").await;
        let (other, other_conn) = account_with_connection(&store, "con_2").await;
        store
            .create_webhook_endpoint(&endpoint(&account, "wh_all", None), b"s", 20)
            .await
            .unwrap();
        store
            .create_webhook_endpoint(
                &endpoint(&account, "wh_del", Some(vec!["object.deleted"])),
                b"s",
                20,
            )
            .await
            .unwrap();
        event(&store, &account, &conn.id, EventKind::Created, "a").await;
        event(&store, &account, &conn.id, EventKind::Deleted, "a").await;
        // Another account's events reach none of these endpoints.
        event(&store, &other, &other_conn.id, EventKind::Created, "b").await;
        assert_eq!(store.outbox_depth().await.unwrap().pending, 3);

        // One head per endpoint; a second hub finds them leased.
        let now = now_ms();
        let first = claim(&store, "hub_a", now).await;
        assert_eq!(first.len(), 2, "{first:?}");
        assert_eq!(claim(&store, "hub_b", now).await, vec![]);
        let all = first.iter().find(|c| c.endpoint_id == "wh_all").unwrap();
        let body: serde_json::Value = serde_json::from_str(&all.payload).unwrap();
        assert_eq!(body["type"], "object.created");
        assert_eq!(body["data"]["id"], 1);
        assert_eq!(body["data"]["path"], "a");
        let del = first.iter().find(|c| c.endpoint_id == "wh_del").unwrap();
        let body: serde_json::Value = serde_json::from_str(&del.payload).unwrap();
        assert_eq!(
            (body["type"].as_str(), body["data"]["id"].as_i64()),
            (Some("object.deleted"), Some(2))
        );

        // A failed attempt keeps the head: the next event waits behind it.
        store
            .finish_attempt(
                "hub_a",
                all,
                &attempt(Some(503)),
                AfterAttempt::Retry(now + 5_000),
            )
            .await
            .unwrap();
        assert_eq!(claim(&store, "hub_a", now + 1).await, vec![]);
        let again = claim(&store, "hub_b", now + 5_000).await;
        assert_eq!(again.len(), 1);
        assert_eq!(
            (
                again[0].msg_id.as_str(),
                again[0].attempts,
                again[0].in_round
            ),
            (all.msg_id.as_str(), 1, 1)
        );
        // A hub whose lease another took since logs its attempt but
        // changes nothing.
        finish(
            &store,
            "hub_a",
            &again[0],
            Some(200),
            AfterAttempt::Delivered,
        )
        .await;
        assert_eq!(store.outbox_depth().await.unwrap().pending, 3);
        finish(
            &store,
            "hub_b",
            &again[0],
            Some(200),
            AfterAttempt::Delivered,
        )
        .await;
        let next = claim(&store, "hub_b", now + 5_000).await;
        assert_eq!(next.len(), 1);
        let body: serde_json::Value = serde_json::from_str(&next[0].payload).unwrap();
        assert_eq!(body["data"]["id"], 2, "the endpoint's next event, in order");

        let log = store
            .list_deliveries(&account, "wh_all", None, 10)
            .await
            .unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].state, "delivered");
        assert_eq!(
            log[1].attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
            vec![Some(503), Some(200), Some(200)]
        );
        assert_eq!(log[0].state, "pending");
        // Another account sees no log of this endpoint.
        assert!(
            store
                .list_deliveries(&other, "wh_all", None, 10)
                .await
                .unwrap()
                .is_empty()
        );

        // A delivered one can be sent again, with its id, in a new round.
        assert!(matches!(
            store.redeliver(&account, "wh_all", &log[0].id).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(
            store
                .redeliver(&account, "wh_all", &log[1].id)
                .await
                .unwrap()
        );
        assert!(!store.redeliver(&other, "wh_all", &log[1].id).await.unwrap());
    }

    #[tokio::test]
    async fn an_endpoint_gone_is_disabled_with_its_pending_deliveries_and_gets_no_more() {
        let (store, _dir, account, conn) = with_endpoint().await;
        event(&store, &account, &conn, EventKind::Created, "a").await;
        event(&store, &account, &conn, EventKind::Updated, "a").await;
        let now = now_ms();
        let c = claim(&store, "hub_a", now).await;
        finish(&store, "hub_a", &c[0], Some(410), AfterAttempt::Gone).await;
        let e = wh_1(&store, &account).await;
        assert_eq!(e.disabled_reason.as_deref(), Some("gone"));
        assert_eq!(store.outbox_depth().await.unwrap().pending, 0);
        event(&store, &account, &conn, EventKind::Deleted, "a").await;
        assert_eq!(store.outbox_depth().await.unwrap().pending, 0);
        let log = store
            .list_deliveries(&account, "wh_1", None, 10)
            .await
            .unwrap();
        assert_eq!(
            log.iter().map(|d| d.state.as_str()).collect::<Vec<_>>(),
            vec!["failed", "failed"]
        );

        // Enabled again, it gets the events that follow.
        assert!(
            store
                .update_webhook_endpoint(
                    &account,
                    "wh_1",
                    &EndpointChange {
                        enabled: Some(true),
                        ..EndpointChange::default()
                    }
                )
                .await
                .unwrap()
        );
        event(&store, &account, &conn, EventKind::Created, "b").await;
        assert_eq!(store.outbox_depth().await.unwrap().pending, 1);

        // Members changed are changed, the others kept; events may go back
        // to every type; another account changes nothing.
        let change = |events: Option<Option<Vec<String>>>, url: Option<&str>| EndpointChange {
            url: url.map(str::to_owned),
            events,
            description: None,
            enabled: None,
        };
        let deletes = Some(Some(vec!["object.deleted".to_owned()]));
        assert!(
            store
                .update_webhook_endpoint(
                    &account,
                    "wh_1",
                    &change(deletes, Some("https://b.example.com/"))
                )
                .await
                .unwrap()
        );
        let e = wh_1(&store, &account).await;
        assert_eq!(
            (e.url.as_str(), e.events.clone(), e.disabled_at),
            (
                "https://b.example.com/",
                Some(vec!["object.deleted".to_owned()]),
                None
            )
        );
        assert!(
            store
                .update_webhook_endpoint(&account, "wh_1", &change(Some(None), None))
                .await
                .unwrap()
        );
        let e = wh_1(&store, &account).await;
        assert_eq!((e.url.as_str(), e.events), ("https://b.example.com/", None));
        assert!(
            !store
                .update_webhook_endpoint(
                    "acc_other",
                    "wh_1",
                    &change(None, Some("https://c.example.com/"))
                )
                .await
                .unwrap()
        );

        // Old finished deliveries go; pending ones stay.
        assert_eq!(store.purge_deliveries(now_ms() + 1, 100).await.unwrap(), 2);
        assert_eq!(store.outbox_depth().await.unwrap().pending, 1);
        // Deleting the endpoint deletes its deliveries.
        assert!(
            store
                .delete_webhook_endpoint(&account, "wh_1")
                .await
                .unwrap()
        );
        assert_eq!(store.outbox_depth().await.unwrap().pending, 0);
    }

    #[tokio::test]
    async fn a_delivery_that_used_its_schedule_disables_its_endpoint_and_a_redelivery_waits_its_turn()
     {
        let (store, _dir, account, conn) = with_endpoint().await;
        for path in ["a", "b"] {
            event(&store, &account, &conn, EventKind::Created, path).await;
        }
        let now = now_ms();
        let c = claim(&store, "hub_a", now).await;
        finish(&store, "hub_a", &c[0], Some(200), AfterAttempt::Delivered).await;
        // The second is being sent when the first is asked for again: the
        // first waits until the endpoint has nothing in flight.
        let second = claim(&store, "hub_a", now).await;
        assert_eq!(second.len(), 1);
        assert!(
            store
                .redeliver(&account, "wh_1", &c[0].msg_id)
                .await
                .unwrap()
        );
        assert_eq!(claim(&store, "hub_b", now).await, vec![]);
        finish(&store, "hub_a", &second[0], Some(500), AfterAttempt::Failed).await;
        let e = wh_1(&store, &account).await;
        assert_eq!(e.disabled_reason.as_deref(), Some("failing"));
        assert_eq!(
            store.outbox_depth().await.unwrap().pending,
            0,
            "its backlog failed with it"
        );
    }

    #[tokio::test]
    async fn creations_at_once_stop_at_the_cap() {
        let (store, _dir) = store().await;
        let (account, _) = account_with_connection(&store, "con_1").await;
        let ids: Vec<String> = (0..6).map(|i| format!("wh_{i}")).collect();
        let made = futures_util::future::join_all(ids.iter().map(|id| {
            let e = endpoint(&account, id, None);
            let store = &store;
            async move { store.create_webhook_endpoint(&e, b"s", 4).await.unwrap() }
        }))
        .await;
        assert_eq!(made.iter().filter(|m| m.is_none()).count(), 4);
        assert!(made.iter().flatten().all(|have| *have == 4), "{made:?}");
        assert_eq!(
            store.list_webhook_endpoints(&account).await.unwrap().len(),
            4
        );
    }

    #[tokio::test]
    async fn a_rotated_secret_signs_until_its_time_is_up() {
        let (store, _dir) = store().await;
        let (account, _) = account_with_connection(&store, "con_1").await;
        store
            .create_webhook_endpoint(&endpoint(&account, "wh_1", None), b"old", 20)
            .await
            .unwrap();
        assert!(
            store
                .rotate_webhook_secret(&account, "wh_1", b"new", now_ms() + 60_000)
                .await
                .unwrap()
        );
        let t = store.webhook_target("wh_1").await.unwrap().unwrap();
        assert_eq!(
            (t.secret_sealed.as_slice(), t.old_secret_sealed.as_deref()),
            (&b"new"[..], Some(&b"old"[..]))
        );
        assert!(
            store
                .rotate_webhook_secret(&account, "wh_1", b"newer", now_ms() - 1)
                .await
                .unwrap()
        );
        let t = store.webhook_target("wh_1").await.unwrap().unwrap();
        assert_eq!(
            (t.secret_sealed.as_slice(), t.old_secret_sealed),
            (&b"newer"[..], None)
        );
        assert!(
            !store
                .rotate_webhook_secret("acc_other", "wh_1", b"x", 0)
                .await
                .unwrap()
        );
    }
}
