//! The metadata index: every connection's tree as the hub last saw it,
//! one row per file and folder, so that a page of a folder is one range
//! query and changes made outside ferry can be told from the provider's
//! listings.
//!
//! A row is keyed by its folder (`parent`) and its `name` in key form: a
//! folder's name ends with `/` (`docs/`), a file's does not, and `parent`
//! is the folder's whole key (`""` for the root, `a/b/` below). Both
//! compare as bytes (`COLLATE "C"` on PostgreSQL, SQLite's default), so
//! a folder's children come in byte order of their key names and a whole
//! subtree is one range of `parent`: `[a/b/, a/b0)`.
//!
//! Two writers keep it: ferry's own commits ([`Store::commit`] indexes
//! what it upserts and removes, in the same transaction as the event), and
//! the hub's scans of the provider ([`Store::apply_scan`]). Every write by
//! a commit raises the row's `rev`; a scan's change applies only if the
//! row's `rev` is still the one the scan read before it listed the
//! provider, so a scan never undoes a commit that landed while it was
//! looking.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, StoreError, WriteTx};
use ferry_common::content::model::{EventKind, EventRecord, ObjectMeta, Origin};

/// What the index says of one child of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Its name in key form: a folder's ends with `/`.
    pub name: String,
    /// A file's size in bytes.
    pub size: Option<i64>,
    /// The provider's entity tag or change token, as it gave it.
    pub etag: Option<String>,
    /// The provider's modification time, unix nanoseconds.
    pub modified_ns: Option<i64>,
    /// Raised by each write of a commit: what a scan's change is checked
    /// against.
    pub rev: i64,
}

impl IndexEntry {
    /// Whether it is a folder.
    pub fn is_dir(&self) -> bool {
        self.name.ends_with('/')
    }

    /// Its name as shown: without a folder's `/`.
    pub fn display_name(&self) -> &str {
        self.name.strip_suffix('/').unwrap_or(&self.name)
    }
}

/// A child of a folder in a listing, with ferry's record of a file.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The index's row.
    pub entry: IndexEntry,
    /// What ferry recorded of the file, if anything.
    pub meta: Option<ObjectMeta>,
}

/// What a provider's listing says of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// A file's size.
    pub size: Option<i64>,
    /// The provider's entity tag.
    pub etag: Option<String>,
    /// Modification time, unix nanoseconds.
    pub modified_ns: Option<i64>,
}

/// One difference a scan found between the provider and the index.
#[derive(Debug, Clone)]
pub struct ScanChange {
    /// The folder's key (`""`, `a/`).
    pub parent: String,
    /// The entry's key name.
    pub name: String,
    /// The `rev` of the row the scan read, or `None` if it read none.
    pub seen_rev: Option<i64>,
    /// The entry as the provider lists it; `None` when it is gone.
    pub now: Option<Facts>,
    /// The event to record when the change applies: `None` for filling in
    /// what the index did not know, or while the index is first built.
    pub event: Option<EventKind>,
    /// What the index knew of the entry (for a removal's event, and to
    /// tell a move).
    pub old: Option<Facts>,
    /// For a file found where another went in the same look (same size,
    /// and the same entity tag, or modification time where there is no
    /// tag): the path it moved from, and the event is `moved`.
    pub from: Option<String>,
}

/// What [`Store::apply_scan`] did with a scan's changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanApplied {
    /// Which of the changes applied, in order.
    pub applied: Vec<bool>,
    /// How many files went with removed folders.
    pub subtree_files: u64,
    /// Whether any change was held back because ferry's own change to its
    /// path is under way (an unsettled intent): that change's commit
    /// records it, and a later scan looks again.
    pub held: bool,
}

/// Unsettled intents on path `$2` of connection `$1`, or (a move's
/// source) making it absent.
const CHANGING: &str = "SELECT COUNT(*) FROM intents WHERE connection_id = $1 \
     AND (path = $2 OR absent_path = $2) AND outcome IS NULL";

