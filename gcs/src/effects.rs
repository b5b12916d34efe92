//! Runs the hub's IO effects off the owner task: chat storage and history, friend lists from
//! login, the matchmaker link, the directory, the bus and the outbox. Each effect is a short
//! task bounded by a semaphore; what it learns comes back to the owner as a [`Completion`], and
//! what it has to say to a client goes through the owner too (so a detached session buffers it).
//!
//! Bus publishes that carry presence and room membership keep their order: they go through one
//! publisher task fed by a bounded queue.

use std::sync::Arc;
use std::time::Duration;

use protocol::tavern::{
    CancelTicketT, ChannelKind, ChatHistoryT, ChatSentT, EnqueueTicketT, MatchFoundPushT, RejoinTicketT, PresenceState, ServerBodyT, ServerMessageT,
    ServiceBodyT, TicketStatusRequestT,
};
use protocol::{Codec, ErrorCode};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use transport::service_link::ServiceClient;
use uuid::Uuid;

use crate::chat_store::ChatStore;
use crate::cluster::Cluster;
use crate::hub::{
    self, BusMessage, ChatTarget, Effect, QueueAnswer, QueueOp, Social, TOPIC_CHAT, chat_key, node_topic,
};
use crate::social::SocialClient;

/// How long a matchmaker request may take before the client is told it is unavailable.
const MATCHMAKER_TIMEOUT: Duration = Duration::from_secs(5);
/// Effects running at once; past this, requests are answered `Unavailable`.
const MAX_IN_FLIGHT: usize = 4096;
/// Ordered publishes waiting for the publisher task.
const PUBLISH_QUEUE: usize = 16_384;

/// The IO a GCS node talks to. Everything but the chat store is optional so a node can run
/// alone (tests, the embedded default without login).
#[derive(Clone)]
pub struct Backends {
    pub node_id: String,
    pub cluster: Cluster,
    pub chat: ChatStore,
    pub social: Option<SocialClient>,
    pub matchmaker: Option<ServiceClient>,
    pub outbox: Option<outbox::Outbox>,
}

/// What an effect learned, for the owner task.
#[derive(Debug)]
pub enum Completion {
    /// Messages for local users (answers, pushes).
    Push(Vec<(Uuid, ServerMessageT)>),
    Social { user: Uuid, social: Option<Social>, reply: Option<u32> },
    Queue { user: Uuid, cid: u32, op: QueueOp, answer: QueueAnswer },
    /// A bus message (from the subscription, or looped back).
    Bus(BusMessage),
    /// A client message routed from another node for local users.
    Deliver { to: Vec<Uuid>, message: ServerMessageT },
    /// The matchmaker formed a match with players of this node.
    MatchFound(Box<MatchFoundPushT>),
    TicketExpired { ticket: Uuid, users: Vec<Uuid> },
    /// The matchmaker stored a match's result: its players are back from the game.
    MatchEnded { users: Vec<Uuid> },
}

/// The effect runner. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    backends: Backends,
    completions: mpsc::Sender<Completion>,
    ordered: mpsc::Sender<(String, BusMessage)>,
    permits: Arc<Semaphore>,
    codec: Codec,
}

