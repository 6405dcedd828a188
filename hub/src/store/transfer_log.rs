//! The transfer log's entries of downloads and refused uploads, written in
//! batches off the request path.
//!
//! A download ends with one entry in the transfer log. Written one by one,
//! each entry was a write transaction of its own — on SQLite a commit with
//! its fsync, and one writer at a time — so under many small downloads the
//! writes queued behind each other and held the store's connections that
//! reads needed. Entries now go through a channel to one task that writes
//! what has gathered (up to [`BATCH`], or what arrived within [`GATHER`])
//! in one transaction. What a commit logs (an upload's entry) stays in the
//! commit's own transaction.
//!
//! Two ways in. The hub's own downloads [`TransferLog::push`] and go on:
//! entries still in the channel when the hub crashes are lost (at most
//! [`GATHER`] of them, or [`CAPACITY`] behind a store that does not
//! answer); a hub that stops writes what it holds first. A spoke's report
//! is [`TransferLog::record`]ed: the call returns once the batch holding it
//! has committed (a group commit — the batch is written as soon as the
//! task has it, without waiting out [`GATHER`]), so the spoke forgets a
//! report only once it is on disk, and many spokes' reports share one
//! fsync. Until the task runs, and whenever the channel is full, an entry
//! is written directly, as before.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};
use ferry_common::content::model::Transfer;

/// The most entries written in one transaction.
const BATCH: usize = 500;

/// How long the task gathers entries after the first before it writes,
/// unless one of them is waited for.
const GATHER: Duration = Duration::from_millis(20);

/// Entries waiting at most: beyond, they are written directly.
const CAPACITY: usize = 16_384;

/// An entry, and whom to tell once it is written (true) or its batch
/// failed (false).
#[derive(Debug)]
struct Entry {
    transfer: Transfer,
    /// The spoke's report id, if a spoke reported it: logged once.
    report: Option<String>,
    written: Option<oneshot::Sender<bool>>,
}

/// The channel to the writing task.
#[derive(Debug)]
pub struct TransferLog {
    tx: mpsc::Sender<Entry>,
    rx: Mutex<Option<mpsc::Receiver<Entry>>>,
    running: AtomicBool,
}

impl Default for TransferLog {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(CAPACITY);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            running: AtomicBool::new(false),
        }
    }
}

impl TransferLog {
    /// Logs `t`: through the task when it runs and has room, else
    /// directly. Returns before it is written.
    pub async fn push(&self, store: &Store, t: Transfer) -> Result<(), StoreError> {
        if !self.running.load(Ordering::Acquire) {
            return store.record_transfer(&t).await;
        }
        let entry = Entry {
            transfer: t,
            report: None,
            written: None,
        };
        match self.tx.try_send(entry) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) => {
                store.record_transfer(&e.transfer).await
            }
        }
    }

    /// Logs `t` (a spoke's report `report`, logged once however often it
    /// comes) and returns once it is written: with the next batch when the
    /// task runs, else directly. A batch that fails is tried again for
    /// this entry alone, so the error returned is this entry's.
    pub async fn record(
        &self,
        store: &Store,
        t: Transfer,
        report: Option<String>,
    ) -> Result<(), StoreError> {
        let alone = |t: Transfer, report: Option<String>| async move {
            store
                .record_transfers(&[t], std::slice::from_ref(&report))
                .await
        };
        if !self.running.load(Ordering::Acquire) {
            return alone(t, report).await;
        }
        let (done, written) = oneshot::channel();
        let entry = Entry {
            transfer: t.clone(),
            report: report.clone(),
            written: Some(done),
        };
        match self.tx.try_send(entry) {
            Ok(()) => match written.await {
                Ok(true) => Ok(()),
                // The batch failed, or the task stopped before writing it.
                Ok(false) | Err(_) => alone(t, report).await,
            },
            Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) => {
                alone(e.transfer, e.report).await
            }
        }
    }

    /// Writes the entries pushed, in batches, until `stop`; then writes
    /// what is left. Runs once: a second call returns at once.
    pub async fn run(&self, store: Store, stop: CancellationToken) {
        let Some(mut rx) = self.rx.lock().expect("transfer log poisoned").take() else {
            return;
        };
        self.running.store(true, Ordering::Release);
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => break,
                t = rx.recv() => match t {
                    Some(t) => t,
                    None => break,
                },
            };
            let mut waited = first.written.is_some();
            let mut batch = vec![first];
            let until = tokio::time::Instant::now() + GATHER;
            while batch.len() < BATCH {
                // Someone waits: only what is already there joins.
                if waited {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                    continue;
                }
                tokio::select! {
                    e = rx.recv() => match e {
                        Some(e) => {
                            waited = e.written.is_some();
                            batch.push(e);
                        }
                        None => break,
                    },
                    () = tokio::time::sleep_until(until) => break,
                }
            }
            write(&store, batch).await;
        }
        // Stopping: nothing new goes in; what is there is written.
        self.running.store(false, Ordering::Release);
        rx.close();
        let mut rest = Vec::new();
        while let Ok(e) = rx.try_recv() {
            rest.push(e);
            if rest.len() == BATCH {
                write(&store, std::mem::take(&mut rest)).await;
            }
        }
        write(&store, rest).await;
    }
}

