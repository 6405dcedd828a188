//! Provider connections: which provider an account uses and its sealed
//! configuration. The store never sees a clear configuration; sealing and
//! opening happen in the API layer with the master key.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, StoreError};

/// A stored connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRow {
    /// `con_…`
    pub id: String,
    /// The owning account.
    pub account_id: String,
    /// Unique within the account.
    pub name: String,
    /// The provider's name (`fs`, `memory`, …).
    pub provider: String,
    /// The provider configuration, sealed with the master key.
    pub config_sealed: Vec<u8>,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// How often the provider is scanned for changes made outside ferry,
    /// in seconds: 0 never (ferry's own writes and, for `fs`, the
    /// kernel's notifications still keep the index current); `None` the
    /// hub's `index.scan_interval_secs`.
    pub scan_interval_secs: Option<i64>,
}

const COLUMNS: &str =
    "id, account_id, name, provider, config_sealed, created_at, scan_interval_secs";

fn from_row(row: &AnyRow) -> Result<ConnectionRow, sqlx::Error> {
    Ok(ConnectionRow {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        provider: row.try_get("provider")?,
        config_sealed: row.try_get("config_sealed")?,
        created_at: row.try_get("created_at")?,
        scan_interval_secs: row.try_get("scan_interval_secs")?,
    })
}

/// The claims of the same kind as `location` (`fs:…`), with the account of
/// each. Claims are few: one per folder an account uses.
async fn claims_like<'e, E>(db: E, location: &str) -> Result<Vec<(String, String)>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let scheme = location.split(':').next().unwrap_or_default();
    Ok(
        sqlx::query_as("SELECT location, account_id FROM location_claims WHERE location LIKE $1")
            .bind(format!("{scheme}:%"))
            .fetch_all(db)
            .await?,
    )
}

/// Whether one of `claims` by another account than `account_id` overlaps
/// `location`.
fn claimed_by_other(claims: &[(String, String)], account_id: &str, location: &str) -> bool {
    claims
        .iter()
        .any(|(l, a)| a != account_id && ferry_common::provider::locations_overlap(l, location))
}

/// What [`Store::reseal_secrets`] sealed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Connections' configurations.
    pub connections: usize,
    /// S3 keys' secrets.
    pub s3_keys: usize,
    /// Webhook endpoints (their secret, and the one a rotation replaced).
    pub webhook_endpoints: usize,
    /// Whether the shared tunnel CA's key.
    pub tunnel_ca: bool,
}

