//! Completion reports on their way to the hub: a finished upload's commit
//! or a transfer-log entry. A report the hub cannot take now waits in a
//! bounded queue and is delivered, in order, as soon as a tunnel is up —
//! the delivery loop sleeps until a report is queued or a tunnel comes
//! back, and backs off while the hub answers but cannot take them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_common::contract::{Commit, InternalCall, Transfer};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::hub_client::{HubClient, OnBehalf};
use crate::metrics::Metrics;
use crate::tunnel::backoff::Backoff;

/// Reports kept while the hub cannot be reached; beyond this the oldest is
/// dropped (and counted).
const QUEUE_LIMIT: usize = 10_000;

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
    queue: Mutex<VecDeque<Report>>,
    /// Wakes the delivery loop when a report is queued.
    queued: Notify,
    /// How many reports wait, for [`Reports::flush`].
    waiting: watch::Sender<usize>,
}

impl Reports {
    /// Reports sent through `client`.
    pub fn new(client: HubClient, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            metrics,
            queue: Mutex::default(),
            queued: Notify::new(),
            waiting: watch::Sender::new(0),
        }
    }

    /// Sends a report now, unless earlier ones still wait (order matters)
    /// or the hub cannot take it; then it queues.
    pub async fn report(&self, report: Report) {
        let waiting = !self.queue.lock().expect("report queue poisoned").is_empty();
        if waiting || self.send(&report).await == Delivery::Later {
            self.enqueue(report);
        }
    }

    fn enqueue(&self, report: Report) {
        let mut q = self.queue.lock().expect("report queue poisoned");
        if q.len() >= QUEUE_LIMIT {
            q.pop_front();
            self.metrics.report_dropped();
            tracing::error!("the report queue is full: dropped the oldest completion report");
        }
        q.push_back(report);
        self.set_waiting(q.len());
        self.queued.notify_one();
    }

    fn set_waiting(&self, n: usize) {
        self.metrics.reports_queued(n);
        self.waiting.send_replace(n);
    }

    async fn send(&self, report: &Report) -> Delivery {
        let answer = match report {
            Report::Commit(c, grant) => {
                let behalf = OnBehalf::Grant(grant);
                self.client.call(InternalCall::Commit, behalf, c).await
            }
            Report::Transfer(t, grant) => {
                let behalf = OnBehalf::Grant(grant);
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
            let Some(report) = next else {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.queued.notified() => continue,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.client.tunnel.wait_up() => {}
            }
            match self.send(&report).await {
                Delivery::Taken | Delivery::Refused => {
                    backoff.reset();
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
                "stopping with completion reports the hub never received"
            );
        }
    }
}
