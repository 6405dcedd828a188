//! What every request asks and almost never changes — which account an API
//! key belongs to, and an account's connection by id or name — kept in
//! memory, so that a request costs the store one query less for each.
//!
//! The rows that decide these (a key's revocation, a connection's
//! deletion or re-sealing) bump a single counter, the *epoch*, in the same
//! transaction. A change made through this hub empties the cache at once;
//! one made through another hub sharing the store, or by the command line,
//! is seen when [`super::Store::watch_epoch`] next reads the counter (every
//! second, from the database reads go to, so that what it sees bumped is
//! also what the next read finds changed). Until the first reading, and
//! whenever the last one is older than [`TRUST`], nothing is kept or
//! answered from memory: a hub that cannot read the store does not go on
//! trusting what it knew.
//!
//! Only answers that grant something are kept ("this key is account A",
//! "this is the row"); an unknown key or name is asked every time, so a
//! key or connection just made works at once everywhere.
//!
//! Each lookup reads the epoch in the same query as its answer, and the
//! answer is kept only if that is the epoch the cache last observed: an
//! answer from a database behind it (a replica that came back late) is
//! used once, not kept. And nothing is kept longer than [`MAX_AGE`], for
//! what changes without bumping the epoch (a row edited by hand, a hub of
//! an older release during an upgrade).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ConnectionRow;

/// How long a reading of the epoch keeps the cache trusted.
pub const TRUST: Duration = Duration::from_secs(3);

/// Entries kept at most of each kind; past it the kind starts afresh.
const MAX_ENTRIES: usize = 50_000;

/// The longest an answer is kept.
pub const MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Inner {
    /// Bumped whenever the cache is emptied: an answer read before that is
    /// not kept ([`Ticket`]).
    generation: u64,
    /// The last epoch read, and when.
    epoch: Option<(i64, Instant)>,
    /// SHA-256 of an API key → its account, and when it was kept.
    keys: HashMap<Vec<u8>, (String, Instant)>,
    /// (account, id or name) → the connection, and when it was kept.
    connections: HashMap<(String, String), (ConnectionRow, Instant)>,
}

impl Inner {
    fn trusted(&self, now: Instant) -> bool {
        self.epoch
            .is_some_and(|(_, at)| now.saturating_duration_since(at) < TRUST)
    }

    /// Whether an answer read under `ticket`, with `epoch` read beside it,
    /// may be kept now.
    fn may_keep(&self, ticket: Ticket, epoch: i64, now: Instant) -> bool {
        self.generation == ticket.0
            && self.trusted(now)
            && self.epoch.is_some_and(|(e, _)| e == epoch)
    }

    fn empty(&mut self) {
        self.generation += 1;
        self.keys.clear();
        self.connections.clear();
    }
}

/// The cache; one per store, shared by its clones.
#[derive(Debug, Default)]
pub struct Cache {
    inner: Mutex<Inner>,
}

