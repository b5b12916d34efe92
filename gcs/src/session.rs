//! The sans-IO session core: which link belongs to which session, the `Hello` handshake, one
//! session per user, resume within a grace period with replay of missed pushes, heartbeats,
//! per-link rate limits and revocation.
//!
//! Everything comes in as a method call carrying `now_ms` (wall-clock milliseconds, supplied by
//! the caller) and everything goes out as a list of [`Action`]s for the driver to execute. The
//! core never reads a clock, sleeps or touches a socket, so tests drive it step by step.
//!
//! A session lives in one of two states: *attached* to exactly one link, or *detached* (its link
//! dropped) for at most `resume_grace_ms`, buffering the pushes it misses (at most
//! `missed_push_capacity`; one more ends the session, since the client could no longer be told
//! everything). A `Hello` with the session's resume token attaches a new link, answers `Welcome`
//! with `resumed` and a fresh resume token, then replays the buffered pushes once, in order.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use protocol::tavern::{ClientBodyT, ClientMessageT, ErrorT, HelloT, PongT, ServerBodyT, ServerMessageT, WelcomeT};
use protocol::{ErrorCode, PROTOCOL_VERSION};
use rand::RngCore;
use serde::Deserialize;
use service_runtime::ratelimit::{Quota, RateLimiter};
use sha2::{Digest, Sha256};
use token_service::{Revocation, SessionClaims, SessionVerifier};
use transport::LinkId;
use uuid::Uuid;

/// The tunables of the session core. Every duration is in milliseconds.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// How often clients must send `Ping` (told to them in `Welcome`).
    pub heartbeat_interval_ms: u32,
    /// A link silent for this long is closed as dead; a few heartbeat intervals.
    pub dead_link_timeout_ms: i64,
    /// A link that has not sent `Hello` within this time is closed with `HelloRequired`.
    pub hello_timeout_ms: i64,
    /// How long a session outlives its dropped link, waiting for a resume.
    pub resume_grace_ms: i64,
    /// Pushes kept for a detached session; one more ends the session.
    pub missed_push_capacity: usize,
    /// Messages a link may send at once (the bucket size).
    pub rate_burst: u32,
    /// Messages a link may send per second, sustained.
    pub rate_per_second: u32,
    /// Consecutive rate-limited messages after which the link is closed as a flood.
    pub flood_close_after: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            heartbeat_interval_ms: 2_000,
            dead_link_timeout_ms: 6_000,
            hello_timeout_ms: 5_000,
            resume_grace_ms: 30_000,
            missed_push_capacity: 256,
            rate_burst: 40,
            rate_per_second: 20,
            flood_close_after: 50,
        }
    }
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Encode and send `message` on `link` (reliable).
    Send { link: LinkId, message: ServerMessageT },
    /// Close `link`, telling the peer `code` (a `protocol::ErrorCode` number, or 0).
    Close { link: LinkId, code: u16 },
    /// A user's session started (fresh login, not a resume): presence goes online.
    SessionStarted { user_id: Uuid, session_id: Uuid, username: String },
    /// A user's session ended for good (goodbye, grace expired, replaced, revoked): presence
    /// goes offline unless a `SessionStarted` for the same user follows.
    SessionEnded { user_id: Uuid, session_id: Uuid },
}

/// Counters the driver exports as metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub links: usize,
    pub sessions: usize,
    pub detached_sessions: usize,
    pub malformed: u64,
    pub rate_limited: u64,
    pub resumes: u64,
    pub replaced: u64,
    pub revoked: u64,
}

/// The session core. See the module documentation.
pub struct SessionCore {
    config: SessionConfig,
    verifier: SessionVerifier,
    rng: Box<dyn RngCore + Send>,
    links: HashMap<LinkId, LinkState>,
    /// One session per user, keyed by user id.
    sessions: HashMap<Uuid, Session>,
    /// SHA-256 of each live resume token → the user whose session it reattaches.
    resume_index: HashMap<[u8; 32], Uuid>,
    limiter: RateLimiter<LinkId>,
    /// The `Instant` that `origin_ms` corresponds to: the rate limiter counts in `Instant`s, and
    /// this pair maps the caller's `now_ms` onto them without reading a clock after construction.
    origin: Instant,
    origin_ms: i64,
    stats: SessionStats,
}

/// Per-link state.
struct LinkState {
    /// The user whose session this link is attached to; `None` before `Hello`.
    user: Option<Uuid>,
    opened_ms: i64,
    last_seen_ms: i64,
    /// Rate-limited messages in a row; reset by any accepted message.
    limited_streak: u32,
}

