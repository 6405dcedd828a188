//! Keeps every connection's index current with its provider: a full scan
//! per connection every `scan_interval_secs` (the first one builds the
//! index, silently), and for `fs` connections the kernel's notifications,
//! which have the folders they name compared again within a fraction of a
//! second. What differs becomes the index's new state and, once the index
//! is complete, an event of origin `provider` ([`scan`]).
//!
//! With several hubs on one store, each connection is scanned by one hub
//! at a time: a hub holds a connection's scans under a lease in the store
//! (`index_state.holder`), renews it while it runs, and gives it up when it
//! stops; a lease not renewed lapses and another hub takes it over.

pub mod metrics;
pub mod scan;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::store::{HeldIndex, key_of, now_ms};
use metrics::{ScanKind, ScanResult};
use scan::{Pace, Scan};

/// How the hub keeps the index (the `[index]` section).
#[derive(Debug, Clone)]
pub struct IndexSettings {
    /// Default seconds between full scans (0: none after the first).
    pub scan_interval_secs: u64,
    /// How long a hub's hold on a connection's scans lasts unrenewed.
    pub lease_secs: u64,
    /// Most listing requests a second to one connection's provider.
    pub requests_per_second: u32,
    /// Changes younger than this wait for a later look, milliseconds.
    pub settle_ms: u64,
    /// Whether `fs` connections are watched through the kernel.
    pub notify: bool,
}

/// How long notifications for one connection gather before its folders
/// are compared.
const GATHER: Duration = Duration::from_millis(150);

/// The most folders waiting to be compared for one connection: beyond
/// it, the next full scan is brought forward instead.
const MAX_PENDING: usize = 10_000;

/// After a scan failed, when the next is tried.
const RETRY: Duration = Duration::from_secs(30);

/// A connection whose scans this hub holds.
struct Held {
    account_id: String,
    interval: Option<Duration>,
    pace: Arc<Pace>,
    local_root: Option<Arc<std::path::PathBuf>>,
    watch: Option<Watch>,
    complete: bool,
    next_full: i64,
    last_full: Option<i64>,
    last_size: Option<i64>,
    pending: BTreeSet<String>,
    pending_since: Option<Instant>,
    task: Option<JoinHandle<Outcome>>,
}

/// What a finished scan task reports.
enum Outcome {
    Full {
        ok: bool,
        unsettled: bool,
        entries: i64,
    },
    Folders {
        unsettled: Vec<String>,
    },
}

/// An `fs` connection's kernel watch.
struct Watch {
    _watcher: notify::RecommendedWatcher,
    overflowed: Arc<AtomicBool>,
}

/// A folder named by a notification: (connection, folder key).
type Named = (String, String);

/// Runs until `stop`: holds, scans and watches connections.
pub async fn run(
    state: Arc<AppState>,
    settings: IndexSettings,
    holder: String,
    stop: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<Named>(4096);
    let mut held: HashMap<String, Held> = HashMap::new();
    let renew_every = Duration::from_secs((settings.lease_secs / 3).max(1));
    let mut next_renewal = Instant::now();
    loop {
        let now = Instant::now();
        let gathered = held
            .values()
            .filter_map(|h| h.pending_since.map(|t| t + GATHER))
            .min();
        let wake = gathered
            .map_or(next_renewal, |g| g.min(next_renewal))
            .min(now + Duration::from_secs(1));
        tokio::select! {
            () = stop.cancelled() => break,
            () = state.index_nudge.notified() => next_renewal = Instant::now(),
            Some((conn, dir)) = rx.recv() => {
                if let Some(h) = held.get_mut(&conn) {
                    note_folder(h, dir);
                }
                continue;
            }
            () = tokio::time::sleep_until(wake) => {}
        }
        if Instant::now() >= next_renewal {
            next_renewal = Instant::now() + renew_every;
            if state.store.writable() {
                renew(&state, &settings, &holder, &mut held, &tx).await;
            }
        }
        for (conn, h) in held.iter_mut() {
            reap(&settings, h);
            if h.task.is_none() {
                start_work(&state, &settings, &holder, conn, h);
            }
        }
        let now_ms = now_ms();
        let overdue = held
            .values()
            .filter(|h| {
                h.interval.is_some_and(|i| {
                    let late = 3 * i.as_millis() as i64;
                    h.last_full.is_none_or(|t| now_ms - t > late)
                })
            })
            .count();
        state.metrics.index.overdue.set(overdue as i64);
        state
            .metrics
            .index
            .entries
            .set(held.values().filter_map(|h| h.last_size).sum());
    }
    for h in held.values_mut() {
        if let Some(t) = h.task.take() {
            t.abort();
        }
    }
    if let Err(e) = state.store.release_indexes(&holder).await {
        tracing::debug!(error = %e, "could not give up the index leases");
    }
}

