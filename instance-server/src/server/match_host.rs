//! One match's owner task: the [`Game`], who sits where, which link each seat is on, the turn
//! timer, the rejoin window and the end of the match (linger, close, report). Everything that
//! touches the match arrives on one bounded channel of [`MatchInput`]s from the host's router;
//! nothing else holds the game, so there are no locks on the hot path.
//!
//! Rejoin: a player whose link drops has `rejoin_window` to come back with a fresh join token for
//! the same match (join tokens are single use and live at most 60 s, so a resume secret would
//! need a field the wire does not have; the matchmaker mints rejoin tokens as it mints the first
//! ones). A join for a seat that still has a link replaces that link (`session_replaced`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::ErrorCode;
use protocol::tavern::{
    ClientBodyT, GameCommandT, PongT, ServerBodyT, ServerMessageT,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use transport::{Delivery, LinkId, LinkKind};
use uuid::Uuid;

use crate::rules::{Event, Game, GameResult, Seat};
use crate::wire::{self, MatchPlayers};

use super::host::HostShared;
use super::report::{self, ResultFacts};
use super::token::join_code;

/// What the router hands a match.
#[derive(Debug)]
pub(crate) enum MatchInput {
    /// A new link's `JoinMatch` (protocol version already checked).
    Join { link: LinkId, kind: LinkKind, cid: u32, token: String },
    /// Any later message of a link routed to this match.
    Message { link: LinkId, data: Bytes },
    Disconnected { link: LinkId },
}

/// Longest sleep of the match loop when no deadline is nearer.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// A token bucket: `rate` per second sustained, `burst` at once.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: u32) -> Bucket {
        Bucket { tokens: f64::from(burst), last: Instant::now() }
    }

    fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A seat's current link.
struct Conn {
    link: LinkId,
    kind: LinkKind,
    bucket: Bucket,
    malformed: u32,
    /// Messages refused by the rate limit since the last one let through; only the first of a
    /// run is answered, so a flood is not echoed back.
    limited_in_row: u32,
}

struct SeatState {
    user: Uuid,
    conn: Option<Conn>,
    ever_joined: bool,
    /// When the seat forfeits if nobody is on it (join window at first, then rejoin window).
    away_deadline_ms: Option<i64>,
}

/// A match being played, owned by its task.
pub(crate) struct MatchHost {
    shared: Arc<HostShared>,
    match_id: Uuid,
    mode: String,
    players: MatchPlayers,
    game: Game,
    seats: [SeatState; 2],
    started_at_ms: i64,
    /// The task recording `game_started`, spawned when the second player joins so play does
    /// not wait on the database; `game_ended` is recorded only after it, so the two keep
    /// their order in the outbox.
    started_event: Option<tokio::task::JoinHandle<()>>,
}

fn now_ms() -> i64 {
    service_runtime::now_ms()
}

impl MatchHost {
    pub(crate) fn new(
        shared: Arc<HostShared>,
        match_id: Uuid,
        mode: String,
        players: MatchPlayers,
        users: [Uuid; 2],
        game: Game,
        started_at_ms: i64,
    ) -> MatchHost {
        let join_by = started_at_ms.saturating_add(ms(shared.settings.join_window));
        let seat = |user| SeatState { user, conn: None, ever_joined: false, away_deadline_ms: Some(join_by) };
        MatchHost {
            shared,
            match_id,
            mode,
            players,
            game,
            seats: users.map(seat),
            started_at_ms,
            started_event: None,
        }
    }

