//! Reads from the local replica, with read-your-writes.
//!
//! With PostgreSQL and a `replica_url`, a hub writes to the primary and
//! reads from its region's streaming replica. A client's reads must still
//! see its own writes, through any hub: after each write the hub records,
//! on the primary and in its memory, the write-ahead-log position that
//! write reached, under the writer's *principal* (a digest of its
//! `Authorization`). A read for a principal with a recent write goes to the
//! replica once it has replayed past that position (waiting up to
//! `read_your_writes_wait_ms`), else to the primary. The primary is asked
//! only while the replica holds received WAL it has not replayed yet. The
//! principal of the request being served is a task-local, set by the API
//! around each request, so store calls need no extra argument.
//!
//! A replica that does not answer, or is no longer a standby, is left
//! alone: reads go to the primary until a check ([`Replica::check`], every
//! second) finds it a standby that answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::AnyPool;

/// How long a write keeps pinning its writer's reads.
pub const RECENT: Duration = Duration::from_secs(60);

/// Whose request is running, and whether it has given up waiting for the
/// replica (its further reads go to the primary at once).
#[derive(Debug)]
struct Scope {
    principal: Option<Arc<str>>,
    primary_only: AtomicBool,
}

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// Runs `fut` on behalf of `principal` (its reads see its writes). A
/// request waits for the replica once at most: once a wait runs out, its
/// later reads go to the primary without waiting again.
pub async fn as_principal<F: std::future::Future>(
    principal: Option<Arc<str>>,
    fut: F,
) -> F::Output {
    let scope = Arc::new(Scope {
        principal,
        primary_only: AtomicBool::new(false),
    });
    SCOPE.scope(scope, fut).await
}

fn principal() -> Option<Arc<str>> {
    SCOPE.try_with(|s| s.principal.clone()).ok().flatten()
}

/// Whether the current request already waited for the replica in vain.
fn reads_primary() -> bool {
    SCOPE
        .try_with(|s| s.primary_only.load(Ordering::Relaxed))
        .unwrap_or(false)
}

/// The current request's reads go to the primary from now on.
fn read_primary_from_now() {
    let _ = SCOPE.try_with(|s| s.primary_only.store(true, Ordering::Relaxed));
}

/// Records on `primary` that the current principal just wrote there (the
/// primary's position now is past that write), for every hub's reads;
/// returns the position. Every hub on PostgreSQL records its writes, with
/// a replica or without.
pub async fn record_write(primary: &AnyPool) -> Option<u64> {
    let who = principal()?;
    let lsn: Result<String, _> = sqlx::query_scalar(
        "INSERT INTO recent_writes (principal, lsn, at) VALUES ($1, pg_current_wal_lsn()::text, $2) \
         ON CONFLICT (principal) DO UPDATE SET lsn = excluded.lsn, at = excluded.at RETURNING lsn",
    )
    .bind(&*who)
    .bind(super::now_ms())
    .fetch_one(primary)
    .await;
    let lsn = lsn.ok().as_deref().and_then(parse_lsn);
    if lsn.is_none() {
        tracing::warn!("could not record a write's position for read-your-writes");
    }
    lsn
}

/// A write-ahead-log position, comparable.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The replica and what this hub knows of recent writes.
#[derive(Debug)]
pub struct Replica {
    pool: AnyPool,
    /// How long a read waits for the replica before going to the primary.
    wait: Duration,
    /// Recent writes this hub made or learned of: principal → (LSN, when).
    recent: Mutex<HashMap<Arc<str>, (u64, Instant)>>,
    /// The schema version this hub needs; until the replica has replayed
    /// it, reads go to the primary.
    schema: i64,
    /// Whether the replica has the schema.
    ready: AtomicBool,
    /// Whether the replica answered when last asked.
    answering: AtomicBool,
}

/// What a principal's read needs of the replica.
enum Need {
    /// Nothing: the replica has everything it wrote.
    Nothing,
    /// To have replayed this far.
    Position(u64),
    /// The replica did not answer.
    Unreachable,
}

impl Replica {
    pub fn new(pool: AnyPool, wait: Duration, schema: i64) -> Self {
        Self {
            pool,
            wait,
            recent: Mutex::new(HashMap::new()),
            schema,
            ready: AtomicBool::new(false),
            answering: AtomicBool::new(true),
        }
    }

