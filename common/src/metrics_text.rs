//! The two text formats `/metrics` answers in.
//!
//! Metrics are encoded as OpenMetrics 1.0 (prometheus-client's format),
//! which Prometheus asks for by `Accept`. Everything else — curl,
//! `promtool check metrics`, older scrapers — gets the Prometheus text
//! format 0.0.4, which differs in naming counter families with their
//! `_total` suffix, and in having no `# UNIT`, `_created` or `# EOF`.

use std::collections::HashSet;

/// The OpenMetrics content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything in `registry`, in OpenMetrics text.
pub fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// Whether an `Accept` header value asks for OpenMetrics (as Prometheus's
/// scrapes do).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut params = part.split(';');
            let kind = params.next().unwrap_or_default().trim();
            let refused =
                params.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            kind.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// The body and content type for a scrape with this `Accept`.
pub fn negotiate(openmetrics: String, accept: Option<&str>) -> (String, &'static str) {
    if wants_openmetrics(accept) {
        (openmetrics, OPENMETRICS)
    } else {
        (to_prometheus_text(&openmetrics), PROMETHEUS_TEXT)
    }
}

/// Rewrites OpenMetrics text as Prometheus text format 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters = HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, "counter")) = rest.split_once(' ')
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 16);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("HELP", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)));
        if let Some((kind, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let tail = match (kind, tail) {
                ("TYPE", "info") => "gauge",
                ("TYPE", "unknown") => "untyped",
                _ => tail,
            };
            let suffix = if counters.contains(name) {
                "_total"
            } else {
                ""
            };
            out.push_str(&format!("# {kind} {name}{suffix} {tail}\n"));
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        if let Some(family) = name.strip_suffix("_created")
            && counters.contains(family)
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# HELP ferry_grants Grants issued.\n# TYPE ferry_grants counter\nferry_grants_total 3\nferry_grants_created 1.7e9\n# HELP ferry_up Whether it is up.\n# TYPE ferry_up gauge\nferry_up 1\n# HELP ferry_d_seconds Durations.\n# TYPE ferry_d_seconds histogram\n# UNIT ferry_d_seconds seconds\nferry_d_seconds_bucket{le=\"+Inf\"} 2\nferry_d_seconds_sum 0.5\nferry_d_seconds_count 2\n# EOF\n";

    #[test]
    fn counters_take_their_suffix_and_openmetrics_only_lines_go() {
        let text = to_prometheus_text(SAMPLE);
        assert_eq!(
            text,
            "# HELP ferry_grants_total Grants issued.\n# TYPE ferry_grants_total counter\nferry_grants_total 3\n# HELP ferry_up Whether it is up.\n# TYPE ferry_up gauge\nferry_up 1\n# HELP ferry_d_seconds Durations.\n# TYPE ferry_d_seconds histogram\nferry_d_seconds_bucket{le=\"+Inf\"} 2\nferry_d_seconds_sum 0.5\nferry_d_seconds_count 2\n"
        );
    }

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_text() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prom)));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
        assert_eq!(negotiate(SAMPLE.into(), None).1, PROMETHEUS_TEXT);
        assert_eq!(negotiate(SAMPLE.into(), Some(prom)).0, SAMPLE);
    }
}