struct Session {
    claims: SessionClaims,
    link: Option<LinkId>,
    resume_hash: [u8; 32],
    /// When the link dropped, while detached.
    detached_since_ms: Option<i64>,
    missed: VecDeque<ServerMessageT>,
}

impl SessionCore {
    /// A core verifying tokens with `verifier`; `rng` makes resume tokens (use a seeded one in
    /// tests); `now_ms` anchors the clock the caller will pass in.
    pub fn new(config: SessionConfig, verifier: SessionVerifier, rng: Box<dyn RngCore + Send>, now_ms: i64) -> Self {
        let quota = Quota {
            burst: config.rate_burst.max(1),
            per_second: f64::from(config.rate_per_second.max(1)),
        };
        SessionCore {
            config,
            verifier,
            rng,
            links: HashMap::new(),
            sessions: HashMap::new(),
            resume_index: HashMap::new(),
            // One bucket per link at most; the cap is never the binding limit.
            limiter: RateLimiter::new(quota, usize::MAX / 2),
            origin: Instant::now(),
            origin_ms: now_ms,
            stats: SessionStats::default(),
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn stats(&self) -> SessionStats {
        SessionStats {
            links: self.links.len(),
            sessions: self.sessions.len(),
            detached_sessions: self.sessions.values().filter(|s| s.link.is_none()).count(),
            ..self.stats
        }
    }

    /// The user attached to `link`, if it has said `Hello`.
    pub fn user_of(&self, link: LinkId) -> Option<Uuid> {
        self.links.get(&link).and_then(|l| l.user)
    }

    /// A transport accepted a new link.
    pub fn link_opened(&mut self, link: LinkId, now_ms: i64) -> Vec<Action> {
        self.links.insert(link, LinkState { user: None, opened_ms: now_ms, last_seen_ms: now_ms, limited_streak: 0 });
        Vec::new()
    }

    /// A link ended (either side). Its session, if any, is detached and waits for a resume.
    pub fn link_closed(&mut self, link: LinkId, now_ms: i64) -> Vec<Action> {
        self.forget_link(link, now_ms);
        Vec::new()
    }

    /// A frame that did not decode arrived on `link`: answered with `code` (normally
    /// `Malformed`), counted against the rate limit; the link stays unless it floods.
    pub fn malformed(&mut self, link: LinkId, code: ErrorCode, detail: &str, now_ms: i64) -> Vec<Action> {
        let mut out = Vec::new();
        self.stats.malformed += 1;
        if !self.admit(link, 0, now_ms, &mut out) {
            return out;
        }
        if self.user_of(link).is_none() {
            self.refuse(link, 0, ErrorCode::HelloRequired, "the first message must be hello", now_ms, &mut out);
            return out;
        }
        out.push(Action::Send { link, message: ServerMessageT::error(0, code, detail) });
        out
    }

    /// A decoded message arrived on `link`. Messages the core does not handle itself (anything
    /// but `Hello`, `Ping` and `Goodbye`) come back as [`Handled::Request`] for the feature
    /// that owns them.
    pub fn message(&mut self, link: LinkId, message: ClientMessageT, now_ms: i64) -> (Vec<Action>, Handled) {
        let mut out = Vec::new();
        let cid = message.cid;
        if !self.admit(link, cid, now_ms, &mut out) {
            return (out, Handled::Done);
        }
        let user = self.user_of(link);
        match (message.body, user) {
            (ClientBodyT::Hello(hello), None) => self.hello(link, cid, &hello, now_ms, &mut out),
            (_, None) => {
                self.refuse(link, cid, ErrorCode::HelloRequired, "the first message must be hello", now_ms, &mut out);
            }
            (ClientBodyT::Hello(_), Some(_)) => out.push(Action::Send {
                link,
                message: ServerMessageT::error(cid, ErrorCode::UnexpectedMessage, "this link already said hello"),
            }),
            (ClientBodyT::Ping(ping), Some(_)) => out.push(Action::Send {
                link,
                message: ServerMessageT::response(
                    cid,
                    ServerBodyT::Pong(Box::new(protocol::build!(PongT { client_time_ms: ping.client_time_ms, server_time_ms: now_ms }))),
                ),
            }),
            (ClientBodyT::Goodbye(_), Some(user)) => {
                out.push(Action::Send { link, message: ServerMessageT::ack(cid) });
                self.end_session(user, &mut out);
                out.push(Action::Close { link, code: 0 });
                self.links.remove(&link);
            }
            (ClientBodyT::NONE, Some(_)) => out.push(Action::Send {
                link,
                message: ServerMessageT::error(cid, ErrorCode::UnknownMessage, "message has no body"),
            }),
            (body, Some(user_id)) => {
                let session_id = self.sessions.get(&user_id).map(|s| s.claims.session_id).unwrap_or_default();
                return (out, Handled::Request { link, user_id, session_id, cid, body });
            }
        }
        (out, Handled::Done)
    }

    /// Delivers a push to `user`: sent on the live link, buffered while detached, dropped when
    /// the user has no session here.
    pub fn push(&mut self, user: Uuid, message: ServerMessageT) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(session) = self.sessions.get_mut(&user) else { return out };
        match session.link {
            Some(link) => out.push(Action::Send { link, message }),
            None if session.missed.len() < self.config.missed_push_capacity => session.missed.push_back(message),
            None => {
                tracing::info!(user_id = %user, "missed-push buffer full: ending the detached session");
                self.end_session(user, &mut out);
            }
        }
        out
    }

    /// A revocation arrived: every session it covers ends and its live link is closed with
    /// `TokenRevoked`.
    pub fn revoke(&mut self, revocation: &Revocation, now_ms: i64) -> Vec<Action> {
        let users: Vec<Uuid> = self
            .sessions
            .iter()
            .filter(|(_, s)| match *revocation {
                Revocation::Session { session_id, .. } => s.claims.session_id == session_id,
                Revocation::User { user_id, issued_before_ms, .. } => {
                    s.claims.user_id == user_id && s.claims.issued_at_ms < issued_before_ms
                }
            })
            .map(|(u, _)| *u)
            .collect();
        self.close_revoked(users, now_ms)
    }

    /// `user` logged in on another node: their session here ends and its link is closed with
    /// `SessionReplaced`, as for a second login on this node.
    pub fn replaced_elsewhere(&mut self, user: Uuid, _now_ms: i64) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(link) = self.sessions.get(&user).and_then(|s| s.link) {
            self.stats.replaced += 1;
            let code = ErrorCode::SessionReplaced;
            out.push(Action::Send { link, message: closing_error(0, code, code.message()) });
            out.push(Action::Close { link, code: code.code() });
            self.links.remove(&link);
        }
        self.end_session(user, &mut out);
        out
    }