/// Unsettled intents on any path in `[$2, $3)` of connection `$1`: below
/// a folder.
const CHANGING_BELOW: &str = "SELECT COUNT(*) FROM intents WHERE connection_id = $1 \
     AND ((path >= $2 AND path < $3) OR (absent_path >= $2 AND absent_path < $3)) \
     AND outcome IS NULL";

/// A connection's index and its scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexState {
    /// Whether a full scan has completed: listings come from the index.
    pub complete: bool,
    /// When the next full scan is due, unix milliseconds.
    pub next_scan_at: i64,
    /// When the last full scan completed.
    pub last_scan_at: Option<i64>,
    /// How many entries it saw.
    pub last_scan_size: Option<i64>,
}

/// A connection whose scans a hub holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldIndex {
    /// The connection.
    pub connection_id: String,
    /// Its account.
    pub account_id: String,
    /// Its state.
    pub state: IndexState,
}

/// The largest child count [`Store::index_children`] reads in one query.
const CHILDREN_PAGE: i64 = 5_000;

/// Splits a path into its folder key and key name (`a/b/c` →
/// (`a/b/`, `c`), or (`a/b/`, `c/`) for a folder).
pub fn key_of(path: &str, is_dir: bool) -> (String, String) {
    let path = path.trim_matches('/');
    let (parent, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    let name = if is_dir {
        format!("{name}/")
    } else {
        name.to_owned()
    };
    (parent.to_owned(), name)
}

/// The first key after every key that starts with `prefix` (which ends
/// with `/`): `a/b/` → `a/b0`.
pub fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.trim_end_matches('/').to_owned();
    end.push('0');
    end
}

/// An entry from `row`, its columns named with `prefix` before them.
fn entry_from(row: &AnyRow, prefix: &str) -> Result<IndexEntry, sqlx::Error> {
    let col = |c: &str| format!("{prefix}{c}");
    Ok(IndexEntry {
        name: row.try_get(col("name").as_str())?,
        size: row.try_get(col("size").as_str())?,
        etag: row.try_get(col("etag").as_str())?,
        modified_ns: row.try_get(col("modified_ns").as_str())?,
        rev: row.try_get(col("rev").as_str())?,
    })
}

fn state_from(row: &AnyRow) -> Result<IndexState, sqlx::Error> {
    let complete: i64 = row.try_get("complete")?;
    Ok(IndexState {
        complete: complete != 0,
        next_scan_at: row.try_get("next_scan_at")?,
        last_scan_at: row.try_get("last_scan_at")?,
        last_scan_size: row.try_get("last_scan_size")?,
    })
}

/// Adds the rows the index lacks of the folder whose key is `dir` (`""`
/// for none, `a/b/`) and of every folder above it.
async fn index_folders(
    tx: &mut WriteTx<'_>,
    connection_id: &str,
    dir: &str,
) -> Result<(), sqlx::Error> {
    let mut parent = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        let name = format!("{part}/");
        sqlx::query(
            "INSERT INTO entries (connection_id, parent, name, rev) VALUES ($1, $2, $3, 0) \
             ON CONFLICT (connection_id, parent, name) DO NOTHING",
        )
        .bind(connection_id)
        .bind(&parent)
        .bind(&name)
        .execute(&mut **tx)
        .await?;
        parent.push_str(&name);
    }
    Ok(())
}

