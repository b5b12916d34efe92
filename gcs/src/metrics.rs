//! The GCS's metrics, declared in one place: `tavern_gcs_*`, no per-user or per-link labels.

use prometheus::{IntCounter, IntGauge, Opts, Registry};

use crate::session::SessionStats;

/// Gauges and counters mirrored from the session core's [`SessionStats`] on every tick.
#[derive(Clone)]
pub struct Metrics {
    /// Open links, authenticated or not.
    pub links: IntGauge,
    /// Sessions held, attached or detached.
    pub sessions: IntGauge,
    /// Sessions whose link dropped, waiting for a resume.
    pub detached_sessions: IntGauge,
    /// Frames that did not decode.
    pub malformed: IntCounter,
    /// Messages refused by the per-link rate limit.
    pub rate_limited: IntCounter,
    /// Sessions reattached with a resume token.
    pub resumes: IntCounter,
    /// Links closed because a newer login of the same user took over.
    pub replaced: IntCounter,
    /// Sessions ended by a revocation.
    pub revoked: IntCounter,
    /// The last stats mirrored, to turn the core's running totals into counter increments.
    last: SessionStats,
}

impl Metrics {
    /// Creates the metrics and registers them; a registry that already holds them (a second
    /// GCS in the same process, as in tests) keeps the first registration.
    pub fn new(registry: &Registry) -> Self {
        let m = Metrics {
            links: gauge("tavern_gcs_links", "Open client links"),
            sessions: gauge("tavern_gcs_sessions", "Sessions held, attached or detached"),
            detached_sessions: gauge("tavern_gcs_detached_sessions", "Sessions waiting for a resume"),
            malformed: counter("tavern_gcs_malformed_total", "Client frames that did not decode"),
            rate_limited: counter("tavern_gcs_rate_limited_total", "Client messages refused by the rate limit"),
            resumes: counter("tavern_gcs_resumes_total", "Sessions reattached with a resume token"),
            replaced: counter("tavern_gcs_sessions_replaced_total", "Links closed by a newer login of the same user"),
            revoked: counter("tavern_gcs_sessions_revoked_total", "Sessions ended by a revocation"),
            last: SessionStats::default(),
        };
        for g in [&m.links, &m.sessions, &m.detached_sessions] {
            let _ = registry.register(Box::new(g.clone()));
        }
        for c in [&m.malformed, &m.rate_limited, &m.resumes, &m.replaced, &m.revoked] {
            let _ = registry.register(Box::new(c.clone()));
        }
        m
    }

    /// Mirrors the core's current figures.
    pub fn observe(&mut self, stats: SessionStats) {
        self.links.set(i64::try_from(stats.links).unwrap_or(i64::MAX));
        self.sessions.set(i64::try_from(stats.sessions).unwrap_or(i64::MAX));
        self.detached_sessions.set(i64::try_from(stats.detached_sessions).unwrap_or(i64::MAX));
        self.malformed.inc_by(stats.malformed.saturating_sub(self.last.malformed));
        self.rate_limited.inc_by(stats.rate_limited.saturating_sub(self.last.rate_limited));
        self.resumes.inc_by(stats.resumes.saturating_sub(self.last.resumes));
        self.replaced.inc_by(stats.replaced.saturating_sub(self.last.replaced));
        self.revoked.inc_by(stats.revoked.saturating_sub(self.last.revoked));
        self.last = stats;
    }
}

fn gauge(name: &str, help: &str) -> IntGauge {
    // The names are constants of this file, so construction cannot fail.
    #[allow(clippy::expect_used)]
    IntGauge::with_opts(Opts::new(name, help)).expect("static metric definition")
}

fn counter(name: &str, help: &str) -> IntCounter {
    // The names are constants of this file, so construction cannot fail.
    #[allow(clippy::expect_used)]
    IntCounter::with_opts(Opts::new(name, help)).expect("static metric definition")
}
