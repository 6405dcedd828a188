//! S3 multipart uploads: what `CreateMultipartUpload` started, so that
//! parts can be checked against it, listed (`ListParts`,
//! `ListMultipartUploads`) and discarded (`AbortMultipartUpload`). Each
//! part is a tus partial upload (`upload_sessions`) that names the
//! multipart upload and its number (`s3_upload`, `s3_part`); a part sent
//! again under the same number replaces the earlier one, as in S3.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, StoreError};

/// A multipart upload, as `CreateMultipartUpload` started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    /// Its id (the S3 `UploadId`).
    pub id: String,
    /// The account.
    pub account_id: String,
    /// The connection (the bucket).
    pub connection_id: String,
    /// The object's key.
    pub key: String,
    /// The media type the object gets.
    pub content_type: Option<String>,
    /// When it was started, unix milliseconds.
    pub created_at: i64,
    /// When it is forgotten if not completed.
    pub expires_at: i64,
    /// The header fields the object keeps (`ObjectMeta::headers`).
    pub headers: Vec<(String, String)>,
}

/// A part of a multipart upload: the latest complete partial upload with
/// its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartPart {
    /// Its number.
    pub number: u32,
    /// The partial upload's id (the part's ETag).
    pub upload_id: String,
    /// Its size.
    pub size: u64,
    /// When it was written, unix milliseconds.
    pub written_at: i64,
}

const COLUMNS: &str =
    "id, account_id, connection_id, object_key, content_type, created_at, expires_at, headers";

fn from_row(row: &AnyRow) -> Result<MultipartUpload, sqlx::Error> {
    let headers: Option<String> = row.try_get("headers")?;
    Ok(MultipartUpload {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        connection_id: row.try_get("connection_id")?,
        key: row.try_get("object_key")?,
        content_type: row.try_get("content_type")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        headers: headers
            .map(|h| serde_json::from_str(&h))
            .transpose()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
            .unwrap_or_default(),
    })
}

