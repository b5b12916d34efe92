//! The service link handler: enqueue, cancel and status from GCS nodes, match results from
//! instances. Every input is checked; a bad one is answered with an error code, never a panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use protocol::ErrorCode;
use protocol::tavern::{
    CancelTicketT, EnqueueTicketT, GameOverReason, MatchResultAckT, MatchResultT, PlayerOutcome, QueueState,
    ServiceBodyT, ServiceMessageT, ServiceRole, TicketStatusRequestT, TicketStatusT, UuidT,
};
use transport::service_link::{Handler, LinkHandle};
use uuid::Uuid;

use super::index::{CANCELLED, MATCHED, MATCHED_CANCEL, TicketEntry, WAITING};
use super::shard::ShardRequest;
use super::{Shared, now_ms};
use crate::core::{Member, Ticket, TicketId};
use crate::ratings::Winner;
use crate::store::{MatchResult, Recorded, StoreError};

/// The longest username accepted in a ticket.
const MAX_USERNAME: usize = 64;

impl Handler for Shared {
    fn on_link(&self, link: &LinkHandle) {
        if link.peer().role == ServiceRole::Gcs {
            // A reconnecting node replaces its old link.
            self.nodes.insert(link.peer().node_id.clone(), link.clone());
        }
    }

    fn on_close(&self, link: &LinkHandle) {
        self.nodes.remove_if(&link.peer().node_id, |_, l| l.id() == link.id());
    }

    async fn on_message(&self, link: &LinkHandle, message: ServiceMessageT) -> Option<ServiceMessageT> {
        let cid = message.cid;
        let role = link.peer().role;
        let answer = match message.body {
            ServiceBodyT::EnqueueTicket(e) if role == ServiceRole::Gcs => self.enqueue(link, *e).await,
            ServiceBodyT::CancelTicket(c) if role == ServiceRole::Gcs => Ok(self.cancel(&c)),
            ServiceBodyT::TicketStatusRequest(s) if role == ServiceRole::Gcs => Ok(self.status(&s)),
            ServiceBodyT::RejoinTicket(r) if role == ServiceRole::Gcs => self.rejoin(&r),
            ServiceBodyT::MatchResult(r) if role == ServiceRole::Instance => self.result(*r).await,
            ServiceBodyT::InstanceReady(r) => {
                tracing::info!(instance_id = %r.address.instance_id, free = r.free_slots, "instance ready");
                Ok(ServiceBodyT::Ack(Box::default()))
            }
            // Answers to our pushes that came too late, and pushes with no answer expected.
            ServiceBodyT::Ack(_) | ServiceBodyT::Error(_) => return None,
            _ => Err((ErrorCode::UnexpectedMessage, "message not expected from this peer".to_owned())),
        };
        if cid == 0 {
            return None;
        }
        Some(match answer {
            Ok(body) => ServiceMessageT::new(cid, body),
            Err((code, message)) => ServiceMessageT::error(cid, code, &message),
        })
    }
}

type Answer = Result<ServiceBodyT, (ErrorCode, String)>;

fn bad(code: ErrorCode, message: impl Into<String>) -> Answer {
    Err((code, message.into()))
}

