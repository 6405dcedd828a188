//! The DNS server's metrics. Every label comes from an enum, so the number
//! of series is fixed whatever the queries contain.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The query's type, bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum QType {
    A,
    AAAA,
    NS,
    SOA,
    ANY,
    /// Every other type, and messages whose question could not be read.
    other,
}

/// The response code sent, bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum RCode {
    NOERROR,
    FORMERR,
    SERVFAIL,
    NXDOMAIN,
    NOTIMP,
    REFUSED,
    BADVERS,
}

/// How the query came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Transport {
    udp,
    tcp,
}

/// Why a packet got no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DropReason {
    /// Shorter than a DNS header, or a response rather than a query.
    malformed,
    /// Over its source's response rate, and not the one in `slip` sent
    /// truncated.
    rate_limited,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueryLabels {
    transport: Transport,
    qtype: QType,
    rcode: RCode,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EcsLabels {
    present: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DropLabels {
    reason: DropReason,
}

/// Handles to the DNS server's metrics.
#[derive(Debug, Clone)]
pub struct DnsMetrics {
    queries: Family<QueryLabels, Counter>,
    ecs: Family<EcsLabels, Counter>,
    dropped: Family<DropLabels, Counter>,
    /// Responses sent truncated because their source was over its rate.
    pub slipped: Counter,
    /// DNS-over-TCP connections closed at once because their source held
    /// `dns.max_tcp_connections_per_source`.
    pub tcp_refused: Counter,
    /// Answers sent again as kept (the same query, steered to the same
    /// place).
    pub kept: Counter,
}

impl DnsMetrics {
    /// Registers the DNS metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let queries = Family::<QueryLabels, Counter>::default();
        registry.register(
            "dns_queries",
            "DNS queries answered, by transport, query type and response code",
            queries.clone(),
        );
        let ecs = Family::<EcsLabels, Counter>::default();
        registry.register(
            "dns_client_subnet_queries",
            "DNS queries with and without an EDNS Client Subnet option",
            ecs.clone(),
        );
        let dropped = Family::<DropLabels, Counter>::default();
        registry.register(
            "dns_dropped",
            "DNS packets given no answer, by reason",
            dropped.clone(),
        );
        let kept = Counter::default();
        registry.register(
            "dns_answers_kept",
            "Answers to api.<zone> over UDP sent again as kept: the same query bytes, steered to the same place",
            kept.clone(),
        );
        let slipped = Counter::default();
        registry.register(
            "dns_rate_limit_slipped",
            "Responses over their source's rate sent truncated, so a real client retries over TCP",
            slipped.clone(),
        );
        let tcp_refused = Counter::default();
        registry.register(
            "dns_tcp_connections_refused",
            "DNS-over-TCP connections closed as soon as they were accepted because their source held dns.max_tcp_connections_per_source",
            tcp_refused.clone(),
        );
        Self {
            queries,
            ecs,
            dropped,
            slipped,
            kept,
            tcp_refused,
        }
    }

    /// Counts one answered query.
    pub fn query(&self, transport: Transport, qtype: QType, rcode: RCode) {
        self.queries
            .get_or_create(&QueryLabels {
                transport,
                qtype,
                rcode,
            })
            .inc();
    }

    /// Counts a query with (`true`) or without an ECS option.
    pub fn client_subnet(&self, present: bool) {
        self.ecs.get_or_create(&EcsLabels { present }).inc();
    }

    /// Counts a packet given no answer.
    pub fn dropped(&self, reason: DropReason) {
        self.dropped.get_or_create(&DropLabels { reason }).inc();
    }
}
