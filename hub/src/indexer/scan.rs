//! One scan: a folder of a connection's provider compared with the index,
//! the differences written with their events, and the folders below it
//! visited depth first.
//!
//! A folder is compared whole: its entries are read from the index first
//! (each with the `rev` a commit raises), then listed from the provider,
//! sorted by key name and merged with them. Reading the index first means
//! a commit that lands during the listing either shows in it (its content
//! was in place before its commit) or changes the row's `rev`, and then
//! the scan's change does not apply ([`Store::apply_scan`]). Memory grows
//! with the largest folder, not with the tree: the folders still to visit
//! are kept as names only.

use std::time::Duration;

use ferry_common::path::{ObjectPath, STAGING_DIR};
use futures_util::TryStreamExt as _;
use opendal::Operator;
use tokio::time::Instant;

use super::metrics::{ChangeKind, IndexMetrics};
use crate::store::{EventKind, Facts, IndexEntry, ScanChange, Store, StoreError};

/// The most changes written in one transaction.
const BATCH: usize = 500;

/// About how many entries a provider returns per listing request (S3,
/// Azure and GCS pages are 1,000 to 5,000): [`Pace`] counts one request
/// per this many entries.
const ENTRIES_PER_REQUEST: u64 = 1_000;

/// Why a scan stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The provider failed a listing.
    #[error("listing '{dir}' failed: {source}")]
    Provider {
        /// The folder.
        dir: String,
        /// What the provider said (scrubbed before it is logged).
        source: opendal::Error,
    },
    /// Reading a local folder failed.
    #[error("reading the folder '{dir}' failed: {source}")]
    Local {
        /// The folder.
        dir: String,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Spaces a connection's listing requests out: at most one per `gap`.
#[derive(Debug)]
pub struct Pace {
    gap: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl Pace {
    /// At most `per_second` requests a second.
    pub fn new(per_second: u32) -> Self {
        Self {
            gap: Duration::from_secs(1) / per_second.max(1),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Waits for the next request's turn.
    pub async fn wait(&self) {
        let mut next = self.next.lock().await;
        let now = Instant::now();
        if *next > now {
            tokio::time::sleep_until(*next).await;
        }
        *next = (*next).max(now) + self.gap;
    }
}

/// What a folder's comparison found.
#[derive(Debug, Default)]
pub struct FolderScan {
    /// Folders below it to visit next (key paths, `a/b/`).
    pub descend: Vec<String>,
    /// Entries the provider listed.
    pub entries: u64,
    /// Some file changed too recently to be taken as settled: the folder
    /// should be looked at again soon.
    pub unsettled: bool,
    /// Changes applied.
    pub applied: u64,
}

/// A scan of one connection.
#[derive(Debug)]
pub struct Scan<'a> {
    /// The store.
    pub store: &'a Store,
    /// The connection's provider.
    pub op: &'a Operator,
    /// The connection.
    pub connection_id: &'a str,
    /// Its account, whose feed the events join.
    pub account_id: &'a str,
    /// Whether changes become events: not while the index is first built
    /// (what is already there was not "created" now).
    pub events: bool,
    /// The connection's request pacing.
    pub pace: &'a Pace,
    /// The index's metrics.
    pub metrics: &'a IndexMetrics,
    /// A file modified after this (unix nanoseconds) is left for a later
    /// look: ferry's own commit of it may still be on its way.
    pub settle_after_ns: i64,
    /// For an `fs` connection, its folder: read directly, one blocking
    /// task a folder, rather than through OpenDAL's lister, which hands
    /// every entry's stat to the blocking pool on its own.
    pub local_root: Option<&'a std::path::Path>,
}

/// Reads the folder `dir` (`""`, `a/b/`) below `root` as [`Scan::list`]
/// gives it: key names (a folder's with `/`), sizes and modification times
/// (a symbolic link's target's, as a stat through the provider sees it),
/// sorted; names ferry cannot address and the root's staging folder left
/// out. A folder that is not there lists empty.
fn list_local(root: &std::path::Path, dir: &str) -> std::io::Result<Vec<(String, Facts)>> {
    let folder = root.join(dir.trim_end_matches('/'));
    let read = match std::fs::read_dir(&folder) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if (dir.is_empty() && name == STAGING_DIR)
            || ObjectPath::parse(&format!("{dir}{name}")).is_err()
        {
            continue;
        }
        let meta = match entry.file_type() {
            Ok(t) if t.is_symlink() => std::fs::metadata(entry.path()),
            _ => entry.metadata(),
        };
        // Gone between the listing and the stat, or a link to nothing.
        let Ok(meta) = meta else { continue };
        if meta.is_dir() {
            out.push((
                format!("{name}/"),
                Facts {
                    size: None,
                    etag: None,
                    modified_ns: None,
                },
            ));
        } else {
            let modified_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i64);
            out.push((
                name,
                Facts {
                    size: Some(meta.len() as i64),
                    etag: None,
                    modified_ns,
                },
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Whether `a` and `b` are the same content: the same size, and the same
/// entity tag, or, where there is none, the same modification time (a
/// rename keeps it; a copy at an object store gets a new one, but the
/// same tag).
fn same_content(a: &Facts, b: &Facts) -> bool {
    a.size.is_some()
        && a.size == b.size
        && match (&a.etag, &b.etag) {
            (Some(x), Some(y)) => x == y,
            _ => a.modified_ns.is_some() && a.modified_ns == b.modified_ns,
        }
}

/// Turns a file that went and a file that came with the same content, in
/// the same batch of changes, into one `moved` event (from the first to
/// the second); the removal's row goes without an event of its own.
fn pair_moves(changes: &mut [ScanChange]) {
    let gone: Vec<usize> = (0..changes.len())
        .filter(|&i| {
            let c = &changes[i];
            c.event == Some(EventKind::Deleted) && c.now.is_none() && !c.name.ends_with('/')
        })
        .collect();
    for i in gone {
        let Some(old) = changes[i].old.clone() else {
            continue;
        };
        let came = changes.iter().position(|c| {
            c.event == Some(EventKind::Created)
                && c.from.is_none()
                && c.now.as_ref().is_some_and(|now| same_content(&old, now))
        });
        if let Some(j) = came {
            let from = format!("{}{}", changes[i].parent, changes[i].name);
            changes[j].event = Some(EventKind::Moved);
            changes[j].from = Some(from);
            changes[i].event = None;
        }
    }
}

/// Whether what the provider lists now is other content than the row.
fn differs(row: &IndexEntry, now: &Facts) -> bool {
    // Times compare to the millisecond: a commit records the provider's
    // time in milliseconds.
    let ms = |ns: i64| ns.div_euclid(1_000_000);
    row.size != now.size
        || matches!((row.modified_ns, now.modified_ns), (Some(a), Some(b)) if ms(a) != ms(b))
        || matches!((&row.etag, &now.etag), (Some(a), Some(b)) if a != b)
}

/// Whether the row lacks (or has other) details of the same content.
fn refines(row: &IndexEntry, now: &Facts) -> bool {
    row.etag != now.etag || row.modified_ns != now.modified_ns || row.size != now.size
}

fn facts(meta: &opendal::Metadata) -> Facts {
    let is_file = !meta.is_dir();
    Facts {
        size: is_file.then(|| meta.content_length() as i64),
        etag: meta.etag().filter(|_| is_file).map(str::to_owned),
        modified_ns: meta
            .last_modified()
            .filter(|_| is_file)
            .map(|t| t.into_inner().as_nanosecond() as i64),
    }
}

impl Scan<'_> {
    /// Lists the folder `dir` (`""` or `a/b/`) at the provider: its
    /// children's key names with what the listing says of each, sorted.
    async fn list(&self, dir: &str) -> Result<Vec<(String, Facts)>, ScanError> {
        if let Some(root) = self.local_root {
            let (root, owned) = (root.to_path_buf(), dir.to_owned());
            let listed = tokio::task::spawn_blocking(move || list_local(&root, &owned))
                .await
                .map_err(|e| ScanError::Local {
                    dir: dir.to_owned(),
                    source: std::io::Error::other(e),
                })?
                .map_err(|source| ScanError::Local {
                    dir: dir.to_owned(),
                    source,
                })?;
            self.metrics.entries_scanned.inc_by(listed.len() as u64);
            return Ok(listed);
        }
        let fail = |source| ScanError::Provider {
            dir: dir.to_owned(),
            source,
        };
        let list_path = if dir.is_empty() { "/" } else { dir };
        self.pace.wait().await;
        let mut lister = self.op.lister(list_path).await.map_err(fail)?;
        let mut out = Vec::new();
        let mut seen = 0u64;
        while let Some(entry) = lister.try_next().await.map_err(fail)? {
            seen += 1;
            if seen.is_multiple_of(ENTRIES_PER_REQUEST) {
                self.pace.wait().await;
            }
            let path = entry.path();
            let Some(name) = path.strip_prefix(dir) else {
                continue;
            };
            let stem = name.strip_suffix('/').unwrap_or(name);
            if stem.is_empty() || stem.contains('/') || (dir.is_empty() && stem == STAGING_DIR) {
                continue;
            }
            // A name ferry cannot address (a control character, say) is
            // not indexed: no request could name it.
            if ObjectPath::parse(&format!("{dir}{stem}")).is_err() {
                tracing::debug!(connection.id = %self.connection_id, "a provider entry's name is not a ferry path; not indexed");
                continue;
            }
            let meta = entry.metadata();
            let key = if meta.is_dir() {
                format!("{stem}/")
            } else {
                stem.to_owned()
            };
            out.push((key, facts(meta)));
        }
        self.metrics.entries_scanned.inc_by(out.len() as u64);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(out)
    }

    /// Compares the folder `dir` with the index and applies the
    /// differences. Folders to visit next: every subfolder with
    /// `descend_all`, else only those that were new.
    pub async fn folder(&self, dir: &str, descend_all: bool) -> Result<FolderScan, ScanError> {
        // The index first, then the provider: see the module's comment.
        let rows = self.store.index_children(self.connection_id, dir).await?;
        let listed = self.list(dir).await?;
        let mut out = FolderScan {
            entries: listed.len() as u64,
            ..FolderScan::default()
        };
        // Changes are written as they fill a batch: memory holds the two
        // sorted lists and one batch, not a change per entry.
        let mut changes: Vec<ScanChange> = Vec::with_capacity(BATCH);
        let change = |name: &str,
                      seen: Option<&IndexEntry>,
                      now: Option<Facts>,
                      event: Option<EventKind>| ScanChange {
            parent: dir.to_owned(),
            name: name.to_owned(),
            seen_rev: seen.map(|r| r.rev),
            old: seen.map(|r| Facts {
                size: r.size,
                etag: r.etag.clone(),
                modified_ns: r.modified_ns,
            }),
            from: None,
            now,
            event: event.filter(|_| self.events),
        };
        // A first scan records no events: nothing to mistake, no need to
        // wait.
        let settled =
            |f: &Facts| !self.events || f.modified_ns.is_none_or(|t| t <= self.settle_after_ns);
        let (mut i, mut j) = (0, 0);
        while i < rows.len() || j < listed.len() {
            let row = rows.get(i);
            let now = listed.get(j);
            match (row, now) {
                (Some(r), Some((name, f))) if r.name == *name => {
                    i += 1;
                    j += 1;
                    if r.is_dir() {
                        // Visited below when all are.
                    } else if differs(r, f) {
                        if settled(f) {
                            changes.push(change(
                                name,
                                Some(r),
                                Some(f.clone()),
                                Some(EventKind::Updated),
                            ));
                        } else {
                            out.unsettled = true;
                        }
                    } else if refines(r, f) {
                        changes.push(change(name, Some(r), Some(f.clone()), None));
                    }
                }
                (Some(r), Some((name, _))) if r.name < *name => {
                    i += 1;
                    changes.push(change(&r.name, Some(r), None, Some(EventKind::Deleted)));
                }
                (Some(r), None) => {
                    i += 1;
                    changes.push(change(&r.name, Some(r), None, Some(EventKind::Deleted)));
                }
                (_, Some((name, f))) => {
                    j += 1;
                    if name.ends_with('/') {
                        changes.push(change(name, None, Some(f.clone()), None));
                    } else if settled(f) {
                        changes.push(change(
                            name,
                            None,
                            Some(f.clone()),
                            Some(EventKind::Created),
                        ));
                    } else {
                        out.unsettled = true;
                    }
                }
                (None, None) => unreachable!("the loop runs while either has entries"),
            }
            if changes.len() >= BATCH {
                self.apply(&mut changes, &mut out, descend_all).await?;
            }
        }
        self.apply(&mut changes, &mut out, descend_all).await?;
        if descend_all {
            // Every folder the provider has, in key order, new ones too.
            let mut all: Vec<String> = listed
                .iter()
                .filter(|(n, _)| n.ends_with('/'))
                .map(|(n, _)| format!("{dir}{n}"))
                .collect();
            all.dedup();
            out.descend = all;
        }
        Ok(out)
    }

    /// Writes `changes` (and empties it), counting what applied; a new
    /// folder whose row was written is one to descend into when only new
    /// ones are.
    async fn apply(
        &self,
        changes: &mut Vec<ScanChange>,
        out: &mut FolderScan,
        descend_all: bool,
    ) -> Result<(), ScanError> {
        if changes.is_empty() {
            return Ok(());
        }
        pair_moves(changes);
        let at = ferry_common::content::model::now_ms();
        let done = self
            .store
            .apply_scan(self.connection_id, self.account_id, changes, at)
            .await?;
        for _ in 0..done.subtree_files {
            self.metrics.change(ChangeKind::deleted);
        }
        // ferry's own change is recorded by its commit; a later look sees
        // what came of it.
        out.unsettled |= done.held;
        for (c, ok) in changes.iter().zip(&done.applied) {
            if !*ok {
                continue;
            }
            out.applied += 1;
            self.count(c, at);
            if !descend_all && c.seen_rev.is_none() && c.name.ends_with('/') {
                out.descend.push(format!("{}{}", c.parent, c.name));
            }
        }
        changes.clear();
        Ok(())
    }

    fn count(&self, c: &ScanChange, at_ms: i64) {
        let Some(kind) = c.event else { return };
        if c.name.ends_with('/') {
            return;
        }
        self.metrics.change(match kind {
            EventKind::Created => ChangeKind::created,
            EventKind::Updated => ChangeKind::updated,
            EventKind::Moved => ChangeKind::moved,
            _ => ChangeKind::deleted,
        });
        if let Some(t) = c.now.as_ref().and_then(|f| f.modified_ns) {
            let lag = (at_ms as f64 / 1e3) - (t as f64 / 1e9);
            self.metrics.lag.observe(lag.max(0.0));
        }
    }

    /// Compares `dir` and the folders below it, depth first: all of them
    /// with `descend_all`, else those that are new. Returns the entries
    /// seen and the folders where some change was left to settle.
    pub async fn tree(
        &self,
        dir: &str,
        descend_all: bool,
    ) -> Result<(u64, Vec<String>), ScanError> {
        let mut stack = vec![dir.to_owned()];
        let (mut entries, mut unsettled) = (0, Vec::new());
        while let Some(dir) = stack.pop() {
            let f = self.folder(&dir, descend_all).await?;
            entries += f.entries;
            if f.unsettled {
                unsettled.push(dir);
            }
            stack.extend(f.descend.into_iter().rev());
        }
        Ok((entries, unsettled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Commit, ObjectMeta, testing::store};

    struct World {
        store: Store,
        _dir: tempfile::TempDir,
        op: Operator,
        account: String,
        conn: String,
        metrics: IndexMetrics,
        pace: Pace,
    }

    async fn world() -> World {
        let (store, dir) = store().await;
        let (account, _) = store.create_account("a").await.unwrap();
        let conn = crate::store::ConnectionRow {
            id: "con_1".into(),
            account_id: account.id.clone(),
            name: "m".into(),
            provider: "memory".into(),
            config_sealed: vec![1],
            created_at: 1,
            scan_interval_secs: None,
        };
        store.create_connection(&conn, None).await.unwrap();
        let op = Operator::new(opendal::services::Memory::default()).unwrap();
        World {
            store,
            _dir: dir,
            op,
            account: account.id,
            conn: conn.id,
            metrics: IndexMetrics::register(&mut Default::default()),
            pace: Pace::new(1000),
        }
    }

    impl World {
        fn scan(&self, events: bool) -> Scan<'_> {
            Scan {
                store: &self.store,
                op: &self.op,
                connection_id: &self.conn,
                account_id: &self.account,
                events,
                pace: &self.pace,
                metrics: &self.metrics,
                settle_after_ns: i64::MAX,
                local_root: None,
            }
        }

        async fn names(&self, parent: &str) -> Vec<String> {
            self.store
                .index_page(&self.conn, parent, "", 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.entry.name)
                .collect()
        }

        async fn events(&self) -> Vec<(EventKind, String)> {
            self.store
                .list_events(&self.account, 0, 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.kind, e.path))
                .collect()
        }
    }

    #[tokio::test]
    async fn a_first_scan_indexes_silently_and_later_ones_report_changes() {
        let w = world().await;
        for p in ["a.txt", "b/c.txt", "b/d/e.txt", "b-x.txt", "b0.txt"] {
            w.op.write(p, vec![1u8; 3]).await.unwrap();
        }
        let (n, _) = w.scan(false).tree("", true).await.unwrap();
        assert_eq!(n, 7, "5 files and 2 folders");
        assert_eq!(w.names("").await, ["a.txt", "b-x.txt", "b/", "b0.txt"]);
        assert_eq!(w.names("b/").await, ["c.txt", "d/"]);
        assert_eq!(w.names("b/d/").await, ["e.txt"]);
        assert!(
            w.events().await.is_empty(),
            "a first scan records no events"
        );

        // Nothing changed: nothing written.
        let (_, _) = w.scan(true).tree("", true).await.unwrap();
        assert!(w.events().await.is_empty());

        // Outside ferry: one file added, one replaced, a folder removed.
        w.op.write("b/new.txt", vec![2u8; 1]).await.unwrap();
        w.op.write("a.txt", vec![2u8; 5]).await.unwrap();
        w.op.delete_with("b/d/").recursive(true).await.unwrap();
        w.scan(true).tree("", true).await.unwrap();
        let mut events = w.events().await;
        events.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            events,
            [
                (EventKind::Updated, "a.txt".to_owned()),
                (EventKind::Deleted, "b/d/e.txt".to_owned()),
                (EventKind::Created, "b/new.txt".to_owned()),
            ]
        );
        assert_eq!(w.names("b/").await, ["c.txt", "new.txt"]);
        assert!(w.names("b/d/").await.is_empty());
        let origins: Vec<_> = w
            .store
            .list_events(&w.account, 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.origin)
            .collect();
        assert!(origins.iter().all(|o| *o == crate::store::Origin::Provider));
    }

    #[tokio::test]
    async fn a_commit_during_a_scan_is_not_undone_nor_reported_twice() {
        let w = world().await;
        w.scan(false).tree("", true).await.unwrap();
        // ferry writes a file and commits it; a scan that read the index
        // before that commit and lists after it must not remove it.
        let stale = w.store.index_children(&w.conn, "").await.unwrap();
        assert!(stale.is_empty());
        w.op.write("f.txt", vec![1u8; 4]).await.unwrap();
        let meta = ObjectMeta {
            generation: 0,
            connection_id: w.conn.clone(),
            path: "f.txt".into(),
            size: 4,
            crc64nvme: 7,
            sha256: None,
            content_type: None,
            etag: "\"e\"".into(),
            provider_modified_ms: None,
            updated_at: 1,
            headers: vec![],
        };
        w.store
            .commit(&Commit {
                upsert: Some(meta),
                ..Commit::default()
            })
            .await
            .unwrap();
        // The scan's insertion of the same file finds the commit's row.
        let f = w.scan(true).folder("", false).await.unwrap();
        assert_eq!(f.entries, 1);
        assert!(w.events().await.is_empty(), "the commit's row stands");
        // A removal read at an older rev does not apply.
        let row = w.store.index_children(&w.conn, "").await.unwrap().remove(0);
        let gone = ScanChange {
            parent: String::new(),
            name: "f.txt".into(),
            seen_rev: Some(row.rev - 1),
            now: None,
            event: Some(EventKind::Deleted),
            old: Some(Facts {
                size: Some(4),
                etag: None,
                modified_ns: None,
            }),
            from: None,
        };
        let applied = w
            .store
            .apply_scan(&w.conn, &w.account, &[gone], 1)
            .await
            .unwrap();
        assert_eq!(
            applied,
            crate::store::ScanApplied {
                applied: vec![false],
                ..Default::default()
            }
        );
        assert_eq!(w.names("").await, ["f.txt"]);
        assert!(w.events().await.is_empty());
    }

    #[tokio::test]
    async fn a_deletion_seen_before_ferry_records_it_is_reported_once() {
        let w = world().await;
        for p in ["d/a.txt", "d/b.txt", "keep.txt"] {
            w.op.write(p, vec![1u8; 2]).await.unwrap();
        }
        w.scan(false).tree("", true).await.unwrap();
        // ferry deletes both files of d/ as a folder's deletion does: the
        // intents, the provider, then (after a scan looked) the record.
        let deleting = |p: &str| Commit {
            remove: vec![(w.conn.clone(), p.to_owned())],
            event: Some(crate::store::EventRecord {
                account_id: w.account.clone(),
                connection_id: w.conn.clone(),
                kind: EventKind::Deleted,
                path: p.to_owned(),
                from_path: None,
                size: Some(2),
                at: 1,
                origin: crate::store::Origin::Ferry,
            }),
            ..Commit::default()
        };
        let mut changes = [deleting("d/a.txt"), deleting("d/b.txt")];
        let intents: Vec<_> = changes
            .iter()
            .map(|c| ferry_common::content::model::Intent {
                connection_id: w.conn.clone(),
                path: c.remove[0].1.clone(),
                expect: None,
                also_absent: None,
                replaces: 0,
                source: None,
                conditional: false,
                change: c.clone(),
            })
            .collect();
        let ids = w.store.record_intents(&intents, None).await.unwrap();
        // Another change to one of them is refused meanwhile, all of a
        // batch or none.
        let again = w.store.record_intents(&intents[1..], None).await;
        assert!(
            matches!(again, Err(crate::store::StoreError::WriteConflict(_))),
            "{again:?}"
        );
        w.op.delete("d/a.txt").await.unwrap();
        w.op.delete("d/b.txt").await.unwrap();
        w.op.delete("keep.txt").await.unwrap();
        let f = w.scan(true).folder("d/", false).await.unwrap();
        assert!(f.unsettled, "held back: ferry's changes are under way");
        assert_eq!(w.names("d/").await, ["a.txt", "b.txt"]);
        // A removal of the folder itself waits too; others go on.
        let root = w.scan(true).folder("", false).await.unwrap();
        assert!(root.unsettled);
        assert_eq!(w.names("").await, ["d/"]);
        assert_eq!(w.events().await, [(EventKind::Deleted, "keep.txt".into())]);
        for (c, id) in changes.iter_mut().zip(ids) {
            c.intent = Some(id);
        }
        w.store.commit_all(&changes).await.unwrap();
        let f = w.scan(true).folder("d/", false).await.unwrap();
        assert!(!f.unsettled);
        assert_eq!(
            w.events().await,
            [
                (EventKind::Deleted, "keep.txt".into()),
                (EventKind::Deleted, "d/a.txt".into()),
                (EventKind::Deleted, "d/b.txt".into()),
            ],
            "each once, as ferry recorded it"
        );
    }

    #[tokio::test]
    async fn a_local_folder_lists_as_opendal_lists_it() {
        let w = world().await;
        let folder = tempfile::tempdir().unwrap();
        let root = folder.path();
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::create_dir_all(root.join(STAGING_DIR)).unwrap();
        std::fs::write(root.join("a.txt"), b"12345").unwrap();
        std::fs::write(root.join("d/b.txt"), b"1").unwrap();
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("link")).unwrap();
        std::fs::write(root.join("bad\\name"), b"").unwrap();
        let op =
            Operator::new(opendal::services::Fs::default().root(root.to_str().unwrap())).unwrap();
        let mut scan = w.scan(true);
        scan.op = &op;
        // A symbolic link is listed as what it points to, as a stat
        // through the provider sees it (OpenDAL's lister gives the
        // link's own time): compared on its own below.
        let not_link = |l: Vec<(String, Facts)>| -> Vec<(String, Facts)> {
            l.into_iter().filter(|e| e.0 != "link").collect()
        };
        for dir in ["", "d/", "missing/"] {
            let through_opendal = not_link(scan.list(dir).await.unwrap());
            let direct = not_link(list_local(root, dir).unwrap());
            assert_eq!(direct, through_opendal, "{dir:?}");
        }
        let listed = list_local(root, "").unwrap();
        let names: Vec<&str> = listed.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["a.txt", "d/", "link"]);
        let stat = op.stat("link").await.unwrap();
        let link = &listed[2].1;
        assert_eq!(link.size, Some(stat.content_length() as i64));
        assert_eq!(
            link.modified_ns,
            stat.last_modified()
                .map(|t| t.into_inner().as_nanosecond() as i64)
        );
    }

    #[tokio::test]
    async fn a_rename_in_a_folder_is_one_move() {
        let mut w = world().await;
        let folder = tempfile::tempdir().unwrap();
        let root = folder.path();
        w.op =
            Operator::new(opendal::services::Fs::default().root(root.to_str().unwrap())).unwrap();
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/a.txt"), b"same").unwrap();
        std::fs::write(root.join("d/other.txt"), b"four").unwrap();
        w.scan(false).tree("", true).await.unwrap();
        std::fs::rename(root.join("d/a.txt"), root.join("d/z.txt")).unwrap();
        // Not a move: the same size, another file's time.
        std::fs::remove_file(root.join("d/other.txt")).unwrap();
        std::fs::write(root.join("d/new.txt"), b"four").unwrap();
        let mut scan = w.scan(true);
        scan.local_root = Some(root);
        scan.tree("", true).await.unwrap();
        let events = w.store.list_events(&w.account, 0, 10).await.unwrap();
        let got: Vec<(EventKind, &str, Option<&str>)> = events
            .iter()
            .map(|e| (e.kind, e.path.as_str(), e.from.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (EventKind::Created, "d/new.txt", None),
                (EventKind::Deleted, "d/other.txt", None),
                (EventKind::Moved, "d/z.txt", Some("d/a.txt")),
            ]
        );
        assert_eq!(w.names("d/").await, ["new.txt", "z.txt"]);
    }

    #[tokio::test]
    async fn a_recent_change_waits_to_settle() {
        let mut w = world().await;
        // A folder, whose listing gives modification times (memory's
        // does not).
        let folder = tempfile::tempdir().unwrap();
        w.op =
            Operator::new(opendal::services::Fs::default().root(folder.path().to_str().unwrap()))
                .unwrap();
        w.scan(false).tree("", true).await.unwrap();
        w.op.write("hot.txt", vec![1u8]).await.unwrap();
        let mut scan = w.scan(true);
        scan.settle_after_ns = 0;
        let f = scan.folder("", true).await.unwrap();
        assert!(f.unsettled);
        assert!(w.names("").await.is_empty());
        w.scan(true).folder("", true).await.unwrap();
        assert_eq!(w.events().await, [(EventKind::Created, "hot.txt".into())]);
    }
}