impl Store {
    /// Records a new multipart upload.
    pub async fn create_multipart(&self, upload: &MultipartUpload) -> Result<(), StoreError> {
        self.refuse_if_down()?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO s3_multipart ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )))
        .bind(&upload.id)
        .bind(&upload.account_id)
        .bind(&upload.connection_id)
        .bind(&upload.key)
        .bind(upload.content_type.as_deref())
        .bind(upload.created_at)
        .bind(upload.expires_at)
        .bind(
            (!upload.headers.is_empty())
                .then(|| serde_json::to_string(&upload.headers).expect("header fields serialise")),
        )
        .execute(&self.pool)
        .await?;
        self.note_write().await;
        Ok(())
    }

    /// `account`'s multipart upload `id`, if it has one (from the primary:
    /// a part follows its creation at once, perhaps through another hub).
    pub async fn get_multipart(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<MultipartUpload>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM s3_multipart WHERE id = $1 AND account_id = $2"
        )))
        .bind(id)
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// The multipart uploads of `connection` whose keys start with
    /// `prefix`, in key order then id order, after the position
    /// `(key, id)` (`id` empty: every upload of that key), at most `limit`.
    pub async fn list_multipart(
        &self,
        connection: &str,
        prefix: &str,
        after: (&str, &str),
        limit: i64,
    ) -> Result<Vec<MultipartUpload>, StoreError> {
        // S3 orders keys by their UTF-8 bytes: so does SQLite, and
        // PostgreSQL's "C" collation.
        let collate = match self.dialect {
            super::Dialect::Sqlite => "",
            super::Dialect::Postgres => " COLLATE \"C\"",
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM s3_multipart WHERE connection_id = $1 \
             AND substr(object_key, 1, length($2)) = $2 \
             AND (object_key{collate} > $3 OR (object_key = $3 AND id > $4)) \
             ORDER BY object_key{collate}, id LIMIT CAST($5 AS BIGINT)"
        )))
        .bind(connection)
        .bind(prefix)
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Forgets `account`'s multipart upload `id` (completed or aborted);
    /// false if there was none.
    pub async fn delete_multipart(&self, account: &str, id: &str) -> Result<bool, StoreError> {
        self.refuse_if_down()?;
        let done = sqlx::query("DELETE FROM s3_multipart WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account)
            .execute(&self.pool)
            .await?;
        self.note_write().await;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets multipart uploads whose time ran out before `now` (their
    /// parts expire with their own sessions).
    pub async fn purge_multipart(&self, now: i64) -> Result<u64, StoreError> {
        self.refuse_if_down()?;
        let done = sqlx::query("DELETE FROM s3_multipart WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The parts of `account`'s multipart upload `id`: for each number, the
    /// complete partial upload written last, in number order.
    pub async fn multipart_parts(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Vec<MultipartPart>, StoreError> {
        let rows = sqlx::query(
            "SELECT s3_part, id, committed, updated_at FROM upload_sessions \
             WHERE s3_upload = $1 AND account_id = $2 AND status = 'complete' \
             ORDER BY s3_part, updated_at DESC, id DESC",
        )
        .bind(id)
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        let mut parts: Vec<MultipartPart> = Vec::new();
        for row in &rows {
            let number: i64 = row.try_get("s3_part")?;
            if parts.last().is_some_and(|p| i64::from(p.number) == number) {
                continue;
            }
            let size: i64 = row.try_get("committed")?;
            parts.push(MultipartPart {
                number: u32::try_from(number).unwrap_or_default(),
                upload_id: row.try_get("id")?,
                size: u64::try_from(size).unwrap_or_default(),
                written_at: row.try_get("updated_at")?,
            });
        }
        Ok(parts)
    }

    /// Every session (complete or not) that is a part of `account`'s
    /// multipart upload `id`, to discard them.
    pub async fn multipart_sessions_of(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM upload_sessions WHERE s3_upload = $1 AND account_id = $2",
        )
        .bind(id)
        .bind(account)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;
    use crate::store::{new_upload_id, now_ms};
    use ferry_common::uploads::{NewUpload, S3PartOf};

    #[tokio::test]
    async fn multipart_uploads_are_kept_listed_in_key_order_and_their_parts_found() {
        let (store, _dir) = store().await;
        let (acc, conn) = crate::store::testing::account_with_connection(&store, "con_1").await;
        let upload = |id: &str, key: &str| MultipartUpload {
            id: id.into(),
            account_id: acc.clone(),
            connection_id: conn.id.clone(),
            key: key.into(),
            content_type: None,
            created_at: 1,
            expires_at: 1_000,
            headers: vec![("x-amz-meta-a".into(), "b".into())],
        };
        for (id, key) in [("u3", "b/z"), ("u1", "a/x"), ("u2", "a/x"), ("u4", "é")] {
            store.create_multipart(&upload(id, key)).await.unwrap();
        }
        let ids = |list: Vec<MultipartUpload>| list.into_iter().map(|u| u.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store
                .list_multipart(&conn.id, "", ("", ""), 10)
                .await
                .unwrap()),
            ["u1", "u2", "u3", "u4"]
        );
        assert_eq!(
            ids(store
                .list_multipart(&conn.id, "a/", ("a/x", "u1"), 10)
                .await
                .unwrap()),
            ["u2"]
        );
        assert_eq!(
            ids(store
                .list_multipart(&conn.id, "", ("a/x", ""), 1)
                .await
                .unwrap()),
            ["u1"]
        );
        assert!(
            store
                .get_multipart("acc_other", "u1")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store.get_multipart(&acc, "u1").await.unwrap(),
            Some(upload("u1", "a/x"))
        );

        // Part 1 twice (the later one counts) and part 2; one still open.
        let mut made = Vec::new();
        for number in [1, 1, 2, 3] {
            let new = NewUpload {
                path: String::new(),
                length: Some(5),
                metadata: String::new(),
                content_type: None,
                concat: Some("partial".into()),
                s3_part: Some(S3PartOf {
                    upload: "u1".into(),
                    number,
                }),
            };
            let id = new_upload_id();
            store
                .create_upload(&id, &acc, &conn.id, &new, 1 << 30, now_ms() + 60_000, None)
                .await
                .unwrap();
            made.push(id);
        }
        for (i, id) in made.iter().take(3).enumerate() {
            sqlx::query(
                "UPDATE upload_sessions SET status = 'complete', committed = 5, updated_at = $1 WHERE id = $2",
            )
            .bind(10 + i as i64)
            .bind(id)
            .execute(&store.pool)
            .await
            .unwrap();
        }
        let parts = store.multipart_parts(&acc, "u1").await.unwrap();
        let got: Vec<(u32, &str)> = parts
            .iter()
            .map(|p| (p.number, p.upload_id.as_str()))
            .collect();
        assert_eq!(got, [(1, made[1].as_str()), (2, made[2].as_str())]);
        assert!(
            store
                .multipart_parts("acc_other", "u1")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.multipart_sessions_of(&acc, "u1").await.unwrap().len(),
            4
        );

        assert!(store.delete_multipart(&acc, "u1").await.unwrap());
        assert!(!store.delete_multipart(&acc, "u1").await.unwrap());
        assert_eq!(store.purge_multipart(1_001).await.unwrap(), 3);
    }
}
