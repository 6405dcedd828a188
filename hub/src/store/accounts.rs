//! Accounts and their API keys.
//!
//! An API key is `fry_` followed by 43 characters of base64url (32 random
//! bytes). Only its SHA-256 is stored; the clear key is shown once, when it
//! is made. The first characters are kept as a `prefix` so people can tell
//! their keys apart.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom as _;
use serde::Serialize;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, StoreError, new_id, now_ms};

pub const KEY_PREFIX: &str = "fry_";
const SHOWN_PREFIX_LEN: usize = 12;

/// An account: a tenant of the hub.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Account {
    /// `acc_…`
    pub id: String,
    /// A name given by the operator.
    pub name: String,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
}

/// A key just made; the only time its clear text exists.
#[derive(Debug, Clone, Serialize)]
pub struct NewApiKey {
    /// `key_…`
    pub id: String,
    /// The key itself.
    pub key: String,
    /// Its first characters.
    pub prefix: String,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
}

/// What is stored about a key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ApiKeyInfo {
    /// `key_…`
    pub id: String,
    /// Its first characters.
    pub prefix: String,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

fn hash_key(key: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .to_vec()
}

fn make_key() -> NewApiKey {
    let mut secret = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .expect("the system RNG works");
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    NewApiKey {
        id: new_id("key"),
        prefix: key[..SHOWN_PREFIX_LEN].to_owned(),
        key,
        created_at: now_ms(),
    }
}

