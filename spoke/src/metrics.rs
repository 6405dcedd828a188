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

/// What a request to the spoke was, for its HTTP metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SpokeRoute {
    /// A file streamed (or refused) here.
    file,
    /// A resumable upload's bytes streamed (or refused) here.
    upload,
    /// An S3 object request streamed (or refused) here.
    s3,
    /// Forwarded to the hub.
    forwarded,
    healthz,
    readyz,
    probe,
    /// A hub-only route, refused.
    internal,
}

pub use ferry_common::http_metrics::MethodLabel;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: SpokeRoute,
    method: MethodLabel,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: SpokeRoute,
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
    requests: Family<RequestLabels, Counter>,
    duration: Family<
        RouteLabels,
        prometheus_client::metrics::histogram::Histogram,
        fn() -> prometheus_client::metrics::histogram::Histogram,
    >,
    up: Family<HubLabels, Gauge>,
    certificate_expiry: Gauge,
    rtt: Family<HubLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    reconnects: Family<CauseLabels, Counter>,
    transport: Family<TransportLabels, Gauge>,
    forwarded: Counter,
    grants: Family<GrantLabels, Counter>,
    /// Bytes, transfers and their durations (shared with the hub).
    pub content: ferry_common::content::metrics::ContentMetrics,
    /// The S3 door's requests.
    pub s3: ferry_common::s3_door::S3Metrics,
    queued: Gauge,
    dropped: Counter,
    journal_bytes: Gauge,
    journal_limit: Gauge,
    journal_errors: Counter,
    /// Providers that asked to slow down, and the pacing that followed.
    pub pacing: ferry_common::content::pace::PaceMetrics,
    /// What the allocator holds, read at each scrape.
    heap: ferry_common::heap::HeapMetrics,
    active: Gauge,
    connections_refused: Counter,
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
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route (file, upload, s3, forwarded, healthz, readyz, probe, internal), method and status",
            requests.clone(),
        );
        let duration = Family::<RouteLabels, _, fn() -> _>::new_with_constructor(
            ferry_common::http_metrics::request_duration_histogram as fn() -> _,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response head, by route",
            duration.clone(),
        );
        ferry_common::http_metrics::register_build_info(&mut registry, env!("CARGO_PKG_VERSION"));
        let connections_refused =
            ferry_common::http_metrics::register_connections_refused(&mut registry);
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When this spoke's tunnel certificate stops being valid, in seconds since the Unix epoch (re-enrol it before then)",
            certificate_expiry.clone(),
        );
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
        let content = ferry_common::content::metrics::ContentMetrics::register(&mut registry);
        let s3 = ferry_common::s3_door::S3Metrics::register(&mut registry);
        let queued = Gauge::default();
        registry.register(
            "reports_queued",
            "Completion reports waiting for the hub",
            queued.clone(),
        );
        let dropped = Counter::default();
        registry.register(
            "reports_dropped",
            "Completion reports the hub refused for good (a 4xx, such as a connection deleted meanwhile), dropped",
            dropped.clone(),
        );
        let journal_bytes = Gauge::default();
        registry.register(
            "report_journal_bytes",
            "Bytes of completion reports in the journal that the hub has not taken",
            journal_bytes.clone(),
        );
        let heap = ferry_common::heap::HeapMetrics::register(&mut registry);
        let pacing = ferry_common::content::pace::PaceMetrics::register(
            &mut registry,
            "Times a connection's provider asked to slow down (here or, told by the hub, elsewhere) and this spoke slowed it",
            "this spoke",
        );
        let journal_limit = Gauge::default();
        registry.register(
            "report_journal_limit_bytes",
            "The journal's limit: above it the spoke takes no new uploads (503)",
            journal_limit.clone(),
        );
        let journal_errors = Counter::default();
        registry.register(
            "report_journal_errors",
            "Writes to the report journal that failed (the report then waits in memory only)",
            journal_errors.clone(),
        );
        let active = Gauge::default();
        registry.register(
            "active_transfers",
            "Uploads and downloads streaming through this spoke now",
            active.clone(),
        );
        Self {
            connections_refused,
            active,
            requests,
            duration,
            registry,
            certificate_expiry,
            up,
            rtt,
            reconnects,
            transport,
            forwarded,
            grants,
            content,
            s3,
            queued,
            journal_bytes,
            journal_limit,
            pacing,
            heap,
            journal_errors,
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

    /// Counts a request answered, and how long its response head took.
    pub fn request(
        &self,
        route: SpokeRoute,
        method: MethodLabel,
        status: u16,
        took: std::time::Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels { route })
            .observe(took.as_secs_f64());
    }

    /// Records when the spoke's certificate expires (seconds since the
    /// Unix epoch).
    pub fn certificate_expires(&self, at: i64) {
        self.certificate_expiry.set(at);
    }

    /// Counts a forwarded request.
    pub fn forwarded(&self) {
        self.forwarded.inc();
    }

    /// Counts a grant used.
    pub fn grant(&self, result: GrantResult) {
        self.grants.get_or_create(&GrantLabels { result }).inc();
    }

    /// All content bytes so far, both ways (for the heartbeat's rate).
    pub fn content_total(&self) -> u64 {
        self.content.total_bytes()
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

    /// Bytes of reports waiting in the journal.
    pub fn journal_bytes(&self, n: u64) {
        self.journal_bytes.set(n as i64);
    }

    /// The journal's limit.
    pub fn journal_limit(&self, n: u64) {
        self.journal_limit.set(n as i64);
    }

    /// A journal write failed.
    pub fn journal_error(&self) {
        self.journal_errors.inc();
    }

    /// The counter of client connections refused for their source's
    /// share, for the listener to count in.
    pub fn connections_refused(&self) -> Counter {
        self.connections_refused.clone()
    }

    /// The metrics in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        self.heap.observe();
        ferry_common::metrics_text::encode(&self.registry)
    }
}
