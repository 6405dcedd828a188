//! The hub's Prometheus metrics, registered once at start-up.
//!
//! Label values come from enums (route templates, methods, directions) or
//! from the response status, never from client input, so the number of
//! series stays bounded.

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::routes::RouteLabel;

/// The HTTP method, bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum MethodLabel {
    GET,
    HEAD,
    PUT,
    POST,
    DELETE,
    OTHER,
}

impl From<&Method> for MethodLabel {
    fn from(m: &Method) -> Self {
        match *m {
            Method::GET => Self::GET,
            Method::HEAD => Self::HEAD,
            Method::PUT => Self::PUT,
            Method::POST => Self::POST,
            Method::DELETE => Self::DELETE,
            _ => Self::OTHER,
        }
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: ContentDirection,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Handles to every hub metric, and the registry that exports them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    content_bytes: Family<DirectionLabels, Counter>,
    store_errors: Counter,
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
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 18)));
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response head, by route template",
            duration.clone(),
        );
        let content_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "content_bytes",
            "File content bytes this node carried, by direction",
            content_bytes.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Metadata store operations that failed",
            store_errors.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            content_bytes,
            store_errors,
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

    /// The counter of content bytes in one direction.
    pub fn content_bytes(&self, direction: ContentDirection) -> Counter {
        self.content_bytes
            .get_or_create(&DirectionLabels { direction })
            .clone()
    }

    /// Counts a failed store operation.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// The metrics in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