impl Runner {
    /// A runner sending completions to `completions`; spawns the ordered publisher, which stops
    /// with `shutdown`.
    pub fn start(backends: Backends, completions: mpsc::Sender<Completion>, codec: Codec, shutdown: CancellationToken) -> Runner {
        let (ordered, mut queue) = mpsc::channel::<(String, BusMessage)>(PUBLISH_QUEUE);
        let cluster = backends.cluster.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = queue.recv() => next,
                    () = shutdown.cancelled() => None,
                };
                let Some((topic, message)) = next else { break };
                if let Err(e) = cluster.publish(&topic, &message).await {
                    tracing::warn!(%topic, error = %e, "bus publish failed");
                }
            }
        });
        Runner { backends, completions, ordered, permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)), codec }
    }

    pub fn node_id(&self) -> &str {
        &self.backends.node_id
    }

    /// Starts an IO effect. `Push` and `Kick` are the owner's and never reach here.
    pub fn run(&self, effect: Effect) {
        if let Effect::Publish { topic, message } = effect {
            if self.ordered.try_send((topic, message)).is_err() {
                tracing::warn!("bus publish queue full: a presence or room change was dropped");
            }
            return;
        }
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.refuse_busy(effect);
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            this.execute(effect).await;
            drop(permit);
        });
    }

    /// Too many effects in flight: a client waiting on one is told so.
    fn refuse_busy(&self, effect: Effect) {
        tracing::warn!("effect runner saturated");
        let (user, cid) = match &effect {
            Effect::Chat { user, cid, .. } | Effect::History { user, cid, .. } | Effect::Queue { user, cid, .. } => (*user, *cid),
            Effect::FriendsPresence { user, cid, .. } => (*user, *cid),
            Effect::LoadSocial { user, reply: Some(cid) } => (*user, *cid),
            _ => return,
        };
        if cid != 0 {
            let message = ServerMessageT::error(cid, ErrorCode::Unavailable, "server busy, try again");
            let _ = self.completions.try_send(Completion::Push(vec![(user, message)]));
        }
    }

    async fn execute(&self, effect: Effect) {
        match effect {
            Effect::LoadSocial { user, reply } => {
                if self.backends.social.is_none() && reply == Some(0) {
                    // No login to ask: nothing to tell a user who just arrived.
                    return;
                }
                let social = self.social(user).await;
                self.complete(Completion::Social { user, social, reply }).await;
            }
            Effect::Chat { user, username, cid, target, text, now_ms } => self.chat(user, &username, cid, target, &text, now_ms).await,
            Effect::History { user, cid, key, channel, before_id, limit } => {
                let message = match self.backends.chat.page(&key, before_id, limit).await {
                    Ok((rows, has_more)) => {
                        let messages = rows
                            .into_iter()
                            .map(|m| {
                                let channel = match channel.kind {
                                    // A direct message is shown with the other side as the channel.
                                    ChannelKind::Direct if m.sender_id != user => {
                                        hub::channel(ChannelKind::Direct, None, Some(m.sender_id))
                                    }
                                    _ => channel.clone(),
                                };
                                hub::chat_message_t(m.id, channel, m.sender_id, &m.sender_name, &m.body, m.sent_at_ms)
                            })
                            .collect();
                        let history = protocol::build!(ChatHistoryT { channel: Box::new(channel.clone()), messages: Some(messages), has_more });
                        ServerMessageT::response(cid, ServerBodyT::ChatHistory(Box::new(history)))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "chat history read failed");
                        ServerMessageT::error(cid, ErrorCode::Unavailable, "chat history is unavailable")
                    }
                };
                self.complete(Completion::Push(vec![(user, message)])).await;
            }
            Effect::FriendsPresence { user, cid, friends } => {
                let ids: Vec<Uuid> = friends.iter().map(|(id, _, _)| *id).collect();
                let nodes = self.backends.cluster.lookup_many(&ids).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "directory lookup failed");
                    vec![None; ids.len()]
                });
                let list: Vec<(Uuid, String, PresenceState)> = friends
                    .into_iter()
                    .zip(nodes)
                    .map(|((id, name, state), node)| {
                        // The directory is the truth about online; the state seen on the bus adds
                        // whether they queue or play.
                        let state = match (node, state) {
                            (None, _) => PresenceState::Offline,
                            (Some(_), PresenceState::Offline) => PresenceState::Online,
                            (Some(_), state) => state,
                        };
                        (id, name, state)
                    })
                    .collect();
                self.complete(Completion::Push(vec![(user, hub::friends_presence_list(cid, &list))])).await;
            }
            Effect::Queue { user, username, cid, op } => {
                let answer = self.queue(user, &username, &op).await;
                self.complete(Completion::Queue { user, cid, op, answer }).await;
            }
            Effect::Route { user, message } => self.route(user, message).await,
            Effect::Claim { user, session } => match self.backends.cluster.claim(user).await {
                Ok(Some(previous)) if previous != self.backends.node_id => {
                    let kick = BusMessage::Kick { user, session };
                    if let Err(e) = self.backends.cluster.publish(&node_topic(&previous), &kick).await {
                        tracing::warn!(error = %e, "could not tell the previous node to close its session");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%user, error = %e, "directory claim failed"),
            },
            Effect::Release { user } => {
                if let Err(e) = self.backends.cluster.release(user).await {
                    tracing::warn!(%user, error = %e, "directory release failed");
                }
            }
            Effect::Event { kind, payload } => {
                if let Some(outbox) = &self.backends.outbox
                    && let Err(e) = outbox.record(kind, payload).await
                {
                    tracing::error!(kind, error = %e, "could not record an event");
                }
            }
            Effect::Publish { .. } | Effect::Push { .. } | Effect::Kick { .. } => {}
        }
    }

    async fn complete(&self, completion: Completion) {
        // The owner only stops at shutdown; a completion after that has nobody to tell.
        let _ = self.completions.send(completion).await;
    }

    async fn social(&self, user: Uuid) -> Option<Social> {
        let client = self.backends.social.as_ref()?;
        match client.social(user).await {
            Ok(graph) => Some(Social { friends: graph.friends, blocked: graph.blocked }),
            Err(e) => {
                tracing::warn!(%user, error = %e, "friend list unavailable");
                None
            }
        }
    }

    async fn chat(&self, user: Uuid, username: &str, cid: u32, target: ChatTarget, text: &str, now_ms: i64) {
        if let ChatTarget::Direct(to) = target {
            // Blocks are checked against login's current answer, not the list cached at login.
            if let Some(social) = self.social(user).await {
                let blocked = social.blocked.contains(&to);
                self.complete(Completion::Social { user, social: Some(social), reply: None }).await;
                if blocked {
                    let message = ServerMessageT::error(cid, ErrorCode::Blocked, "blocked");
                    return self.complete(Completion::Push(vec![(user, message)])).await;
                }
            }
        }
        let key = chat_key(user, &target);
        let id = match self.backends.chat.append(&key, user, username, text, now_ms).await {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, "chat store failed");
                let message = ServerMessageT::error(cid, ErrorCode::Unavailable, "chat is unavailable");
                return self.complete(Completion::Push(vec![(user, message)])).await;
            }
        };
        let sent = protocol::build!(ChatSentT { id, sent_at_ms: now_ms });
        self.complete(Completion::Push(vec![(user, ServerMessageT::response(cid, ServerBodyT::ChatSent(Box::new(sent))))])).await;
        let from_name = username.to_owned();
        let text = text.to_owned();
        let (topic, message) = match target {
            ChatTarget::Global => (TOPIC_CHAT.to_owned(), BusMessage::Chat { id, room: None, from: user, from_name, text, at_ms: now_ms }),
            ChatTarget::Room(room) => {
                (TOPIC_CHAT.to_owned(), BusMessage::Chat { id, room: Some(room), from: user, from_name, text, at_ms: now_ms })
            }
            ChatTarget::Direct(to) => match self.backends.cluster.lookup(to).await {
                Ok(Some(node)) => (node_topic(&node), BusMessage::Direct { id, to, from: user, from_name, text, at_ms: now_ms }),
                // Offline: the message waits in the history.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "directory lookup failed: direct message kept in history only");
                    return;
                }
            },
        };
        if let Err(e) = self.backends.cluster.publish(&topic, &message).await {
            tracing::warn!(%topic, error = %e, "chat publish failed");
        }
    }

    async fn queue(&self, user: Uuid, username: &str, op: &QueueOp) -> QueueAnswer {
        let Some(matchmaker) = &self.backends.matchmaker else {
            return QueueAnswer::Failed(ErrorCode::Unavailable, "matchmaking is not configured".into());
        };
        let body = match op {
            QueueOp::Enqueue { ticket, mode, regions } => ServiceBodyT::EnqueueTicket(Box::new(protocol::build!(EnqueueTicketT {
                ticket_id: hub::uuid_t(*ticket),
                players: Some(vec![hub::player_info(user, username)]),
                mode: mode.clone(),
                regions: Some(regions.clone()),
                gcs_node_id: self.backends.node_id.clone(),
            }))),
            QueueOp::Cancel { ticket } => {
                ServiceBodyT::CancelTicket(Box::new(protocol::build!(CancelTicketT { ticket_id: hub::uuid_t(*ticket) })))
            }
            QueueOp::Status { ticket } => {
                ServiceBodyT::TicketStatusRequest(Box::new(protocol::build!(TicketStatusRequestT { ticket_id: hub::uuid_t(*ticket) })))
            }
            QueueOp::Rejoin { match_id } => ServiceBodyT::RejoinTicket(Box::new(protocol::build!(RejoinTicketT {
                match_id: hub::uuid_t(*match_id),
                user_id: hub::uuid_t(user),
            }))),
        };
        match matchmaker.request(body, MATCHMAKER_TIMEOUT).await {
            Ok(answer) => match answer.body {
                ServiceBodyT::TicketStatus(s) => QueueAnswer::Status {
                    state: s.state,
                    position: s.position,
                    estimated_wait_ms: s.estimated_wait_ms,
                    waited_ms: s.waited_ms,
                },
                ServiceBodyT::Ack(_) => QueueAnswer::Cancelled,
                ServiceBodyT::MatchFoundPush(found) => QueueAnswer::Found(found),
                ServiceBodyT::Error(e) => {
                    let code = ErrorCode::from_u16(e.code).unwrap_or(ErrorCode::Internal);
                    QueueAnswer::Failed(code, e.message.clone())
                }
                other => {
                    tracing::warn!(?other, "unexpected matchmaker answer");
                    QueueAnswer::Failed(ErrorCode::Internal, "unexpected matchmaker answer".into())
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "matchmaker request failed");
                QueueAnswer::Failed(ErrorCode::Unavailable, "matchmaking is unavailable, try again".into())
            }
        }
    }

    /// Delivers a client message to `user` wherever they are.
    async fn route(&self, user: Uuid, message: ServerMessageT) {
        match self.backends.cluster.lookup(user).await {
            Ok(Some(node)) if node == self.backends.node_id => {
                self.complete(Completion::Deliver { to: vec![user], message }).await;
            }
            Ok(Some(node)) => match self.codec.encode(&message) {
                Ok(frame) => {
                    let deliver = BusMessage::Deliver { to: vec![user], frame };
                    if let Err(e) = self.backends.cluster.publish(&node_topic(&node), &deliver).await {
                        tracing::warn!(%user, error = %e, "routing to another node failed");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a routed message"),
            },
            Ok(None) => tracing::info!(%user, "message for an offline user dropped"),
            Err(e) => tracing::warn!(%user, error = %e, "directory lookup failed"),
        }
    }
}
