//! Runtime plumbing shared by every Tavern service, so each service's `main.rs` only parses
//! config and calls `run(config, shutdown)`.
//!
//! Layout:
//! - [`config`]: defaults < TOML file < `TAVERN_*` environment < `--set` flags, one clear line
//!   and exit code 64 on bad config.
//! - [`telemetry`]: structured JSON (or human) logs through `tracing`.
//! - [`shutdown`]: a cancellation token fired by SIGTERM or Ctrl-C.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz` on an admin port.
//! - [`api`]: JSON error bodies `{code, error, message}` and a JSON extractor whose rejections
//!   carry protocol error codes; the constant-time service-token gate of internal APIs.
//! - [`internal_client`] (feature `internal-client`): a bearer-token HTTP client for another
//!   service's internal API, with a timeout and answers sorted into the failures callers act on.
//! - [`ratelimit`]: keyed token buckets for per-IP and per-user limits.

pub mod admin;
pub mod api;
pub mod config;
#[cfg(feature = "internal-client")]
pub mod internal_client;
pub mod ratelimit;
pub mod shutdown;
pub mod telemetry;

/// Milliseconds since the unix epoch, the one timestamp unit stored and sent by Tavern.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The folder a SQLite `database_url` (`sqlite://data/tavern.db?mode=rwc`, `sqlite:x.db`) needs
/// before `Db::open`, which creates the file but not its folder; `None` for another database, an
/// in-memory one, or a file in the current folder.
pub fn sqlite_dir(database_url: &str) -> Option<&std::path::Path> {
    let rest = database_url.strip_prefix("sqlite://").or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlite_dir_names_the_folder_of_a_sqlite_file() {
        for (url, dir) in [
            ("sqlite://data/tavern.db?mode=rwc", Some("data")),
            ("sqlite:/var/lib/tavern/t.db", Some("/var/lib/tavern")),
            ("sqlite://tavern.db", None),
            ("sqlite::memory:", None),
            ("sqlite://:memory:", None),
            ("sqlite://", None),
            ("postgres://localhost/tavern", None),
        ] {
            assert_eq!(super::sqlite_dir(url), dir.map(std::path::Path::new), "{url}");
        }
    }
}