fn account_from(row: &AnyRow) -> Result<Account, sqlx::Error> {
    Ok(Account {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Creates an account with its first API key.
    pub async fn create_account(&self, name: &str) -> Result<(Account, NewApiKey), StoreError> {
        let account = Account {
            id: new_id("acc"),
            name: name.to_owned(),
            created_at: now_ms(),
        };
        let key = make_key();
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&account.id)
            .bind(&account.name)
            .bind(account.created_at)
            .execute(&mut *tx)
            .await?;
        insert_key(&mut tx, &account.id, &key).await?;
        tx.commit().await?;
        Ok((account, key))
    }

    /// Lists accounts in id order, after `after` if given.
    pub async fn list_accounts(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, created_at FROM accounts WHERE id > $1 ORDER BY id LIMIT CAST($2 AS BIGINT)",
        )
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.read_pool().await)
        .await?;
        Ok(rows.iter().map(account_from).collect::<Result<_, _>>()?)
    }

    /// One account.
    pub async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query("SELECT id, name, created_at FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.read_pool().await)
            .await?;
        Ok(row.as_ref().map(account_from).transpose()?)
    }

    /// Makes another key for an existing account; `None` if it does not exist.
    pub async fn create_key(&self, account_id: &str) -> Result<Option<NewApiKey>, StoreError> {
        let mut tx = self.write_tx().await?;
        let exists = sqlx::query("SELECT id FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let key = make_key();
        insert_key(&mut tx, account_id, &key).await?;
        tx.commit().await?;
        Ok(Some(key))
    }

    /// The keys of an account, oldest first.
    pub async fn list_keys(&self, account_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, prefix, created_at, revoked_at FROM api_keys WHERE account_id = $1 ORDER BY created_at, id",
        )
        .bind(account_id)
        .fetch_all(self.read_pool().await)
        .await?;
        let keys = rows
            .iter()
            .map(|r| {
                Ok(ApiKeyInfo {
                    id: r.try_get("id")?,
                    prefix: r.try_get("prefix")?,
                    created_at: r.try_get("created_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(keys)
    }

    /// Revokes a key; false if the account has no such key. Revoking twice
    /// is not an error.
    pub async fn revoke_key(&self, account_id: &str, key_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND account_id = $3",
        )
        .bind(now_ms())
        .bind(key_id)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        self.commit_cached_change(tx, done.rows_affected() > 0)
            .await
    }

    /// Deletes an account and everything the store holds of it: its keys
    /// (API and S3), connections with their sealed credentials, metadata,
    /// index, upload sessions and location claims (by cascade), and its
    /// events and transfer log. False if there was no such account.
    pub async fn delete_account(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        for table in ["events", "event_horizons", "transfers"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE account_id = $1"
            )))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        let done = sqlx::query("DELETE FROM accounts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.commit_cached_change(tx, done.rows_affected() > 0)
            .await
    }

    /// The account a presented key belongs to, if the key is valid.
    pub async fn authenticate(&self, key: &str) -> Result<Option<String>, StoreError> {
        if !key.starts_with(KEY_PREFIX) || key.len() > 128 {
            return Ok(None);
        }
        let digest = hash_key(key);
        if let Some(account) = self.cache.account(&digest) {
            return Ok(Some(account));
        }
        let ticket = self.cache.ticket();
        // The cache's epoch as this database has it, read with the answer.
        let lookup = |pool| {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT account_id, (SELECT epoch FROM cache_epoch WHERE id = 1) FROM api_keys \
                 WHERE hash = $1 AND revoked_at IS NULL",
            )
            .bind(&digest)
            .fetch_optional(pool)
        };
        // A key made through another hub may not be on the replica yet:
        // one unknown there is looked for on the primary.
        let found = match lookup(self.read_pool().await).await? {
            Some(found) => Some(found),
            None if self.has_replica() => lookup(&self.pool).await?,
            None => None,
        };
        Ok(found.map(|(account, epoch)| {
            self.cache
                .keep_account(ticket, epoch, digest.clone(), &account);
            account
        }))
    }
}

async fn insert_key(
    tx: &mut sqlx::AnyConnection,
    account_id: &str,
    key: &NewApiKey,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO api_keys (id, account_id, hash, prefix, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&key.id)
        .bind(account_id)
        .bind(hash_key(&key.key))
        .bind(&key.prefix)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::testing::store;

    #[tokio::test]
    async fn keys_authenticate_until_revoked() {
        let (store, _dir) = store().await;
        let (account, key) = store.create_account("alpha").await.unwrap();
        assert!(key.key.starts_with("fry_") && key.key.len() == 47);
        assert_eq!(
            store.authenticate(&key.key).await.unwrap(),
            Some(account.id.clone())
        );
        assert_eq!(store.authenticate("fry_nope").await.unwrap(), None);

        let second = store.create_key(&account.id).await.unwrap().unwrap();
        assert!(store.revoke_key(&account.id, &key.id).await.unwrap());
        assert_eq!(store.authenticate(&key.key).await.unwrap(), None);
        assert_eq!(
            store.authenticate(&second.key).await.unwrap(),
            Some(account.id.clone())
        );

        let keys = store.list_keys(&account.id).await.unwrap();
        assert_eq!(keys.len(), 2);
        assert!(
            keys.iter()
                .any(|k| k.id == key.id && k.revoked_at.is_some())
        );
        assert!(store.create_key("acc_missing").await.unwrap().is_none());
        assert!(!store.revoke_key("acc_missing", &second.id).await.unwrap());
    }

    #[tokio::test]
    async fn the_clear_key_is_not_stored() {
        let (store, dir) = store().await;
        let (_, key) = store.create_account("alpha").await.unwrap();
        store.close().await;
        let mut raw = std::fs::read(dir.path().join("hub.db")).unwrap();
        if let Ok(wal) = std::fs::read(dir.path().join("hub.db-wal")) {
            raw.extend(wal);
        }
        let secret = &key.key.as_bytes()[4..];
        assert!(!raw.windows(secret.len()).any(|w| w == secret));
    }

    /// Transactions that read before they write must queue for the write
    /// lock, not fail with "database is locked" when another writer commits
    /// between their read and their write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_read_then_write_transactions_all_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open_sqlite(&dir.path().join("hub.db"), 8)
            .await
            .unwrap();
        let (account, _) = store.create_account("alpha").await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let store = store.clone();
            let id = account.id.clone();
            tasks.spawn(async move { store.create_key(&id).await });
        }
        while let Some(made) = tasks.join_next().await {
            assert!(made.unwrap().unwrap().is_some());
        }
        assert_eq!(store.list_keys(&account.id).await.unwrap().len(), 65);
    }
}