impl Store {
    /// Indexes a commit's changes inside its transaction: removed files
    /// go, an upserted file (and its folders) is written with what the
    /// commit knows, and a new folder is added.
    pub(super) async fn index_commit(
        &self,
        tx: &mut WriteTx<'_>,
        remove: &[(String, String)],
        upsert: Option<&ObjectMeta>,
        folder: Option<(&str, &str)>,
    ) -> Result<(), sqlx::Error> {
        for (connection_id, path) in remove {
            let (parent, name) = key_of(path, false);
            sqlx::query(
                "DELETE FROM entries WHERE connection_id = $1 AND parent = $2 AND name = $3",
            )
            .bind(connection_id)
            .bind(&parent)
            .bind(&name)
            .execute(&mut **tx)
            .await?;
        }
        if let Some(m) = upsert {
            let (parent, name) = key_of(&m.path, false);
            index_folders(tx, &m.connection_id, &parent).await?;
            // The provider's own tag is not known here: the next scan fills
            // it in, without an event, as the size and time agree.
            sqlx::query(
                "INSERT INTO entries (connection_id, parent, name, size, etag, modified_ns, rev) \
                 VALUES ($1, $2, $3, $4, NULL, $5, 0) \
                 ON CONFLICT (connection_id, parent, name) DO UPDATE SET size = excluded.size, \
                 etag = NULL, modified_ns = excluded.modified_ns, rev = entries.rev + 1",
            )
            .bind(&m.connection_id)
            .bind(&parent)
            .bind(&name)
            .bind(m.size)
            .bind(
                m.provider_modified_ms
                    .map(|ms| ms.saturating_mul(1_000_000)),
            )
            .execute(&mut **tx)
            .await?;
        }
        if let Some((connection_id, path)) = folder {
            index_folders(tx, connection_id, path).await?;
        }
        Ok(())
    }

    /// The state of a connection's index; `None` for a connection the
    /// store does not know.
    pub async fn index_state(&self, connection_id: &str) -> Result<Option<IndexState>, StoreError> {
        let row = sqlx::query(
            "SELECT complete, next_scan_at, last_scan_at, last_scan_size FROM index_state \
             WHERE connection_id = $1",
        )
        .bind(connection_id)
        .fetch_optional(self.read_pool().await)
        .await?;
        Ok(row.as_ref().map(state_from).transpose()?)
    }

