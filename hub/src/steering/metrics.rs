//! Steering's metrics: samples taken, answers that moved, spokes eligible.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Where a sample came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SampleSource {
    /// A spoke's kernel RTT of its client connections, in a heartbeat.
    spoke,
    /// A client's probe report.
    probe,
    /// A client's probe report another hub took, read from the shared
    /// store.
    hub,
}

/// What became of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SampleResult {
    /// Taken into the model.
    accepted,
    /// Implausible, or for a spoke or prefix the hub does not know.
    rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SampleLabels {
    source: SampleSource,
    result: SampleResult,
}

/// Spoke names come from the operator's registry, not from clients, so
/// they are a bounded label; `hub` stands for the hub's own addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SpokeLabels {
    spoke: String,
}

/// Handles to steering's metrics.
#[derive(Debug, Clone)]
pub struct SteeringMetrics {
    samples: Family<SampleLabels, Counter>,
    answers: Family<SpokeLabels, Counter>,
    /// Answers for a client network that moved to another spoke.
    pub switches: Counter,
    /// Spokes the DNS may answer now.
    pub eligible: Gauge,
    /// Client networks with measurements.
    pub prefixes: Gauge,
}

impl SteeringMetrics {
    /// Registers steering's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let samples = Family::<SampleLabels, Counter>::default();
        registry.register(
            "steering_samples",
            "RTT samples offered to steering, by source and result",
            samples.clone(),
        );
        let answers = Family::<SpokeLabels, Counter>::default();
        registry.register(
            "dns_answers",
            "DNS answers for api.<zone>, by the spoke answered (hub when no spoke fits)",
            answers.clone(),
        );
        let switches = Counter::default();
        registry.register(
            "steering_switches",
            "Times the answer for a client network moved to another spoke (or to or from the hub)",
            switches.clone(),
        );
        let eligible = Gauge::default();
        registry.register(
            "steering_eligible_spokes",
            "Spokes DNS may answer now: tunnel up, heartbeat fresh, not draining, under capacity",
            eligible.clone(),
        );
        let prefixes = Gauge::default();
        registry.register(
            "steering_prefixes",
            "Client networks steering holds measurements for",
            prefixes.clone(),
        );
        Self {
            samples,
            answers,
            switches,
            eligible,
            prefixes,
        }
    }

    /// The counter of DNS answers with `spoke` (or `hub`).
    pub fn answers(&self, spoke: &str) -> Counter {
        self.answers
            .get_or_create(&SpokeLabels {
                spoke: spoke.to_owned(),
            })
            .clone()
    }

    /// Counts `n` samples from `source` with `result`.
    pub fn samples(&self, source: SampleSource, result: SampleResult, n: u64) {
        if n > 0 {
            self.samples
                .get_or_create(&SampleLabels { source, result })
                .inc_by(n);
        }
    }
}
