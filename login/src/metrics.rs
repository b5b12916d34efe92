//! The login service's metrics, declared in one place.

use prometheus::{IntCounterVec, Opts, Registry};

/// Counters the handlers bump; labels are low-cardinality (an outcome, never a user).
#[derive(Clone)]
pub struct Metrics {
    /// Logins by method (password, device, refresh) and outcome (ok or an error name).
    pub logins: IntCounterVec,
    /// Accounts created by kind (password, guest).
    pub registrations: IntCounterVec,
    /// Requests refused by a rate limit or lockout, by which limit.
    pub limited: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them; a registry that already holds them (a second
    /// service in the same process) keeps the first registration.
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            logins: counter("tavern_login_logins_total", "Login attempts by method and outcome", &["method", "outcome"]),
            registrations: counter("tavern_login_registrations_total", "Accounts created", &["kind"]),
            limited: counter("tavern_login_limited_total", "Requests refused by a limit", &["limit"]),
        };
        for c in [&m.logins, &m.registrations, &m.limited] {
            let _ = registry.register(Box::new(c.clone()));
        }
        m
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    // The names and labels are constants of this file, so construction cannot fail.
    #[allow(clippy::expect_used)]
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}
