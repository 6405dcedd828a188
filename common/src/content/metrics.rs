//! Metrics of the content path, the same on the hub and on spokes: bytes
//! by direction and provider, transfers by how they ended, and how long
//! they took.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::model::{Direction, Transfer, TransferStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum DirectionLabel {
    upload,
    download,
}

impl From<Direction> for DirectionLabel {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Upload => Self::upload,
            Direction::Download => Self::download,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum ResultLabel {
    complete,
    aborted,
    rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BytesLabels {
    direction: DirectionLabel,
    provider: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransferLabels {
    direction: DirectionLabel,
    result: ResultLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DurationLabels {
    direction: DirectionLabel,
}

fn duration_histogram() -> Histogram {
    // 10 ms to about 5.8 hours.
    Histogram::new(exponential_buckets(0.01, 4.0, 11))
}

/// The content path's metrics, registered under a daemon's prefix.
#[derive(Debug, Clone)]
pub struct ContentMetrics {
    bytes: Family<BytesLabels, Counter>,
    transfers: Family<TransferLabels, Counter>,
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    total: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ContentMetrics {
    /// Registers `content_bytes`, `transfers` and
    /// `transfer_duration_seconds` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let bytes = Family::<BytesLabels, Counter>::default();
        registry.register(
            "content_bytes",
            "File content bytes this node carried, by direction and provider",
            bytes.clone(),
        );
        let transfers = Family::<TransferLabels, Counter>::default();
        registry.register(
            "transfers",
            "Uploads and downloads this node carried, by how they ended: complete, aborted (the client or the provider went away), rejected (a checksum mismatch)",
            transfers.clone(),
        );
        let duration = Family::<DurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register(
            "transfer_duration_seconds",
            "Time from a transfer's start to its end, complete transfers only",
            duration.clone(),
        );
        Self {
            bytes,
            transfers,
            duration,
            total: Default::default(),
        }
    }

    /// Counts bytes carried with `provider` (an OpenDAL scheme).
    pub fn count_bytes(&self, direction: Direction, provider: &'static str, bytes: u64) {
        self.bytes
            .get_or_create(&BytesLabels {
                direction: direction.into(),
                provider,
            })
            .inc_by(bytes);
        self.total
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every byte counted so far, both ways and all providers.
    pub fn total_bytes(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a transfer that ended.
    pub fn ended(&self, t: &Transfer) {
        let result = match t.status {
            TransferStatus::Complete => ResultLabel::complete,
            TransferStatus::Aborted => ResultLabel::aborted,
            TransferStatus::Rejected => ResultLabel::rejected,
        };
        self.transfers
            .get_or_create(&TransferLabels {
                direction: t.direction.into(),
                result,
            })
            .inc();
        if t.status == TransferStatus::Complete {
            self.duration
                .get_or_create(&DurationLabels {
                    direction: t.direction.into(),
                })
                .observe(t.duration_ms.max(0) as f64 / 1000.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_are_counted_by_result_and_timed_when_complete() {
        let mut registry = Registry::default();
        let m = ContentMetrics::register(&mut registry);
        let mut t = Transfer::start("acc", "con", "a.txt", Direction::Upload, "hub");
        m.ended(&t);
        t.status = TransferStatus::Complete;
        t.duration_ms = 1500;
        m.ended(&t);
        m.count_bytes(Direction::Upload, "s3", 10);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("transfers_total{direction=\"upload\",result=\"aborted\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("transfers_total{direction=\"upload\",result=\"complete\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("transfer_duration_seconds_sum{direction=\"upload\"} 1.5"),
            "{out}"
        );
        assert!(
            out.contains("content_bytes_total{direction=\"upload\",provider=\"s3\"} 10"),
            "{out}"
        );
    }
}
