//! Every `tavern_outbox_*` metric. Each relay's metrics carry a constant `source` label (the
//! service), so two services in one process (the launcher) register side by side.

use prometheus::{IntCounter, IntGauge, Opts, Registry};

/// One relay's metrics. Cheap to clone (the handles share their values).
#[derive(Clone)]
pub struct OutboxMetrics {
    /// Rows waiting to be published, as the relay last counted them.
    pub pending: IntGauge,
    /// Events a sink accepted.
    pub published: IntCounter,
    /// Publish attempts (a batch, or the mark after it) that failed and will be retried.
    pub publish_failures: IntCounter,
}

impl OutboxMetrics {
    /// Creates the metrics for `source` and registers them in `registry`; a registry that already
    /// holds them for this source keeps the first registration.
    pub fn new(registry: &Registry, source: &str) -> OutboxMetrics {
        let m = OutboxMetrics::unregistered(source);
        let collectors: [Box<dyn prometheus::core::Collector>; 3] =
            [Box::new(m.pending.clone()), Box::new(m.published.clone()), Box::new(m.publish_failures.clone())];
        for c in collectors {
            let _ = registry.register(c);
        }
        m
    }

    /// Metrics that no registry exports (tests, tools).
    // The names and label names are constants of this file, so construction cannot fail.
    #[allow(clippy::expect_used)]
    pub fn unregistered(source: &str) -> OutboxMetrics {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("source", source);
        OutboxMetrics {
            pending: IntGauge::with_opts(opts("tavern_outbox_pending", "Outbox rows waiting to be published"))
                .expect("valid metric"),
            published: IntCounter::with_opts(opts("tavern_outbox_published_total", "Events published to the sink"))
                .expect("valid metric"),
            publish_failures: IntCounter::with_opts(opts(
                "tavern_outbox_publish_failures_total",
                "Failed publish attempts, retried",
            ))
            .expect("valid metric"),
        }
    }
}