    /// Asks the replica how far it has replayed, noting whether it answers
    /// (reads go to the primary while it does not). Returns whether it did.
    ///
    /// A replica that answers but is no longer a standby (it was promoted)
    /// counts as not answering: its replay position stands still, and
    /// every read waiting for it would wait in vain.
    pub async fn check(&self) -> bool {
        let asked = tokio::time::timeout(
            super::CHECK_TIMEOUT,
            sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(&self.pool),
        )
        .await;
        match asked {
            Ok(Ok(true)) => {
                self.note_answer(true);
                true
            }
            Ok(Ok(false)) => {
                if self.answering.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "the replica is not a standby (promoted?): reads go to the primary; point store.replica_url at a standby"
                    );
                }
                false
            }
            _ => {
                self.note_answer(false);
                false
            }
        }
    }

    /// Whether the replica answered when last asked.
    pub fn answering(&self) -> bool {
        self.answering.load(Ordering::Relaxed)
    }

    fn note_answer(&self, answered: bool) {
        let was = self.answering.swap(answered, Ordering::Relaxed);
        if was && !answered {
            tracing::warn!("the replica does not answer: reads go to the primary");
        } else if !was && answered {
            tracing::info!("the replica answers again: reads go to it");
        }
    }

    /// Whether the replica has replayed the schema this hub needs (a new
    /// replica, or one far behind, has not).
    async fn has_schema(&self) -> bool {
        if self.ready.load(Ordering::Relaxed) {
            return true;
        }
        let version: Option<Option<i64>> =
            sqlx::query_scalar("SELECT MAX(version) FROM ferry_schema")
                .fetch_one(&self.pool)
                .await
                .ok();
        let ready = version.flatten().is_some_and(|v| v >= self.schema);
        if ready {
            self.ready.store(true, Ordering::Relaxed);
            tracing::info!("the replica has the schema: reads go to it");
        }
        ready
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool the current principal's reads go to.
    pub async fn read_pool<'a>(&'a self, primary: &'a AnyPool) -> &'a AnyPool {
        if !self.answering() || !self.has_schema().await {
            return primary;
        }
        let Some(who) = principal() else {
            return &self.pool;
        };
        if reads_primary() {
            return primary;
        }
        let need = match self.required(&who, primary).await {
            Need::Nothing => return &self.pool,
            Need::Unreachable => return primary,
            Need::Position(at) => at,
        };
        let deadline = Instant::now() + self.wait;
        loop {
            match self.replayed().await {
                Some(at) if at >= need => return &self.pool,
                None => return primary,
                Some(_) if Instant::now() >= deadline => {
                    tracing::debug!(
                        "the replica did not replay this client's last write in time; this request reads the primary"
                    );
                    read_primary_from_now();
                    return primary;
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// The position `who`'s reads must see, if it wrote recently. A write
    /// through this hub is in its memory. A write through another hub can
    /// only be behind on the replica while the replica holds WAL it has
    /// received but not replayed (a delay, or a burst): only then is the
    /// primary asked. If the primary cannot be asked, the replica is read.
    async fn required(&self, who: &Arc<str>, primary: &AnyPool) -> Need {
        if let Some((lsn, at)) = self.recent.lock().expect("poisoned").get(who).copied()
            && at.elapsed() < RECENT
        {
            return Need::Position(lsn);
        }
        let positions: Result<(Option<String>, Option<String>), _> = sqlx::query_as(
            "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text",
        )
        .fetch_one(&self.pool)
        .await;
        let Ok((received, replayed)) = positions else {
            self.note_answer(false);
            return Need::Unreachable;
        };
        let backlog = match (
            received.as_deref().and_then(parse_lsn),
            replayed.as_deref().and_then(parse_lsn),
        ) {
            (Some(r), Some(p)) => r > p,
            _ => true,
        };
        if !backlog {
            return Need::Nothing;
        }
        let since = super::now_ms() - RECENT.as_millis() as i64;
        let row: Option<String> =
            sqlx::query_scalar("SELECT lsn FROM recent_writes WHERE principal = $1 AND at > $2")
                .bind(&**who)
                .bind(since)
                .fetch_optional(primary)
                .await
                .ok()
                .flatten();
        match row.as_deref().and_then(parse_lsn) {
            Some(at) => Need::Position(at),
            None => Need::Nothing,
        }
    }

    /// How far the replica has replayed; `None` if it does not answer
    /// (which is noted: reads go to the primary until a check finds it
    /// answering again).
    async fn replayed(&self) -> Option<u64> {
        let text: Result<Option<String>, _> =
            sqlx::query_scalar("SELECT pg_last_wal_replay_lsn()::text")
                .fetch_one(&self.pool)
                .await;
        if text.is_err() {
            self.note_answer(false);
        }
        text.ok()?.as_deref().and_then(parse_lsn)
    }

    /// Remembers that the current principal wrote up to `lsn`.
    pub fn remember(&self, lsn: u64) {
        let Some(who) = principal() else { return };
        let mut recent = self.recent.lock().expect("poisoned");
        recent.retain(|_, (_, at)| at.elapsed() < RECENT);
        recent.insert(who, (lsn, Instant::now()));
    }

    /// How far behind the primary the replica is, in bytes of WAL; `None`
    /// if either does not answer.
    pub async fn lag_bytes(&self, primary: &AnyPool) -> Option<u64> {
        let now: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(primary)
            .await
            .ok()?;
        let at = self.replayed().await?;
        Some(parse_lsn(&now)?.saturating_sub(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse_and_order() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert!(parse_lsn("1/0") > parse_lsn("0/FFFFFFFF"));
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(parse_lsn(""), None);
    }
}
