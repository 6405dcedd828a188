//! Resumable-upload sessions: what every node appends to, and the leases
//! that let one writer at a time do it (see `ferry_common::uploads`).
//!
//! Every read and write of a session goes to the primary: an offset read
//! from a replica a moment behind would send a client back to bytes it
//! already sent. The committed offset moves only by a conditional update
//! naming the lease and the offset the writer started from, so a writer
//! whose lease was taken over records nothing, however late it comes.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use ferry_common::content::model::Commit;
use ferry_common::uploads::write::combined_crc;
use ferry_common::uploads::{Lease, NewUpload, Part, Session, Status, part_name};

use super::{Store, StoreError, now_ms};

const COLUMNS: &str = "id, account_id, connection_id, path, length, committed, crc64nvme, \
                       metadata, content_type, concat, status, lease_holder, lease_token, lease_until, expires_at, \
                       provider_upload";

/// The sessions the sweep expires once their time is out: open ones, and
/// partial uploads that were completed but never joined by a final one.
const SWEPT: &str = "(status = 'open' OR (status = 'complete' AND concat = 'partial'))";

/// A session with its lease as stored.
#[derive(Debug, Clone)]
struct Row {
    session: Session,
    lease_holder: Option<String>,
    lease_token: Option<String>,
    lease_until: Option<i64>,
}

fn from_row(row: &AnyRow) -> Result<Row, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let length: Option<i64> = row.try_get("length")?;
    let committed: i64 = row.try_get("committed")?;
    let crc: i64 = row.try_get("crc64nvme")?;
    Ok(Row {
        session: Session {
            id: row.try_get("id")?,
            account_id: row.try_get("account_id")?,
            connection_id: row.try_get("connection_id")?,
            path: row.try_get("path")?,
            length: length.map(|n| n as u64),
            offset: committed as u64,
            crc64nvme: crc as u64,
            metadata: row.try_get("metadata")?,
            content_type: row.try_get("content_type")?,
            status: Status::parse(&status).unwrap_or(Status::Expired),
            expires_at: row.try_get("expires_at")?,
            max_size: 0,
            concat: row.try_get("concat")?,
            provider_upload: row.try_get("provider_upload")?,
        },
        lease_holder: row.try_get("lease_holder")?,
        lease_token: row.try_get("lease_token")?,
        lease_until: row.try_get("lease_until")?,
    })
}

/// Why a lease or an append was refused.
#[derive(Debug)]
pub enum UploadRefusal {
    /// No such session for the account.
    NotFound,
    /// It expired.
    Expired,
    /// The offset is not the committed one (which is given).
    Offset(u64),
    /// Another writer holds the lease.
    Locked,
    /// The lease was lost (taken over, or the session changed under it).
    LeaseLost,
    /// The request asks for something the session cannot take.
    Invalid(String),
    /// The session is a final upload (tus concatenation): it takes no bytes.
    Final,
    /// The upload would be larger than the largest the hub takes.
    TooLarge(String),
    /// The store failed.
    Store(StoreError),
}

impl From<sqlx::Error> for UploadRefusal {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}

impl From<StoreError> for UploadRefusal {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// How recording an append's parts ends.
#[derive(Debug, Clone, Copy)]
pub enum AppendEnd<'a> {
    /// The append is over; the lease is released.
    Release,
    /// More parts of the same append follow: the lease is kept, renewed.
    Keep,
    /// The upload is complete: the lease is released and the object
    /// committed with this.
    Complete(&'a Commit),
}

/// Who asks for a session's lease, and for what.
#[derive(Debug, Clone, Copy)]
pub struct LeaseAsk<'a> {
    /// The client's account.
    pub account: &'a str,
    /// The session.
    pub id: &'a str,
    /// Where the client's bytes start.
    pub offset: u64,
    /// The length the client gives now (a deferred one).
    pub length: Option<u64>,
    /// The node that will write: `hub` or a spoke's name.
    pub holder: &'a str,
    /// The largest upload the hub takes.
    pub max_size: u64,
}