impl Store {
    /// Saves a new connection; `Conflict` if the account already has one
    /// with that name, `LocationInUse` if `location` overlaps a location
    /// another account has claimed. The claim outlives the connection: the
    /// files left there are still that account's.
    pub async fn create_connection(
        &self,
        c: &ConnectionRow,
        location: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        if let Some(location) = location {
            self.serialise(&mut tx, "location_claims").await?;
            // Claims are few (one per folder an account uses): compare them
            // here, in the transaction that inserts, so two accounts racing
            // for one folder cannot both win (SQLite serialises writers).
            let claims = claims_like(&mut *tx, location).await?;
            if claimed_by_other(&claims, &c.account_id, location) {
                return Err(StoreError::LocationInUse);
            }
            sqlx::query(
                "INSERT INTO location_claims (location, account_id, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (location) DO NOTHING",
            )
            .bind(location)
            .bind(&c.account_id)
            .bind(c.created_at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO connections (id, account_id, name, provider, config_sealed, created_at, scan_interval_secs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&c.id)
        .bind(&c.account_id)
        .bind(&c.name)
        .bind(&c.provider)
        .bind(&c.config_sealed)
        .bind(c.created_at)
        .bind(c.scan_interval_secs)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_unique(e, "a connection with that name"))?;
        // Its index is built by the first scan, due at once.
        sqlx::query(
            "INSERT INTO index_state (connection_id, complete, next_scan_at) VALUES ($1, 0, 0)",
        )
        .bind(&c.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether another account than `account_id` claims a location that
    /// overlaps `location`: asked before a new connection's folders are
    /// made, so a refused connection creates nothing.
    /// [`Self::create_connection`] asks again in its transaction.
    pub async fn location_claimed_by_other(
        &self,
        account_id: &str,
        location: &str,
    ) -> Result<bool, StoreError> {
        // The primary, not a replica: a claim made a moment ago counts.
        let claims = claims_like(&self.pool, location).await?;
        Ok(claimed_by_other(&claims, account_id, location))
    }

    /// Whether a connection with this id exists (in any account).
    pub async fn connection_exists(&self, id: &str) -> Result<bool, StoreError> {
        let found: Option<String> = sqlx::query_scalar("SELECT id FROM connections WHERE id = $1")
            .bind(id)
            .fetch_optional(self.read_pool().await)
            .await?;
        Ok(found.is_some())
    }

    /// The account's connections, by name.
    pub async fn list_connections(
        &self,
        account_id: &str,
    ) -> Result<Vec<ConnectionRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM connections WHERE account_id = $1 ORDER BY name"
        )))
        .bind(account_id)
        .fetch_all(self.read_pool().await)
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// The account's connection with this id or name. Another account's
    /// connection is never returned.
    pub async fn get_connection(
        &self,
        account_id: &str,
        id_or_name: &str,
    ) -> Result<Option<ConnectionRow>, StoreError> {
        if let Some(row) = self.cache.connection(account_id, id_or_name) {
            return Ok(Some(row));
        }
        let ticket = self.cache.ticket();
        // The cache's epoch as this database has it, read with the row.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, (SELECT epoch FROM cache_epoch WHERE id = 1) AS cache_epoch \
             FROM connections WHERE account_id = $1 AND (id = $2 OR name = $2) \
             ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1"
        )))
        .bind(account_id)
        .bind(id_or_name)
        .fetch_optional(self.read_pool().await)
        .await?;
        let Some(found) = row else {
            return Ok(None);
        };
        let row = from_row(&found)?;
        let epoch: i64 = found.try_get("cache_epoch")?;
        self.cache
            .keep_connection(ticket, epoch, account_id, id_or_name, &row);
        Ok(Some(row))
    }

    /// Re-seals every sealed secret in one transaction: each connection's
    /// configuration (sealed for its id), each S3 key's secret (sealed for
    /// its access key id) and the shared tunnel CA's key (sealed for
    /// `ca_context`, PostgreSQL only). `reseal(context, sealed)` returns the
    /// new sealed blob; the first error leaves everything as it was.
    /// Returns how many connections and S3 keys, and whether the CA, were
    /// re-sealed.
    pub async fn reseal_secrets<E>(
        &self,
        ca_context: &str,
        mut reseal: impl FnMut(&str, &[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<Result<Resealed, E>, StoreError> {
        let mut tx = self.write_tx().await?;
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT id, config_sealed FROM connections ORDER BY id")
                .fetch_all(&mut *tx)
                .await?;
        for (id, sealed) in &rows {
            let sealed = match reseal(id, sealed) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            sqlx::query("UPDATE connections SET config_sealed = $1 WHERE id = $2")
                .bind(sealed)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let keys: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT id, secret_sealed FROM s3_keys ORDER BY id")
                .fetch_all(&mut *tx)
                .await?;
        for (id, sealed) in &keys {
            let sealed = match reseal(id, sealed) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            sqlx::query("UPDATE s3_keys SET secret_sealed = $1 WHERE id = $2")
                .bind(sealed)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let hooks: Vec<(String, Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT id, secret_sealed, old_secret_sealed FROM webhook_endpoints ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (id, sealed, old) in &hooks {
            let context = crate::webhooks::endpoint_context(id);
            let sealed = match reseal(&context, sealed) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            let old = match old.as_deref().map(|o| reseal(&context, o)).transpose() {
                Ok(o) => o,
                Err(e) => return Ok(Err(e)),
            };
            sqlx::query(
                "UPDATE webhook_endpoints SET secret_sealed = $1, old_secret_sealed = $2 WHERE id = $3",
            )
            .bind(sealed)
            .bind(old)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        let ca: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT key_sealed FROM tunnel_ca WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(sealed) = &ca {
            let sealed = match reseal(ca_context, sealed) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            sqlx::query("UPDATE tunnel_ca SET key_sealed = $1 WHERE id = 1")
                .bind(sealed)
                .execute(&mut *tx)
                .await?;
        }
        self.commit_cached_change(tx, true).await?;
        Ok(Ok(Resealed {
            connections: rows.len(),
            s3_keys: keys.len(),
            webhook_endpoints: hooks.len(),
            tunnel_ca: ca.is_some(),
        }))
    }

    /// Every connection's id and sealed configuration (to check a master
    /// key against the store).
    pub async fn sealed_connections(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(sqlx::query_as::<_, (String, Vec<u8>)>(
            "SELECT id, config_sealed FROM connections ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes a connection and the object metadata recorded under it;
    /// false if the account has no such connection.
    pub async fn delete_connection(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM intents WHERE connection_id = $1 AND connection_id IN (SELECT id FROM connections WHERE account_id = $2)")
            .bind(id)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM objects WHERE connection_id = $1 AND connection_id IN (SELECT id FROM connections WHERE account_id = $2)")
            .bind(id)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM connections WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        self.commit_cached_change(tx, done.rows_affected() > 0)
            .await
    }
}
