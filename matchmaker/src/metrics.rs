//! Every `tavern_matchmaker_*` metric, declared in one place. Labels are low-cardinality: a
//! mode name, an allocator kind, a reason or an outcome, never a user or a match.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The matchmaker's metrics; cheap to clone (every field is a shared handle).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Tickets waiting in each mode's matcher, set after every tick.
    pub queued: IntGaugeVec,
    /// Requests waiting in each mode's intake, set after every drain.
    pub intake: IntGaugeVec,
    /// How long one tick of one shard took.
    pub tick_seconds: HistogramVec,
    /// Matches formed (before allocation) per mode.
    pub matches: IntCounterVec,
    /// Matches delivered to the GCS with an instance and join tokens.
    pub delivered: IntCounterVec,
    /// How long each matched ticket waited, from enqueue to match.
    pub wait_seconds: HistogramVec,
    /// Tickets that expired unmatched.
    pub expired: IntCounterVec,
    /// How long an allocation took, by allocator, whatever its outcome.
    pub allocation_seconds: HistogramVec,
    /// Allocations that failed, by allocator and reason (`no_capacity`, `contention`, `failed`,
    /// `queue_full`).
    pub allocation_failures: IntCounterVec,
    /// Tickets put back in the queue after a failed allocation.
    pub requeued: IntCounter,
    /// Match results reported by instances, by outcome (`applied`, `duplicate`, `aborted`,
    /// `invalid`, `error`).
    pub results: IntCounterVec,
    /// Pushes to a GCS node that were never acknowledged, by kind.
    pub push_failures: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them; a registry that already holds them (a second
    /// matchmaker in one process) keeps the first registration.
    pub fn new(registry: &Registry) -> Metrics {
        let tick_buckets = vec![0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];
        let wait_buckets = vec![0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0];
        let alloc_buckets = vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let m = Metrics {
            queued: gauge("tavern_matchmaker_queue_tickets", "Tickets waiting per mode", &["mode"]),
            intake: gauge("tavern_matchmaker_intake_requests", "Requests waiting in a shard's intake", &["mode"]),
            tick_seconds: histogram("tavern_matchmaker_tick_duration_seconds", "Duration of one shard tick", &["mode"], tick_buckets),
            matches: counter("tavern_matchmaker_matches_total", "Matches formed", &["mode"]),
            delivered: counter("tavern_matchmaker_matches_delivered_total", "Matches allocated and sent to the GCS", &["mode"]),
            wait_seconds: histogram("tavern_matchmaker_wait_duration_seconds", "Time from enqueue to match per ticket", &["mode"], wait_buckets),
            expired: counter("tavern_matchmaker_expired_tickets_total", "Tickets that expired unmatched", &["mode"]),
            allocation_seconds: histogram(
                "tavern_matchmaker_allocation_duration_seconds",
                "Duration of one instance allocation",
                &["allocator"],
                alloc_buckets,
            ),
            allocation_failures: counter(
                "tavern_matchmaker_allocation_failures_total",
                "Allocations that failed",
                &["allocator", "reason"],
            ),
            requeued: plain_counter("tavern_matchmaker_requeued_tickets_total", "Tickets re-queued after a failed allocation"),
            results: counter("tavern_matchmaker_results_total", "Match results reported", &["outcome"]),
            push_failures: counter("tavern_matchmaker_push_failures_total", "Pushes never acknowledged", &["kind"]),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.queued.clone()),
            Box::new(m.intake.clone()),
            Box::new(m.tick_seconds.clone()),
            Box::new(m.matches.clone()),
            Box::new(m.delivered.clone()),
            Box::new(m.wait_seconds.clone()),
            Box::new(m.expired.clone()),
            Box::new(m.allocation_seconds.clone()),
            Box::new(m.allocation_failures.clone()),
            Box::new(m.requeued.clone()),
            Box::new(m.results.clone()),
            Box::new(m.push_failures.clone()),
        ];
        for c in collectors {
            let _ = registry.register(c);
        }
        m
    }
}

// The names, help texts and labels below are constants of this file, so construction cannot
// fail; a failure would be a programming error caught by the first test that builds Metrics.
#[allow(clippy::expect_used)]
fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

#[allow(clippy::expect_used)]
fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

#[allow(clippy::expect_used)]
fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("static metric definition")
}

#[allow(clippy::expect_used)]
fn plain_counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help)).expect("static metric definition")
}