/// A new session's id: `upl_` and 128 random bits.
pub fn new_upload_id() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system RNG works");
    let mut id = String::from("upl_");
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// A lease's token.
fn new_lease_token() -> String {
    new_upload_id().replacen("upl_", "", 1)
}

impl Store {
    /// Makes a session of `account` in `connection`, expiring at
    /// `expires_at`, its bytes going into the provider's multipart upload
    /// `provider_upload` if the caller started one; a final upload (tus
    /// concatenation) only of complete partial uploads of the same account
    /// and connection.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_upload(
        &self,
        id: &str,
        account: &str,
        connection: &str,
        new: &NewUpload,
        max_size: u64,
        expires_at: i64,
        provider_upload: Option<&str>,
    ) -> Result<Session, UploadRefusal> {
        let id = id.to_owned();
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let (mut length, mut crc) = (new.length, 0u64);
        let probe = Session {
            concat: new.concat.clone(),
            ..Session::default()
        };
        if let Some(ids) = probe.joins() {
            // A final upload: every partial one this account's, in this
            // connection, complete; its length and CRC are theirs joined.
            let mut total = 0u64;
            for pid in ids {
                let part = self
                    .upload_row(&mut tx, pid)
                    .await?
                    .map(|r| r.session)
                    .filter(|p| p.account_id == account && p.connection_id == connection)
                    .ok_or_else(|| {
                        UploadRefusal::Invalid(format!("no partial upload {pid} here"))
                    })?;
                if !part.is_partial() || part.status != Status::Complete {
                    return Err(UploadRefusal::Invalid(format!(
                        "{pid} is not a complete partial upload"
                    )));
                }
                let n = part.offset;
                crc = combined_crc(
                    crc,
                    &[Part {
                        offset: total,
                        size: n,
                        crc64nvme: part.crc64nvme,
                        name: String::new(),
                        native: None,
                    }],
                );
                total += n;
            }
            if total > max_size {
                return Err(UploadRefusal::TooLarge(format!(
                    "the partial uploads add up to more than {max_size} bytes"
                )));
            }
            length = Some(total);
        }
        sqlx::query(
            "INSERT INTO upload_sessions (id, account_id, connection_id, path, length, committed, crc64nvme, \
             metadata, content_type, concat, status, expires_at, created_at, updated_at, provider_upload, \
             s3_upload, s3_part) \
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9, 'open', $10, $11, $11, $12, $13, $14)",
        )
        .bind(&id)
        .bind(account)
        .bind(connection)
        .bind(&new.path)
        .bind(length.map(|n| n as i64))
        .bind(crc as i64)
        .bind(&new.metadata)
        .bind(new.content_type.as_deref())
        .bind(new.concat.as_deref())
        .bind(expires_at)
        .bind(now)
        .bind(provider_upload)
        .bind(new.s3_part.as_ref().map(|p| p.upload.as_str()))
        .bind(new.s3_part.as_ref().map(|p| i64::from(p.number)))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Session {
            id,
            account_id: account.to_owned(),
            connection_id: connection.to_owned(),
            path: new.path.clone(),
            length,
            offset: 0,
            crc64nvme: crc,
            metadata: new.metadata.clone(),
            content_type: new.content_type.clone(),
            status: Status::Open,
            expires_at,
            max_size,
            concat: new.concat.clone(),
            provider_upload: provider_upload.map(str::to_owned),
        })
    }

    async fn upload_row(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: &str,
    ) -> Result<Option<Row>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM upload_sessions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Session `id` of `account` (from the primary), if it exists.
    pub async fn get_upload(&self, account: &str, id: &str) -> Result<Option<Session>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(self
            .upload_row(&mut conn, id)
            .await?
            .map(|r| r.session)
            .filter(|s| s.account_id == account))
    }

    /// Takes the lease on `account`'s session `id` for `holder`, to append
    /// at `offset` (and set a deferred `length`), unless another writer
    /// holds it: a lease is free once it ran out, once `gone` says its
    /// holder is gone, or when its holder asks again (a client that came
    /// back to the same node; the old request's writes then fail).
    pub async fn lease_upload(
        &self,
        ask: &LeaseAsk<'_>,
        gone: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(Lease, bool), UploadRefusal> {
        let LeaseAsk {
            account,
            id,
            offset,
            length,
            holder,
            max_size,
        } = *ask;
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let row = self
            .upload_row(&mut tx, id)
            .await?
            .filter(|r| r.session.account_id == account)
            .ok_or(UploadRefusal::NotFound)?;
        let s = &row.session;
        match s.status {
            Status::Expired => return Err(UploadRefusal::Expired),
            Status::Open if s.expires_at < now => return Err(UploadRefusal::Expired),
            Status::Complete if s.joins().is_some() => return Err(UploadRefusal::Final),
            Status::Complete => {
                return Err(if offset == s.offset {
                    UploadRefusal::Invalid("the upload is complete".into())
                } else {
                    UploadRefusal::Offset(s.offset)
                });
            }
            Status::Open => {}
        }
        let held = row.lease_token.is_some()
            && row.lease_until.is_some_and(|u| u >= now)
            && row
                .lease_holder
                .as_deref()
                .is_some_and(|h| h != holder && !gone(h));
        if held {
            return Err(UploadRefusal::Locked);
        }
        let took_over = row.lease_token.is_some() && row.lease_until.is_some_and(|u| u >= now);
        if offset != s.offset {
            return Err(UploadRefusal::Offset(s.offset));
        }
        let length = match (s.length, length) {
            (Some(have), Some(new)) if have != new => {
                return Err(UploadRefusal::Invalid(format!(
                    "the upload's length is {have} already"
                )));
            }
            (None, Some(new)) if new > max_size => {
                return Err(UploadRefusal::TooLarge(format!(
                    "uploads here are at most {max_size} bytes"
                )));
            }
            (None, Some(new)) if new < s.offset => {
                return Err(UploadRefusal::Invalid(format!(
                    "the length {new} is below the bytes already sent ({})",
                    s.offset
                )));
            }
            (have, new) => have.or(new),
        };
        let token = new_lease_token();
        sqlx::query(
            "UPDATE upload_sessions SET lease_holder = $1, lease_token = $2, lease_until = $3, \
             length = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(holder)
        .bind(&token)
        .bind(now + ferry_common::uploads::LEASE_MS)
        .bind(length.map(|n| n as i64))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let parts = match s.joins() {
            Some(ids) => {
                // A final upload's parts are its partial uploads', in order;
                // a partial upload that went into a multipart upload is the
                // one object that upload made.
                let mut all = Vec::new();
                let mut at = 0;
                for pid in ids {
                    let partial = self.upload_row(&mut tx, pid).await?.map(|r| r.session);
                    if let Some(p) = partial.filter(|p| p.provider_upload.is_some()) {
                        all.push(Part {
                            offset: at,
                            size: p.offset,
                            crc64nvme: p.crc64nvme,
                            name: ferry_common::uploads::partial_object(pid),
                            native: None,
                        });
                        at += p.offset;
                        continue;
                    }
                    for mut p in parts_of(&mut tx, pid).await? {
                        let size = p.size;
                        p.offset = at;
                        at += size;
                        all.push(p);
                    }
                }
                all
            }
            None => parts_of(&mut tx, id).await?,
        };
        tx.commit().await?;
        let mut session = row.session;
        session.length = length;
        session.max_size = max_size;
        Ok((
            Lease {
                session,
                token,
                parts,
            },
            took_over,
        ))
    }

    /// Keeps a lease for another [`ferry_common::uploads::LEASE_MS`];
    /// false when it is no longer held.
    pub async fn renew_upload_lease(&self, id: &str, token: &str) -> Result<bool, StoreError> {
        self.refuse_if_down()?;
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE upload_sessions SET lease_until = $1 WHERE id = $2 AND lease_token = $3 AND status = 'open'",
        )
        .bind(now + ferry_common::uploads::LEASE_MS)
        .bind(id)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a lease up.
    pub async fn release_upload_lease(&self, id: &str, token: &str) -> Result<(), StoreError> {
        self.refuse_if_down()?;
        sqlx::query(
            "UPDATE upload_sessions SET lease_holder = NULL, lease_token = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_token = $2",
        )
        .bind(id)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records `parts` under the lease `token` (in order from the
    /// committed offset, each named for the lease; the first may instead
    /// start where the last recorded part does, when that one is staged as
    /// an object, and take its place: its bytes were sent again at the
    /// head of the new one), moves the offset, extends the expiry to
    /// `expires_at`, and ends as `end` says: releasing the lease; keeping
    /// it for more parts of the same append (renewed, the session open
    /// whatever its offset); or releasing it, marking the session complete
    /// and committing the object in the same transaction.
    /// The session as it is afterwards, and the bytes the offset moved.
    pub async fn append_upload(
        &self,
        id: &str,
        token: &str,
        parts: &[Part],
        end: AppendEnd<'_>,
        max_size: u64,
        expires_at: i64,
    ) -> Result<(Session, u64), UploadRefusal> {
        let complete = match end {
            AppendEnd::Complete(c) => Some(c),
            AppendEnd::Release | AppendEnd::Keep => None,
        };
        let keep = matches!(end, AppendEnd::Keep);
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let row = self
            .upload_row(&mut tx, id)
            .await?
            .ok_or(UploadRefusal::NotFound)?;
        if row.session.status != Status::Open || row.lease_token.as_deref() != Some(token) {
            return Err(UploadRefusal::LeaseLost);
        }
        let s = &row.session;
        let not_allowed =
            || UploadRefusal::Invalid("the part is not the one the lease allows".into());
        let (mut at, mut crc, mut replaced) = (s.offset, s.crc64nvme, None);
        for (i, p) in parts.iter().enumerate() {
            let named = part_name(id, p.offset, token);
            let allowed =
                p.name == named || p.name == ferry_common::uploads::local_staging_file(&named);
            if p.size == 0 || !allowed {
                return Err(not_allowed());
            }
            if i == 0 && p.offset < s.offset {
                let before = parts_of(&mut tx, id).await?;
                let Some((last, rest)) = before.split_last() else {
                    return Err(not_allowed());
                };
                if last.offset != p.offset || last.native.is_some() {
                    return Err(not_allowed());
                }
                (at, crc, replaced) = (p.offset, combined_crc(0, rest), Some(p.offset));
            }
            if p.offset != at {
                return Err(not_allowed());
            }
            crc = combined_crc(crc, std::slice::from_ref(p));
            at += p.size;
        }
        if at < s.offset {
            return Err(UploadRefusal::Invalid(
                "the parts hold fewer bytes than the upload had".into(),
            ));
        }
        let size = at - s.offset;
        let joining = s.joins().is_some();
        if joining && (!parts.is_empty() || complete.is_none()) {
            return Err(UploadRefusal::Invalid(
                "a final upload is only completed, from its partial uploads".into(),
            ));
        }
        let total = if joining {
            s.length.unwrap_or(0)
        } else {
            s.offset + size
        };
        if s.length.is_some_and(|n| total > n) || total > max_size {
            return Err(UploadRefusal::Invalid(
                "the part goes past the upload's length".into(),
            ));
        }
        if let Some(c) = complete {
            let whole = c.upsert.as_ref().ok_or_else(|| {
                UploadRefusal::Invalid("a completion without the object's metadata".into())
            })?;
            let length_ok = s.length.is_none_or(|n| n == total);
            if !length_ok
                || whole.size as u64 != total
                || whole.crc64nvme != crc
                || whole.path != s.path
                || whole.connection_id != s.connection_id
            {
                return Err(UploadRefusal::Invalid(
                    "the completion does not describe the upload's bytes".into(),
                ));
            }
        }
        if let Some(first) = replaced {
            sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1 AND first_byte = $2")
                .bind(id)
                .bind(first as i64)
                .execute(&mut *tx)
                .await?;
        }
        for p in parts {
            let native = p
                .native
                .as_ref()
                .map(|n| serde_json::to_string(n).expect("parts serialise"));
            sqlx::query(
                "INSERT INTO upload_parts (upload_id, first_byte, size, crc64nvme, name, native) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(p.offset as i64)
            .bind(p.size as i64)
            .bind(p.crc64nvme as i64)
            .bind(&p.name)
            .bind(native)
            .execute(&mut *tx)
            .await?;
        }
        // A partial upload is complete with its last byte: it becomes no
        // object, its parts wait for the final upload that joins them.
        let status = if keep {
            Status::Open
        } else if complete.is_some() || (s.is_partial() && s.length == Some(total)) {
            Status::Complete
        } else {
            Status::Open
        };
        let length = if complete.is_some() {
            Some(total)
        } else {
            s.length
        };
        let lease = if keep {
            "lease_until = $10"
        } else {
            "lease_holder = NULL, lease_token = NULL, lease_until = NULL"
        };
        let mut moved = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE upload_sessions SET committed = $1, crc64nvme = $2, status = $3, length = $4, \
             {lease}, expires_at = $5, updated_at = $6 \
             WHERE id = $7 AND lease_token = $8 AND committed = $9"
        )))
        .bind(total as i64)
        .bind(crc as i64)
        .bind(status.as_str())
        .bind(length.map(|n| n as i64))
        .bind(expires_at)
        .bind(now)
        .bind(id)
        .bind(token)
        .bind(s.offset as i64);
        if keep {
            moved = moved.bind(now + ferry_common::uploads::LEASE_MS);
        }
        let moved = moved.execute(&mut *tx).await?;
        if moved.rows_affected() != 1 {
            return Err(UploadRefusal::LeaseLost);
        }
        if let Some(c) = complete {
            self.commit_in(&mut tx, c).await?;
        }
        tx.commit().await?;
        let mut session = row.session;
        session.offset = total;
        session.crc64nvme = crc;
        session.status = status;
        session.length = length;
        session.expires_at = expires_at;
        session.max_size = max_size;
        Ok((session, size))
    }

    /// Removes `account`'s session `id` (tus termination): the session as
    /// it was, if there was one.
    pub async fn delete_upload(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<Session>, StoreError> {
        let mut tx = self.write_tx().await?;
        let Some(row) = self
            .upload_row(&mut tx, id)
            .await?
            .filter(|r| r.session.account_id == account)
        else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM upload_sessions WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(row.session))
    }

    /// Sessions whose time ran out and that no live lease holds — open
    /// ones, and partial uploads never joined — at most `limit`.
    pub async fn expired_uploads(&self, now: i64, limit: i64) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM upload_sessions WHERE {SWEPT} AND expires_at < $1 \
             AND (lease_until IS NULL OR lease_until < $1) ORDER BY expires_at LIMIT CAST($2 AS BIGINT)"
        )))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(from_row)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|r| r.session)
            .collect())
    }

    /// Marks a session the sweep found expired and forgets its parts (the
    /// caller removed what they staged); false if it changed meanwhile.
    pub async fn expire_upload(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE upload_sessions SET status = 'expired', updated_at = $1 WHERE id = $2 \
                 AND {SWEPT} AND expires_at < $1 AND (lease_until IS NULL OR lease_until < $1)"
        )))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets sessions that ended (complete or expired) before `before`.
    pub async fn purge_uploads(&self, before: i64) -> Result<u64, StoreError> {
        self.refuse_if_down()?;
        let done =
            sqlx::query("DELETE FROM upload_sessions WHERE status <> 'open' AND expires_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    /// A connection's open sessions that hold a multipart upload at the
    /// provider, for abandoning them when the connection goes.
    pub async fn multipart_sessions(&self, connection: &str) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM upload_sessions WHERE connection_id = $1 \
             AND status = 'open' AND provider_upload IS NOT NULL"
        )))
        .bind(connection)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(from_row)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|r| r.session)
            .collect())
    }

    /// Open sessions, for the metrics.
    pub async fn open_uploads(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM upload_sessions WHERE status = 'open'")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

async fn parts_of(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Vec<Part>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT first_byte, size, crc64nvme, name, native FROM upload_parts WHERE upload_id = $1 \
         ORDER BY first_byte",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let first: i64 = r.try_get("first_byte")?;
            let size: i64 = r.try_get("size")?;
            let crc: i64 = r.try_get("crc64nvme")?;
            let native: Option<String> = r.try_get("native")?;
            Ok(Part {
                offset: first as u64,
                size: size as u64,
                crc64nvme: crc as u64,
                name: r.try_get("name")?,
                native: native
                    .map(|n| serde_json::from_str(&n))
                    .transpose()
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;

    async fn session(store: &Store) -> (String, Session) {
        let (acc, conn) =
            crate::store::testing::account_with_connection(store, &crate::store::new_id("con"))
                .await;
        let new = NewUpload {
            path: "a/b.bin".into(),
            length: Some(10),
            metadata: String::new(),
            content_type: None,
            concat: None,
            s3_part: None,
        };
        let s = store
            .create_upload(
                &new_upload_id(),
                &acc,
                &conn.id,
                &new,
                1 << 40,
                now_ms() + 60_000,
                None,
            )
            .await
            .unwrap();
        (acc, s)
    }

    fn ask<'a>(account: &'a str, id: &'a str, offset: u64, holder: &'a str) -> LeaseAsk<'a> {
        LeaseAsk {
            account,
            id,
            offset,
            length: None,
            holder,
            max_size: 1 << 40,
        }
    }

    fn part(id: &str, token: &str, offset: u64, data: &[u8]) -> Part {
        Part {
            offset,
            size: data.len() as u64,
            crc64nvme: ferry_common::checksum::crc64nvme(data),
            name: part_name(id, offset, token),
            native: None,
        }
    }

    #[tokio::test]
    async fn one_writer_at_a_time_and_the_offset_moves_only_under_the_lease() {
        let (store, _dir) = store().await;
        let (acc, s) = session(&store).await;
        let never = |_: &str| false;
        let (a, _) = store
            .lease_upload(&ask(&acc, &s.id, 0, "fra1"), &never)
            .await
            .unwrap();
        // Another node is refused while the lease lives …
        assert!(matches!(
            store
                .lease_upload(&ask(&acc, &s.id, 0, "ams1"), &never)
                .await,
            Err(UploadRefusal::Locked)
        ));
        // … unless its holder is known gone; the old writer then records nothing.
        let gone = |h: &str| h == "fra1";
        let (b, took_over) = store
            .lease_upload(&ask(&acc, &s.id, 0, "ams1"), &gone)
            .await
            .unwrap();
        assert!(took_over);
        let p = part(&s.id, &a.token, 0, b"hello");
        assert!(matches!(
            store
                .append_upload(
                    &s.id,
                    &a.token,
                    std::slice::from_ref(&p),
                    AppendEnd::Release,
                    1 << 40,
                    now_ms() + 60_000
                )
                .await,
            Err(UploadRefusal::LeaseLost)
        ));
        let p = part(&s.id, &b.token, 0, b"hello");
        let after = store
            .append_upload(
                &s.id,
                &b.token,
                std::slice::from_ref(&p),
                AppendEnd::Release,
                1 << 40,
                now_ms() + 60_000,
            )
            .await
            .unwrap();
        assert_eq!(after.0.offset, 5);
        // A wrong offset names the right one; another tenant sees nothing.
        assert!(matches!(
            store
                .lease_upload(&ask(&acc, &s.id, 3, "fra1"), &never)
                .await,
            Err(UploadRefusal::Offset(5))
        ));
        assert!(matches!(
            store
                .lease_upload(&ask("acc_other", &s.id, 5, "fra1"), &never)
                .await,
            Err(UploadRefusal::NotFound)
        ));
        let (c, _) = store
            .lease_upload(&ask(&acc, &s.id, 5, "fra1"), &never)
            .await
            .unwrap();
        assert_eq!(c.parts.len(), 1);
        // A part named for another lease, or past the length, is refused.
        let wrong = part(&s.id, &b.token, 5, b"world");
        assert!(matches!(
            store
                .append_upload(
                    &s.id,
                    &c.token,
                    std::slice::from_ref(&wrong),
                    AppendEnd::Release,
                    1 << 40,
                    0
                )
                .await,
            Err(UploadRefusal::Invalid(_))
        ));
        let long = part(&s.id, &c.token, 5, b"world!");
        assert!(matches!(
            store
                .append_upload(
                    &s.id,
                    &c.token,
                    std::slice::from_ref(&long),
                    AppendEnd::Release,
                    1 << 40,
                    0
                )
                .await,
            Err(UploadRefusal::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn a_staged_part_may_be_replaced_by_one_that_carries_its_bytes() {
        let (store, _dir) = store().await;
        let (acc, s) = session(&store).await;
        let never = |_: &str| false;
        let expires = now_ms() + 60_000;
        let (a, _) = store
            .lease_upload(&ask(&acc, &s.id, 0, "fra1"), &never)
            .await
            .unwrap();
        let tail = part(&s.id, &a.token, 0, b"hel");
        store
            .append_upload(
                &s.id,
                &a.token,
                &[tail],
                AppendEnd::Release,
                1 << 40,
                expires,
            )
            .await
            .unwrap();
        let (b, _) = store
            .lease_upload(&ask(&acc, &s.id, 3, "fra1"), &never)
            .await
            .unwrap();
        // The carried bytes and the new ones, sent as S3 parts, then a
        // staged rest: the offset moves by the new bytes only.
        let mut sent = part(&s.id, &b.token, 0, b"hello w");
        sent.native = Some(ferry_common::uploads::NativeParts {
            first: 1,
            etags: vec!["\"e1\"".into()],
        });
        let rest = part(&s.id, &b.token, 7, b"orl");
        // Recorded while the append still streams: the lease stays.
        let (after, added) = store
            .append_upload(
                &s.id,
                &b.token,
                std::slice::from_ref(&sent),
                AppendEnd::Keep,
                1 << 40,
                expires,
            )
            .await
            .unwrap();
        assert_eq!((after.offset, added), (7, 4));
        assert!(matches!(
            store
                .lease_upload(&ask(&acc, &s.id, 7, "ams1"), &never)
                .await,
            Err(UploadRefusal::Locked)
        ));
        let (after, added) = store
            .append_upload(
                &s.id,
                &b.token,
                std::slice::from_ref(&rest),
                AppendEnd::Release,
                1 << 40,
                expires,
            )
            .await
            .unwrap();
        assert_eq!((after.offset, added), (10, 3));
        assert_eq!(
            after.crc64nvme,
            ferry_common::checksum::crc64nvme(b"hello worl")
        );
        let (c, _) = store
            .lease_upload(&ask(&acc, &s.id, 10, "fra1"), &never)
            .await
            .unwrap();
        assert_eq!(c.parts, vec![sent.clone(), rest]);
        // Only the last part, staged, may be replaced, from where it starts.
        let mut again = part(&s.id, &c.token, 0, b"hello worl");
        again.native = sent.native.clone();
        assert!(matches!(
            store
                .append_upload(
                    &s.id,
                    &c.token,
                    &[again],
                    AppendEnd::Release,
                    1 << 40,
                    expires
                )
                .await,
            Err(UploadRefusal::Invalid(_))
        ));
        let (d, _) = store
            .lease_upload(&ask(&acc, &s.id, 10, "fra1"), &never)
            .await
            .unwrap();
        let inside = part(&s.id, &d.token, 8, b"rl");
        assert!(matches!(
            store
                .append_upload(
                    &s.id,
                    &d.token,
                    &[inside],
                    AppendEnd::Release,
                    1 << 40,
                    expires
                )
                .await,
            Err(UploadRefusal::Invalid(_))
        ));
    }
}