/// Notes that `dir` changed; too many waiting folders bring the next
/// full scan forward instead.
fn note_folder(h: &mut Held, dir: String) {
    if h.pending.len() >= MAX_PENDING {
        h.next_full = 0;
        return;
    }
    h.pending.insert(dir);
    h.pending_since.get_or_insert_with(Instant::now);
}

/// Renews the leases, takes free ones, and brings `held` in line.
async fn renew(
    state: &Arc<AppState>,
    settings: &IndexSettings,
    holder: &str,
    held: &mut HashMap<String, Held>,
    tx: &mpsc::Sender<Named>,
) {
    let now = now_ms();
    let until = now + settings.lease_secs as i64 * 1000;
    let list = match state.store.hold_indexes(holder, now, until).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "could not renew the index leases");
            return;
        }
    };
    let ids: std::collections::HashSet<&str> =
        list.iter().map(|h| h.connection_id.as_str()).collect();
    held.retain(|id, h| {
        let keep = ids.contains(id.as_str());
        if !keep && let Some(t) = h.task.take() {
            t.abort();
        }
        keep
    });
    for HeldIndex {
        connection_id,
        account_id,
        state: s,
    } in list
    {
        if let Some(h) = held.get_mut(&connection_id) {
            // Another hub may have completed a scan before this one held it.
            h.complete |= s.complete;
            continue;
        }
        let Some((interval, local_root, watch)) =
            connection_setup(state, settings, &connection_id, &account_id, tx).await
        else {
            continue;
        };
        tracing::info!(connection.id = %connection_id, complete = s.complete, "holding the connection's scans");
        held.insert(
            connection_id,
            Held {
                account_id,
                interval,
                pace: Arc::new(Pace::new(settings.requests_per_second)),
                local_root,
                watch,
                complete: s.complete,
                next_full: s.next_scan_at,
                last_full: s.last_scan_at,
                last_size: s.last_scan_size,
                pending: BTreeSet::new(),
                pending_since: None,
                task: None,
            },
        );
    }
    state.metrics.index.held.set(held.len() as i64);
}

/// A newly held connection's scan interval and, for `fs`, its folder and
/// watch.
async fn connection_setup(
    state: &Arc<AppState>,
    settings: &IndexSettings,
    connection_id: &str,
    account_id: &str,
    tx: &mpsc::Sender<Named>,
) -> Option<(
    Option<Duration>,
    Option<Arc<std::path::PathBuf>>,
    Option<Watch>,
)> {
    let row = match crate::api::find_connection(state, account_id, connection_id).await {
        Ok(r) => r,
        Err(_) => return None,
    };
    let secs = row
        .scan_interval_secs
        .map_or(settings.scan_interval_secs, |s| s.max(0) as u64);
    let interval = (secs > 0).then(|| Duration::from_secs(secs));
    let root = (row.provider == "fs")
        .then(|| crate::api::fs_root(state, &row))
        .flatten();
    let watch = root
        .as_ref()
        .filter(|_| settings.notify)
        .and_then(|root| watch(root, connection_id, tx));
    Some((interval, root.map(Arc::new), watch))
}