async fn write(store: &Store, batch: Vec<Entry>) {
    if batch.is_empty() {
        return;
    }
    let mut transfers = Vec::with_capacity(batch.len());
    let mut reports = Vec::with_capacity(batch.len());
    let mut waiting = Vec::with_capacity(batch.len());
    for e in batch {
        transfers.push(e.transfer);
        reports.push(e.report);
        waiting.push(e.written);
    }
    let ok = match store.record_transfers(&transfers, &reports).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, entries = transfers.len(), "could not log transfers");
            false
        }
    };
    for w in waiting.into_iter().flatten() {
        let _ = w.send(ok);
    }
}

impl Store {
    /// Logs several transfers in one transaction; `reports` holds each
    /// one's report id, if a spoke reported it (one seen before is not
    /// logged again).
    pub async fn record_transfers(
        &self,
        batch: &[Transfer],
        reports: &[Option<String>],
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        let mut new = Vec::with_capacity(batch.len());
        for (i, t) in batch.iter().enumerate() {
            let fresh = match reports.get(i).and_then(Option::as_deref) {
                Some(id) => super::objects::first_time(&mut tx, id).await?,
                None => true,
            };
            if fresh {
                new.push(t.clone());
            } else {
                tracing::info!(
                    report.id = reports.get(i).and_then(Option::as_deref).unwrap_or(""),
                    "a report came again; it was applied before"
                );
            }
        }
        super::objects::insert_transfers(&mut tx, &new).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_common::content::model::{Direction, TransferStatus};

    fn download(i: usize) -> Transfer {
        Transfer {
            account_id: "acc_1".into(),
            connection_id: "con_1".into(),
            path: format!("f{i}"),
            direction: Direction::Download,
            status: TransferStatus::Complete,
            bytes: i as i64,
            crc64nvme: Some(i as u64),
            via: "hub".into(),
            started_at: 1,
            duration_ms: 1,
        }
    }

    /// Runs `log`'s task; returns what stops it and the task, once it runs.
    async fn start(
        log: &std::sync::Arc<TransferLog>,
        store: &Store,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (log, store, stop) = (log.clone(), store.clone(), stop.clone());
            async move { log.run(store, stop).await }
        });
        while !log.running.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        (stop, task)
    }

    #[tokio::test]
    async fn entries_are_written_in_batches_and_all_of_them_at_stop() {
        let (store, _dir) = crate::store::testing::store().await;
        let log = std::sync::Arc::new(TransferLog::default());
        // Before the task runs: written at once.
        log.push(&store, download(0)).await.unwrap();
        let count =
            || store.count_transfers("acc_1", Direction::Download, TransferStatus::Complete);
        assert_eq!(count().await.unwrap(), 1);
        let (stop, task) = start(&log, &store).await;
        for i in 1..=1234 {
            log.push(&store, download(i)).await.unwrap();
        }
        stop.cancel();
        task.await.unwrap();
        assert_eq!(
            count().await.unwrap(),
            1235,
            "every entry, the waiting ones at stop too"
        );
        // After the task stopped: directly again.
        log.push(&store, download(9999)).await.unwrap();
        assert_eq!(count().await.unwrap(), 1236);
    }

    #[tokio::test]
    async fn a_recorded_entry_is_written_when_the_call_returns() {
        let (store, _dir) = crate::store::testing::store().await;
        let log = std::sync::Arc::new(TransferLog::default());
        let (stop, task) = start(&log, &store).await;
        let count =
            || store.count_transfers("acc_1", Direction::Download, TransferStatus::Complete);
        // Pushed entries gather; a recorded one is written with them, and
        // the call returns only then.
        for i in 0..10 {
            log.push(&store, download(i)).await.unwrap();
        }
        log.record(&store, download(10), None).await.unwrap();
        assert_eq!(count().await.unwrap(), 11);
        // Many at once share batches; each is written when its call returns.
        // A spoke's reports sent again (its journal replayed) are logged
        // once, whether they come in a batch or alone.
        for _ in 0..2 {
            let calls = (11..111).map(|i| {
                let (log, store) = (log.clone(), store.clone());
                let id = Some(format!("spoke1/rep_{i}"));
                tokio::spawn(async move { log.record(&store, download(i), id).await })
            });
            for c in futures_util::future::join_all(calls).await {
                c.unwrap().unwrap();
            }
            assert_eq!(count().await.unwrap(), 111);
        }
        stop.cancel();
        task.await.unwrap();
        log.record(&store, download(50), Some("spoke1/rep_50".into()))
            .await
            .unwrap();
        assert_eq!(count().await.unwrap(), 111);
        log.record(&store, download(5), Some("spoke1/rep_new".into()))
            .await
            .unwrap();
        assert_eq!(count().await.unwrap(), 112);
    }
}
