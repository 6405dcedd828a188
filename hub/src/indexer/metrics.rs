//! The metadata index's metrics. No label names a tenant or a connection
//! (their number is unbounded): per-connection figures are in the API.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What a scan covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ScanKind {
    /// The whole tree.
    full,
    /// The folders a notification named.
    folder,
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ScanResult {
    /// Every folder compared.
    ok,
    /// The provider or the store failed; retried later.
    failed,
}

/// A change found at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ChangeKind {
    /// A file appeared.
    created,
    /// A file's content changed.
    updated,
    /// A file went.
    deleted,
    /// A file went and the same content came under another name in the
    /// same folder.
    moved,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ScanLabels {
    kind: ScanKind,
    result: ScanResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: ScanKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ChangeLabels {
    kind: ChangeKind,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 4.0, 10))
}

/// The index's counters and gauges.
#[derive(Debug, Clone)]
pub struct IndexMetrics {
    scans: Family<ScanLabels, Counter>,
    durations: Family<KindLabels, Histogram, fn() -> Histogram>,
    /// Provider entries compared with the index (a scan's progress).
    pub entries_scanned: Counter,
    changes: Family<ChangeLabels, Counter>,
    /// From a provider change's modification time to its event.
    pub lag: Histogram,
    /// Connections whose scans this hub holds.
    pub held: Gauge,
    /// Entries the last full scans of those connections saw.
    pub entries: Gauge,
    /// Held connections with no completed full scan in three intervals.
    pub overdue: Gauge,
    /// Listings answered from the provider: the index not complete.
    pub listings_from_provider: Counter,
}

impl IndexMetrics {
    /// Registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            scans: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            entries_scanned: Counter::default(),
            changes: Family::default(),
            lag: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            held: Gauge::default(),
            entries: Gauge::default(),
            overdue: Gauge::default(),
            listings_from_provider: Counter::default(),
        };
        registry.register(
            "index_scans",
            "Scans of connections' providers by this hub, by kind and result",
            m.scans.clone(),
        );
        registry.register(
            "index_scan_duration_seconds",
            "How long scans took, by kind",
            m.durations.clone(),
        );
        registry.register(
            "index_entries_scanned",
            "Provider entries compared with the index",
            m.entries_scanned.clone(),
        );
        registry.register(
            "index_provider_changes",
            "Changes made outside ferry found at providers, by kind",
            m.changes.clone(),
        );
        registry.register(
            "index_change_lag_seconds",
            "From a change's modification time at the provider to its event",
            m.lag.clone(),
        );
        registry.register(
            "index_connections_held",
            "Connections whose scans this hub holds",
            m.held.clone(),
        );
        registry.register(
            "index_entries",
            "Entries seen by the last full scans of the connections this hub holds",
            m.entries.clone(),
        );
        registry.register(
            "index_scans_overdue",
            "Connections held by this hub without a completed full scan in three intervals",
            m.overdue.clone(),
        );
        registry.register(
            "index_listings_from_provider",
            "Listings answered from the provider because the connection's index was not complete",
            m.listings_from_provider.clone(),
        );
        m
    }

    /// Records a scan's end.
    pub fn scanned(&self, kind: ScanKind, result: ScanResult, seconds: f64) {
        self.scans.get_or_create(&ScanLabels { kind, result }).inc();
        self.durations
            .get_or_create(&KindLabels { kind })
            .observe(seconds);
    }

    /// Counts a change found.
    pub fn change(&self, kind: ChangeKind) {
        self.changes.get_or_create(&ChangeLabels { kind }).inc();
    }
}