impl Shared {
    async fn enqueue(&self, link: &LinkHandle, e: EnqueueTicketT) -> Answer {
        if e.ticket_id.is_nil() {
            return bad(ErrorCode::InvalidField, "ticket_id is nil");
        }
        let ticket_id = Uuid::from_bytes(e.ticket_id.to_bytes());
        // Idempotent: a repeated enqueue answers the ticket's status.
        if let Some(entry) = self.index.get(&ticket_id).map(|e| Arc::clone(&e)) {
            return Ok(self.status_of(&entry));
        }
        let Some(mode) = self.registry.mode(&e.mode) else {
            return bad(ErrorCode::UnknownMode, format!("unknown mode {:?}", truncate(&e.mode)));
        };
        let Some(shard) = self.shards.get(mode.index()).map(Arc::clone) else {
            return bad(ErrorCode::UnknownMode, "mode has no shard");
        };
        let team_size = self.registry.mode_spec(mode).map_or(0, |s| usize::from(s.team_size));
        let players = e.players.unwrap_or_default();
        if players.is_empty() || players.len() > team_size {
            return bad(ErrorCode::InvalidField, format!("a ticket holds 1 to {team_size} players in this mode"));
        }
        let mut users = Vec::with_capacity(players.len());
        for p in &players {
            let user = Uuid::from_bytes(p.user_id.to_bytes());
            if user.is_nil() || users.contains(&user) || p.username.len() > MAX_USERNAME {
                return bad(ErrorCode::InvalidField, "players must be distinct, with non-nil ids and short names");
            }
            users.push(user);
        }
        let regions = match e.regions.as_deref() {
            None | Some([]) => self.registry.all_regions(),
            Some(names) => {
                let mut set = crate::core::RegionSet::EMPTY;
                for name in names {
                    let Some(r) = self.registry.region(name) else {
                        return bad(ErrorCode::UnknownMode, format!("unknown region {:?}", truncate(name)));
                    };
                    set = set.with(r);
                }
                set
            }
        };
        let node = if e.gcs_node_id.is_empty() { link.peer().node_id.clone() } else { e.gcs_node_id.clone() };
        if node.len() > transport::service_link::MAX_NODE_ID_LEN {
            return bad(ErrorCode::InvalidField, "gcs_node_id is too long");
        }
        // One live ticket per user: reserve them all or none.
        let mut reserved = Vec::with_capacity(users.len());
        for user in &users {
            match self.users.entry(*user) {
                dashmap::Entry::Vacant(v) => {
                    v.insert(ticket_id);
                    reserved.push(*user);
                }
                dashmap::Entry::Occupied(_) => {
                    self.release_users(&reserved, ticket_id);
                    return bad(ErrorCode::AlreadyQueued, format!("user {user} is already queued"));
                }
            }
        }
        let ratings = match self.store.read_ratings(&users, &e.mode).await {
            Ok(r) => r,
            Err(err) => {
                self.release_users(&reserved, ticket_id);
                tracing::warn!(error = %err, "cannot read ratings");
                return bad(ErrorCode::Unavailable, "ratings are unavailable, retry");
            }
        };
        let now = now_ms();
        let core = TicketId(self.next_ticket.fetch_add(1, Ordering::Relaxed));
        let entry = Arc::new(TicketEntry {
            id: ticket_id,
            core,
            mode,
            node,
            players,
            enqueued_at_ms: now,
            state: AtomicU8::new(WAITING),
            ahead_at_enqueue: shard.waiting.get() + shard.intake.len() as u64,
            departed_at_enqueue: shard.departed.get(),
        });
        let ticket = Ticket {
            id: core,
            members: users
                .iter()
                .zip(&ratings)
                .map(|(u, r)| Member { user_id: *u, rating: r.rating, deviation: r.deviation })
                .collect(),
            mode,
            regions,
            enqueued_at_ms: now,
        };
        self.index.insert(ticket_id, Arc::clone(&entry));
        if shard.intake.push(ShardRequest::Enqueue(ticket, Arc::clone(&entry))).is_err() {
            self.forget(&entry);
            return bad(ErrorCode::Unavailable, "the matchmaker is busy, retry");
        }
        tracing::debug!(ticket = %ticket_id, mode = %e.mode, "ticket queued");
        Ok(self.status_of(&entry))
    }

    fn cancel(&self, c: &CancelTicketT) -> ServiceBodyT {
        let id = Uuid::from_bytes(c.ticket_id.to_bytes());
        if let Some(entry) = self.index.get(&id).map(|e| Arc::clone(&e)) {
            if entry.cas(WAITING, CANCELLED) {
                if let Some(shard) = self.shards.get(entry.mode.index())
                    && shard.intake.push(ShardRequest::Cancel(entry.core)).is_ok()
                {
                    // The shard drops it at its next tick; the users may queue again now.
                    let users: Vec<Uuid> = entry.user_ids().collect();
                    self.release_users(&users, id);
                }
                // Otherwise the gate refuses it at its next match attempt, or it expires.
            } else {
                entry.cas(MATCHED, MATCHED_CANCEL);
            }
        }
        ServiceBodyT::Ack(Box::default())
    }