/// Taken before an answer is read from the store; the answer is kept only
/// if nothing emptied the cache meanwhile (a revocation committed while
/// the read was under way must not be undone by keeping what it read).
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("store cache poisoned")
    }

    /// Takes a ticket for an answer about to be read.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.lock().generation)
    }

    /// The account of the key with this digest, if known and trusted.
    pub fn account(&self, key_digest: &[u8]) -> Option<String> {
        let now = Instant::now();
        let inner = self.lock();
        if !inner.trusted(now) {
            return None;
        }
        let (account, kept) = inner.keys.get(key_digest)?;
        (now.saturating_duration_since(*kept) < MAX_AGE).then(|| account.clone())
    }

    /// Keeps a key's account read under `ticket`, with `epoch` read in
    /// the same query.
    pub fn keep_account(&self, ticket: Ticket, epoch: i64, key_digest: Vec<u8>, account: &str) {
        let now = Instant::now();
        let mut inner = self.lock();
        if !inner.may_keep(ticket, epoch, now) {
            return;
        }
        if inner.keys.len() >= MAX_ENTRIES {
            inner.keys.clear();
        }
        inner.keys.insert(key_digest, (account.to_owned(), now));
    }

    /// The account's connection with this id or name, if known and trusted.
    pub fn connection(&self, account: &str, id_or_name: &str) -> Option<ConnectionRow> {
        let now = Instant::now();
        let inner = self.lock();
        if !inner.trusted(now) {
            return None;
        }
        let (row, kept) = inner
            .connections
            .get(&(account.to_owned(), id_or_name.to_owned()))?;
        (now.saturating_duration_since(*kept) < MAX_AGE).then(|| row.clone())
    }

    /// Keeps a connection read under `ticket`, with `epoch` read in the
    /// same query.
    pub fn keep_connection(
        &self,
        ticket: Ticket,
        epoch: i64,
        account: &str,
        id_or_name: &str,
        row: &ConnectionRow,
    ) {
        let now = Instant::now();
        let mut inner = self.lock();
        if !inner.may_keep(ticket, epoch, now) {
            return;
        }
        if inner.connections.len() >= MAX_ENTRIES {
            inner.connections.clear();
        }
        inner.connections.insert(
            (account.to_owned(), id_or_name.to_owned()),
            (row.clone(), now),
        );
    }

    /// Forgets everything: a change was made through this hub.
    pub fn empty(&self) {
        self.lock().empty();
    }

    /// The epoch last read from the store, if any.
    pub fn epoch(&self) -> Option<i64> {
        self.lock().epoch.map(|(e, _)| e)
    }

    /// Takes an epoch read from the store by a query sent at `asked`: a
    /// new one empties the cache; any reading renews its trust, from when
    /// it was asked.
    pub fn observe(&self, epoch: i64, asked: Instant) {
        let mut inner = self.lock();
        if inner.epoch.is_some_and(|(e, _)| e != epoch) {
            inner.empty();
        }
        inner.epoch = Some((epoch, asked));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> ConnectionRow {
        ConnectionRow {
            id: id.into(),
            account_id: "acc".into(),
            name: "n".into(),
            provider: "fs".into(),
            config_sealed: vec![1, 2, 3],
            created_at: 0,
            scan_interval_secs: None,
        }
    }

    #[test]
    fn nothing_is_kept_before_the_epoch_is_read() {
        let c = Cache::default();
        c.keep_account(c.ticket(), 1, b"k".to_vec(), "acc");
        assert_eq!(c.account(b"k"), None);
        c.observe(1, Instant::now());
        c.keep_account(c.ticket(), 1, b"k".to_vec(), "acc");
        assert_eq!(c.account(b"k").as_deref(), Some("acc"));
    }

    #[test]
    fn a_new_epoch_empties_it_and_the_same_one_does_not() {
        let c = Cache::default();
        c.observe(7, Instant::now());
        c.keep_connection(c.ticket(), 7, "acc", "n", &row("con_1"));
        c.observe(7, Instant::now());
        assert_eq!(
            c.connection("acc", "n").map(|r| r.id).as_deref(),
            Some("con_1")
        );
        assert_eq!(c.connection("other", "n"), None);
        c.observe(8, Instant::now());
        assert_eq!(c.connection("acc", "n"), None);
    }

    #[test]
    fn an_answer_read_across_an_emptying_is_not_kept() {
        let c = Cache::default();
        c.observe(1, Instant::now());
        let before = c.ticket();
        // A revocation commits and empties the cache while the read is
        // under way; what the read found must not be kept.
        c.empty();
        c.keep_account(before, 1, b"k".to_vec(), "acc");
        assert_eq!(c.account(b"k"), None);
        c.keep_account(c.ticket(), 1, b"k".to_vec(), "acc");
        assert_eq!(c.account(b"k").as_deref(), Some("acc"));
    }

    #[test]
    fn an_old_reading_is_not_trusted() {
        let c = Cache::default();
        c.observe(1, Instant::now());
        c.keep_account(c.ticket(), 1, b"k".to_vec(), "acc");
        c.lock().epoch = Some((1, Instant::now() - TRUST - Duration::from_millis(1)));
        assert_eq!(c.account(b"k"), None);
    }

    #[test]
    fn an_answer_from_a_database_behind_the_epoch_is_not_kept() {
        let c = Cache::default();
        // Epoch 8 observed (say, on the primary); a lagging replica still
        // answers with epoch 7 beside its answer.
        c.observe(8, Instant::now());
        c.keep_account(c.ticket(), 7, b"k".to_vec(), "acc");
        assert_eq!(c.account(b"k"), None);
        c.keep_connection(c.ticket(), 7, "acc", "n", &row("con_1"));
        assert_eq!(c.connection("acc", "n"), None);
    }

    #[test]
    fn nothing_is_kept_past_its_age() {
        let c = Cache::default();
        c.observe(1, Instant::now());
        c.keep_account(c.ticket(), 1, b"k".to_vec(), "acc");
        c.lock().keys.get_mut(&b"k"[..]).unwrap().1 = Instant::now() - MAX_AGE;
        assert_eq!(c.account(b"k"), None);
    }
}