    /// A page of a folder from the index: the children of `parent` whose
    /// key name comes after `after`, in byte order, each file with ferry's
    /// record of it.
    pub async fn index_page(
        &self,
        connection_id: &str,
        parent: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Listed>, StoreError> {
        // The entry's columns under their own names (e_…), ferry's
        // record's under the names `objects` gives them.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT e.name AS e_name, e.size AS e_size, e.etag AS e_etag, \
             e.modified_ns AS e_modified_ns, e.rev AS e_rev, {} \
             FROM entries e LEFT JOIN objects o \
             ON o.connection_id = e.connection_id AND o.path = e.parent || e.name \
             WHERE e.connection_id = $1 AND e.parent = $2 AND e.name > $3 \
             ORDER BY e.name LIMIT CAST($4 AS BIGINT)",
            super::objects::COLUMNS
                .split(", ")
                .map(|c| format!("o.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(connection_id)
        .bind(parent)
        .bind(after)
        .bind(limit)
        .fetch_all(self.read_pool().await)
        .await?;
        rows.iter()
            .map(|row| {
                let entry = entry_from(row, "e_")?;
                let recorded: Option<String> = row.try_get("path")?;
                let meta = match recorded {
                    Some(_) if !entry.is_dir() => Some(super::objects::from_row(row)?),
                    _ => None,
                };
                Ok(Listed { entry, meta })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The index's row for one key, if any.
    pub async fn index_entry(
        &self,
        connection_id: &str,
        parent: &str,
        name: &str,
    ) -> Result<Option<IndexEntry>, StoreError> {
        let row = sqlx::query(
            "SELECT name, size, etag, modified_ns, rev FROM entries \
             WHERE connection_id = $1 AND parent = $2 AND name = $3",
        )
        .bind(connection_id)
        .bind(parent)
        .bind(name)
        .fetch_optional(self.read_pool().await)
        .await?;
        Ok(row.as_ref().map(|r| entry_from(r, "")).transpose()?)
    }

    /// Every child of `parent` in the index, in key order (read in pages
    /// from the primary: a scan compares against what was last written).
    pub async fn index_children(
        &self,
        connection_id: &str,
        parent: &str,
    ) -> Result<Vec<IndexEntry>, StoreError> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let rows = sqlx::query(
                "SELECT name, size, etag, modified_ns, rev FROM entries \
                 WHERE connection_id = $1 AND parent = $2 AND name > $3 ORDER BY name LIMIT CAST($4 AS BIGINT)",
            )
            .bind(connection_id)
            .bind(parent)
            .bind(&after)
            .bind(CHILDREN_PAGE)
            .fetch_all(&self.pool)
            .await?;
            let n = rows.len() as i64;
            for row in &rows {
                out.push(entry_from(row, "")?);
            }
            match out.last() {
                Some(last) if n == CHILDREN_PAGE => after = last.name.clone(),
                _ => return Ok(out),
            }
        }
    }

    /// Applies a scan's changes in one transaction, each only if the row
    /// is as the scan read it and no change of ferry's own to its path is
    /// under way, with the event of each that applied (origin
    /// `provider`). A removed folder takes its subtree with it, an event
    /// for each file in it.
    ///
    /// ferry changes the provider first and records the change after: a
    /// scan between the two sees the provider changed and the row as it
    /// was. The change's intent, unsettled until its commit, is what tells
    /// the two apart; were the scan's change applied, the commit would
    /// report the same change a second time.
    pub async fn apply_scan(
        &self,
        connection_id: &str,
        account_id: &str,
        changes: &[ScanChange],
        at: i64,
    ) -> Result<ScanApplied, StoreError> {
        let mut out = ScanApplied {
            applied: Vec::with_capacity(changes.len()),
            ..ScanApplied::default()
        };
        if changes.is_empty() {
            return Ok(out);
        }
        let mut tx = self.write_tx().await?;
        for c in changes {
            let path = format!("{}{}", c.parent, c.name);
            let is_dir = c.name.ends_with('/');
            let mut changing: i64 = if is_dir {
                sqlx::query_scalar(CHANGING_BELOW)
                    .bind(connection_id)
                    .bind(&path)
                    .bind(prefix_end(&path))
                    .fetch_one(&mut *tx)
                    .await?
            } else {
                sqlx::query_scalar(CHANGING)
                    .bind(connection_id)
                    .bind(&path)
                    .fetch_one(&mut *tx)
                    .await?
            };
            if let Some(from) = &c.from {
                changing += sqlx::query_scalar::<_, i64>(CHANGING)
                    .bind(connection_id)
                    .bind(from)
                    .fetch_one(&mut *tx)
                    .await?;
            }
            if changing > 0 {
                out.applied.push(false);
                out.held = true;
                continue;
            }
            let done = match (&c.now, c.seen_rev) {
                (Some(f), None) => sqlx::query(
                    "INSERT INTO entries (connection_id, parent, name, size, etag, modified_ns, rev) \
                     VALUES ($1, $2, $3, $4, $5, $6, 0) \
                     ON CONFLICT (connection_id, parent, name) DO NOTHING",
                )
                .bind(connection_id)
                .bind(&c.parent)
                .bind(&c.name)
                .bind(f.size)
                .bind(f.etag.as_deref())
                .bind(f.modified_ns)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                (Some(f), Some(rev)) => sqlx::query(
                    "UPDATE entries SET size = $1, etag = $2, modified_ns = $3 \
                     WHERE connection_id = $4 AND parent = $5 AND name = $6 AND rev = $7",
                )
                .bind(f.size)
                .bind(f.etag.as_deref())
                .bind(f.modified_ns)
                .bind(connection_id)
                .bind(&c.parent)
                .bind(&c.name)
                .bind(rev)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                (None, Some(rev)) => sqlx::query(
                    "DELETE FROM entries \
                     WHERE connection_id = $1 AND parent = $2 AND name = $3 AND rev = $4",
                )
                .bind(connection_id)
                .bind(&c.parent)
                .bind(&c.name)
                .bind(rev)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                (None, None) => 0,
            };
            let done = done > 0;
            out.applied.push(done);
            if !done {
                continue;
            }
            if !is_dir && (c.now.is_none() || c.event == Some(EventKind::Updated)) {
                // What ferry recorded describes content that is gone.
                sqlx::query("DELETE FROM objects WHERE connection_id = $1 AND path = $2")
                    .bind(connection_id)
                    .bind(&path)
                    .execute(&mut *tx)
                    .await?;
            }
            if is_dir && c.now.is_none() {
                out.subtree_files += self
                    .remove_subtree(&mut tx, connection_id, account_id, &path, c.event, at)
                    .await?;
            }
            if let Some(kind) = c.event.filter(|_| !is_dir) {
                let size = match &c.now {
                    Some(f) => f.size,
                    None => c.old.as_ref().and_then(|f| f.size),
                };
                let mut e = provider_event(account_id, connection_id, kind, path, size, at);
                e.from_path = c.from.clone();
                self.insert_event(&mut tx, &e).await?;
            }
        }
        tx.commit().await?;
        self.note_write().await;
        Ok(out)
    }

    /// Removes the folder `dir` (`a/b/`) from the index and the metadata
    /// with whatever is still recorded below it from before `since` (Unix
    /// ms: when its deletion began), and adds `event` (the folder's
    /// `deleted`); the files deleted before it had theirs. A file written
    /// below it since keeps its record, and the folders above it their
    /// index rows.
    pub async fn remove_folder(
        &self,
        dir: &str,
        since: i64,
        event: &EventRecord,
    ) -> Result<(), StoreError> {
        let connection_id = event.connection_id.as_str();
        let end = prefix_end(dir);
        let (up, name) = key_of(dir, true);
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "DELETE FROM objects WHERE connection_id = $1 AND path >= $2 AND path < $3 \
             AND updated_at < $4",
        )
        .bind(connection_id)
        .bind(dir)
        .bind(&end)
        .bind(since)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM entries WHERE connection_id = $1 \
             AND ((parent >= $2 AND parent < $3) OR (parent = $4 AND name = $5)) \
             AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.connection_id = $1 \
             AND o.path >= $2 AND o.path < $3 \
             AND substr(o.path, 1, length(entries.parent || entries.name)) = entries.parent || entries.name)",
        )
        .bind(connection_id)
        .bind(dir)
        .bind(&end)
        .bind(&up)
        .bind(&name)
        .execute(&mut *tx)
        .await?;
        self.insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes every row below the folder `dir` (`a/b/`), with a
    /// `deleted` event for each file when `event` is set; returns how many
    /// files went.
    async fn remove_subtree(
        &self,
        tx: &mut WriteTx<'_>,
        connection_id: &str,
        account_id: &str,
        dir: &str,
        event: Option<EventKind>,
        at: i64,
    ) -> Result<u64, sqlx::Error> {
        let end = prefix_end(dir);
        let mut gone = 0;
        sqlx::query(
            "DELETE FROM objects WHERE connection_id = $1 AND path IN \
             (SELECT parent || name FROM entries WHERE connection_id = $1 AND parent >= $2 AND parent < $3)",
        )
        .bind(connection_id)
        .bind(dir)
        .bind(&end)
        .execute(&mut **tx)
        .await?;
        if event.is_some() {
            let files: Vec<(String, String, Option<i64>)> = sqlx::query_as(
                "SELECT parent, name, size FROM entries WHERE connection_id = $1 \
                 AND parent >= $2 AND parent < $3 ORDER BY parent, name",
            )
            .bind(connection_id)
            .bind(dir)
            .bind(&end)
            .fetch_all(&mut **tx)
            .await?;
            for (parent, name, size) in files.into_iter().filter(|f| !f.1.ends_with('/')) {
                let e = provider_event(
                    account_id,
                    connection_id,
                    EventKind::Deleted,
                    format!("{parent}{name}"),
                    size,
                    at,
                );
                self.insert_event(tx, &e).await?;
                gone += 1;
            }
        }
        sqlx::query(
            "DELETE FROM entries WHERE connection_id = $1 AND parent >= $2 AND parent < $3",
        )
        .bind(connection_id)
        .bind(dir)
        .bind(&end)
        .execute(&mut **tx)
        .await?;
        Ok(gone)
    }

    /// Takes the scans of every connection whose lease is free or lapsed
    /// and renews those `holder` has, until `until`; returns the ones it
    /// holds now.
    pub async fn hold_indexes(
        &self,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<Vec<HeldIndex>, StoreError> {
        self.refuse_if_down()?;
        sqlx::query(
            "UPDATE index_state SET holder = $1, held_until = $2 \
             WHERE holder IS NULL OR holder = $1 OR held_until < $3",
        )
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT s.connection_id, c.account_id, s.complete, s.next_scan_at, s.last_scan_at, \
             s.last_scan_size FROM index_state s JOIN connections c ON c.id = s.connection_id \
             WHERE s.holder = $1 ORDER BY s.connection_id",
        )
        .bind(holder)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(HeldIndex {
                    connection_id: row.try_get("connection_id")?,
                    account_id: row.try_get("account_id")?,
                    state: state_from(row)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Gives up `holder`'s leases (a hub stopping), so another hub takes
    /// the scans over at once.
    pub async fn release_indexes(&self, holder: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE index_state SET holder = NULL, held_until = NULL WHERE holder = $1")
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a completed full scan of `entries` entries: the index is
    /// complete, the next scan due at `next_scan_at`. False if `holder`
    /// no longer holds the connection's scans.
    pub async fn finish_scan(
        &self,
        connection_id: &str,
        holder: &str,
        at: i64,
        entries: i64,
        next_scan_at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE index_state SET complete = 1, last_scan_at = $1, last_scan_size = $2, \
             next_scan_at = $3 WHERE connection_id = $4 AND holder = $5",
        )
        .bind(at)
        .bind(entries)
        .bind(next_scan_at)
        .bind(connection_id)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Puts a connection's next full scan at `next_scan_at` (after a scan
    /// that failed, or to rescan now).
    pub async fn schedule_scan(
        &self,
        connection_id: &str,
        next_scan_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE index_state SET next_scan_at = $1 WHERE connection_id = $2")
            .bind(next_scan_at)
            .bind(connection_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn provider_event(
    account_id: &str,
    connection_id: &str,
    kind: EventKind,
    path: String,
    size: Option<i64>,
    at: i64,
) -> EventRecord {
    EventRecord {
        account_id: account_id.to_owned(),
        connection_id: connection_id.to_owned(),
        kind,
        path,
        from_path: None,
        size,
        at,
        origin: Origin::Provider,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_paths_into_folder_and_name() {
        assert_eq!(key_of("a", false), ("".into(), "a".into()));
        assert_eq!(key_of("a/b/c.txt", false), ("a/b/".into(), "c.txt".into()));
        assert_eq!(key_of("a/b", true), ("a/".into(), "b/".into()));
        assert_eq!(key_of("a/b/", true), ("a/".into(), "b/".into()));
        assert_eq!(prefix_end("a/b/"), "a/b0");
        // Every key below a/b/ sorts inside [a/b/, a/b0), and a/b-x and
        // a/b0 outside it.
        for inside in ["a/b/", "a/b/c", "a/b/~", "a/b/c/d/"] {
            assert!(("a/b/".."a/b0").contains(&inside), "{inside}");
        }
        for outside in ["a/b-x/", "a/b0/", "a/b", "a/c/"] {
            assert!(!("a/b/".."a/b0").contains(&outside), "{outside}");
        }
    }
}