    fn status(&self, s: &TicketStatusRequestT) -> ServiceBodyT {
        let id = Uuid::from_bytes(s.ticket_id.to_bytes());
        match self.index.get(&id).map(|e| Arc::clone(&e)) {
            Some(entry) => self.status_of(&entry),
            None => ServiceBodyT::TicketStatus(Box::new(protocol::build!(TicketStatusT {
                ticket_id: s.ticket_id.clone(),
                state: QueueState::Idle,
            }))),
        }
    }

    fn status_of(&self, entry: &TicketEntry) -> ServiceBodyT {
        let waited = (now_ms() - entry.enqueued_at_ms).max(0);
        let (state, position, estimate) = match entry.state() {
            WAITING => {
                let shard = self.shards.get(entry.mode.index());
                (
                    QueueState::Searching,
                    shard.map_or(0, |s| s.position(entry)),
                    shard.map_or(0, |s| s.estimated_wait_ms(waited)),
                )
            }
            MATCHED | MATCHED_CANCEL => (QueueState::Matched, 0, 0),
            _ => (QueueState::Idle, 0, 0),
        };
        ServiceBodyT::TicketStatus(Box::new(protocol::build!(TicketStatusT {
            ticket_id: UuidT::from_bytes(entry.id.into_bytes()),
            state,
            position,
            estimated_wait_ms: estimate,
            waited_ms: u32::try_from(waited).unwrap_or(u32::MAX),
        })))
    }

    fn release_users(&self, users: &[Uuid], ticket_id: Uuid) {
        for user in users {
            self.users.remove_if(user, |_, t| *t == ticket_id);
        }
    }

    async fn result(&self, r: MatchResultT) -> Answer {
        if r.match_id.is_nil() {
            return bad(ErrorCode::InvalidField, "match_id is nil");
        }
        let match_id = Uuid::from_bytes(r.match_id.to_bytes());
        let wire_id = r.match_id.clone();
        let ack = || {
            Ok(ServiceBodyT::MatchResultAck(Box::new(protocol::build!(MatchResultAckT { match_id: wire_id.clone() }))))
        };
        let live = self.live.get(&match_id).map(|m| m.clone());
        if r.reason == GameOverReason::Aborted {
            // Nobody played it out: nothing to rate. Acknowledged so the instance stops sending.
            self.metrics.results.with_label_values(&["aborted"]).inc();
            tracing::info!(%match_id, "match aborted, not rated");
            self.finish(match_id, live.as_ref()).await;
            return ack();
        }
        let result = match to_store_result(&r, match_id, live.as_ref()) {
            Ok(result) => result,
            Err(message) => {
                self.metrics.results.with_label_values(&["invalid"]).inc();
                return bad(ErrorCode::InvalidField, message);
            }
        };
        match self.store.record_result(&result, now_ms()).await {
            Ok(recorded) => {
                let outcome = if matches!(recorded, Recorded::Duplicate) { "duplicate" } else { "applied" };
                self.metrics.results.with_label_values(&[outcome]).inc();
                tracing::info!(%match_id, outcome, "match result");
                self.finish(match_id, live.as_ref()).await;
                ack()
            }
            Err(StoreError::InvalidResult { reason, .. }) => {
                self.metrics.results.with_label_values(&["invalid"]).inc();
                bad(ErrorCode::InvalidField, reason)
            }
            Err(e) => {
                self.metrics.results.with_label_values(&["error"]).inc();
                tracing::warn!(%match_id, error = %e, "cannot store a match result; the instance will retry");
                bad(ErrorCode::Unavailable, "results store unavailable, retry")
            }
        }
    }

