//! [`Outbox`]: the `events_outbox` table of one service's database. Services call
//! [`Outbox::record`]; the relay reads unpublished rows, marks them and prunes old ones.

use std::sync::Arc;

use migrations::{Db, on_db};
use tokio::sync::Notify;

use crate::{OutboxError, now_ms};

/// The key of the Postgres advisory lock every insert takes for the rest of its transaction, so
/// ids (drawn from the sequence inside the lock) become visible in id order. Without it a later
/// id could commit first and be published before an earlier one. ("tavern" in ASCII.)
const PG_ORDER_LOCK: i64 = 0x7461_7665_726e;

/// Longest event kind accepted.
const MAX_KIND_LEN: usize = 64;

/// One event as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The outbox row id: the publication order and the consumers' idempotency key.
    pub id: i64,
    pub kind: String,
    /// The service that recorded it.
    pub source: String,
    pub created_at_ms: i64,
    /// The fields, as JSON text (kept as text so a relay never re-encodes them).
    pub payload: String,
}

impl Event {
    /// The payload parsed.
    pub fn payload_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }
}

/// A row of the outbox with its publication state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub event: Event,
    /// When a sink accepted it; `None` while it waits.
    pub published_at_ms: Option<i64>,
}

/// The outbox of one service on one database. Cheap to clone; clones share the relay's wake-up.
#[derive(Clone, Debug)]
pub struct Outbox {
    db: Db,
    source: Arc<str>,
    /// Wakes the relay of this process at once after a record, instead of at its next poll.
    wake: Arc<Notify>,
}

type Row = (i64, String, String, i64, String, Option<i64>);

const INSERT: &str =
    "INSERT INTO events_outbox (kind, payload, source, created_at_ms) VALUES ($1, $2, $3, $4) RETURNING id";
const SELECT_UNPUBLISHED: &str = "SELECT id, kind, source, created_at_ms, payload, published_at_ms \
    FROM events_outbox WHERE published_at_ms IS NULL ORDER BY id LIMIT $1";
const SELECT_AFTER: &str = "SELECT id, kind, source, created_at_ms, payload, published_at_ms \
    FROM events_outbox WHERE id > $1 ORDER BY id LIMIT $2";
const COUNT_UNPUBLISHED: &str = "SELECT COUNT(*) FROM events_outbox WHERE published_at_ms IS NULL";
// Only rows still unpublished are claimed: a row another relay marked first keeps its time.
const MARK: &str = "UPDATE events_outbox SET published_at_ms = $1 \
    WHERE id >= $2 AND id <= $3 AND published_at_ms IS NULL";
const PRUNE: &str = "DELETE FROM events_outbox WHERE id IN (SELECT id FROM events_outbox \
    WHERE published_at_ms IS NOT NULL AND published_at_ms < $1 ORDER BY id LIMIT $2)";

impl Outbox {
    /// The outbox on `db` for the service named `source` (stored in every row it records).
    pub fn new(db: Db, source: &str) -> Outbox {
        Outbox { db, source: Arc::from(source), wake: Arc::new(Notify::new()) }
    }

    /// The service name this outbox records under.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Records one event and wakes the relay; returns its id. The row is durable when this
    /// returns, whatever happens to Redis.
    ///
    /// `kind` is 1 to 64 bytes of lowercase letters, digits, `_` and `.`.
    pub async fn record(&self, kind: &str, payload: serde_json::Value) -> Result<i64, OutboxError> {
        let valid = !kind.is_empty()
            && kind.len() <= MAX_KIND_LEN
            && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
        if !valid {
            return Err(OutboxError::InvalidKind(kind.to_owned()));
        }
        let payload = serde_json::to_string(&payload)?;
        let now = now_ms();
        let id: i64 = match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(PG_ORDER_LOCK).execute(&mut *tx).await?;
                let id = sqlx::query_scalar(INSERT)
                    .bind(kind)
                    .bind(&payload)
                    .bind(&*self.source)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                id
            }
            // SQLite has one writer at a time, so ids already commit in order.
            Db::Sqlite(pool) => {
                sqlx::query_scalar(INSERT)
                    .bind(kind)
                    .bind(&payload)
                    .bind(&*self.source)
                    .bind(now)
                    .fetch_one(pool)
                    .await?
            }
        };
        self.wake.notify_one();
        Ok(id)
    }

    /// The oldest `limit` unpublished events, in id order (of every source on this database).
    pub async fn unpublished(&self, limit: usize) -> Result<Vec<Event>, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<Row> =
            on_db!(&self.db, |pool| sqlx::query_as(SELECT_UNPUBLISHED).bind(limit).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|r| stored(r).event).collect())
    }

    /// Up to `limit` rows with an id above `after_id`, published or not, in id order: for
    /// tests, tools and consumers that read the table directly.
    pub async fn events_after(&self, after_id: i64, limit: usize) -> Result<Vec<StoredEvent>, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<Row> = on_db!(&self.db, |pool| {
            sqlx::query_as(SELECT_AFTER).bind(after_id).bind(limit).fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(stored).collect())
    }

    /// How many rows wait to be published.
    pub async fn pending(&self) -> Result<i64, OutboxError> {
        let n: i64 = on_db!(&self.db, |pool| sqlx::query_scalar(COUNT_UNPUBLISHED).fetch_one(pool).await)?;
        Ok(n)
    }

    /// Marks the unpublished rows with ids in `first..=last` as published at `at_ms`; returns
    /// how many this call claimed (another relay may have claimed some first).
    pub async fn mark_published(&self, first: i64, last: i64, at_ms: i64) -> Result<u64, OutboxError> {
        let done = on_db!(&self.db, |pool| {
            sqlx::query(MARK).bind(at_ms).bind(first).bind(last).execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(done)
    }

    /// Deletes at most `limit` rows published before `before_ms`; unpublished rows are never
    /// deleted, however old. Returns how many were deleted.
    pub async fn prune_published(&self, before_ms: i64, limit: usize) -> Result<u64, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let done = on_db!(&self.db, |pool| {
            sqlx::query(PRUNE).bind(before_ms).bind(limit).execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(done)
    }

    /// Resolves after the next [`Outbox::record`] on this outbox or a clone of it (or at once if
    /// one happened since the last wake-up).
    pub(crate) async fn recorded(&self) {
        self.wake.notified().await;
    }
}

fn stored((id, kind, source, created_at_ms, payload, published_at_ms): Row) -> StoredEvent {
    StoredEvent { event: Event { id, kind, source, created_at_ms, payload }, published_at_ms }
}
