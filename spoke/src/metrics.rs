//! The spoke's Prometheus metrics.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why the tunnel had to be re-established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReconnectCause {
    /// The QUIC handshake failed.
    connect,
    /// The hub refused the spoke (revoked, unknown, wrong version).
    refused,
    /// The connection was lost.
    lost,
    /// Heartbeats went unanswered.
    heartbeat,
}

/// Whether a grant came from the hub or the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum GrantResult {
    /// Asked of the hub.
    fetched,
    /// Served from the cache.
    cached,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GrantLabels {
    result: GrantResult,
}

/// Which way content bytes moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum DirectionLabel {
    upload,
    download,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: DirectionLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabels {
    cause: ReconnectCause,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabels {
    hub: u32,
    transport: &'static str,
}

/// 0 for the primary hub, then the standbys in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HubLabels {
    hub: u32,
}

/// Handles to every spoke metric.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    up: Family<HubLabels, Gauge>,
    rtt: Family<HubLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    reconnects: Family<CauseLabels, Counter>,
    transport: Family<TransportLabels, Gauge>,
    forwarded: Counter,
    grants: Family<GrantLabels, Counter>,
    content: Family<DirectionLabels, Counter>,
    queued: Gauge,
    dropped: Counter,
    active: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry_spoke");
        let up = Family::<HubLabels, Gauge>::default();
        registry.register(
            "tunnel_up",
            "1 while the tunnel to the hub is up, by hub (0 = primary)",
            up.clone(),
        );
        let rtt = Family::<HubLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "tunnel_rtt_seconds",
            "Smoothed round-trip time of the tunnel, by hub (0 = primary; 0 s on TCP)",
            rtt.clone(),
        );
        let reconnects = Family::<CauseLabels, Counter>::default();
        registry.register(
            "tunnel_reconnects",
            "Tunnel failures that led to a new connection attempt, by cause",
            reconnects.clone(),
        );
        let transport = Family::<TransportLabels, Gauge>::default();
        registry.register(
            "tunnel_transport",
            "1 for the transport the tunnel uses now",
            transport.clone(),
        );
        let forwarded = Counter::default();
        registry.register(
            "forwarded_requests",
            "Requests forwarded to the hub through the tunnel",
            forwarded.clone(),
        );
        let grants = Family::<GrantLabels, Counter>::default();
        registry.register(
            "grants",
            "Grants used for content requests, fetched from the hub or cached",
            grants.clone(),
        );
        let content = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "content_bytes",
            "File content bytes this spoke streamed, by direction",
            content.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "reports_queued",
            "Completion reports waiting for the hub",
            queued.clone(),
        );
        let dropped = Counter::default();
        registry.register(
            "reports_dropped",
            "Completion reports dropped because the queue was full",
            dropped.clone(),
        );
        let active = Gauge::default();
        registry.register(
            "active_transfers",
            "Uploads and downloads streaming through this spoke now",
            active.clone(),
        );
        Self {
            active,
            registry,
            up,
            rtt,
            reconnects,
            transport,
            forwarded,
            grants,
            content,
            queued,
            dropped,
        }
    }

    /// Records the tunnel on `transport` going up or down.
    pub fn tunnel_up(&self, hub: usize, transport: &'static str, up: bool) {
        let hub = hub as u32;
        self.up.get_or_create(&HubLabels { hub }).set(i64::from(up));
        self.transport
            .get_or_create(&TransportLabels { hub, transport })
            .set(i64::from(up));
    }

    /// Records the latest round-trip time.
    pub fn rtt(&self, hub: usize, rtt: std::time::Duration) {
        self.rtt
            .get_or_create(&HubLabels { hub: hub as u32 })
            .set(rtt.as_secs_f64());
    }

    /// Counts a reconnection.
    pub fn reconnect(&self, cause: ReconnectCause) {
        self.reconnects.get_or_create(&CauseLabels { cause }).inc();
    }

    /// Counts a forwarded request.
    pub fn forwarded(&self) {
        self.forwarded.inc();
    }

    /// Counts a grant used.
    pub fn grant(&self, result: GrantResult) {
        self.grants.get_or_create(&GrantLabels { result }).inc();
    }

    /// Counts content bytes.
    pub fn content_bytes(&self, direction: ferry_common::content::model::Direction, bytes: u64) {
        let direction = match direction {
            ferry_common::content::model::Direction::Upload => DirectionLabel::upload,
            ferry_common::content::model::Direction::Download => DirectionLabel::download,
        };
        self.content
            .get_or_create(&DirectionLabels { direction })
            .inc_by(bytes);
    }

    /// All content bytes so far, both ways (for the heartbeat's rate).
    pub fn content_total(&self) -> u64 {
        [DirectionLabel::upload, DirectionLabel::download]
            .into_iter()
            .map(|direction| {
                self.content
                    .get_or_create(&DirectionLabels { direction })
                    .get()
            })
            .sum()
    }

    /// Records the report queue's length.
    pub fn reports_queued(&self, n: usize) {
        self.queued.set(n as i64);
    }

    /// A transfer started (+1) or ended (-1).
    pub fn active_transfers(&self, delta: i64) {
        self.active.inc_by(delta);
    }

    /// Transfers streaming now.
    pub fn active_now(&self) -> u64 {
        self.active.get().max(0) as u64
    }

    /// Counts a dropped report.
    pub fn report_dropped(&self) {
        self.dropped.inc();
    }

    /// The metrics in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
