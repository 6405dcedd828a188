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
//! The cost: entries still in the channel when the hub crashes are lost
//! (at most [`GATHER`] of them, or [`CAPACITY`] behind a store that does
//! not answer); a hub that stops writes what it holds first. Until the
//! task runs, and whenever the channel is full, an entry is written
//! directly, as before.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};
use ferry_common::content::model::Transfer;

/// The most entries written in one transaction.
const BATCH: usize = 500;

/// How long the task gathers entries after the first before it writes.
const GATHER: Duration = Duration::from_millis(20);

/// Entries waiting at most: beyond, they are written directly.
const CAPACITY: usize = 16_384;

/// The channel to the writing task.
#[derive(Debug)]
pub struct TransferLog {
    tx: mpsc::Sender<Transfer>,
    rx: Mutex<Option<mpsc::Receiver<Transfer>>>,
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
    /// directly.
    pub async fn push(&self, store: &Store, t: Transfer) -> Result<(), StoreError> {
        if !self.running.load(Ordering::Acquire) {
            return store.record_transfer(&t).await;
        }
        match self.tx.try_send(t) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(t) | mpsc::error::TrySendError::Closed(t)) => {
                store.record_transfer(&t).await
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
            let mut batch = vec![first];
            let until = tokio::time::Instant::now() + GATHER;
            while batch.len() < BATCH {
                tokio::select! {
                    t = rx.recv() => match t {
                        Some(t) => batch.push(t),
                        None => break,
                    },
                    () = tokio::time::sleep_until(until) => break,
                }
            }
            write(&store, &batch).await;
        }
        // Stopping: nothing new goes in; what is there is written.
        self.running.store(false, Ordering::Release);
        rx.close();
        let mut rest = Vec::new();
        while let Ok(t) = rx.try_recv() {
            rest.push(t);
        }
        for batch in rest.chunks(BATCH) {
            write(&store, batch).await;
        }
    }
}

async fn write(store: &Store, batch: &[Transfer]) {
    if let Err(e) = store.record_transfers(batch).await {
        tracing::warn!(error = %e, entries = batch.len(), "could not log transfers");
    }
}

impl Store {
    /// Logs several transfers in one transaction.
    pub async fn record_transfers(&self, batch: &[Transfer]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        super::objects::insert_transfers(&mut tx, batch).await?;
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

    #[tokio::test]
    async fn entries_are_written_in_batches_and_all_of_them_at_stop() {
        let (store, _dir) = crate::store::testing::store().await;
        let log = std::sync::Arc::new(TransferLog::default());
        // Before the task runs: written at once.
        log.push(&store, download(0)).await.unwrap();
        let count =
            || store.count_transfers("acc_1", Direction::Download, TransferStatus::Complete);
        assert_eq!(count().await.unwrap(), 1);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (log, store, stop) = (log.clone(), store.clone(), stop.clone());
            async move { log.run(store, stop).await }
        });
        while !log.running.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
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
}
