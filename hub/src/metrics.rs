//! The hub's Prometheus metrics, registered once at start-up.
//!
//! Label values come from enums (route templates, methods, directions) or
//! from the response status, never from client input, so the number of
//! series stays bounded.

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Marks a forwarded request in flight; dropping it ends it.
#[derive(Debug)]
pub struct StreamGuard(Gauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

use crate::api::routes::RouteLabel;

pub use ferry_common::http_metrics::MethodLabel;

/// Which way content bytes moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ContentDirection {
    /// From clients into providers.
    upload,
    /// From providers to clients.
    download,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: RouteLabel,
    method: MethodLabel,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: RouteLabel,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Why the hub refused or ended a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TunnelRefusal {
    /// The certificate belongs to no enrolled, unrevoked spoke.
    unknown_or_revoked,
    /// The spoke broke the protocol (version, name, hello).
    protocol,
    /// The handshake failed or timed out.
    handshake,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    reason: TunnelRefusal,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

/// Spoke names come from the operator's registry, not from clients, so
/// they are a bounded label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SpokeLabels {
    spoke: String,
}

/// Handles to every hub metric, and the registry that exports them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    /// Bytes, transfers and their durations (shared with spokes).
    pub content: ferry_common::content::metrics::ContentMetrics,
    /// The S3 door's requests.
    pub s3: ferry_common::s3_door::S3Metrics,
    store_errors: Counter,
    intents_settled: Family<OutcomeLabels, Counter>,
    limit_refusals: Family<LimitLabels, Counter>,
    /// Providers that asked to slow down, and the pacing that followed.
    pub pacing: ferry_common::content::pace::PaceMetrics,
    /// What the allocator holds, read at each scrape.
    heap: ferry_common::heap::HeapMetrics,
    connections_refused: Counter,
    admin_token_failures: Counter,
    spokes_connected: Family<TransportLabels, Gauge>,
    spoke_rtt: Family<SpokeLabels, Gauge<f64, AtomicU64>>,
    open_streams: Gauge,
    streams: Counter,
    refusals: Family<RefusalLabels, Counter>,
    grants: Counter,
    grants_refused: Counter,
    announcements_refused: Counter,
    /// Resumable uploads.
    pub uploads: UploadMetrics,
    active: Gauge,
    replica_lag: Gauge,
    replicas: Gauge,
    replica_up: Gauge,
    primary_up: Gauge,
    hubs: Gauge,
    ca_expiry: Gauge,
    /// The DNS server's metrics.
    pub dns: crate::dns::metrics::DnsMetrics,
    /// Steering's metrics.
    pub steering: crate::steering::metrics::SteeringMetrics,
    /// The metadata index's scans.
    pub index: crate::indexer::metrics::IndexMetrics,
    /// Webhook deliveries.
    pub webhooks: crate::webhooks::metrics::WebhookMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let duration: HistogramFamily =
            Family::new_with_constructor(ferry_common::http_metrics::request_duration_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response head, by route template",
            duration.clone(),
        );
        let content = ferry_common::content::metrics::ContentMetrics::register(&mut registry);
        let s3 = ferry_common::s3_door::S3Metrics::register(&mut registry);
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Metadata store operations that failed",
            store_errors.clone(),
        );
        let heap = ferry_common::heap::HeapMetrics::register(&mut registry);
        let pacing = ferry_common::content::pace::PaceMetrics::register(
            &mut registry,
            "Times a connection's provider asked to slow down (at this hub or a spoke) and this hub slowed it and told the spokes",
            "this hub",
        );
        let limit_refusals = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_refusals",
            "Requests refused for an account's quota or limit, by which",
            limit_refusals.clone(),
        );
        let intents_settled = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "intents_settled",
            "Changes whose record was lost after the provider was asked to make them, settled later by what the provider holds: applied (recorded then) or dropped (not made)",
            intents_settled.clone(),
        );
        let admin_token_failures = Counter::default();
        registry.register(
            "admin_token_failures",
            "Requests to admin routes that carried a wrong admin token",
            admin_token_failures.clone(),
        );
        let spokes_connected = Family::<TransportLabels, Gauge>::default();
        registry.register(
            "tunnel_spokes_connected",
            "Spokes with a tunnel up, by transport",
            spokes_connected.clone(),
        );
        let spoke_rtt = Family::<SpokeLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "tunnel_rtt_seconds",
            "Smoothed round-trip time of each connected spoke's tunnel",
            spoke_rtt.clone(),
        );
        let open_streams = Gauge::default();
        registry.register(
            "tunnel_open_streams",
            "Forwarded requests being answered now",
            open_streams.clone(),
        );
        let streams = Counter::default();
        registry.register(
            "tunnel_streams",
            "Requests spokes forwarded through their tunnels",
            streams.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "tunnel_refusals",
            "Tunnels refused, by reason",
            refusals.clone(),
        );
        let grants = Counter::default();
        let announcements_refused = Counter::default();
        registry.register(
            "tunnel_announcements_refused",
            "Hellos that announced addresses or a probe URL the operator did not allow",
            announcements_refused.clone(),
        );
        let uploads = UploadMetrics::register(&mut registry);
        let grants_refused = Counter::default();
        registry.register(
            "grants_refused",
            "Spokes' calls refused because no grant they hold covers them",
            grants_refused.clone(),
        );
        registry.register(
            "grants",
            "Grants issued to spokes for direct transfers",
            grants.clone(),
        );
        let active = Gauge::default();
        registry.register(
            "active_transfers",
            "Uploads and downloads this node is streaming now",
            active.clone(),
        );
        let primary_up = Gauge::default();
        registry.register(
            "store_primary_up",
            "Whether the metadata store's primary took this hub's last write or check (1) or not (0: writes fail, uploads and deletes at this hub are refused)",
            primary_up.clone(),
        );
        let replica_lag = Gauge::default();
        registry.register(
            "store_replica_lag_bytes",
            "WAL the primary wrote that the hub's PostgreSQL replica has not replayed yet",
            replica_lag.clone(),
        );
        let replicas = Gauge::default();
        registry.register(
            "store_replicas",
            "Replicas this hub reads (1 with a PostgreSQL replica_url, else 0)",
            replicas.clone(),
        );
        let replica_up = Gauge::default();
        registry.register(
            "store_replica_up",
            "Whether the hub's PostgreSQL replica answered its last check (1) or not (0, reads go to the primary)",
            replica_up.clone(),
        );
        let hubs = Gauge::default();
        registry.register(
            "hubs_known",
            "Hubs sharing this hub's store that announced themselves recently, this one included",
            hubs.clone(),
        );
        let ca_expiry = Gauge::default();
        registry.register(
            "tunnel_ca_expiry_timestamp_seconds",
            "When the tunnel CA that signs spokes' certificates stops being valid, in seconds since the Unix epoch",
            ca_expiry.clone(),
        );
        ferry_common::http_metrics::register_build_info(&mut registry, env!("CARGO_PKG_VERSION"));
        let connections_refused =
            ferry_common::http_metrics::register_connections_refused(&mut registry);
        let dns = crate::dns::metrics::DnsMetrics::register(&mut registry);
        let steering = crate::steering::metrics::SteeringMetrics::register(&mut registry);
        let index = crate::indexer::metrics::IndexMetrics::register(&mut registry);
        let webhooks = crate::webhooks::metrics::WebhookMetrics::register(&mut registry);
        Self {
            index,
            webhooks,
            connections_refused,
            dns,
            steering,
            active,
            replica_lag,
            replicas,
            replica_up,
            primary_up,
            hubs,
            ca_expiry,
            registry,
            requests,
            duration,
            content,
            s3,
            store_errors,
            intents_settled,
            limit_refusals,
            pacing,
            heap,
            admin_token_failures,
            spokes_connected,
            spoke_rtt,
            open_streams,
            streams,
            refusals,
            grants,
            grants_refused,
            announcements_refused,
            uploads,
        }
    }

    /// Records one answered request.
    pub fn request(&self, route: RouteLabel, method: &Method, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method: method.into(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    /// Counts a failed store operation.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// Counts a request refused for an account's `limit` (`stored_bytes`,
    /// `egress`, `requests`).
    pub fn limit_refused(&self, limit: &'static str) {
        self.limit_refusals
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// Counts an intent settled by what the provider holds.
    pub fn intent_settled(&self, outcome: crate::store::Outcome) {
        self.intents_settled
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts a wrong admin token.
    pub fn admin_token_refused(&self) {
        self.admin_token_failures.inc();
    }

    /// Records a spoke's tunnel on `transport` coming up (`true`) or going down.
    pub fn tunnel(&self, spoke: &str, transport: &'static str, up: bool) {
        let g = self
            .spokes_connected
            .get_or_create(&TransportLabels { transport });
        if up {
            g.inc();
        } else {
            g.dec();
            self.spoke_rtt.remove(&SpokeLabels {
                spoke: spoke.to_owned(),
            });
        }
    }

    /// Records a spoke's round-trip time.
    pub fn tunnel_rtt(&self, spoke: &str, rtt: std::time::Duration) {
        self.spoke_rtt
            .get_or_create(&SpokeLabels {
                spoke: spoke.to_owned(),
            })
            .set(rtt.as_secs_f64());
    }

    /// Counts a forwarded request starting; the guard marks its end.
    pub fn stream(&self) -> StreamGuard {
        self.streams.inc();
        self.open_streams.inc();
        StreamGuard(self.open_streams.clone())
    }

    /// Counts a refused tunnel.
    pub fn tunnel_refused(&self, reason: TunnelRefusal) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// A transfer started (+1) or ended (-1).
    pub fn active_transfers(&self, delta: i64) {
        self.active.inc_by(delta);
    }

    /// Records whether the primary answered its last check.
    pub fn primary_up(&self, up: bool) {
        self.primary_up.set(i64::from(up));
    }

    /// Records whether the replica answered its last check.
    pub fn replicas(&self, n: usize) {
        self.replicas.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records whether the replica answered its last check.
    pub fn replica_up(&self, up: bool) {
        self.replica_up.set(i64::from(up));
    }

    /// Records the replica's lag, `None` when it could not be measured
    /// (the last value stays).
    pub fn replica_lag(&self, lag: Option<u64>) {
        if let Some(bytes) = lag {
            self.replica_lag
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Records when the tunnel CA expires (seconds since the Unix epoch).
    pub fn tunnel_ca_expires(&self, at: i64) {
        self.ca_expiry.set(at);
    }

    /// Records how many hubs share the store.
    pub fn hubs_known(&self, n: usize) {
        self.hubs.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a hello that announced what its spoke may not.
    pub fn announcement_refused(&self) {
        self.announcements_refused.inc();
    }

    /// Counts a spoke's call refused outside its grants.
    pub fn grant_refused(&self) {
        self.grants_refused.inc();
    }

    /// Counts a grant issued.
    pub fn grant(&self) {
        self.grants.inc();
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

/// Resumable-upload sessions, as the hub records them (whichever node
/// carried the bytes).
#[derive(Debug, Clone, Default)]
pub struct UploadMetrics {
    /// Sessions open (not complete, expired or terminated), from the store.
    pub open: Gauge,
    /// Bytes recorded as appended.
    pub bytes_appended: Counter,
    /// Appends that continued a session at an offset above zero.
    pub resumptions: Counter,
    /// Sessions completed.
    pub completed: Counter,
    /// Sessions expired and swept.
    pub expired: Counter,
    /// Leases taken from a holder that was gone or asked again.
    pub lease_takeovers: Counter,
}

impl UploadMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "uploads_open",
            "Resumable-upload sessions open, from the store",
            m.open.clone(),
        );
        registry.register(
            "upload_bytes_appended",
            "Bytes recorded as appended to resumable uploads",
            m.bytes_appended.clone(),
        );
        registry.register(
            "upload_resumptions",
            "Appends that continued a resumable upload at an offset above zero",
            m.resumptions.clone(),
        );
        registry.register(
            "uploads_completed",
            "Resumable uploads completed",
            m.completed.clone(),
        );
        registry.register(
            "uploads_expired",
            "Resumable uploads expired and swept",
            m.expired.clone(),
        );
        registry.register(
            "upload_lease_takeovers",
            "Upload leases taken from a holder that was gone or asked again",
            m.lease_takeovers.clone(),
        );
        m
    }
}
