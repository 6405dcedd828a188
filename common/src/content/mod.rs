//! The content path: streaming file bodies into and out of providers with
//! checksums, conditional requests and ranges. The hub and spokes run this
//! same code; each gives it a [`MetaHost`] for the metadata (the hub its
//! store, a spoke its tunnel to the hub).

pub mod budget;
pub mod conditional;
pub mod files;
pub mod locks;
pub mod metrics;
pub mod model;
pub mod pace;
pub mod throttle;
pub mod transfer;

use futures_util::future::BoxFuture;
use opendal::Operator;
use tokio::sync::OwnedMutexGuard;

use crate::problem::Problem;
use model::{Commit, Direction, ObjectMeta, Transfer};

/// What every node (the hub, each spoke) keeps for its content path,
/// whichever host keeps its metadata.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    /// Serialise commits to one object within this node.
    pub locks: &'a locks::PathLocks,
    /// Bytes and transfers this node carried.
    pub metrics: &'a metrics::ContentMetrics,
}

/// Where the content path keeps and finds metadata.
pub trait MetaHost: Send + Sync {
    /// What ferry recorded about an object.
    fn lookup<'a>(
        &'a self,
        connection_id: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Option<ObjectMeta>, Problem>>;
    /// Commits metadata, event and transfer together.
    fn commit(&self, commit: Commit) -> BoxFuture<'_, Result<(), Problem>>;
    /// Asked just before a provider's content is changed (an upload put in
    /// place, a delete): an error stops the change, so that a host that
    /// could not record it leaves the content as it was. A host that
    /// queues what it cannot record at once (a spoke) has no need to stop.
    fn ready_to_commit(&self) -> BoxFuture<'_, Result<(), Problem>> {
        Box::pin(async { Ok(()) })
    }
    /// Like [`MetaHost::ready_to_commit`], with what is about to be done
    /// and recorded: a host that keeps intents (the hub) records it first
    /// and answers its id, which the change's [`Commit::intent`] then
    /// carries; others keep none.
    fn intend<'a>(
        &'a self,
        _intent: &'a model::Intent,
    ) -> BoxFuture<'a, Result<Option<String>, Problem>> {
        Box::pin(async move { self.ready_to_commit().await.map(|()| None) })
    }
    /// The change of intent `id` (from [`MetaHost::intend`]; nothing for
    /// none) failed at the provider: the host settles it now, by what the
    /// provider holds, rather than leaving the path held until the intent
    /// is old. Best effort, apart from the writer's answer.
    fn abandon(&self, _id: Option<&str>) {}
    /// Logs a transfer on its own; best effort.
    fn log_transfer(&self, transfer: Transfer) -> BoxFuture<'static, ()>;
    /// This node's locks and content metrics.
    fn node(&self) -> Node<'_>;
    /// Serialises commits to one object.
    fn lock<'a>(
        &'a self,
        connection_id: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, OwnedMutexGuard<()>> {
        Box::pin(self.node().locks.lock(connection_id, path))
    }
    /// Counts content bytes this node carried with `provider` (an
    /// OpenDAL scheme: `fs`, `s3`, …).
    fn count_bytes(&self, direction: Direction, provider: &'static str, bytes: u64) {
        self.node().metrics.count_bytes(direction, provider, bytes);
    }
    /// A transfer ended (complete, aborted, or rejected for a checksum
    /// mismatch): for metrics. Called once per transfer, before it is
    /// recorded.
    fn transfer_ended(&self, transfer: &Transfer) {
        self.node().metrics.ended(transfer);
    }
    /// This node's name in the transfer log: `hub` or the spoke's name.
    fn via(&self) -> &str;
    /// A transfer started (`+1`) or ended (`-1`); for load reports.
    fn track(&self, _delta: i64) {}
    /// The provider of `connection` answered `429`/`SlowDown`: slow the
    /// connection down here and on the other nodes ([`pace`]).
    fn provider_rate_limited(&self, _connection: &str) {}
}

/// An intent recorded for a change under way ([`MetaHost::intend`]): given
/// up ([`MetaHost::abandon`]) when dropped before [`Claimed::done`] — the
/// provider failed, or the request was dropped midway (its client gone) —
/// so that the path is not held until the intent is old.
pub struct Claimed<'a> {
    host: &'a dyn MetaHost,
    id: Option<String>,
}

impl<'a> Claimed<'a> {
    /// Holds intent `id` (none for none) of `host`.
    pub fn new(host: &'a dyn MetaHost, id: Option<String>) -> Self {
        Self { host, id }
    }

    /// The change was committed: nothing to give up.
    pub fn done(mut self) {
        self.id = None;
    }
}

impl std::fmt::Debug for Claimed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed").field("id", &self.id).finish()
    }
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        self.host.abandon(self.id.as_deref());
    }
}

/// Counts one transfer as active until dropped.
pub struct Active(std::sync::Arc<dyn MetaHost>);

impl Active {
    /// Marks a transfer started on `host`.
    pub fn start(host: std::sync::Arc<dyn MetaHost>) -> Self {
        host.track(1);
        Self(host)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.track(-1);
    }
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Active")
    }
}

/// The object store a request is for.
#[derive(Debug, Clone)]
pub struct Target {
    /// The caller's account.
    pub account_id: String,
    /// The connection.
    pub connection_id: String,
    /// Its provider.
    pub op: Operator,
    /// The provider's multi-request uploads, for uploads that outlive a
    /// request (the resumable uploads of an S3 or Azure Blob connection);
    /// none for other providers, and where only plain transfers are
    /// served.
    pub multipart: Option<std::sync::Arc<crate::provider::native::Multipart>>,
    /// The account's bandwidth buckets on this node (none without limits).
    pub throttle: throttle::Throttle,
    /// This node's pacing of providers that asked it to slow down.
    pub pacing: Option<std::sync::Arc<pace::Pacing>>,
}
