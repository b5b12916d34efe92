//! Layered configuration: defaults < TOML file < environment (`TAVERN_*`) < `--set` flags.
//!
//! A service declares a serde struct with `#[serde(default)]` and `deny_unknown_fields`; this
//! module merges the layers into one TOML table and deserializes it once, so a typo anywhere is
//! an error naming the key. Nested keys use `__` in the environment:
//! `TAVERN_LOGIN__BIND=0.0.0.0:8080` sets `login.bind`.

use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// The exit code for bad configuration (`EX_CONFIG` of sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// The prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "TAVERN_";

/// Environment variables with the prefix that are not settings: `TAVERN_CONFIG` names the file,
/// and `TAVERN_TEST_*` configure the test suites.
fn is_reserved(rest: &str) -> bool {
    rest == "CONFIG" || rest.starts_with("TEST_")
}

/// Why configuration could not be loaded; its `Display` is the one line printed before exit 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("flag --set {arg:?}: expected key.path=value")]
    Flag { arg: String },
    #[error("config: {0}")]
    Invalid(String),
}

/// The inputs of one configuration load; tests build it by hand instead of touching the process
/// environment.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// Path and contents of the TOML file, if one was given.
    pub file: Option<(String, String)>,
    /// Environment variables (all of them; only `TAVERN_*` ones are read).
    pub env: Vec<(String, String)>,
    /// `key.path=value` pairs from `--set` flags, in order.
    pub sets: Vec<String>,
}

impl Sources {
    /// Reads the named file (if any) and the process environment.
    pub fn from_process(file: Option<&str>, sets: Vec<String>) -> Result<Sources, ConfigError> {
        let file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::File { path: path.to_owned(), reason: e.to_string() })?;
                Some((path.to_owned(), text))
            }
            None => None,
        };
        Ok(Sources { file, env: std::env::vars().collect(), sets })
    }
}

/// Merges the layers over the defaults of `T` and deserializes the result.
pub fn load<T: DeserializeOwned>(sources: &Sources) -> Result<T, ConfigError> {
    let mut table = Table::new();
    if let Some((path, text)) = &sources.file {
        let file: Table = toml::from_str(text)
            .map_err(|e| ConfigError::File { path: path.clone(), reason: one_line(&e.to_string()) })?;
        merge(&mut table, file);
    }
    let mut env: Vec<_> = sources
        .env
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(ENV_PREFIX).map(|rest| (k, rest, v)))
        .filter(|(_, rest, _)| !is_reserved(rest))
        .collect();
    env.sort();
    for (var, rest, value) in env {
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Env { var: var.clone(), reason: "empty key segment".into() });
        }
        set_path(&mut table, &path, parse_scalar(value));
    }
    for arg in &sources.sets {
        let (key, value) = arg.split_once('=').ok_or_else(|| ConfigError::Flag { arg: arg.clone() })?;
        let path: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Flag { arg: arg.clone() });
        }
        set_path(&mut table, &path, parse_scalar(value));
    }
    T::deserialize(Value::Table(table)).map_err(|e| ConfigError::Invalid(one_line(&e.to_string())))
}

/// The config flags every Tavern binary takes; `#[command(flatten)]` them into its clap parser.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConfigArgs {
    /// A TOML config file.
    #[arg(long, env = "TAVERN_CONFIG", value_name = "FILE")]
    pub config: Option<String>,
    /// Overrides one setting, e.g. `--set log.level=debug` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl ConfigArgs {
    /// Loads `T` from the file, the environment and the `--set` flags, or prints one clear line
    /// and exits with code 64.
    pub fn load_or_exit<T: DeserializeOwned>(&self) -> T {
        load_or_exit(Sources::from_process(self.config.as_deref(), self.sets.clone()))
    }
}

/// Loads the config or prints one clear line to stderr and exits with code 64.
pub fn load_or_exit<T: DeserializeOwned>(sources: Result<Sources, ConfigError>) -> T {
    match sources.and_then(|s| load(&s)) {
        Ok(cfg) => cfg,
        Err(e) => exit_config(&e),
    }
}

/// Prints a configuration error as one line and exits with code 64.
pub fn exit_config(e: &dyn std::fmt::Display) -> ! {
    eprintln!("tavern: bad configuration: {}", one_line(&e.to_string()));
    std::process::exit(EXIT_CONFIG)
}

/// Environment and flag values are TOML scalars when they parse as one (numbers, booleans,
/// arrays), and plain strings otherwise, so `TAVERN_X=8080` is a number and `TAVERN_X=abc` a string.
fn parse_scalar(raw: &str) -> Value {
    let probe = format!("v = {raw}");
    match toml::from_str::<Table>(&probe) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(raw.to_owned())),
        Err(_) => Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut Table, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = table;
    for p in parents {
        let entry = cur.entry(p.clone()).or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        match entry {
            Value::Table(t) => cur = t,
            _ => return,
        }
    }
    cur.insert(last.clone(), value);
}

fn merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Cfg {
        name: String,
        port: u16,
        inner: Inner,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        flag: bool,
        url: String,
    }
    impl Default for Cfg {
        fn default() -> Self {
            Cfg { name: "d".into(), port: 1, inner: Inner::default() }
        }
    }
    impl Default for Inner {
        fn default() -> Self {
            Inner { flag: false, url: "u".into() }
        }
    }

    fn check(file: Option<&str>, env: &[(&str, &str)], sets: &[&str], expected: Result<Cfg, &str>) {
        let sources = Sources {
            file: file.map(|f| ("test.toml".to_owned(), f.to_owned())),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            sets: sets.iter().map(|s| (*s).to_owned()).collect(),
        };
        match (load::<Cfg>(&sources), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(e), Err(fragment)) => {
                let line = e.to_string();
                assert!(line.contains(fragment), "{line:?} lacks {fragment:?}");
                assert!(!line.contains('\n'));
            }
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn layers_override_in_order() {
        check(None, &[], &[], Ok(Cfg::default()));
        check(
            Some("name = \"file\"\nport = 2\n[inner]\nflag = true"),
            &[],
            &[],
            Ok(Cfg { name: "file".into(), port: 2, inner: Inner { flag: true, url: "u".into() } }),
        );
        check(
            Some("name = \"file\"\nport = 2"),
            &[("TAVERN_PORT", "3"), ("TAVERN_INNER__URL", "redis://x"), ("OTHER", "9"), ("TAVERN_CONFIG", "f.toml")],
            &[],
            Ok(Cfg { name: "file".into(), port: 3, inner: Inner { flag: false, url: "redis://x".into() } }),
        );
        check(
            Some("port = 2"),
            &[("TAVERN_PORT", "3")],
            &["port=4", "inner.flag=true"],
            Ok(Cfg { name: "d".into(), port: 4, inner: Inner { flag: true, url: "u".into() } }),
        );
    }

    #[test]
    fn bad_config_is_one_clear_line() {
        check(Some("port = "), &[], &[], Err("config file test.toml"));
        check(None, &[("TAVERN_PORT", "abc")], &[], Err("port"));
        check(None, &[("TAVERN_PORT", "70000")], &[], Err("port"));
        check(None, &[("TAVERN_NAME_TYPO", "x")], &[], Err("name_typo"));
        check(None, &[], &["port"], Err("--set"));
        check(None, &[], &["inner..x=1"], Err("--set"));
    }
}
