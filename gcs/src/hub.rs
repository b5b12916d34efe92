//! The sans-IO feature core of a GCS node: presence, friends' pushes, chat rooms and the queue
//! relay's per-user state, for the users whose sessions live on this node.
//!
//! Like the session core it takes inputs with `now_ms` and returns [`Effect`]s; it never touches
//! a socket, a database, Redis or a clock. Effects that need IO (storing a chat message, asking
//! login for a friend list, talking to the matchmaker, looking a user up in the directory) are
//! run by the driver, which feeds their outcome back in (`social_loaded`, `queue_answer`, …).
//!
//! Everything that must reach users on other nodes goes out as a [`BusMessage`] on the bus; the
//! in-process bus of the embedded default loops it straight back, so a single node takes the
//! same path as a cluster. Broadcast topics (`presence`, `chat`) reach every node, and each node
//! delivers to the local users concerned; a message for one user goes to the topic of the node
//! that holds the user (the directory says which).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use protocol::ErrorCode;
use protocol::tavern::{
    ChannelKind, ChannelT, ChatHistoryRequestT, ChatMessageT, ChatSendT, ClientBodyT, FriendOnlineT, FriendPresenceT, MatchFoundPushT,
    MatchFoundT, MatchPlayerT, PlayerInfoT, PresenceState, PresenceUpdateT, QueueJoinT, QueueState, QueueStatusT, RoomMemberChangedT,
    RoomMembersT, ServerBodyT, ServerMessageT, UuidT,
};
use serde::{Deserialize, Serialize};
use service_runtime::ratelimit::{Quota, RateLimiter};
use uuid::Uuid;

use crate::chat_store::{Channel, channel_key};

/// The bus topic every node subscribes to for presence changes.
pub const TOPIC_PRESENCE: &str = "presence";
/// The bus topic every node subscribes to for room and common-area chat.
pub const TOPIC_CHAT: &str = "chat";

/// The bus topic of one node (messages for users it holds).
pub fn node_topic(node_id: &str) -> String {
    format!("node.{node_id}")
}

/// Limits of the feature core.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Longest chat message, in characters.
    pub max_chat_chars: usize,
    /// Chat messages a user may send at once (bucket size).
    pub chat_burst: u32,
    /// Chat messages a user may send per second, sustained.
    pub chat_per_second: u32,
    /// Named rooms one user may be in at once.
    pub max_rooms_per_user: usize,
    /// Longest room name, in bytes (letters, digits, `-`, `_`, `.`).
    pub max_room_name: usize,
    /// Members listed in a `RoomMembers` answer; more are cut and `truncated` is set.
    pub max_members_listed: usize,
    /// Messages per history page at most.
    pub max_history_page: u16,
    /// Named rooms on this node at most.
    pub max_rooms: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_chat_chars: 500,
            chat_burst: 10,
            chat_per_second: 2,
            max_rooms_per_user: 10,
            max_room_name: 32,
            max_members_listed: 200,
            max_history_page: 100,
            max_rooms: 10_000,
        }
    }
}

/// What goes between nodes on the bus (JSON; internal to the cluster, never seen by clients).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum BusMessage {
    /// A user's presence changed (broadcast). `login` marks a fresh login.
    Presence { user: Uuid, username: String, state: u8, login: bool },
    /// A stored chat message for the common area or a named room (broadcast).
    Chat { id: i64, room: Option<String>, from: Uuid, from_name: String, text: String, at_ms: i64 },
    /// A stored direct message for `to` (to its node).
    Direct { id: i64, to: Uuid, from: Uuid, from_name: String, text: String, at_ms: i64 },
    /// Someone joined or left a named room (broadcast).
    RoomMember { room: String, user: Uuid, username: String, joined: bool },
    /// A ready-made client message for users of the receiving node (match found, …).
    Deliver { to: Vec<Uuid>, frame: Vec<u8> },
    /// `user` logged in on another node with `session`: the receiving node closes its older
    /// session of that user.
    Kick { user: Uuid, session: Uuid },
}