/// Watches `root` and everything below it, sending the folder of each
/// changed path.
fn watch(root: &Path, connection_id: &str, tx: &mpsc::Sender<Named>) -> Option<Watch> {
    use notify::Watcher as _;
    let overflowed = Arc::new(AtomicBool::new(false));
    let (root_owned, conn, tx, flag) = (
        root.to_path_buf(),
        connection_id.to_owned(),
        tx.clone(),
        overflowed.clone(),
    );
    let handler = move |res: notify::Result<notify::Event>| {
        let event = match res {
            Ok(e) => e,
            Err(_) => {
                flag.store(true, Ordering::Relaxed);
                return;
            }
        };
        if event.need_rescan() {
            flag.store(true, Ordering::Relaxed);
        }
        for path in &event.paths {
            if let Some(dir) = folder_key(&root_owned, path)
                && tx.try_send((conn.clone(), dir)).is_err()
            {
                flag.store(true, Ordering::Relaxed);
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(connection.id = %connection_id, error = %e, "cannot watch the folder; changes are found by scans only");
            return None;
        }
    };
    if let Err(e) = watcher.watch(root, notify::RecursiveMode::Recursive) {
        tracing::warn!(connection.id = %connection_id, error = %e, "cannot watch the folder; changes are found by scans only");
        return None;
    }
    Some(Watch {
        _watcher: watcher,
        overflowed,
    })
}

/// The key of the folder holding `path` below `root` (`""`, `a/b/`);
/// `None` outside it or inside ferry's staging folder.
fn folder_key(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let rel = rel.to_str()?;
    if rel.is_empty() {
        return None;
    }
    if rel == ferry_common::path::STAGING_DIR
        || rel.starts_with(&format!("{}/", ferry_common::path::STAGING_DIR))
    {
        return None;
    }
    Some(key_of(rel, false).0)
}

/// Collects a finished task's outcome.
fn reap(settings: &IndexSettings, h: &mut Held) {
    let Some(task) = h.task.as_ref() else { return };
    if !task.is_finished() {
        return;
    }
    let task = h.task.take().expect("checked above");
    let now = now_ms();
    let Some(outcome) = task.now_or_never_result() else {
        // It panicked (the panic hook printed why): not again at once.
        tracing::warn!("a scan task ended without an outcome; the next full scan is in {RETRY:?}");
        h.next_full = now + RETRY.as_millis() as i64;
        return;
    };
    match outcome {
        Outcome::Full {
            ok: true,
            unsettled,
            entries,
        } => {
            h.complete = true;
            h.last_full = Some(now);
            h.last_size = Some(entries);
            h.next_full = next_full(h.interval, unsettled, now);
        }
        Outcome::Full { ok: false, .. } => {
            h.next_full = now + RETRY.as_millis() as i64;
        }
        Outcome::Folders { unsettled } => {
            for dir in unsettled {
                note_folder(h, dir);
            }
            // Look again once the changes have settled.
            if !h.pending.is_empty() {
                h.pending_since =
                    Some(Instant::now() + Duration::from_millis(settings.settle_ms) - GATHER);
            }
        }
    }
}

/// When the next full scan is due after one that ended at `now`.
fn next_full(interval: Option<Duration>, unsettled: bool, now: i64) -> i64 {
    match interval {
        None => i64::MAX,
        Some(i) if unsettled => now + i.min(Duration::from_secs(5)).as_millis() as i64,
        Some(i) => now + i.as_millis() as i64,
    }
}

/// Starts what is due for a held connection: a full scan, or a look at
/// the folders notifications named.
fn start_work(
    state: &Arc<AppState>,
    settings: &IndexSettings,
    holder: &str,
    conn: &str,
    h: &mut Held,
) {
    let now = now_ms();
    let overflowed = h
        .watch
        .as_ref()
        .is_some_and(|w| w.overflowed.swap(false, Ordering::Relaxed));
    if overflowed {
        tracing::info!(connection.id = %conn, "notifications were lost; scanning the whole tree");
        h.next_full = 0;
    }
    let settle_ms = settings.settle_ms as i64;
    if h.next_full <= now {
        h.pending.clear();
        h.pending_since = None;
        let job = Job::new(state, conn, h, settle_ms);
        let (holder, interval, complete) = (holder.to_owned(), h.interval, h.complete);
        h.task = Some(tokio::spawn(async move {
            full_scan(job.scope(), &holder, interval, complete).await
        }));
        return;
    }
    // Folders are compared once the index is complete: before, what a
    // folder holds is not news.
    if h.complete
        && h.pending_since
            .is_some_and(|t| t + GATHER <= Instant::now())
    {
        let dirs = std::mem::take(&mut h.pending);
        h.pending_since = None;
        let job = Job::new(state, conn, h, settle_ms);
        h.task = Some(tokio::spawn(async move {
            folder_scans(job.scope(), dirs).await
        }));
    }
}

/// What a scan task owns.
struct Job {
    state: Arc<AppState>,
    conn: String,
    account: String,
    pace: Arc<Pace>,
    local_root: Option<Arc<std::path::PathBuf>>,
    settle_ms: i64,
}

impl Job {
    fn new(state: &Arc<AppState>, conn: &str, h: &Held, settle_ms: i64) -> Self {
        Self {
            state: state.clone(),
            conn: conn.to_owned(),
            account: h.account_id.clone(),
            pace: h.pace.clone(),
            local_root: h.local_root.clone(),
            settle_ms,
        }
    }

    fn scope(&self) -> Scope<'_> {
        Scope {
            state: &self.state,
            conn: &self.conn,
            account: &self.account,
            pace: &self.pace,
            local_root: self.local_root.as_deref().map(|p| p.as_path()),
            settle_ms: self.settle_ms,
        }
    }
}