    /// The match is over: forget it and give its instance back.
    /// A fresh join token for a player of a live match (a rejoin after a drop): answered as a
    /// `MatchFoundPush` naming only that player.
    fn rejoin(&self, r: &protocol::tavern::RejoinTicketT) -> Answer {
        let match_id = Uuid::from_bytes(r.match_id.to_bytes());
        let user = Uuid::from_bytes(r.user_id.to_bytes());
        let Some(live) = self.live.get(&match_id).map(|m| m.clone()) else {
            return bad(ErrorCode::MatchNotFound, "no live match with that id");
        };
        let Some(team) = live.teams.iter().position(|t| t.contains(&user)) else {
            return bad(ErrorCode::MatchNotFound, "the user is not in that match");
        };
        let now = super::now_ms();
        let token = self
            .joins
            .mint(match_id, user, &live.instance_id, now)
            .map_err(|e| (ErrorCode::Internal, format!("cannot mint a join token: {e}")))?;
        let player = protocol::build!(protocol::tavern::MatchPlayerT {
            player: Box::new(protocol::build!(protocol::tavern::PlayerInfoT { user_id: r.user_id.clone(), username: String::new() })),
            ticket_id: UuidT::NIL,
            join_token: token,
            team: u8::try_from(team).unwrap_or(0),
        });
        tracing::info!(%match_id, %user, "rejoin token minted");
        Ok(ServiceBodyT::MatchFoundPush(Box::new(protocol::build!(protocol::tavern::MatchFoundPushT {
            match_id: r.match_id.clone(),
            mode: live.mode.clone(),
            instance: Box::new(live.address.clone()),
            players: Some(vec![player]),
            join_by_ms: now + self.joins.ttl_ms(),
        }))))
    }

    async fn finish(&self, match_id: Uuid, live: Option<&super::dispatch::LiveMatch>) {
        if let Some(live) = live
            && self.live.remove(&match_id).is_some()
        {
            super::dispatch::push_match_ended(self, match_id, live);
            self.allocator.release(match_id, &live.instance_id).await;
        }
    }
}

/// The store's form of a reported result. The matchmaker's own record of the match (mode,
/// region, creation time) wins over what the instance says; without one (a restart lost it) the
/// report's mode is used and the creation time is derived from the duration.
fn to_store_result(
    r: &MatchResultT,
    match_id: Uuid,
    live: Option<&super::dispatch::LiveMatch>,
) -> Result<MatchResult, String> {
    let players = r.players.as_deref().unwrap_or_default();
    let mut teams: [Vec<Uuid>; 2] = [Vec::new(), Vec::new()];
    for p in players {
        let team = teams.get_mut(usize::from(p.team)).ok_or_else(|| format!("team {} is not 0 or 1", p.team))?;
        team.push(Uuid::from_bytes(p.user_id.to_bytes()));
    }
    let team_of = |user: Uuid| teams.iter().position(|t| t.contains(&user));
    let winner = if r.draw {
        Winner::Draw
    } else if let Some(w) = &r.winner {
        let team = team_of(Uuid::from_bytes(w.to_bytes())).ok_or("the winner is not one of the players")?;
        Winner::Team(u8::try_from(team).map_err(|_| "team out of range")?)
    } else if let Some(p) = players.iter().find(|p| p.outcome == PlayerOutcome::Win) {
        Winner::Team(p.team)
    } else if players.iter().all(|p| p.outcome == PlayerOutcome::Draw) {
        Winner::Draw
    } else {
        return Err("no winner and not a draw".into());
    };
    let mode = match (live, r.mode.as_deref()) {
        (Some(l), _) => l.mode.clone(),
        (None, Some(m)) if !m.is_empty() => m.to_owned(),
        _ => return Err("unknown match and no mode in the report".into()),
    };
    let region = live.map_or_else(|| "unknown".to_owned(), |l| l.region.clone());
    let created_at_ms =
        live.map_or_else(|| r.ended_at_ms.saturating_sub(i64::from(r.duration_ms)), |l| l.created_at_ms);
    let reason = match r.reason {
        GameOverReason::HeroDefeated => "hero_defeated",
        GameOverReason::Conceded => "concede",
        GameOverReason::Forfeit => "forfeit",
        _ => "other",
    };
    Ok(MatchResult {
        match_id,
        mode,
        region,
        created_at_ms,
        ended_at_ms: r.ended_at_ms.max(created_at_ms),
        teams,
        winner,
        reason: reason.to_owned(),
    })
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}