impl BusMessage {
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<BusMessage> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Where a chat message goes once stored.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatTarget {
    Global,
    Room(String),
    Direct(Uuid),
}

/// A queue operation for the matchmaker.
#[derive(Clone, Debug, PartialEq)]
pub enum QueueOp {
    Enqueue { ticket: Uuid, mode: String, regions: Vec<String> },
    Cancel { ticket: Uuid },
    Status { ticket: Uuid },
    /// A fresh join token for a match the user is in (a rejoin after a drop).
    Rejoin { match_id: Uuid },
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Deliver to a user of this node (through the session core, so a detached session keeps it).
    Push { user: Uuid, message: ServerMessageT },
    /// Publish on the bus topic.
    Publish { topic: String, message: BusMessage },
    /// Deliver `message` to `user` wherever they are: here if local, else through the
    /// directory to their node's topic; dropped when they are offline.
    Route { user: Uuid, message: ServerMessageT },
    /// Fetch the user's friends and blocks from login; answer with [`Hub::social_loaded`],
    /// passing `reply` back (`Some(cid)`: then send the friends' presence to `cid`, 0 a push).
    LoadSocial { user: Uuid, reply: Option<u32> },
    /// Store a chat message, answer `ChatSent` to `cid`, then deliver it (a DM is first checked
    /// against a fresh block list).
    Chat { user: Uuid, username: String, cid: u32, target: ChatTarget, text: String, now_ms: i64 },
    /// Read a page of history and answer `ChatHistory` to `cid`.
    History { user: Uuid, cid: u32, key: String, channel: ChannelT, before_id: Option<i64>, limit: u16 },
    /// Answer `FriendsPresenceList` to `cid` (0: a push) after asking the directory which of
    /// `friends` are online; `known` holds the states this node has seen.
    FriendsPresence { user: Uuid, cid: u32, friends: Vec<(Uuid, String, PresenceState)> },
    /// Talk to the matchmaker for `user`; answer with [`Hub::queue_answer`].
    Queue { user: Uuid, username: String, cid: u32, op: QueueOp },
    /// Record `user` as held by this node in the directory (a previous node gets a `Kick`).
    Claim { user: Uuid, session: Uuid },
    /// Remove `user` from the directory if this node still holds them.
    Release { user: Uuid },
    /// Close `user`'s session here: they logged in on another node.
    Kick { user: Uuid },
    /// An event for the outbox.
    Event { kind: &'static str, payload: serde_json::Value },
}

/// The outcome of a matchmaker request, fed back by the driver.
#[derive(Clone, Debug, PartialEq)]
pub enum QueueAnswer {
    Status { state: QueueState, position: u32, estimated_wait_ms: u32, waited_ms: u32 },
    Cancelled,
    /// A rejoin's answer: the match with this player's fresh join token.
    Found(Box<MatchFoundPushT>),
    Failed(ErrorCode, String),
}

/// A user's friends and blocks as login knows them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Social {
    pub friends: Vec<(Uuid, String)>,
    /// Blocked in either direction.
    pub blocked: HashSet<Uuid>,
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    pub members: usize,
    pub rooms: usize,
    pub queued: usize,
    pub chat_sent: u64,
    pub chat_refused: u64,
}

/// See the module documentation.
pub struct Hub {
    node_id: String,
    config: HubConfig,
    members: HashMap<Uuid, Member>,
    /// Named room → local members.
    rooms: HashMap<String, HashSet<Uuid>>,
    /// Room → members on other nodes, learned from `RoomMember` broadcasts.
    remote_rooms: HashMap<String, HashMap<Uuid, String>>,
    /// Presence of users on other nodes as seen on the bus, kept only for users who are a local
    /// member's friend (so it is bounded by the local members' friend lists).
    remote_presence: HashMap<Uuid, PresenceState>,
    /// User → the local members who have them as a friend: a presence change reaches exactly
    /// these, without a pass over every member.
    followers: HashMap<Uuid, HashSet<Uuid>>,
    chat_limiter: RateLimiter<Uuid>,
    origin: Instant,
    origin_ms: i64,
    stats: HubStats,
}

struct Member {
    username: String,
    session: Uuid,
    state: PresenceState,
    /// Friend id → name, from login (empty until loaded).
    friends: HashMap<Uuid, String>,
    blocked: HashSet<Uuid>,
    rooms: HashSet<String>,
    ticket: Option<Ticket>,
    /// The user logged in on another node, which now holds their presence: ending this session
    /// must not announce them offline.
    replaced: bool,
}

#[derive(Clone, Debug)]
struct Ticket {
    id: Uuid,
    mode: String,
}

impl Hub {
    pub fn new(node_id: impl Into<String>, config: HubConfig, now_ms: i64) -> Hub {
        let quota = Quota { burst: config.chat_burst.max(1), per_second: f64::from(config.chat_per_second.max(1)) };
        Hub {
            node_id: node_id.into(),
            config,
            members: HashMap::new(),
            rooms: HashMap::new(),
            remote_rooms: HashMap::new(),
            remote_presence: HashMap::new(),
            followers: HashMap::new(),
            // One bucket per local user at most; swept on every tick.
            chat_limiter: RateLimiter::new(quota, usize::MAX / 2),
            origin: Instant::now(),
            origin_ms: now_ms,
            stats: HubStats::default(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn stats(&self) -> HubStats {
        HubStats {
            members: self.members.len(),
            rooms: self.rooms.len(),
            queued: self.members.values().filter(|m| m.ticket.is_some()).count(),
            ..self.stats
        }
    }

    /// A fresh session started on this node (not a resume).
    pub fn session_started(&mut self, user: Uuid, session: Uuid, username: &str, now_ms: i64) -> Vec<Effect> {
        let member = Member {
            username: username.to_owned(),
            session,
            state: PresenceState::Online,
            friends: HashMap::new(),
            blocked: HashSet::new(),
            rooms: HashSet::new(),
            ticket: None,
            replaced: false,
        };
        self.members.insert(user, member);
        self.remote_presence.remove(&user);
        vec![
            Effect::Claim { user, session },
            Effect::LoadSocial { user, reply: Some(0) },
            self.presence_effect(user, username, PresenceState::Online, true),
            Effect::Event {
                kind: "user_login",
                payload: serde_json::json!({ "user_id": user, "username": username, "session_id": session, "node": self.node_id, "at_ms": now_ms }),
            },
        ]
    }

    /// A session ended for good: leave every room, cancel the ticket, go offline.
    pub fn session_ended(&mut self, user: Uuid, session: Uuid) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(member) = self.members.get(&user) else { return out };
        if member.session != session {
            return out;
        }
        let Some(member) = self.members.remove(&user) else { return out };
        let friends: Vec<Uuid> = member.friends.keys().copied().collect();
        self.unfollow(user, &friends);
        for room in &member.rooms {
            self.leave_room_local(user, room);
            out.push(Effect::Publish {
                topic: TOPIC_CHAT.into(),
                message: BusMessage::RoomMember { room: room.clone(), user, username: member.username.clone(), joined: false },
            });
        }
        if let Some(ticket) = member.ticket {
            out.push(Effect::Queue { user, username: member.username.clone(), cid: 0, op: QueueOp::Cancel { ticket: ticket.id } });
        }
        self.chat_limiter.reset(&user);
        out.push(Effect::Release { user });
        if !member.replaced {
            out.push(self.presence_effect(user, &member.username, PresenceState::Offline, false));
        }
        out
    }

    /// Login answered with `user`'s friends and blocks (`None`: login could not be asked, the
    /// list known so far stands): kept for presence and DMs, and with `reply` the user is told
    /// which friends are online.
    pub fn social_loaded(&mut self, user: Uuid, social: Option<Social>, reply: Option<u32>) -> Vec<Effect> {
        let Some(member) = self.members.get_mut(&user) else { return Vec::new() };
        if let Some(social) = social {
            let old: Vec<Uuid> = member.friends.keys().copied().collect();
            member.friends = social.friends.into_iter().collect();
            member.blocked = social.blocked;
            let new: Vec<Uuid> = member.friends.keys().copied().collect();
            self.unfollow(user, &old);
            for friend in new {
                self.followers.entry(friend).or_default().insert(user);
            }
        }
        reply.map(|cid| self.friends_presence_effect(user, cid)).into_iter().collect()
    }

    /// An authenticated request from the session core.
    pub fn request(&mut self, user: Uuid, cid: u32, body: ClientBodyT, now_ms: i64) -> Vec<Effect> {
        if !self.members.contains_key(&user) {
            return vec![error(user, cid, ErrorCode::Unavailable, "session is not ready")];
        }
        match body {
            // A fresh friend list first, so friendships made since login show up.
            ClientBodyT::FriendsPresenceRequest(_) => vec![Effect::LoadSocial { user, reply: Some(cid) }],
            ClientBodyT::ChatSend(send) => self.chat_send(user, cid, &send, now_ms),
            ClientBodyT::RoomJoin(join) => self.room_join(user, cid, &join.room),
            ClientBodyT::RoomLeave(leave) => self.room_leave(user, cid, &leave.room),
            ClientBodyT::RoomMembersRequest(req) => self.room_members(user, cid, &req.room),
            ClientBodyT::ChatHistoryRequest(req) => self.history(user, cid, &req),
            ClientBodyT::QueueJoin(join) => self.queue_join(user, cid, &join),
            ClientBodyT::QueueLeave(_) => self.queue_leave(user, cid),
            ClientBodyT::QueueStatusRequest(_) => self.queue_status(user, cid),
            ClientBodyT::RejoinRequest(r) => {
                let username = self.members.get(&user).map(|m| m.username.clone()).unwrap_or_default();
                let op = QueueOp::Rejoin { match_id: Uuid::from_bytes(r.match_id.bytes) };
                vec![Effect::Queue { user, username, cid, op }]
            }
            ClientBodyT::JoinMatch(_) | ClientBodyT::SnapshotRequest(_) | ClientBodyT::GameCommand(_) => {
                vec![error(user, cid, ErrorCode::UnexpectedMessage, "game messages go to the instance server")]
            }
            _ => vec![error(user, cid, ErrorCode::UnexpectedMessage, "message not expected on this link")],
        }
    }

    /// The matchmaker answered a queue request made for `user`.
    pub fn queue_answer(&mut self, user: Uuid, cid: u32, op: &QueueOp, answer: QueueAnswer) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(member) = self.members.get_mut(&user) else { return out };
        let ticket_id = match op {
            QueueOp::Enqueue { ticket, .. } | QueueOp::Cancel { ticket } | QueueOp::Status { ticket } => *ticket,
            QueueOp::Rejoin { .. } => Uuid::nil(),
        };
        let mine = member.ticket.as_ref().is_some_and(|t| t.id == ticket_id);
        match answer {
            QueueAnswer::Status { state, position, estimated_wait_ms, waited_ms } => {
                let mode = member.ticket.as_ref().map(|t| t.mode.clone()).unwrap_or_default();
                if mine && matches!(state, QueueState::Idle | QueueState::Expired) {
                    member.ticket = None;
                }
                if cid != 0 {
                    let status = protocol::build!(QueueStatusT {
                        state,
                        ticket_id: Some(uuid_t(ticket_id)),
                        mode: Some(mode),
                        position,
                        estimated_wait_ms,
                        waited_ms,
                    });
                    out.push(Effect::Push { user, message: ServerMessageT::response(cid, ServerBodyT::QueueStatus(Box::new(status))) });
                }
                if matches!(op, QueueOp::Enqueue { .. }) && mine && state == QueueState::Searching {
                    out.extend(self.set_state(user, PresenceState::InQueue));
                }
            }
            QueueAnswer::Cancelled => {
                if cid != 0 {
                    out.push(Effect::Push { user, message: ServerMessageT::ack(cid) });
                }
            }
            QueueAnswer::Found(push) => {
                let found = push.players.iter().flatten().find(|p| p.player.user_id == uuid_t(user)).map(|p| match_found(&push, p));
                let message = match found {
                    Some(found) => ServerMessageT::response(cid, ServerBodyT::MatchFound(Box::new(found))),
                    None => ServerMessageT::error(cid, ErrorCode::MatchNotFound, "not a player of that match"),
                };
                out.push(Effect::Push { user, message });
            }
            QueueAnswer::Failed(code, message) => {
                if mine && matches!(op, QueueOp::Enqueue { .. }) {
                    member.ticket = None;
                }
                if cid != 0 {
                    out.push(error(user, cid, code, &message));
                }
            }
        }
        out
    }

    /// The matchmaker formed a match: each player of this node gets `MatchFound` with their own
    /// join token; players held elsewhere are routed to their node.
    pub fn match_found(&mut self, push: &MatchFoundPushT) -> Vec<Effect> {
        let mut out = Vec::new();
        // Players without a join token are other nodes' (listed so ours know their opponents).
        for player in push.players.iter().flatten().filter(|p| !p.join_token.is_empty()) {
            let user = Uuid::from_bytes(player.player.user_id.bytes);
            let message = ServerMessageT::push(ServerBodyT::MatchFound(Box::new(match_found(push, player))));
            if let Some(member) = self.members.get_mut(&user) {
                member.ticket = None;
                out.push(Effect::Push { user, message });
                out.extend(self.set_state(user, PresenceState::InMatch));
            } else {
                out.push(Effect::Route { user, message });
            }
        }
        out
    }

    /// A ticket expired in the matchmaker: its users are told and go back online.
    pub fn ticket_expired(&mut self, ticket: Uuid, users: &[Uuid]) -> Vec<Effect> {
        let mut out = Vec::new();
        for &user in users {
            let Some(member) = self.members.get_mut(&user) else { continue };
            if member.ticket.as_ref().is_none_or(|t| t.id != ticket) {
                continue;
            }
            let mode = member.ticket.take().map(|t| t.mode);
            let status = protocol::build!(QueueStatusT { state: QueueState::Expired, ticket_id: Some(uuid_t(ticket)), mode });
            out.push(Effect::Push { user, message: ServerMessageT::push(ServerBodyT::QueueStatus(Box::new(status))) });
            out.extend(self.set_state(user, PresenceState::Online));
        }
        out
    }

    /// A user's match is over (the matchmaker stored its result): back to online.
    pub fn match_ended(&mut self, users: &[Uuid]) -> Vec<Effect> {
        let mut out = Vec::new();
        for &user in users {
            if self.members.get(&user).is_some_and(|m| m.state == PresenceState::InMatch) {
                out.extend(self.set_state(user, PresenceState::Online));
            }
        }
        out
    }

    /// A message from the bus.
    pub fn bus(&mut self, message: BusMessage) -> Vec<Effect> {
        let mut out = Vec::new();
        match message {
            BusMessage::Presence { user, username, state, login } => {
                let state = PresenceState(state);
                let followers: Vec<Uuid> = self.followers.get(&user).map(|f| f.iter().copied().collect()).unwrap_or_default();
                if state == PresenceState::Offline || followers.is_empty() || self.members.contains_key(&user) {
                    self.remote_presence.remove(&user);
                } else {
                    self.remote_presence.insert(user, state);
                }
                let info = player_info(user, &username);
                for id in followers {
                    if id == user {
                        continue;
                    }
                    let update = protocol::build!(PresenceUpdateT { user_id: uuid_t(user), state });
                    out.push(Effect::Push { user: id, message: ServerMessageT::push(ServerBodyT::PresenceUpdate(Box::new(update))) });
                    if login {
                        let online = protocol::build!(FriendOnlineT { friend: Box::new(info.clone()) });
                        out.push(Effect::Push { user: id, message: ServerMessageT::push(ServerBodyT::FriendOnline(Box::new(online))) });
                    }
                }
            }
            BusMessage::Chat { id, room, from, from_name, text, at_ms } => {
                let (channel, members): (ChannelT, Vec<Uuid>) = match &room {
                    None => (channel(ChannelKind::Global, None, None), self.members.keys().copied().collect()),
                    Some(room) => (
                        channel(ChannelKind::Room, Some(room.clone()), None),
                        self.rooms.get(room).map(|m| m.iter().copied().collect()).unwrap_or_default(),
                    ),
                };
                for user in members {
                    if self.members.get(&user).is_some_and(|m| m.blocked.contains(&from)) {
                        continue;
                    }
                    out.push(Effect::Push { user, message: chat_message(id, channel.clone(), from, &from_name, &text, at_ms) });
                }
            }
            BusMessage::Direct { id, to, from, from_name, text, at_ms } => {
                if self.members.contains_key(&to) {
                    let channel = channel(ChannelKind::Direct, None, Some(from));
                    out.push(Effect::Push { user: to, message: chat_message(id, channel, from, &from_name, &text, at_ms) });
                }
            }
            BusMessage::RoomMember { room, user, username, joined } => {
                if !self.members.contains_key(&user) {
                    let remote = self.remote_rooms.entry(room.clone()).or_default();
                    if joined {
                        remote.insert(user, username.clone());
                    } else {
                        remote.remove(&user);
                    }
                    if remote.is_empty() {
                        self.remote_rooms.remove(&room);
                    }
                }
                let changed = protocol::build!(RoomMemberChangedT { room: room.clone(), member: Box::new(player_info(user, &username)), joined });
                for &member in self.rooms.get(&room).into_iter().flatten() {
                    if member != user {
                        out.push(Effect::Push {
                            user: member,
                            message: ServerMessageT::push(ServerBodyT::RoomMemberChanged(Box::new(changed.clone()))),
                        });
                    }
                }
            }
            // The driver decodes the frame (it holds the codec) and calls `deliver`.
            BusMessage::Deliver { .. } => {}
            BusMessage::Kick { user, session } => {
                if let Some(member) = self.members.get_mut(&user)
                    && member.session != session
                {
                    member.replaced = true;
                    out.push(Effect::Kick { user });
                }
            }
        }
        out
    }

    /// A client message routed here from another node for local users (a `Deliver`).
    pub fn deliver(&mut self, to: &[Uuid], message: &ServerMessageT) -> Vec<Effect> {
        let mut out = Vec::new();
        for &user in to {
            let Some(member) = self.members.get_mut(&user) else { continue };
            if matches!(message.body, ServerBodyT::MatchFound(_)) {
                member.ticket = None;
                out.push(Effect::Push { user, message: message.clone() });
                out.extend(self.set_state(user, PresenceState::InMatch));
            } else {
                out.push(Effect::Push { user, message: message.clone() });
            }
        }
        out
    }

    /// Whether `user` has a session on this node.
    pub fn is_local(&self, user: Uuid) -> bool {
        self.members.contains_key(&user)
    }

    /// The known presence of `user` on this node's view of the cluster.
    pub fn presence_of(&self, user: Uuid) -> PresenceState {
        self.members
            .get(&user)
            .map(|m| m.state)
            .or_else(|| self.remote_presence.get(&user).copied())
            .unwrap_or(PresenceState::Offline)
    }

    /// Time passes: rate-limit buckets are swept.
    pub fn tick(&mut self, now_ms: i64) {
        self.chat_limiter.sweep(self.instant(now_ms));
    }

    // ---------------------------------------------------------------------------------------
    // Private helpers

    /// `member` no longer follows `friends` (their friend list changed or they left).
    fn unfollow(&mut self, member: Uuid, friends: &[Uuid]) {
        for friend in friends {
            if let Some(followers) = self.followers.get_mut(friend) {
                followers.remove(&member);
                if followers.is_empty() {
                    self.followers.remove(friend);
                    self.remote_presence.remove(friend);
                }
            }
        }
    }

    fn presence_effect(&self, user: Uuid, username: &str, state: PresenceState, login: bool) -> Effect {
        Effect::Publish {
            topic: TOPIC_PRESENCE.into(),
            message: BusMessage::Presence { user, username: username.to_owned(), state: state.0, login },
        }
    }

    fn set_state(&mut self, user: Uuid, state: PresenceState) -> Vec<Effect> {
        let Some(member) = self.members.get_mut(&user) else { return Vec::new() };
        if member.state == state {
            return Vec::new();
        }
        member.state = state;
        let username = member.username.clone();
        vec![self.presence_effect(user, &username, state, false)]
    }

    fn friends_presence_effect(&self, user: Uuid, cid: u32) -> Effect {
        let friends = self
            .members
            .get(&user)
            .map(|m| m.friends.iter().map(|(id, name)| (*id, name.clone(), self.presence_of(*id))).collect())
            .unwrap_or_default();
        Effect::FriendsPresence { user, cid, friends }
    }

    fn chat_send(&mut self, user: Uuid, cid: u32, send: &ChatSendT, now_ms: i64) -> Vec<Effect> {
        let chars = send.text.chars().count();
        if chars == 0 || chars > self.config.max_chat_chars || send.text.trim().is_empty() {
            self.stats.chat_refused += 1;
            let detail = format!("chat messages are 1 to {} characters", self.config.max_chat_chars);
            return vec![error(user, cid, ErrorCode::MessageTooLong, &detail)];
        }
        if self.chat_limiter.check(&user, self.instant(now_ms)).is_err() {
            self.stats.chat_refused += 1;
            return vec![error(user, cid, ErrorCode::RateLimited, "chat rate limit")];
        }
        let Some(member) = self.members.get(&user) else { return Vec::new() };
        let target = match send.channel.kind {
            ChannelKind::Global => ChatTarget::Global,
            ChannelKind::Room => {
                let room = send.channel.room.clone().unwrap_or_default();
                if !member.rooms.contains(&room) {
                    self.stats.chat_refused += 1;
                    return vec![error(user, cid, ErrorCode::NotInRoom, "join the room first")];
                }
                ChatTarget::Room(room)
            }
            ChannelKind::Direct => {
                let Some(to) = send.channel.user_id.as_ref().map(|u| Uuid::from_bytes(u.bytes)) else {
                    return vec![error(user, cid, ErrorCode::InvalidField, "a direct message needs user_id")];
                };
                if to == user {
                    return vec![error(user, cid, ErrorCode::SelfTarget, "cannot message yourself")];
                }
                if member.blocked.contains(&to) {
                    self.stats.chat_refused += 1;
                    return vec![error(user, cid, ErrorCode::Blocked, "blocked")];
                }
                ChatTarget::Direct(to)
            }
            ChannelKind::Party => return vec![error(user, cid, ErrorCode::Unavailable, "parties are not available yet")],
            _ => return vec![error(user, cid, ErrorCode::InvalidField, "unknown channel kind")],
        };
        self.stats.chat_sent += 1;
        vec![Effect::Chat { user, username: member.username.clone(), cid, target, text: send.text.clone(), now_ms }]
    }

    fn room_join(&mut self, user: Uuid, cid: u32, room: &str) -> Vec<Effect> {
        if !valid_room(room, self.config.max_room_name) {
            return vec![error(user, cid, ErrorCode::InvalidField, "room names are 1 to 32 letters, digits, '-', '_' or '.'")];
        }
        let Some(member) = self.members.get_mut(&user) else { return Vec::new() };
        if member.rooms.contains(room) {
            return vec![Effect::Push { user, message: ServerMessageT::ack(cid) }];
        }
        if member.rooms.len() >= self.config.max_rooms_per_user
            || (!self.rooms.contains_key(room) && self.rooms.len() >= self.config.max_rooms)
        {
            return vec![error(user, cid, ErrorCode::RoomLimit, "room limit reached")];
        }
        member.rooms.insert(room.to_owned());
        let username = member.username.clone();
        self.rooms.entry(room.to_owned()).or_default().insert(user);
        vec![
            Effect::Push { user, message: ServerMessageT::ack(cid) },
            Effect::Publish { topic: TOPIC_CHAT.into(), message: BusMessage::RoomMember { room: room.to_owned(), user, username, joined: true } },
        ]
    }

    fn room_leave(&mut self, user: Uuid, cid: u32, room: &str) -> Vec<Effect> {
        let Some(member) = self.members.get_mut(&user) else { return Vec::new() };
        if !member.rooms.remove(room) {
            return vec![error(user, cid, ErrorCode::NotInRoom, "not in that room")];
        }
        let username = member.username.clone();
        self.leave_room_local(user, room);
        vec![
            Effect::Push { user, message: ServerMessageT::ack(cid) },
            Effect::Publish { topic: TOPIC_CHAT.into(), message: BusMessage::RoomMember { room: room.to_owned(), user, username, joined: false } },
        ]
    }

    fn room_members(&self, user: Uuid, cid: u32, room: &str) -> Vec<Effect> {
        if !self.members.get(&user).is_some_and(|m| m.rooms.contains(room)) {
            return vec![error(user, cid, ErrorCode::NotInRoom, "not in that room")];
        }
        let local = self.rooms.get(room).into_iter().flatten().filter_map(|u| self.members.get(u).map(|m| (*u, m.username.clone())));
        let remote = self.remote_rooms.get(room).into_iter().flatten().map(|(u, n)| (*u, n.clone()));
        let all: Vec<(Uuid, String)> = local.chain(remote).collect();
        let truncated = all.len() > self.config.max_members_listed;
        let members = all.into_iter().take(self.config.max_members_listed).map(|(u, n)| player_info(u, &n)).collect();
        let list = protocol::build!(RoomMembersT { room: room.to_owned(), members: Some(members), truncated });
        vec![Effect::Push { user, message: ServerMessageT::response(cid, ServerBodyT::RoomMembers(Box::new(list))) }]
    }

    fn history(&self, user: Uuid, cid: u32, req: &ChatHistoryRequestT) -> Vec<Effect> {
        let Some(member) = self.members.get(&user) else { return Vec::new() };
        let key = match req.channel.kind {
            ChannelKind::Global => channel_key(Channel::Global),
            ChannelKind::Room => {
                let room = req.channel.room.clone().unwrap_or_default();
                if !member.rooms.contains(&room) {
                    return vec![error(user, cid, ErrorCode::NotInRoom, "join the room first")];
                }
                channel_key(Channel::Room(&room))
            }
            ChannelKind::Direct => {
                let Some(other) = req.channel.user_id.as_ref().map(|u| Uuid::from_bytes(u.bytes)) else {
                    return vec![error(user, cid, ErrorCode::InvalidField, "direct history needs user_id")];
                };
                channel_key(Channel::Direct(user, other))
            }
            _ => return vec![error(user, cid, ErrorCode::Unavailable, "no history for this channel")],
        };
        let limit = if req.limit == 0 { 50 } else { req.limit.min(self.config.max_history_page) };
        let before_id = (req.before_id > 0).then_some(req.before_id);
        vec![Effect::History { user, cid, key, channel: (*req.channel).clone(), before_id, limit }]
    }

    fn queue_join(&mut self, user: Uuid, cid: u32, join: &QueueJoinT) -> Vec<Effect> {
        let Some(member) = self.members.get_mut(&user) else { return Vec::new() };
        if join.party_members.as_ref().is_some_and(|p| !p.is_empty()) {
            return vec![error(user, cid, ErrorCode::Unavailable, "parties are not available yet")];
        }
        if member.ticket.is_some() {
            return vec![error(user, cid, ErrorCode::AlreadyQueued, "already in the queue")];
        }
        if member.state == PresenceState::InMatch {
            return vec![error(user, cid, ErrorCode::InMatch, "already in a match")];
        }
        if join.mode.is_empty() || join.mode.len() > 32 {
            return vec![error(user, cid, ErrorCode::UnknownMode, "unknown game mode")];
        }
        let ticket = Uuid::new_v4();
        member.ticket = Some(Ticket { id: ticket, mode: join.mode.clone() });
        let regions = join.regions.clone().unwrap_or_default();
        vec![Effect::Queue {
            user,
            username: member.username.clone(),
            cid,
            op: QueueOp::Enqueue { ticket, mode: join.mode.clone(), regions },
        }]
    }

    fn queue_leave(&mut self, user: Uuid, cid: u32) -> Vec<Effect> {
        let Some(member) = self.members.get_mut(&user) else { return Vec::new() };
        let Some(ticket) = member.ticket.take() else {
            return vec![error(user, cid, ErrorCode::NotQueued, "not in the queue")];
        };
        let username = member.username.clone();
        let mut out = vec![Effect::Queue { user, username, cid, op: QueueOp::Cancel { ticket: ticket.id } }];
        out.extend(self.set_state(user, PresenceState::Online));
        out
    }

    fn queue_status(&self, user: Uuid, cid: u32) -> Vec<Effect> {
        let Some(member) = self.members.get(&user) else { return Vec::new() };
        match &member.ticket {
            Some(ticket) => vec![Effect::Queue { user, username: member.username.clone(), cid, op: QueueOp::Status { ticket: ticket.id } }],
            None => {
                let state = if member.state == PresenceState::InMatch { QueueState::Matched } else { QueueState::Idle };
                let status = protocol::build!(QueueStatusT { state });
                vec![Effect::Push { user, message: ServerMessageT::response(cid, ServerBodyT::QueueStatus(Box::new(status))) }]
            }
        }
    }

    fn leave_room_local(&mut self, user: Uuid, room: &str) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(&user);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    fn instant(&self, now_ms: i64) -> Instant {
        let since = u64::try_from(now_ms.saturating_sub(self.origin_ms)).unwrap_or(0);
        self.origin + Duration::from_millis(since)
    }
}

/// The history key of a stored message's target.
pub fn chat_key(from: Uuid, target: &ChatTarget) -> String {
    channel_key(match target {
        ChatTarget::Global => Channel::Global,
        ChatTarget::Room(room) => Channel::Room(room),
        ChatTarget::Direct(to) => Channel::Direct(from, *to),
    })
}

pub fn uuid_t(id: Uuid) -> UuidT {
    UuidT::from_bytes(*id.as_bytes())
}

pub fn player_info(user: Uuid, username: &str) -> PlayerInfoT {
    protocol::build!(PlayerInfoT { user_id: uuid_t(user), username: username.to_owned() })
}

pub fn channel(kind: ChannelKind, room: Option<String>, user: Option<Uuid>) -> ChannelT {
    protocol::build!(ChannelT { kind, room, user_id: user.map(uuid_t) })
}

pub fn chat_message_t(id: i64, channel: ChannelT, from: Uuid, from_name: &str, text: &str, at_ms: i64) -> ChatMessageT {
    protocol::build!(ChatMessageT {
        id,
        channel: Box::new(channel),
        from_user_id: uuid_t(from),
        from_username: from_name.to_owned(),
        text: text.to_owned(),
        sent_at_ms: at_ms,
    })
}

pub fn chat_message(id: i64, channel: ChannelT, from: Uuid, from_name: &str, text: &str, at_ms: i64) -> ServerMessageT {
    ServerMessageT::push(ServerBodyT::ChatMessage(Box::new(chat_message_t(id, channel, from, from_name, text, at_ms))))
}

/// `MatchFound` for one player of a formed match: their own join token, the others as opponents.
fn match_found(push: &MatchFoundPushT, player: &MatchPlayerT) -> MatchFoundT {
    let opponents: Vec<PlayerInfoT> =
        push.players.iter().flatten().filter(|p| p.player.user_id != player.player.user_id).map(|p| (*p.player).clone()).collect();
    protocol::build!(MatchFoundT {
        match_id: push.match_id.clone(),
        instance: push.instance.clone(),
        join_token: player.join_token.clone(),
        join_by_ms: push.join_by_ms,
        mode: Some(push.mode.clone()),
        opponents: Some(opponents),
    })
}

/// A `FriendsPresenceList` answer.
pub fn friends_presence_list(cid: u32, friends: &[(Uuid, String, PresenceState)]) -> ServerMessageT {
    let friends = friends
        .iter()
        .map(|(id, name, state)| protocol::build!(FriendPresenceT { user_id: uuid_t(*id), username: name.clone(), state: *state }))
        .collect();
    let list = protocol::build!(protocol::tavern::FriendsPresenceListT { friends: Some(friends) });
    ServerMessageT::response(cid, ServerBodyT::FriendsPresenceList(Box::new(list)))
}

fn error(user: Uuid, cid: u32, code: ErrorCode, message: &str) -> Effect {
    Effect::Push { user, message: ServerMessageT::error(cid, code, message) }
}

fn valid_room(room: &str, max: usize) -> bool {
    !room.is_empty() && room.len() <= max && room.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
