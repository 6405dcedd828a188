//! S3 access keys: how clients that speak S3 sign their requests.
//!
//! A key is an access key id (`FRY` and 17 upper-case letters and digits,
//! shaped like AWS's) and a secret of 40 characters. SigV4 needs the
//! secret itself to check a signature, so unlike an API key it cannot be
//! kept as a hash: it is stored sealed with the hub's master key (AES-256-GCM,
//! bound to the key's id), like a connection's configuration, and opened only
//! to check a request. A key may be limited to some of its account's
//! connections, and to reading.

use serde::Serialize;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms};

/// What is stored about an S3 key, without its secret.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct S3Key {
    /// The access key id.
    pub access_key_id: String,
    /// The account it belongs to.
    #[serde(skip)]
    pub account_id: String,
    /// The ids of the connections (buckets) it may use; all of its
    /// account's when none.
    pub connections: Option<Vec<String>>,
    /// Whether it may only read.
    pub read_only: bool,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// A new key's id and secret, made from the system's random source.
pub fn make_s3_key() -> (String, String) {
    use ring::rand::SecureRandom as _;
    const ID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let rng = ring::rand::SystemRandom::new();
    let mut bytes = [0u8; 57];
    rng.fill(&mut bytes).expect("the system RNG works");
    // 32 and 64 divide 256: every character is equally likely.
    let id: String = "FRY"
        .chars()
        .chain(
            bytes[..17]
                .iter()
                .map(|b| ID_CHARS[usize::from(*b) % 32] as char),
        )
        .collect();
    let secret = bytes[17..]
        .iter()
        .map(|b| SECRET_CHARS[usize::from(*b) % 64] as char)
        .collect();
    (id, secret)
}

fn key_from(row: &AnyRow) -> Result<S3Key, sqlx::Error> {
    let connections: Option<String> = row.try_get("connections")?;
    let read_only: i64 = row.try_get("read_only")?;
    Ok(S3Key {
        access_key_id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        connections: connections
            .map(|c| serde_json::from_str(&c))
            .transpose()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        read_only: read_only != 0,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const COLUMNS: &str = "id, account_id, connections, read_only, created_at, revoked_at";

impl Store {
    /// Records the S3 key `key`, its secret sealed as `secret_sealed`.
    pub async fn create_s3_key(&self, key: &S3Key, secret_sealed: &[u8]) -> Result<(), StoreError> {
        self.refuse_if_down()?;
        sqlx::query(
            "INSERT INTO s3_keys (id, account_id, secret_sealed, connections, read_only, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.access_key_id)
        .bind(&key.account_id)
        .bind(secret_sealed)
        .bind(
            key.connections
                .as_ref()
                .map(|c| serde_json::to_string(c).expect("ids serialise")),
        )
        .bind(i64::from(key.read_only))
        .bind(key.created_at)
        .execute(&self.pool)
        .await?;
        self.note_write().await;
        Ok(())
    }

    /// An account's S3 keys, oldest first, revoked ones included.
    pub async fn list_s3_keys(&self, account_id: &str) -> Result<Vec<S3Key>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM s3_keys WHERE account_id = $1 ORDER BY created_at, id"
        )))
        .bind(account_id)
        .fetch_all(self.read_pool().await)
        .await?;
        Ok(rows.iter().map(key_from).collect::<Result<_, _>>()?)
    }

    /// Revokes an account's S3 key; false if it has no such key. Revoking
    /// twice is not an error.
    pub async fn revoke_s3_key(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
        self.refuse_if_down()?;
        let done = sqlx::query(
            "UPDATE s3_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND account_id = $3",
        )
        .bind(now_ms())
        .bind(id)
        .bind(account_id)
        .execute(&self.pool)
        .await?;
        self.note_write().await;
        Ok(done.rows_affected() > 0)
    }

    /// A live S3 key and its sealed secret, to check a request signed with
    /// it (from the primary when the replica does not have it yet).
    pub async fn s3_key(&self, id: &str) -> Result<Option<(S3Key, Vec<u8>)>, StoreError> {
        if id.len() != 20 || !id.starts_with("FRY") {
            return Ok(None);
        }
        let query = format!(
            "SELECT {COLUMNS}, secret_sealed FROM s3_keys WHERE id = $1 AND revoked_at IS NULL"
        );
        let lookup = |pool| {
            sqlx::query(sqlx::AssertSqlSafe(query.clone()))
                .bind(id)
                .fetch_optional(pool)
        };
        let row = match lookup(self.read_pool().await).await? {
            Some(row) => Some(row),
            None => lookup(&self.pool).await?,
        };
        row.map(|r| Ok((key_from(&r)?, r.try_get("secret_sealed")?)))
            .transpose()
            .map_err(|e: sqlx::Error| e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;

    #[tokio::test]
    async fn keys_are_made_listed_found_and_revoked() {
        let (store, _dir) = store().await;
        let (acc, _) = store.create_account("t").await.unwrap();
        let (id, secret) = make_s3_key();
        assert!(id.starts_with("FRY") && id.len() == 20, "{id}");
        assert!(
            id.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
        assert_eq!(secret.len(), 40);
        let key = S3Key {
            access_key_id: id.clone(),
            account_id: acc.id.clone(),
            connections: Some(vec!["con_1".into()]),
            read_only: true,
            created_at: now_ms(),
            revoked_at: None,
        };
        store.create_s3_key(&key, b"sealed").await.unwrap();
        assert_eq!(
            store.list_s3_keys(&acc.id).await.unwrap(),
            vec![key.clone()]
        );
        let (found, sealed) = store.s3_key(&id).await.unwrap().unwrap();
        assert_eq!((found, sealed.as_slice()), (key, b"sealed".as_slice()));
        assert!(!store.revoke_s3_key("acc_other", &id).await.unwrap());
        assert!(store.revoke_s3_key(&acc.id, &id).await.unwrap());
        assert!(store.s3_key(&id).await.unwrap().is_none());
        assert!(
            store.list_s3_keys(&acc.id).await.unwrap()[0]
                .revoked_at
                .is_some()
        );
    }
}
