//! Configuration: [`InstanceConfig`] (the binary's layered config, read through
//! `service_runtime::config`), the per-match runtime [`MatchSettings`] derived from it, and
//! [`MatchSpecConfig`], a match given in config (spawned mode).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use service_runtime::telemetry::LogConfig;
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::rules::DEFAULT_TURN_MS;

use super::report::Backoff;
use super::{MatchSpec, SeatSpec, SpecError};

/// How the process hosts matches.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One match per process, given in `[match]`; the process exits once it is reported.
    #[default]
    Spawned,
    /// Many matches in one process, created through [`super::InstanceHost::create_match`].
    Dense,
}

/// Everything the `instance-server` binary can be told, through the layered config
/// (`TAVERN_UDP_BIND=…`, `--set udp_bind=…`, `--set match.seed=7`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstanceConfig {
    pub mode: Mode,
    /// This instance's id, bound into join tokens (e.g. the Agones game server name).
    pub instance_id: String,
    /// The UDP address of the ENet/DTLS server.
    pub udp_bind: SocketAddr,
    /// The TCP address of the WebSocket server (path `/ws`).
    pub ws_bind: SocketAddr,
    /// The host name clients are told to connect to.
    pub public_host: String,
    /// Where the DTLS certificate and key live (`cert.pem`, `key.pem`); created when missing.
    pub identity_dir: PathBuf,
    /// The token signing keys shared with the token service and matchmaker.
    pub key_file: PathBuf,
    /// Where `/metrics`, `/healthz` and `/readyz` listen; none by default (spawned processes
    /// are many and short-lived).
    pub admin_bind: Option<SocketAddr>,
    /// How long a disconnected player may take to rejoin before forfeiting.
    pub rejoin_window_ms: u64,
    /// How long both players have to join a new match.
    pub join_window_ms: u64,
    /// The default turn length (a match spec may set its own).
    pub turn_ms: i64,
    /// Messages per second per link, sustained.
    pub messages_per_s: u32,
    /// Messages a link may send in a burst above the sustained rate.
    pub message_burst: u32,
    /// Undecodable frames a link may send before it is closed.
    pub max_malformed_per_link: u32,
    /// Matches one process hosts at once (high-density mode).
    pub max_matches: usize,
    /// Join tokens remembered for replay detection (until each expires).
    pub max_tracked_join_tokens: usize,
    /// Links held at once from one IP address, per transport (players behind one NAT share one).
    pub max_links_per_ip: usize,
    /// How long links stay open after the game ends, so the last events arrive.
    pub linger_ms: u64,
    /// First wait between result report attempts; doubles up to `report_max_backoff_ms`.
    pub report_initial_backoff_ms: u64,
    pub report_max_backoff_ms: u64,
    /// The matchmaker's service link (`host:port`); without it results are only logged.
    pub matchmaker_addr: Option<String>,
    /// The service token presented on the service link.
    pub service_token: String,
    /// This process's node id on the service link; the instance id when unset.
    pub node_id: Option<String>,
    /// How long one result report waits for its acknowledgement.
    pub report_timeout_ms: u64,
    /// The database (`postgres://…` or `sqlite:…`) whose events outbox records `game_started`
    /// and `game_ended`; the default is the embedded SQLite every service shares.
    pub database_url: String,
    /// Where the outbox relay publishes events (`events.redis_url`, `events.prefix`); without a
    /// Redis URL they go to an in-process log and stay in the database.
    pub events: outbox::EventsConfig,
    /// The match to host in spawned mode; without it the process waits for one assignment, a
    /// JSON line on stdin (see [`Assignment`]).
    #[serde(rename = "match")]
    pub match_spec: Option<MatchSpecConfig>,
    pub log: LogConfig,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            mode: Mode::Spawned,
            instance_id: "instance-local".into(),
            udp_bind: SocketAddr::from(([127, 0, 0, 1], 7500)),
            ws_bind: SocketAddr::from(([127, 0, 0, 1], 7500)),
            public_host: "127.0.0.1".into(),
            identity_dir: PathBuf::from("./data/tls"),
            key_file: PathBuf::from("./data/token-keys.json"),
            admin_bind: None,
            rejoin_window_ms: 30_000,
            join_window_ms: 60_000,
            turn_ms: DEFAULT_TURN_MS,
            messages_per_s: 20,
            message_burst: 40,
            max_malformed_per_link: 16,
            max_matches: 10_000,
            max_tracked_join_tokens: 100_000,
            max_links_per_ip: 256,
            linger_ms: 2_000,
            report_initial_backoff_ms: 200,
            report_max_backoff_ms: 10_000,
            matchmaker_addr: None,
            service_token: String::new(),
            node_id: None,
            report_timeout_ms: 5_000,
            database_url: "sqlite:./data/tavern.db".into(),
            events: outbox::EventsConfig::default(),
            match_spec: None,
            log: LogConfig::default(),
        }
    }
}

impl InstanceConfig {
    /// The per-match settings these values give.
    pub fn settings(&self) -> MatchSettings {
        MatchSettings {
            rejoin_window: Duration::from_millis(self.rejoin_window_ms),
            join_window: Duration::from_millis(self.join_window_ms),
            messages_per_s: self.messages_per_s.max(1),
            message_burst: self.message_burst.max(1),
            max_malformed_per_link: self.max_malformed_per_link,
            linger: Duration::from_millis(self.linger_ms),
            backoff: Backoff {
                initial: Duration::from_millis(self.report_initial_backoff_ms.max(1)),
                max: Duration::from_millis(self.report_max_backoff_ms.max(1)),
                ..Backoff::default()
            },
        }
    }
}