    /// Plays the match to its end, then lingers, closes the links, leaves the host's table and
    /// reports the result until acknowledged.
    pub(crate) async fn run(mut self, mut inbox: mpsc::Receiver<MatchInput>) {
        let shutdown = self.shared.shutdown.clone();
        tracing::info!(mode = %self.mode, "match created");
        while self.game.result().is_none() {
            let wake = self.next_wake(now_ms());
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    let events = self.game.abort();
                    self.broadcast(&events);
                }
                input = inbox.recv() => match input {
                    Some(input) => self.handle(input),
                    None => {
                        let events = self.game.abort();
                        self.broadcast(&events);
                    }
                },
                () = tokio::time::sleep(wake) => self.on_timer(),
            }
        }
        let ended_at_ms = now_ms();
        let result = self.game.result().unwrap_or(GameResult { winner: None, reason: crate::rules::EndReason::Aborted });
        tracing::info!(winner = ?result.winner, reason = ?result.reason, turns = self.game.turn(), "game over");
        self.record_game_ended(result, ended_at_ms).await;

        // Linger so the last events reach both players; they may still ask for a snapshot.
        if !shutdown.is_cancelled() {
            let until = Instant::now() + self.shared.settings.linger;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep_until(until) => break,
                    input = inbox.recv() => match input {
                        Some(input) => self.handle(input),
                        None => break,
                    },
                }
            }
        }
        self.shared.remove_match(&self.match_id);
        for seat in Seat::BOTH {
            if let Some(conn) = self.seats[seat.index()].conn.take() {
                self.detach_metrics(&conn);
                self.shared.links.close(conn.link, 0);
            }
        }
        let facts = ResultFacts {
            players: &self.players,
            mode: &self.mode,
            instance_id: &self.shared.instance_id,
            result,
            turns: self.game.turn(),
            started_at_ms: self.started_at_ms,
            ended_at_ms,
        };
        let wire_result = report::build_result(&facts);
        let metrics = &self.shared.metrics;
        metrics.matches_active.dec();
        metrics.matches_finished.with_label_values(&[report::reason_label(wire_result.reason)]).inc();
        report::report_until_acked(
            self.shared.reporter.as_ref(),
            &wire_result,
            self.shared.settings.backoff,
            metrics,
            &shutdown,
        )
        .await;
    }

    /// Records `game_started` (both players have joined) in the background.
    fn record_game_started(&mut self, now: i64) {
        let Some(events) = self.shared.events.clone() else { return };
        let players: Vec<serde_json::Value> = Seat::BOTH
            .iter()
            .map(|&seat| {
                serde_json::json!({
                    "user_id": self.seats[seat.index()].user,
                    "username": self.players.seats[seat.index()].1,
                    "seat": seat.index(),
                })
            })
            .collect();
        let payload = serde_json::json!({
            "match_id": self.match_id,
            "mode": self.mode,
            "instance_id": self.shared.instance_id,
            "players": players,
            "created_at_ms": self.started_at_ms,
            "started_at_ms": now,
        });
        let match_id = self.match_id;
        self.started_event = Some(tokio::spawn(async move {
            record_event(&events, "game_started", payload, match_id).await;
        }));
    }

    /// Records `game_ended`, after `game_started` if that was recorded.
    async fn record_game_ended(&mut self, result: GameResult, ended_at_ms: i64) {
        let Some(events) = self.shared.events.clone() else { return };
        if let Some(started) = self.started_event.take() {
            let _ = started.await;
        }
        let user = |seat: Seat| self.seats[seat.index()].user;
        let players: Vec<serde_json::Value> = Seat::BOTH
            .iter()
            .map(|&seat| {
                let outcome = match result.winner {
                    Some(w) if w == seat => "win",
                    Some(_) => "loss",
                    None => "draw",
                };
                serde_json::json!({ "user_id": user(seat), "seat": seat.index(), "outcome": outcome })
            })
            .collect();
        let over = wire::game_over(&result, &self.players);
        let payload = serde_json::json!({
            "match_id": self.match_id,
            "mode": self.mode,
            "instance_id": self.shared.instance_id,
            "winner": result.winner.map(user),
            "draw": over.draw,
            "reason": report::reason_label(over.reason),
            "turns": self.game.turn(),
            "duration_ms": ended_at_ms.saturating_sub(self.started_at_ms).max(0),
            "started_at_ms": self.started_at_ms,
            "ended_at_ms": ended_at_ms,
            "players": players,
        });
        record_event(&events, "game_ended", payload, self.match_id).await;
    }

    fn handle(&mut self, input: MatchInput) {
        match input {
            MatchInput::Join { link, kind, cid, token } => self.on_join(link, kind, cid, &token),
            MatchInput::Message { link, data } => self.on_message(link, &data),
            MatchInput::Disconnected { link } => self.on_disconnected(link),
        }
    }

    fn on_join(&mut self, link: LinkId, kind: LinkKind, cid: u32, token: &str) {
        let now = now_ms();
        let claims = match self.shared.verifier.verify(token, self.match_id, &self.shared.instance_id, now) {
            Ok(c) => c,
            Err(e) => {
                let code = join_code(&e);
                tracing::info!(%link, reason = e.reason(), "join refused");
                return self.refuse(link, cid, code, code.message());
            }
        };
        let Some(seat) = Seat::BOTH.into_iter().find(|s| self.seats[s.index()].user == claims.user_id) else {
            tracing::warn!(%link, user_id = %claims.user_id, "join refused: user not in this match");
            return self.refuse(link, cid, ErrorCode::Forbidden, "you are not a player of this match");
        };
        let state = &mut self.seats[seat.index()];
        let old = state.conn.replace(Conn {
            link,
            kind,
            bucket: Bucket::full(self.shared.settings.message_burst),
            malformed: 0,
            limited_in_row: 0,
        });
        let rejoin = state.ever_joined;
        state.ever_joined = true;
        state.away_deadline_ms = None;
        if !rejoin && self.seats.iter().all(|s| s.ever_joined) {
            self.record_game_started(now);
        }
        if let Some(old) = old {
            self.detach_metrics(&old);
            self.send_raw(old.link, protocol::closing_error_message(0, ErrorCode::SessionReplaced, "replaced by a newer link"));
            self.shared.links.close(old.link, ErrorCode::SessionReplaced.code());
        }
        let metrics = &self.shared.metrics;
        metrics.links.with_label_values(&[kind.label()]).inc();
        metrics.joins.with_label_values(&[if rejoin { "rejoin" } else { "ok" }]).inc();
        tracing::info!(%link, user_id = %claims.user_id, ?seat, rejoin, kind = kind.label(), "player joined");
        self.send_snapshot(seat, cid);
    }

    fn on_message(&mut self, link: LinkId, data: &[u8]) {
        let Some(seat) = self.seat_of_link(link) else {
            // A link being closed after a refused join; nothing it says matters.
            return;
        };
        let settings = self.shared.settings;
        let Some(conn) = self.seats[seat.index()].conn.as_mut() else { return };
        if !conn.bucket.take(Instant::now(), settings.messages_per_s, settings.message_burst) {
            conn.limited_in_row += 1;
            self.shared.metrics.commands.with_label_values(&["rate_limited"]).inc();
            if conn.limited_in_row == 1 {
                tracing::info!(%link, ?seat, "link rate limited");
                self.send(link, &ServerMessageT::error(0, ErrorCode::RateLimited, ErrorCode::RateLimited.message()));
            }
            return;
        }
        conn.limited_in_row = 0;
        let message = match self.shared.codec.decode_client(data) {
            Ok(m) => m,
            Err(e) => {
                conn.malformed += 1;
                let too_many = conn.malformed > settings.max_malformed_per_link;
                self.shared.metrics.malformed.inc();
                tracing::info!(%link, error = %e, "malformed frame");
                if too_many {
                    return self.refuse(link, 0, ErrorCode::Malformed, "too many malformed frames");
                }
                return self.send(link, &ServerMessageT::error(0, e.code(), &e.to_string()));
            }
        };
        let cid = message.cid;
        match message.body {
            ClientBodyT::GameCommand(command) => self.on_command(seat, link, cid, &command),
            ClientBodyT::SnapshotRequest(_) => self.send_snapshot(seat, cid),
            ClientBodyT::Ping(ping) => {
                let pong = protocol::build!(PongT { client_time_ms: ping.client_time_ms, server_time_ms: now_ms() });
                self.send(link, &ServerMessageT::response(cid, ServerBodyT::Pong(Box::new(pong))));
            }
            _ => {
                self.shared.metrics.unexpected.inc();
                self.send(link, &ServerMessageT::error(cid, ErrorCode::UnexpectedMessage, "not expected on a joined match link"));
            }
        }
    }

    fn on_command(&mut self, seat: Seat, link: LinkId, cid: u32, command: &GameCommandT) {
        let commands = &self.shared.metrics.commands;
        let command = match wire::command_from_wire(command, &self.players) {
            Ok(c) => c,
            Err(code) => {
                commands.with_label_values(&["bad_command"]).inc();
                return self.send(link, &ServerMessageT::error(cid, code, code.message()));
            }
        };
        let now = now_ms();
        // The engine's contract: the timer runs before a command is judged.
        let timed_out = self.game.tick(now);
        self.broadcast(&timed_out);
        match self.game.apply(seat, &command, now) {
            Ok(events) => {
                commands.with_label_values(&["ok"]).inc();
                self.send(link, &ServerMessageT::ack(cid));
                self.broadcast(&events);
            }
            Err(code) => {
                commands.with_label_values(&["illegal"]).inc();
                tracing::debug!(%link, ?seat, code = code.name(), "command refused");
                self.send(link, &ServerMessageT::error(cid, code, code.message()));
            }
        }
    }

    fn on_disconnected(&mut self, link: LinkId) {
        let Some(seat) = self.seat_of_link(link) else { return };
        let window = ms(self.shared.settings.rejoin_window);
        let state = &mut self.seats[seat.index()];
        if let Some(conn) = state.conn.take() {
            self.detach_metrics(&conn);
        }
        let state = &mut self.seats[seat.index()];
        if self.game.result().is_none() {
            state.away_deadline_ms = Some(now_ms().saturating_add(window));
            tracing::info!(%link, ?seat, window_ms = window, "player disconnected; rejoin window open");
        }
    }

    fn on_timer(&mut self) {
        let now = now_ms();
        let events = self.game.tick(now);
        self.broadcast(&events);
        if self.game.result().is_some() {
            return;
        }
        let expired: Vec<Seat> = Seat::BOTH
            .into_iter()
            .filter(|s| self.seats[s.index()].away_deadline_ms.is_some_and(|d| d <= now))
            .collect();
        let events = match expired.as_slice() {
            [] => return,
            [seat] => {
                tracing::info!(?seat, ever_joined = self.seats[seat.index()].ever_joined, "player stayed away: forfeit");
                self.game.forfeit(*seat)
            }
            _ => {
                tracing::info!("both players stayed away: match aborted");
                self.game.abort()
            }
        };
        self.broadcast(&events);
    }

    /// How long the loop may sleep: until the turn deadline or a rejoin deadline, at most
    /// [`MAX_SLEEP`].
    fn next_wake(&self, now: i64) -> Duration {
        let mut next = self.game.deadline_ms();
        for s in &self.seats {
            if let Some(d) = s.away_deadline_ms {
                next = next.min(d);
            }
        }
        let wait = u64::try_from(next.saturating_sub(now)).unwrap_or(0);
        Duration::from_millis(wait).min(MAX_SLEEP)
    }

    fn broadcast(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let first_seq = self.game.last_seq().saturating_sub(events.len() as u64) + 1;
        for seat in Seat::BOTH {
            if let Some(conn) = &self.seats[seat.index()].conn {
                let body = wire::events(first_seq, events, seat, self.game.catalog(), &self.players);
                self.send(conn.link, &ServerMessageT::push(ServerBodyT::GameEvents(Box::new(body))));
            }
        }
    }

    fn send_snapshot(&self, seat: Seat, cid: u32) {
        let Some(conn) = &self.seats[seat.index()].conn else { return };
        let snapshot = wire::snapshot(&self.game.view(seat), self.game.catalog(), &self.players);
        self.send(conn.link, &ServerMessageT::response(cid, ServerBodyT::GameSnapshot(Box::new(snapshot))));
    }

    /// Answers with a closing error and closes the link.
    fn refuse(&self, link: LinkId, cid: u32, code: ErrorCode, message: &str) {
        self.shared.metrics.joins.with_label_values(&[code.name()]).inc();
        self.send_raw(link, protocol::closing_error_message(cid, code, message));
        self.shared.links.close(link, code.code());
    }

    fn send(&self, link: LinkId, message: &ServerMessageT) {
        match self.shared.codec.encode(message) {
            Ok(bytes) => self.send_raw(link, bytes),
            Err(e) => tracing::error!(%link, error = %e, "could not encode a message"),
        }
    }

    fn send_raw(&self, link: LinkId, bytes: Vec<u8>) {
        // A failed send means the link is closing; its Disconnected event follows.
        if let Err(e) = self.shared.links.send(link, Bytes::from(bytes), Delivery::Reliable) {
            tracing::debug!(%link, error = %e, "send failed");
        }
    }

    fn seat_of_link(&self, link: LinkId) -> Option<Seat> {
        Seat::BOTH
            .into_iter()
            .find(|s| self.seats[s.index()].conn.as_ref().is_some_and(|c| c.link == link))
    }

    fn detach_metrics(&self, conn: &Conn) {
        self.shared.metrics.links.with_label_values(&[conn.kind.label()]).dec();
    }
}

/// Attempts to record one event before it is given up (and logged as an error).
const RECORD_ATTEMPTS: u32 = 3;

/// Records an event, retrying a failing database a few times; the match goes on either way.
async fn record_event(events: &outbox::Outbox, kind: &str, payload: serde_json::Value, match_id: Uuid) {
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=RECORD_ATTEMPTS {
        match events.record(kind, payload.clone()).await {
            Ok(id) => {
                tracing::debug!(kind, event_id = id, "event recorded");
                return;
            }
            Err(e) if attempt < RECORD_ATTEMPTS => {
                tracing::warn!(%match_id, kind, attempt, error = %e, "cannot record the event; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => tracing::error!(%match_id, kind, attempt, error = %e, "event lost: cannot record it"),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
