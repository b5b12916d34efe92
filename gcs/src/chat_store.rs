//! The GCS's chat history: the `chat_messages` table (migration 0005), which the GCS owns, on
//! Postgres or SQLite.
//!
//! Messages are keyed by a channel key string ([`channel_key`]): `global`, `room:<name>`,
//! `dm:<lower uuid>:<higher uuid>` and `party:<uuid>`. Ids increase with every message, so a page
//! is "this channel, ids below `before_id`, highest first" — one range scan of the
//! `(channel, id)` index. Pages are **newest first**, as `ChatHistory` sends them; the next
//! (older) page asks with the last message's id as `before_id`.
//!
//! On Postgres ids are handed out before commit, so a page read while two sends race may miss
//! the one that commits second until the next read; paging backwards (older pages) never skips
//! or repeats a message.

use migrations::{Db, on_db};
use sqlx::FromRow;
use uuid::Uuid;

/// The most messages one page holds, whatever the request asks.
pub const MAX_PAGE: u16 = 100;

/// The page size when the request leaves `limit` at 0 (its FlatBuffers default).
pub const DEFAULT_PAGE: u16 = 50;

/// Rows deleted per retention statement, so retention never holds a long lock or a big
/// transaction.
pub const RETENTION_BATCH: i64 = 1000;

/// A chat channel, to turn into its key with [`channel_key`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel<'a> {
    /// The common area every connected user is in.
    Global,
    /// A named room; the name is used as given (normalise it before if rooms are
    /// case-insensitive).
    Room(&'a str),
    /// A conversation between two users, in either order.
    Direct(Uuid, Uuid),
    /// A party's chat.
    Party(Uuid),
}

/// The key a channel's messages are stored under. A direct conversation has one key whichever
/// user is named first: the lower UUID comes first (UUIDs order as their lowercase text does).
pub fn channel_key(channel: Channel<'_>) -> String {
    match channel {
        Channel::Global => "global".to_owned(),
        Channel::Room(name) => format!("room:{name}"),
        Channel::Direct(a, b) => {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            format!("dm:{lo}:{hi}")
        }
        Channel::Party(id) => format!("party:{id}"),
    }
}

/// One stored message.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct StoredMessage {
    pub id: i64,
    /// The channel key.
    pub channel: String,
    pub sender_id: Uuid,
    /// The sender's username when the message was posted.
    pub sender_name: String,
    pub body: String,
    pub sent_at_ms: i64,
}

/// Why a chat store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatStoreError {
    #[error("chat store database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// Typed access to `chat_messages`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ChatStore {
    db: Db,
}

impl ChatStore {
    /// A store over a migrated database.
    pub fn new(db: Db) -> ChatStore {
        ChatStore { db }
    }

    /// Stores a message and returns its id. Length limits are the caller's: the store takes any
    /// text.
    pub async fn append(
        &self,
        channel_key: &str,
        sender_id: Uuid,
        sender_name: &str,
        body: &str,
        now_ms: i64,
    ) -> Result<i64, ChatStoreError> {
        let sql = "INSERT INTO chat_messages (channel, sender_id, sender_name, body, sent_at_ms) \
                   VALUES ($1, $2, $3, $4, $5) RETURNING id";
        Ok(on_db!(&self.db, |pool| sqlx::query_scalar(sql)
            .bind(channel_key)
            .bind(sender_id)
            .bind(sender_name)
            .bind(body)
            .bind(now_ms)
            .fetch_one(pool)
            .await)?)
    }

    /// A page of `channel_key`'s messages, newest first, with ids below `before_id` (`None`, or
    /// the protocol's 0, for the newest page), at most `limit` of them (0 means
    /// [`DEFAULT_PAGE`]; capped at [`MAX_PAGE`]). The flag is true when older messages remain.
    pub async fn page(
        &self,
        channel_key: &str,
        before_id: Option<i64>,
        limit: u16,
    ) -> Result<(Vec<StoredMessage>, bool), ChatStoreError> {
        let limit = match limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let before = before_id.filter(|&id| id > 0).unwrap_or(i64::MAX);
        // One row more than asked tells whether an older page exists.
        let sql = "SELECT id, channel, sender_id, sender_name, body, sent_at_ms FROM chat_messages \
                   WHERE channel = $1 AND id < $2 ORDER BY id DESC LIMIT $3";
        let mut rows: Vec<StoredMessage> = on_db!(&self.db, |pool| sqlx::query_as(sql)
            .bind(channel_key)
            .bind(before)
            .bind(i64::from(limit) + 1)
            .fetch_all(pool)
            .await)?;
        let has_more = rows.len() > usize::from(limit);
        rows.truncate(usize::from(limit));
        Ok((rows, has_more))
    }

    /// Deletes every message sent before `cutoff_ms`, [`RETENTION_BATCH`] rows per statement,
    /// yielding between statements; returns how many were deleted.
    pub async fn delete_older_than(&self, cutoff_ms: i64) -> Result<u64, ChatStoreError> {
        let sql = "DELETE FROM chat_messages WHERE id IN \
                   (SELECT id FROM chat_messages WHERE sent_at_ms < $1 LIMIT $2)";
        let mut total = 0;
        loop {
            let deleted = on_db!(&self.db, |pool| sqlx::query(sql)
                .bind(cutoff_ms)
                .bind(RETENTION_BATCH)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?;
            total += deleted;
            if deleted < RETENTION_BATCH.unsigned_abs() {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }
}