/// How every match of a host behaves (one set per host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchSettings {
    pub rejoin_window: Duration,
    pub join_window: Duration,
    pub messages_per_s: u32,
    pub message_burst: u32,
    pub max_malformed_per_link: u32,
    pub linger: Duration,
    pub backoff: Backoff,
}

impl Default for MatchSettings {
    fn default() -> Self {
        InstanceConfig::default().settings()
    }
}

/// A match as config gives it: players with starter deck ids or card lists.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpecConfig {
    pub match_id: Uuid,
    #[serde(default = "default_mode")]
    pub mode: String,
    pub seed: u64,
    /// Overrides the instance's `turn_ms`.
    pub turn_ms: Option<i64>,
    pub players: Vec<PlayerSpecConfig>,
}

/// One player of a configured match.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayerSpecConfig {
    pub user_id: Uuid,
    pub username: String,
    /// A starter deck id, or …
    pub deck: Option<String>,
    /// … (card id, copies) entries.
    pub cards: Option<Vec<(String, u8)>>,
}

fn default_mode() -> String {
    "ranked_1v1".into()
}

impl MatchSpecConfig {
    /// Checks the decks against `catalog` and builds the spec.
    pub fn to_spec(&self, catalog: &Catalog, default_turn_ms: i64) -> Result<MatchSpec, SpecError> {
        let [a, b] = self.players.as_slice() else {
            return Err(SpecError::PlayerCount(self.players.len()));
        };
        let seat = |p: &PlayerSpecConfig| -> Result<SeatSpec, SpecError> {
            let deck = match (&p.deck, &p.cards) {
                (Some(id), None) => catalog
                    .starter_deck(id)
                    .map(|d| d.deck().clone())
                    .ok_or_else(|| SpecError::UnknownDeck(id.clone()))?,
                (None, Some(cards)) => catalog
                    .build_deck(&p.username, cards)
                    .map_err(|e| SpecError::Deck(e.to_string()))?,
                _ => return Err(SpecError::Deck(format!("player {} needs exactly one of deck or cards", p.user_id))),
            };
            Ok(SeatSpec { user_id: p.user_id, username: p.username.clone(), deck })
        };
        Ok(MatchSpec {
            match_id: self.match_id,
            mode: self.mode.clone(),
            seed: self.seed,
            turn_ms: self.turn_ms.unwrap_or(default_turn_ms),
            seats: [seat(a)?, seat(b)?],
        })
    }
}

/// A match handed over by the matchmaker's process spawner: one JSON line on stdin, in the shape
/// of the matchmaker's allocation `MatchSpec` (`match_id`, `mode`, `region`, `teams`,
/// `created_at_ms`). Unknown fields are ignored so the matchmaker may add some.
///
/// It names neither decks nor seed: the seed is derived from the match id, and each player gets
/// a starter deck chosen by it (decks from inventories need the login service's data, which an
/// assignment does not carry yet). Usernames are derived from the user ids.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Assignment {
    pub match_id: Uuid,
    pub mode: String,
    #[serde(default)]
    pub region: String,
    /// The user ids of each team; a 1v1 match has one per team.
    pub teams: [Vec<Uuid>; 2],
    #[serde(default)]
    pub created_at_ms: i64,
}

impl Assignment {
    /// Parses one JSON line.
    pub fn from_json(line: &str) -> Result<Assignment, SpecError> {
        serde_json::from_str(line).map_err(|e| SpecError::Assignment(e.to_string()))
    }

    /// The spec this assignment gives with `catalog`'s starter decks.
    pub fn to_spec(&self, catalog: &Catalog, turn_ms: i64) -> Result<MatchSpec, SpecError> {
        let users: Vec<Uuid> = self.teams.iter().flatten().copied().collect();
        let ([a], [b]) = (self.teams[0].as_slice(), self.teams[1].as_slice()) else {
            return Err(SpecError::PlayerCount(users.len()));
        };
        let bytes = self.match_id.as_bytes();
        let mut seed = [0u8; 8];
        for (i, b) in bytes.iter().enumerate() {
            seed[i % 8] ^= *b;
        }
        let seed = u64::from_le_bytes(seed);
        let decks = catalog.starter_decks();
        if decks.is_empty() {
            return Err(SpecError::UnknownDeck("(no starter decks)".into()));
        }
        let n = decks.len() as u64;
        let deck = |i: u64| decks[(i % n) as usize].deck().clone();
        let seat = |user: Uuid, deck| {
            let short: String = user.simple().to_string().chars().take(8).collect();
            SeatSpec { user_id: user, username: format!("player-{short}"), deck }
        };
        Ok(MatchSpec {
            match_id: self.match_id,
            mode: self.mode.clone(),
            seed,
            turn_ms,
            seats: [seat(*a, deck(seed)), seat(*b, deck(seed / n))],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_from_the_matchmaker_becomes_a_spec() {
        let catalog = Catalog::standard();
        let (m, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let line = format!(
            r#"{{"match_id":"{m}","mode":"ranked","region":"eu","teams":[["{a}"],["{b}"]],"created_at_ms":5,"future":1}}"#
        );
        let spec = match Assignment::from_json(&line).and_then(|x| x.to_spec(&catalog, 1000)) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!((spec.match_id, spec.seats[0].user_id, spec.seats[1].user_id), (m, a, b));
        assert_eq!(spec.mode, "ranked");
        let two_v_one = format!(r#"{{"match_id":"{m}","mode":"x","teams":[["{a}","{b}"],["{m}"]]}}"#);
        let got = Assignment::from_json(&two_v_one).and_then(|x| x.to_spec(&catalog, 1000));
        assert_eq!(got.err(), Some(SpecError::PlayerCount(3)));
        assert!(matches!(Assignment::from_json("{"), Err(SpecError::Assignment(_))));
    }
}