    /// Re-checks every session against the revocation cache (after the driver missed some
    /// revocations because its subscription lagged).
    pub fn recheck_revocations(&mut self, now_ms: i64) -> Vec<Action> {
        let revocations = self.verifier.revocations().clone();
        let users: Vec<Uuid> = self
            .sessions
            .iter()
            .filter(|(_, s)| revocations.is_revoked(&s.claims, now_ms))
            .map(|(u, _)| *u)
            .collect();
        self.close_revoked(users, now_ms)
    }

    /// Time passes: closes dead links and links that never said `Hello`, ends sessions whose
    /// grace period ran out. Call it every few hundred milliseconds.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Action> {
        let mut out = Vec::new();
        let mut silent = Vec::new();
        let mut no_hello = Vec::new();
        for (link, state) in &self.links {
            if state.user.is_none() && now_ms - state.opened_ms >= self.config.hello_timeout_ms {
                no_hello.push(*link);
            } else if now_ms - state.last_seen_ms >= self.config.dead_link_timeout_ms {
                silent.push(*link);
            }
        }
        for link in no_hello {
            self.refuse(link, 0, ErrorCode::HelloRequired, "no hello within the time limit", now_ms, &mut out);
        }
        for link in silent {
            tracing::debug!(%link, "link silent past the dead-link timeout");
            out.push(Action::Close { link, code: 0 });
            self.forget_link(link, now_ms);
        }
        let expired: Vec<Uuid> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.detached_since_ms.is_some_and(|t| now_ms - t >= self.config.resume_grace_ms))
            .map(|(u, _)| *u)
            .collect();
        for user in expired {
            self.end_session(user, &mut out);
        }
        self.limiter.sweep(self.instant(now_ms));
        out
    }

    /// Ends every session and closes every link with `code` (shutdown).
    pub fn close_all(&mut self, code: ErrorCode) -> Vec<Action> {
        let mut out = Vec::new();
        let links: Vec<LinkId> = self.links.keys().copied().collect();
        for link in links {
            out.push(Action::Send { link, message: closing_error(0, code, code.message()) });
            out.push(Action::Close { link, code: code.code() });
            self.links.remove(&link);
        }
        let users: Vec<Uuid> = self.sessions.keys().copied().collect();
        for user in users {
            self.end_session(user, &mut out);
        }
        out
    }

    // ---------------------------------------------------------------------------------------
    // Private helpers

    fn hello(&mut self, link: LinkId, cid: u32, hello: &HelloT, now_ms: i64, out: &mut Vec<Action>) {
        if hello.protocol_version != PROTOCOL_VERSION {
            let detail = format!("protocol version {} is not {PROTOCOL_VERSION}", hello.protocol_version);
            self.refuse(link, cid, ErrorCode::UnsupportedVersion, &detail, now_ms, out);
            return;
        }
        let token = hello.token.as_deref().filter(|t| !t.is_empty());
        let resume = hello.resume_token.as_deref().filter(|t| !t.is_empty());
        match (token, resume) {
            (Some(token), _) => match self.verifier.verify(token, now_ms) {
                Ok(claims) => self.start_session(link, cid, claims, now_ms, out),
                Err(e) => {
                    tracing::debug!(%link, error = %e, "hello refused");
                    let code = e.code();
                    self.refuse(link, cid, code, code.message(), now_ms, out);
                }
            },
            (None, Some(resume)) => self.resume(link, cid, resume, now_ms, out),
            (None, None) => self.refuse(link, cid, ErrorCode::Unauthenticated, "hello needs a token or a resume token", now_ms, out),
        }
    }

    fn start_session(&mut self, link: LinkId, cid: u32, claims: SessionClaims, now_ms: i64, out: &mut Vec<Action>) {
        let user = claims.user_id;
        if let Some(old) = self.sessions.get(&user).and_then(|s| s.link) {
            self.stats.replaced += 1;
            out.push(Action::Send { link: old, message: closing_error(0, ErrorCode::SessionReplaced, ErrorCode::SessionReplaced.message()) });
            out.push(Action::Close { link: old, code: ErrorCode::SessionReplaced.code() });
            self.links.remove(&old);
        }
        if self.sessions.contains_key(&user) {
            self.end_session(user, out);
        }
        let (resume_token, resume_hash) = self.new_resume_token();
        self.resume_index.insert(resume_hash, user);
        out.push(Action::SessionStarted { user_id: user, session_id: claims.session_id, username: claims.username.clone() });
        out.push(Action::Send { link, message: self.welcome(cid, &claims, resume_token, now_ms, false, 0) });
        if let Some(state) = self.links.get_mut(&link) {
            state.user = Some(user);
        }
        self.sessions.insert(user, Session { claims, link: Some(link), resume_hash, detached_since_ms: None, missed: VecDeque::new() });
    }

    fn resume(&mut self, link: LinkId, cid: u32, resume: &str, now_ms: i64, out: &mut Vec<Action>) {
        let user = URL_SAFE_NO_PAD
            .decode(resume)
            .ok()
            .filter(|raw| raw.len() == 32)
            .and_then(|raw| self.resume_index.get(&hash(&raw)).copied());
        let revoked = |s: &Session| self.verifier.revocations().is_revoked(&s.claims, now_ms);
        let Some(user) = user.filter(|u| self.sessions.get(u).is_some_and(|s| !revoked(s))) else {
            let code = ErrorCode::ResumeTokenInvalid;
            self.refuse(link, cid, code, code.message(), now_ms, out);
            return;
        };
        self.stats.resumes += 1;
        let (resume_token, resume_hash) = self.new_resume_token();
        let Some(session) = self.sessions.get_mut(&user) else { return };
        if let Some(old) = session.link.take() {
            // The client's previous link is still open on our side (its drop is not detected yet):
            // the new link takes over.
            out.push(Action::Close { link: old, code: ErrorCode::SessionReplaced.code() });
            self.links.remove(&old);
        }
        self.resume_index.remove(&session.resume_hash);
        self.resume_index.insert(resume_hash, user);
        session.resume_hash = resume_hash;
        session.link = Some(link);
        session.detached_since_ms = None;
        let missed: Vec<ServerMessageT> = session.missed.drain(..).collect();
        let claims = session.claims.clone();
        let count = u32::try_from(missed.len()).unwrap_or(u32::MAX);
        out.push(Action::Send { link, message: self.welcome(cid, &claims, resume_token, now_ms, true, count) });
        out.extend(missed.into_iter().map(|message| Action::Send { link, message }));
        if let Some(state) = self.links.get_mut(&link) {
            state.user = Some(user);
        }
    }

    fn welcome(&self, cid: u32, claims: &SessionClaims, resume_token: String, now_ms: i64, resumed: bool, missed: u32) -> ServerMessageT {
        let welcome = protocol::build!(WelcomeT {
            session_id: (*claims.session_id.as_bytes()).into(),
            resume_token,
            user_id: (*claims.user_id.as_bytes()).into(),
            username: claims.username.clone(),
            server_time_ms: now_ms,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            resumed,
            missed_pushes: missed,
        });
        ServerMessageT::response(cid, ServerBodyT::Welcome(Box::new(welcome)))
    }

    /// Takes a rate-limit token for a message on `link` and refreshes its liveness. `false`
    /// means the message must be dropped (answered or closed already, or the link is unknown).
    fn admit(&mut self, link: LinkId, cid: u32, now_ms: i64, out: &mut Vec<Action>) -> bool {
        let instant = self.instant(now_ms);
        let Some(state) = self.links.get_mut(&link) else { return false };
        state.last_seen_ms = now_ms;
        if self.limiter.check(&link, instant).is_ok() {
            state.limited_streak = 0;
            return true;
        }
        self.stats.rate_limited += 1;
        state.limited_streak += 1;
        if state.limited_streak >= self.config.flood_close_after {
            tracing::info!(%link, "closing a flooding link");
            self.refuse(link, cid, ErrorCode::RateLimited, "message flood", now_ms, out);
        } else {
            out.push(Action::Send { link, message: ServerMessageT::error(cid, ErrorCode::RateLimited, ErrorCode::RateLimited.message()) });
        }
        false
    }

    /// Answers a closing `Error` and closes the link.
    fn refuse(&mut self, link: LinkId, cid: u32, code: ErrorCode, detail: &str, now_ms: i64, out: &mut Vec<Action>) {
        out.push(Action::Send { link, message: closing_error(cid, code, detail) });
        out.push(Action::Close { link, code: code.code() });
        self.forget_link(link, now_ms);
    }

    /// Drops a link's state; its session, if it was attached, is detached.
    fn forget_link(&mut self, link: LinkId, now_ms: i64) {
        let Some(state) = self.links.remove(&link) else { return };
        self.limiter.reset(&link);
        let Some(user) = state.user else { return };
        if let Some(session) = self.sessions.get_mut(&user)
            && session.link == Some(link)
        {
            session.link = None;
            session.detached_since_ms = Some(now_ms);
        }
    }

    fn end_session(&mut self, user: Uuid, out: &mut Vec<Action>) {
        if let Some(session) = self.sessions.remove(&user) {
            self.resume_index.remove(&session.resume_hash);
            out.push(Action::SessionEnded { user_id: user, session_id: session.claims.session_id });
        }
    }

    fn close_revoked(&mut self, users: Vec<Uuid>, _now_ms: i64) -> Vec<Action> {
        let mut out = Vec::new();
        for user in users {
            self.stats.revoked += 1;
            if let Some(link) = self.sessions.get(&user).and_then(|s| s.link) {
                let code = ErrorCode::TokenRevoked;
                out.push(Action::Send { link, message: closing_error(0, code, code.message()) });
                out.push(Action::Close { link, code: code.code() });
                self.links.remove(&link);
            }
            self.end_session(user, &mut out);
        }
        out
    }

    fn new_resume_token(&mut self) -> (String, [u8; 32]) {
        let mut raw = [0u8; 32];
        self.rng.fill_bytes(&mut raw);
        (URL_SAFE_NO_PAD.encode(raw), hash(&raw))
    }

    fn instant(&self, now_ms: i64) -> Instant {
        let since = u64::try_from(now_ms.saturating_sub(self.origin_ms)).unwrap_or(0);
        self.origin + Duration::from_millis(since)
    }
}

/// What became of a message besides the actions.
#[derive(Debug, PartialEq)]
pub enum Handled {
    /// The core dealt with it.
    Done,
    /// An authenticated request for a feature outside the core (presence, chat, queue).
    Request { link: LinkId, user_id: Uuid, session_id: Uuid, cid: u32, body: ClientBodyT },
}

/// `Error { code, message, closes_link: true }` answering `cid`.
pub fn closing_error(cid: u32, code: ErrorCode, message: &str) -> ServerMessageT {
    let mut error = ErrorT::new(code, message);
    error.closes_link = true;
    ServerMessageT::response(cid, ServerBodyT::Error(Box::new(error)))
}

fn hash(raw: &[u8]) -> [u8; 32] {
    Sha256::digest(raw).into()
}