/// What a scan task works with.
struct Scope<'a> {
    state: &'a Arc<AppState>,
    conn: &'a str,
    account: &'a str,
    pace: &'a Pace,
    local_root: Option<&'a Path>,
    settle_ms: i64,
}

impl<'a> Scope<'a> {
    /// A scan of the connection through `op`.
    fn scan(&self, op: &'a opendal::Operator, events: bool) -> Scan<'a> {
        Scan {
            store: &self.state.store,
            op,
            connection_id: self.conn,
            account_id: self.account,
            events,
            pace: self.pace,
            metrics: &self.state.metrics.index,
            settle_after_ns: settle_before(self.settle_ms),
            local_root: self.local_root,
        }
    }
}

async fn full_scan(
    s: Scope<'_>,
    holder: &str,
    interval: Option<Duration>,
    complete: bool,
) -> Outcome {
    let (state, conn, account) = (s.state, s.conn, s.account);
    let started = std::time::Instant::now();
    let failed = || Outcome::Full {
        ok: false,
        unsettled: false,
        entries: 0,
    };
    let Some(op) = operator(state, account, conn).await else {
        return failed();
    };
    let scan = s.scan(&op, complete);
    let result = scan.tree("", true).await;
    let seconds = started.elapsed().as_secs_f64();
    let now = now_ms();
    match result {
        Ok((entries, unsettled)) => {
            let unsettled = !unsettled.is_empty();
            let next = next_full(interval, unsettled, now);
            match state
                .store
                .finish_scan(conn, holder, now, entries as i64, next)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(connection.id = %conn, "another hub took the connection's scans over")
                }
                Err(e) => {
                    tracing::warn!(connection.id = %conn, error = %e, "could not record a completed scan")
                }
            }
            state
                .metrics
                .index
                .scanned(ScanKind::full, ScanResult::ok, seconds);
            tracing::debug!(connection.id = %conn, entries, seconds, first = !complete, "scanned a connection");
            Outcome::Full {
                ok: true,
                unsettled,
                entries: entries as i64,
            }
        }
        Err(e) => {
            let why = ferry_common::provider::scrub(&e.to_string());
            tracing::warn!(connection.id = %conn, error = %why, "a scan of the connection failed; it is tried again later");
            let _ = state
                .store
                .schedule_scan(conn, now + RETRY.as_millis() as i64)
                .await;
            state
                .metrics
                .index
                .scanned(ScanKind::full, ScanResult::failed, seconds);
            failed()
        }
    }
}

