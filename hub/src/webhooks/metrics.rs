//! Webhook metrics. No label names an account or an endpoint (their
//! number is unbounded): per-endpoint figures are in the delivery log.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::store::webhooks::OutboxDepth;

/// What an attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WebhookResult {
    /// The endpoint answered 2xx.
    delivered,
    /// It failed; another attempt is scheduled.
    retrying,
    /// It failed and the schedule is over.
    failed,
    /// The endpoint answered 410 and was disabled.
    endpoint_gone,
    /// Not sent: the endpoint was disabled meanwhile.
    dropped,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: WebhookResult,
}

/// The webhook counters and gauges.
#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    attempts: Family<ResultLabels, Counter>,
    duration: Histogram,
    pending: Gauge,
    oldest: Gauge<f64, AtomicU64>,
}

impl WebhookMetrics {
    /// Registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            attempts: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.5, 10)),
            pending: Gauge::default(),
            oldest: Gauge::default(),
        };
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts this hub made, by what came of them",
            m.attempts.clone(),
        );
        registry.register(
            "webhook_attempt_duration_seconds",
            "How long webhook endpoints took to answer",
            m.duration.clone(),
        );
        registry.register(
            "webhook_outbox_pending",
            "Webhook deliveries not yet delivered or given up (all hubs')",
            m.pending.clone(),
        );
        registry.register(
            "webhook_outbox_oldest_age_seconds",
            "Age of the oldest pending webhook delivery (0 when none)",
            m.oldest.clone(),
        );
        m
    }

    /// Counts an attempt.
    pub fn result(&self, r: WebhookResult) {
        self.attempts
            .get_or_create(&ResultLabels { result: r })
            .inc();
    }

    /// Notes how long an attempt took.
    pub fn latency(&self, d: std::time::Duration) {
        self.duration.observe(d.as_secs_f64());
    }

    /// Notes the outbox's depth at `now` (unix ms).
    pub fn outbox(&self, d: OutboxDepth, now: i64) {
        self.pending.set(d.pending);
        self.oldest
            .set(d.oldest.map_or(0.0, |o| (now - o).max(0) as f64 / 1000.0));
    }
}
