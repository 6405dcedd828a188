//! Completion reports on their way to the hub: a finished upload's commit
//! or a transfer-log entry. Each is first written to the spoke's journal
//! ([`crate::journal`]) and synced, so that a crash loses none; a report
//! the hub cannot take now waits in a queue and is delivered, in order,
//! as soon as a tunnel is up — the delivery loop sleeps until a report is
//! queued or a tunnel comes back, and backs off while the hub answers but
//! cannot take them. Each report carries an id the hub records with it, so
//! one delivered twice is applied once.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_common::contract::{Commit, InternalCall, Transfer};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::hub_client::{HubClient, OnBehalf};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::tunnel::backoff::Backoff;

/// A completion report, with the token of the grant it was made under.
#[derive(Debug, Clone)]
pub enum Report {
    /// A commit.
    Commit(Box<Commit>, Arc<str>),
    /// A transfer-log entry.
    Transfer(Transfer, Arc<str>),
}

/// What became of one attempt to deliver a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The hub recorded it.
    Taken,
    /// The hub refused it for good (a 4xx, such as a connection deleted
    /// meanwhile): retrying cannot help, so it is dropped.
    Refused,
    /// The hub could not be reached or could not take it now: try again.
    Later,
}

/// The queue of reports and their delivery.
#[derive(Debug)]
pub struct Reports {
    client: HubClient,
    metrics: Arc<Metrics>,
    journal: Arc<Journal>,
    /// The reports not yet delivered, with their ids, oldest first.
    queue: Mutex<VecDeque<(String, Report)>>,
    /// Wakes the delivery loop when a report is queued.
    queued: Notify,
    /// How many reports wait, for [`Reports::flush`].
    waiting: watch::Sender<usize>,
}

impl Reports {
    /// Reports sent through `client`, journalled in folder `dir` (at most
    /// `limit` bytes waiting before new uploads are refused); the reports
    /// an earlier run left undelivered are queued at once.
    pub fn open(
        client: HubClient,
        metrics: Arc<Metrics>,
        dir: &Path,
        limit: u64,
    ) -> std::io::Result<Self> {
        let (journal, pending) = Journal::open(dir, limit)?;
        if !pending.is_empty() {
            tracing::info!(
                reports = pending.len(),
                "completion reports from before the restart wait for the hub"
            );
        }
        let reports = Self {
            client,
            metrics,
            journal: Arc::new(journal),
            queue: Mutex::new(pending.into()),
            queued: Notify::new(),
            waiting: watch::Sender::new(0),
        };
        let n = reports.queue.lock().expect("report queue poisoned").len();
        reports.set_waiting(n);
        // What an earlier run left counts from the start, not from the
        // next write.
        reports
            .metrics
            .journal_bytes(reports.journal.waiting_bytes());
        Ok(reports)
    }

    /// Whether a new upload may begin: the journal is not full.
    pub fn has_room(&self) -> bool {
        self.journal.has_room()
    }

    /// Writes a report to the journal (synced), then sends it now, unless
    /// earlier ones still wait (order matters) or the hub cannot take it;
    /// then it queues. Runs to the end even if the caller stops waiting
    /// (a client that went away), so that a journalled report is always
    /// queued or delivered.
    ///
    /// An error means the report could not be written to the journal and
    /// the hub did not take it now: it waits in memory only, and is lost
    /// if the spoke stops before the hub takes it.
    pub async fn report(self: &Arc<Self>, report: Report) -> Result<(), std::io::Error> {
        let this = self.clone();
        match tokio::spawn(async move { this.report_now(report).await }).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    async fn report_now(&self, report: Report) -> Result<(), std::io::Error> {
        let id = format!(
            "rep_{}{}",
            ferry_common::request_id::new_id(),
            ferry_common::request_id::new_id()
        );
        let (journal, kept, key) = (self.journal.clone(), report.clone(), id.clone());
        let written = tokio::task::spawn_blocking(move || journal.append(&key, &kept))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = &written {
            self.metrics.journal_error();
            tracing::error!(error = %e, "could not write a completion report to the journal");
        }
        self.metrics.journal_bytes(self.journal.waiting_bytes());
        let waiting = !self.queue.lock().expect("report queue poisoned").is_empty();
        let delivered = !waiting
            && match self.send(&id, &report).await {
                Delivery::Later => false,
                Delivery::Taken | Delivery::Refused => {
                    self.delivered(&id).await;
                    true
                }
            };
        if !delivered {
            self.enqueue(id, report);
        }
        match written {
            Err(e) if !delivered => Err(e),
            _ => Ok(()),
        }
    }

    fn enqueue(&self, id: String, report: Report) {
        let mut q = self.queue.lock().expect("report queue poisoned");
        q.push_back((id, report));
        self.set_waiting(q.len());
        self.queued.notify_one();
    }

    /// Marks report `id` done in the journal (off the async workers: a
    /// mark may rewrite the file).
    async fn delivered(&self, id: &str) {
        let (journal, key) = (self.journal.clone(), id.to_owned());
        let marked = tokio::task::spawn_blocking(move || journal.done(&key))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = marked {
            self.metrics.journal_error();
            tracing::warn!(error = %e, "could not mark a delivered report in the journal; it will be sent again, and applied once");
        }
        self.metrics.journal_bytes(self.journal.waiting_bytes());
    }

    fn set_waiting(&self, n: usize) {
        self.metrics.reports_queued(n);
        self.waiting.send_replace(n);
    }

    async fn send(&self, id: &str, report: &Report) -> Delivery {
        let answer = match report {
            Report::Commit(c, grant) => {
                let behalf = OnBehalf::Report { grant, id };
                self.client.call(InternalCall::Commit, behalf, c).await
            }
            Report::Transfer(t, grant) => {
                let behalf = OnBehalf::Report { grant, id };
                self.client.call(InternalCall::Transfer, behalf, t).await
            }
        };
        match answer {
            Ok(a) if a.status.is_success() => Delivery::Taken,
            Ok(a) if a.status.is_client_error() => {
                tracing::error!(status = %a.status, answer = %String::from_utf8_lossy(&a.body), "the hub refused a completion report; dropping it");
                self.metrics.report_dropped();
                Delivery::Refused
            }
            Ok(_) | Err(_) => Delivery::Later,
        }
    }

    /// Waits (at most `limit`) for the queue to empty, for a clean exit.
    pub async fn flush(&self, limit: Duration) {
        let mut waiting = self.waiting.subscribe();
        let _ = tokio::time::timeout(limit, waiting.wait_for(|n| *n == 0)).await;
    }

    /// Delivers queued reports, in order, whenever the hub can take them,
    /// until `shutdown`.
    pub async fn deliver(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        loop {
            let next = self
                .queue
                .lock()
                .expect("report queue poisoned")
                .front()
                .cloned();
            let Some((id, report)) = next else {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.queued.notified() => continue,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.client.tunnel.wait_up() => {}
            }
            match self.send(&id, &report).await {
                Delivery::Taken | Delivery::Refused => {
                    backoff.reset();
                    self.delivered(&id).await;
                    let mut q = self.queue.lock().expect("report queue poisoned");
                    q.pop_front();
                    self.set_waiting(q.len());
                    if q.is_empty() {
                        tracing::info!("delivered every queued completion report");
                    }
                }
                Delivery::Later => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                    }
                }
            }
        }
        let left = self.queue.lock().expect("report queue poisoned").len();
        if left > 0 {
            tracing::warn!(
                reports = left,
                "stopping with completion reports the hub has not taken yet; the journal keeps them for the next start"
            );
        }
    }
}