async fn folder_scans(s: Scope<'_>, dirs: BTreeSet<String>) -> Outcome {
    let (state, conn, account) = (s.state, s.conn, s.account);
    let started = std::time::Instant::now();
    let Some(op) = operator(state, account, conn).await else {
        return Outcome::Folders {
            unsettled: Vec::new(),
        };
    };
    let scan = s.scan(&op, true);
    let mut unsettled = Vec::new();
    let mut ok = true;
    // Each folder at the nearest of it and its parents that the index
    // has: a folder new to the index is found from the folder above.
    let mut done: BTreeSet<String> = BTreeSet::new();
    for dir in dirs {
        let dir = match indexed_ancestor(state, conn, &dir).await {
            Some(d) => d,
            None => {
                ok = false;
                break;
            }
        };
        if !done.insert(dir.clone()) {
            continue;
        }
        match scan.tree(&dir, false).await {
            // Each folder where a change was too recent, to look at again.
            Ok((_, later)) => unsettled.extend(later),
            Err(e) => {
                let why = ferry_common::provider::scrub(&e.to_string());
                tracing::warn!(connection.id = %conn, error = %why, "comparing a folder failed");
                ok = false;
                break;
            }
        }
    }
    state.metrics.index.scanned(
        ScanKind::folder,
        if ok {
            ScanResult::ok
        } else {
            ScanResult::failed
        },
        started.elapsed().as_secs_f64(),
    );
    if !ok {
        // What was missed is found by the next full scan; bring it on.
        let _ = state.store.schedule_scan(conn, now_ms()).await;
    }
    Outcome::Folders { unsettled }
}

/// `dir` if the index has it (or it is the root), else the nearest of its
/// parents that it has; `None` if the store failed.
async fn indexed_ancestor(state: &AppState, conn: &str, dir: &str) -> Option<String> {
    let mut dir = dir.to_owned();
    while !dir.is_empty() {
        let (parent, name) = key_of(&dir, true);
        match state.store.index_entry(conn, &parent, &name).await {
            Ok(Some(_)) => return Some(dir),
            Ok(None) => dir = parent,
            Err(_) => return None,
        }
    }
    Some(dir)
}

async fn operator(state: &Arc<AppState>, account: &str, conn: &str) -> Option<opendal::Operator> {
    match crate::api::connection_operator(state, account, conn).await {
        Ok(op) => Some(op),
        Err(p) => {
            tracing::warn!(connection.id = %conn, error = %p.detail.as_deref().unwrap_or_default(), "cannot reach the connection's provider to scan it");
            None
        }
    }
}

/// Unix nanoseconds `settle_ms` ago: changes after it wait.
fn settle_before(settle_ms: i64) -> i64 {
    (now_ms() - settle_ms).saturating_mul(1_000_000)
}

trait NowOrNever<T> {
    fn now_or_never_result(self) -> Option<T>;
}

impl<T> NowOrNever<T> for JoinHandle<T> {
    /// The output of a task known to be finished; `None` if it panicked
    /// or was aborted.
    fn now_or_never_result(self) -> Option<T> {
        futures_util::FutureExt::now_or_never(self).and_then(Result::ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn notified_paths_name_their_folder() {
        let root = PathBuf::from("/srv/data");
        assert_eq!(
            folder_key(&root, Path::new("/srv/data/a.txt")),
            Some(String::new())
        );
        assert_eq!(
            folder_key(&root, Path::new("/srv/data/a/b/c.txt")),
            Some("a/b/".to_owned())
        );
        assert_eq!(
            folder_key(&root, Path::new("/srv/data/a")),
            Some(String::new())
        );
        assert_eq!(folder_key(&root, Path::new("/srv/data")), None);
        assert_eq!(folder_key(&root, Path::new("/srv/other/x")), None);
        assert_eq!(
            folder_key(&root, Path::new("/srv/data/.ferry-partial/u/1")),
            None
        );
    }

    #[test]
    fn a_scan_with_unsettled_changes_comes_back_sooner() {
        let i = Some(Duration::from_secs(60));
        assert_eq!(next_full(i, false, 1000), 61_000);
        assert_eq!(next_full(i, true, 1000), 6_000);
        assert_eq!(next_full(None, false, 1000), i64::MAX);
    }
}
