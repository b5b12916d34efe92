//! Every `tavern_instance_*` metric, declared in one place. Labels are low-cardinality: an
//! outcome or a transport kind, never a match, user or link.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The instance server's metrics. Cheap to clone (the handles share their values).
#[derive(Clone)]
pub struct InstanceMetrics {
    /// Matches hosted now (created and not yet finished).
    pub matches_active: IntGauge,
    /// Matches finished, by end reason (`hero_defeated`, `conceded`, `forfeit`, `aborted`).
    pub matches_finished: IntCounterVec,
    /// Game commands by outcome: `ok`, `illegal` (a rule refused it), `rate_limited`,
    /// `bad_command` (could not become an engine command).
    pub commands: IntCounterVec,
    /// Links open now, by transport kind (`enet_dtls`, `ws`, ...).
    pub links: IntGaugeVec,
    /// Join attempts by outcome: `ok`, `rejoin` or the error code's name.
    pub joins: IntCounterVec,
    /// Frames that did not decode (answered with `malformed` or `unknown_message`).
    pub malformed: IntCounter,
    /// Messages that arrived where they do not belong (answered with `unexpected_message`).
    pub unexpected: IntCounter,
    /// Results reported, by outcome: `acked`, or `abandoned` when shutdown cut the retries.
    pub results_reported: IntCounterVec,
    /// Single report attempts, by outcome (`ok`, `error`).
    pub report_attempts: IntCounterVec,
}

impl InstanceMetrics {
    /// Creates the metrics and registers them in `registry`; a registry that already holds them
    /// keeps the first registration (two hosts in one process, as in tests).
    pub fn new(registry: &Registry) -> Self {
        let m = Self::unregistered();
        let collectors: [Box<dyn prometheus::core::Collector>; 9] = [
            Box::new(m.matches_active.clone()),
            Box::new(m.matches_finished.clone()),
            Box::new(m.commands.clone()),
            Box::new(m.links.clone()),
            Box::new(m.joins.clone()),
            Box::new(m.malformed.clone()),
            Box::new(m.unexpected.clone()),
            Box::new(m.results_reported.clone()),
            Box::new(m.report_attempts.clone()),
        ];
        for c in collectors {
            let _ = registry.register(c);
        }
        m
    }

    /// Metrics that no registry exports (tests, tools).
    pub fn unregistered() -> Self {
        Self {
            matches_active: gauge("tavern_instance_matches_active", "Matches hosted now"),
            matches_finished: counter(
                "tavern_instance_matches_finished_total",
                "Matches finished, by end reason",
                &["reason"],
            ),
            commands: counter(
                "tavern_instance_commands_total",
                "Game commands received, by outcome",
                &["outcome"],
            ),
            links: gauge_vec("tavern_instance_links", "Player links open now, by transport", &["kind"]),
            joins: counter("tavern_instance_joins_total", "Join attempts, by outcome", &["outcome"]),
            malformed: plain_counter(
                "tavern_instance_malformed_frames_total",
                "Frames that did not decode",
            ),
            unexpected: plain_counter(
                "tavern_instance_unexpected_messages_total",
                "Messages received where they do not belong",
            ),
            results_reported: counter(
                "tavern_instance_results_reported_total",
                "Match results reported, by outcome",
                &["outcome"],
            ),
            report_attempts: counter(
                "tavern_instance_result_report_attempts_total",
                "Single attempts to report a match result, by outcome",
                &["outcome"],
            ),
        }
    }
}

// The names and labels below are constants of this file, so construction cannot fail.
#[allow(clippy::expect_used)]
fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

#[allow(clippy::expect_used)]
fn plain_counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("static metric definition")
}

#[allow(clippy::expect_used)]
fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("static metric definition")
}

#[allow(clippy::expect_used)]
fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition")
}
