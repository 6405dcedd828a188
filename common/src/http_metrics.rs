//! Metric pieces both daemons' HTTP metrics share: the method label, the
//! request-duration buckets, `build_info` and the count of connections
//! refused for their source's share.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The HTTP method, bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum MethodLabel {
    GET,
    HEAD,
    PUT,
    POST,
    PATCH,
    DELETE,
    OPTIONS,
    OTHER,
}

impl From<&http::Method> for MethodLabel {
    fn from(m: &http::Method) -> Self {
        match *m {
            http::Method::GET => Self::GET,
            http::Method::HEAD => Self::HEAD,
            http::Method::PUT => Self::PUT,
            http::Method::POST => Self::POST,
            http::Method::PATCH => Self::PATCH,
            http::Method::DELETE => Self::DELETE,
            http::Method::OPTIONS => Self::OPTIONS,
            _ => Self::OTHER,
        }
    }
}

/// A histogram of times to a response head: 0.5 ms doubling to about 65 s.
pub fn request_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// Registers `build_info{version}`, always 1.
pub fn register_build_info(registry: &mut Registry, version: &'static str) {
    let info = Family::<VersionLabels, Gauge>::default();
    info.get_or_create(&VersionLabels { version }).set(1);
    registry.register(
        "build_info",
        "The running version, as a label (always 1)",
        info,
    );
}

/// Registers `http_connections_refused`, the client connections closed at
/// once because their source held `api.max_connections_per_source`.
pub fn register_connections_refused(registry: &mut Registry) -> Counter {
    let refused = Counter::default();
    registry.register(
        "http_connections_refused",
        "Client connections closed as soon as they were accepted because their source (an IPv4 address or IPv6 /64) held api.max_connections_per_source",
        refused.clone(),
    );
    refused
}
