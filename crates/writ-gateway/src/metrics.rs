//! Prometheus metrics for the gateway, served as OpenMetrics text.
//!
//! Label values are bounded sets chosen by our own code (verdicts, outcomes, refusal reasons) or
//! connector names from configuration. Nothing an agent sends becomes a label: an agent id would
//! give a time series per caller, so rate limiting is counted without one.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of the text [`Metrics::encode`] returns (OpenMetrics 1.0.0).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The refusal reason for which [`Metrics::refused`] also counts `writ_rate_limited_total`.
const RATE_LIMITED: &str = "rate_limited";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    verdict: String,
    connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorLabels {
    connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// Duration buckets: 0.5 ms doubling up to about 16 s, then `+Inf`.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The gateway's metrics and the registry that encodes them. Share it in an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    actions: Family<ActionLabels, Counter>,
    action_duration: Family<OutcomeLabels, Histogram>,
    connector_duration: Family<ConnectorLabels, Histogram>,
    approvals_pending: Gauge,
    audit_log_size: Gauge,
    rate_limited: Counter,
    requests_refused: Family<ReasonLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics, all at zero, registered under their `writ_` names.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let actions = Family::<ActionLabels, Counter>::default();
        let action_duration =
            Family::<OutcomeLabels, Histogram>::new_with_constructor(duration_histogram as _);
        let connector_duration =
            Family::<ConnectorLabels, Histogram>::new_with_constructor(duration_histogram as _);
        let approvals_pending = Gauge::default();
        let audit_log_size = Gauge::default();
        let rate_limited = Counter::default();
        let requests_refused = Family::<ReasonLabels, Counter>::default();

        // Counters get `_total` and units get `_seconds` appended by the crate.
        registry.register(
            "writ_actions",
            "Actions decided, by verdict (allow, deny, approval, error) and connector",
            actions.clone(),
        );
        registry.register_with_unit(
            "writ_action_duration",
            "Time from receiving an action to its outcome (executed, denied, pending, error)",
            Unit::Seconds,
            action_duration.clone(),
        );
        registry.register_with_unit(
            "writ_connector_duration",
            "Time spent in a connector call",
            Unit::Seconds,
            connector_duration.clone(),
        );
        registry.register(
            "writ_approvals_pending",
            "Approvals waiting for a decision",
            approvals_pending.clone(),
        );
        registry.register(
            "writ_audit_log_size",
            "Entries in the audit log",
            audit_log_size.clone(),
        );
        registry.register(
            "writ_rate_limited",
            "Requests refused by the per-agent rate limit",
            rate_limited.clone(),
        );
        registry.register(
            "writ_requests_refused",
            "Requests refused before evaluation, by reason \
             (body_too_large, args_too_large, rate_limited, unauthenticated, invalid)",
            requests_refused.clone(),
        );

        Self {
            registry,
            actions,
            action_duration,
            connector_duration,
            approvals_pending,
            audit_log_size,
            rate_limited,
            requests_refused,
        }
    }

    /// Counts one action with its `verdict` and `connector`, and times it under its `outcome`.
    pub fn record_action(&self, verdict: &str, connector: &str, outcome: &str, elapsed: Duration) {
        self.actions
            .get_or_create(&ActionLabels {
                verdict: verdict.to_owned(),
                connector: connector.to_owned(),
            })
            .inc();
        self.action_duration
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Times one call to `connector`.
    pub fn record_connector(&self, connector: &str, elapsed: Duration) {
        self.connector_duration
            .get_or_create(&ConnectorLabels {
                connector: connector.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the number of approvals waiting for a decision.
    pub fn set_approvals_pending(&self, pending: i64) {
        self.approvals_pending.set(pending);
    }

    /// Sets the number of entries in the audit log.
    pub fn set_log_size(&self, entries: i64) {
        self.audit_log_size.set(entries);
    }

    /// Counts a request refused for `reason`; `"rate_limited"` also counts
    /// `writ_rate_limited_total`, so one call records a rate-limit refusal.
    pub fn refused(&self, reason: &str) {
        self.requests_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
        if reason == RATE_LIMITED {
            self.rate_limited.inc();
        }
    }

    /// The metrics as OpenMetrics text, ending in `# EOF`; serve it with [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a `String` cannot fail, and these metric types only fail when the writer
        // does; should that change, an empty scrape is better than a half-written one.
        if text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Asserts that `text` has `line` as a whole line.
    fn assert_line(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in:\n{text}"
        );
    }

    #[test]
    fn metrics_are_shareable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Metrics>();
    }

    #[test]
    fn actions_are_counted_by_verdict_and_connector() {
        let m = Metrics::new();
        m.record_action("allow", "github", "executed", ms(3));
        m.record_action("allow", "github", "executed", ms(5));
        m.record_action("deny", "github", "denied", ms(1));
        m.record_action("approval", "slack", "pending", ms(2));
        let text = m.encode();

        for line in [
            "# TYPE writ_actions counter",
            r#"writ_actions_total{verdict="allow",connector="github"} 2"#,
            r#"writ_actions_total{verdict="deny",connector="github"} 1"#,
            r#"writ_actions_total{verdict="approval",connector="slack"} 1"#,
            "# TYPE writ_action_duration_seconds histogram",
            "# UNIT writ_action_duration_seconds seconds",
            r#"writ_action_duration_seconds_count{outcome="executed"} 2"#,
            r#"writ_action_duration_seconds_sum{outcome="executed"} 0.008"#,
            r#"writ_action_duration_seconds_count{outcome="denied"} 1"#,
            r#"writ_action_duration_seconds_count{outcome="pending"} 1"#,
            // 3 ms and 5 ms both fall at or below the 8 ms bucket, neither at or below 2 ms.
            r#"writ_action_duration_seconds_bucket{le="0.002",outcome="executed"} 0"#,
            r#"writ_action_duration_seconds_bucket{le="0.008",outcome="executed"} 2"#,
            r#"writ_action_duration_seconds_bucket{le="+Inf",outcome="executed"} 2"#,
        ] {
            assert_line(&text, line);
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn buckets_start_at_half_a_millisecond() {
        let m = Metrics::new();
        m.record_connector("github", Duration::from_micros(400));
        let text = m.encode();
        assert_line(
            &text,
            r#"writ_connector_duration_seconds_bucket{le="0.0005",connector="github"} 1"#,
        );
        assert_line(
            &text,
            r#"writ_connector_duration_seconds_count{connector="github"} 1"#,
        );
    }

    #[test]
    fn gauges_hold_the_last_value() {
        let m = Metrics::new();
        m.set_approvals_pending(4);
        m.set_approvals_pending(3);
        m.set_log_size(1200);
        let text = m.encode();
        assert_line(&text, "# TYPE writ_approvals_pending gauge");
        assert_line(&text, "writ_approvals_pending 3");
        assert_line(&text, "writ_audit_log_size 1200");
    }

    #[test]
    fn refusals_are_counted_by_reason_and_rate_limits_without_agent() {
        let m = Metrics::new();
        assert_line(&m.encode(), "writ_rate_limited_total 0");
        m.refused("rate_limited");
        m.refused("rate_limited");
        m.refused("body_too_large");
        let text = m.encode();
        assert_line(
            &text,
            r#"writ_requests_refused_total{reason="rate_limited"} 2"#,
        );
        assert_line(
            &text,
            r#"writ_requests_refused_total{reason="body_too_large"} 1"#,
        );
        assert_line(&text, "writ_rate_limited_total 2");
    }

    #[test]
    fn connector_names_are_kept_and_escaped() {
        let m = Metrics::new();
        m.record_connector("my \"odd\" connector", ms(1));
        let text = m.encode();
        assert_line(
            &text,
            r#"writ_connector_duration_seconds_count{connector="my \"odd\" connector"} 1"#,
        );
    }
}
