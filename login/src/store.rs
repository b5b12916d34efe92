//! The login service's tables: users, friendships and blocks, on Postgres or SQLite.
//!
//! Most statements are the same text in both dialects (sqlx binds `$n` in SQLite too); where they
//! differ the two texts stand side by side.

use migrations::{Db, on_db};
use sqlx::FromRow;
use uuid::Uuid;

/// One account.
#[derive(Clone, Debug, FromRow, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub password_hash: Option<String>,
    pub device_id: Option<String>,
    pub is_guest: bool,
    pub banned: bool,
    pub failed_logins: i32,
    pub locked_until: i64,
    pub created_at: i64,
}

/// A fresh account to insert.
#[derive(Clone, Debug)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub display_name: &'a str,
    pub password_hash: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub is_guest: bool,
}

/// A user as others see them in friend lists.
#[derive(Clone, Debug, FromRow, PartialEq, Eq)]
pub struct UserRef {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    /// When the relation (friendship, request, block) was created.
    pub since: i64,
}

/// What a user's friend page shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FriendList {
    pub friends: Vec<UserRef>,
    pub incoming: Vec<UserRef>,
    pub outgoing: Vec<UserRef>,
    pub blocked: Vec<UserRef>,
}

/// The relation between two users, seen from the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    None,
    Friends,
    /// The first user asked the second.
    RequestSent,
    /// The second user asked the first.
    RequestReceived,
    /// Either user blocked the other.
    Blocked,
}

/// A user's friends and blocks as trusted services see them (`/internal/v1`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocialGraph {
    pub id: Uuid,
    pub username: String,
    /// Accepted friends (id, username), ordered by name; pending requests are not friends.
    pub friends: Vec<(Uuid, String)>,
    /// Users this user blocked.
    pub blocked: Vec<Uuid>,
    /// Users who blocked this user.
    pub blocked_by: Vec<Uuid>,
}

/// Store failures the handlers tell apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unique constraint violated")]
    Conflict,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn conflict_or(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Db(e),
    }
}

const USER_COLUMNS: &str = "id, username, display_name, password_hash, device_id, is_guest, banned, \
                            failed_logins, locked_until, created_at";

/// Typed access to the login tables.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

impl Store {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Inserts a user; `Conflict` when the username (case-insensitively) or device id is taken.
    pub async fn create_user(&self, new: &NewUser<'_>, now_ms: i64) -> Result<User, StoreError> {
        let id = Uuid::new_v4();
        let sql = "INSERT INTO users (id, username, username_key, display_name, password_hash, device_id, \
                   is_guest, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)";
        on_db!(&self.db, |pool| sqlx::query(sql)
            .bind(id)
            .bind(new.username)
            .bind(new.username.to_lowercase())
            .bind(new.display_name)
            .bind(new.password_hash)
            .bind(new.device_id)
            .bind(new.is_guest)
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(conflict_or)?;
        Ok(User {
            id,
            username: new.username.to_owned(),
            display_name: new.display_name.to_owned(),
            password_hash: new.password_hash.map(str::to_owned),
            device_id: new.device_id.map(str::to_owned),
            is_guest: new.is_guest,
            banned: false,
            failed_logins: 0,
            locked_until: 0,
            created_at: now_ms,
        })
    }

    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        Ok(on_db!(&self.db, |pool| sqlx::query_as::<_, User>(&sql).bind(id).fetch_optional(pool).await)?)
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username_key = $1");
        let key = username.to_lowercase();
        Ok(on_db!(&self.db, |pool| sqlx::query_as::<_, User>(&sql).bind(&key).fetch_optional(pool).await)?)
    }

    pub async fn user_by_device(&self, device_id: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE device_id = $1");
        Ok(on_db!(&self.db, |pool| sqlx::query_as::<_, User>(&sql).bind(device_id).fetch_optional(pool).await)?)
    }

    /// Counts a failed login and locks the account for `lock_ms` once `max_failures` is reached.
    /// Returns the new lock end (0 when not locked).
    pub async fn record_failed_login(
        &self,
        id: Uuid,
        max_failures: i32,
        lock_ms: i64,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        // One statement, so concurrent failures cannot lose counts.
        let sql = "UPDATE users SET failed_logins = failed_logins + 1, \
                   locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END, \
                   updated_at = $4 WHERE id = $1 RETURNING locked_until";
        let until: Option<i64> = on_db!(&self.db, |pool| sqlx::query_scalar(sql)
            .bind(id)
            .bind(max_failures)
            .bind(now_ms + lock_ms)
            .bind(now_ms)
            .fetch_optional(pool)
            .await)?;
        Ok(until.filter(|&t| t > now_ms).unwrap_or(0))
    }

    /// Clears the failure count after a successful login or an expired lock.
    pub async fn clear_failed_logins(&self, id: Uuid, now_ms: i64) -> Result<(), StoreError> {
        let sql = "UPDATE users SET failed_logins = 0, locked_until = 0, updated_at = $2 WHERE id = $1";
        on_db!(&self.db, |pool| sqlx::query(sql).bind(id).bind(now_ms).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn set_display_name(&self, id: Uuid, name: &str, now_ms: i64) -> Result<(), StoreError> {
        let sql = "UPDATE users SET display_name = $2, updated_at = $3 WHERE id = $1";
        on_db!(&self.db, |pool| sqlx::query(sql).bind(id).bind(name).bind(now_ms).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn set_password_hash(&self, id: Uuid, hash: &str, now_ms: i64) -> Result<(), StoreError> {
        let sql = "UPDATE users SET password_hash = $2, failed_logins = 0, locked_until = 0, updated_at = $3 \
                   WHERE id = $1";
        on_db!(&self.db, |pool| sqlx::query(sql).bind(id).bind(hash).bind(now_ms).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn set_banned(&self, id: Uuid, banned: bool, now_ms: i64) -> Result<(), StoreError> {
        let sql = "UPDATE users SET banned = $2, updated_at = $3 WHERE id = $1";
        on_db!(&self.db, |pool| sqlx::query(sql).bind(id).bind(banned).bind(now_ms).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// How `a` stands towards `b`.
    pub async fn relation(&self, a: Uuid, b: Uuid) -> Result<Relation, StoreError> {
        let blocked_sql = "SELECT COUNT(*) FROM blocks WHERE (blocker_id = $1 AND blocked_id = $2) \
                           OR (blocker_id = $2 AND blocked_id = $1)";
        let blocks: i64 =
            on_db!(&self.db, |pool| sqlx::query_scalar(blocked_sql).bind(a).bind(b).fetch_one(pool).await)?;
        if blocks > 0 {
            return Ok(Relation::Blocked);
        }
        let sql = "SELECT requester_id, status FROM friendships WHERE (requester_id = $1 AND addressee_id = $2) \
                   OR (requester_id = $2 AND addressee_id = $1)";
        let row: Option<(Uuid, String)> =
            on_db!(&self.db, |pool| sqlx::query_as(sql).bind(a).bind(b).fetch_optional(pool).await)?;
        Ok(match row {
            None => Relation::None,
            Some((_, status)) if status == "accepted" => Relation::Friends,
            Some((requester, _)) if requester == a => Relation::RequestSent,
            Some(_) => Relation::RequestReceived,
        })
    }

    /// Number of accepted friends plus pending requests sent by `id`.
    pub async fn friend_slots_used(&self, id: Uuid) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM friendships WHERE requester_id = $1 \
                   OR (addressee_id = $1 AND status = 'accepted')";
        Ok(on_db!(&self.db, |pool| sqlx::query_scalar(sql).bind(id).fetch_one(pool).await)?)
    }

    /// Records a pending request from `from` to `to`; `Conflict` if any friendship row exists.
    pub async fn insert_request(&self, from: Uuid, to: Uuid, now_ms: i64) -> Result<(), StoreError> {
        let sql = "INSERT INTO friendships (requester_id, addressee_id, status, created_at, updated_at) \
                   VALUES ($1, $2, 'pending', $3, $3)";
        on_db!(&self.db, |pool| sqlx::query(sql).bind(from).bind(to).bind(now_ms).execute(pool).await.map(|r| r.rows_affected()))
            .map_err(conflict_or)?;
        Ok(())
    }

    /// Accepts the pending request from `from` to `to`; false if there was none.
    pub async fn accept_request(&self, from: Uuid, to: Uuid, now_ms: i64) -> Result<bool, StoreError> {
        let sql = "UPDATE friendships SET status = 'accepted', updated_at = $3 \
                   WHERE requester_id = $1 AND addressee_id = $2 AND status = 'pending'";
        let done = on_db!(&self.db, |pool| sqlx::query(sql).bind(from).bind(to).bind(now_ms).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Deletes the pending request from `from` to `to`; false if there was none.
    pub async fn delete_request(&self, from: Uuid, to: Uuid) -> Result<bool, StoreError> {
        let sql = "DELETE FROM friendships WHERE requester_id = $1 AND addressee_id = $2 AND status = 'pending'";
        let done = on_db!(&self.db, |pool| sqlx::query(sql).bind(from).bind(to).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Deletes an accepted friendship in either direction; false if there was none.
    pub async fn delete_friendship(&self, a: Uuid, b: Uuid) -> Result<bool, StoreError> {
        let sql = "DELETE FROM friendships WHERE status = 'accepted' AND ((requester_id = $1 AND addressee_id = $2) \
                   OR (requester_id = $2 AND addressee_id = $1))";
        let done = on_db!(&self.db, |pool| sqlx::query(sql).bind(a).bind(b).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// `blocker` blocks `blocked`: any friendship or request between them is removed in the same
    /// transaction. Blocking twice is not an error.
    pub async fn block(&self, blocker: Uuid, blocked: Uuid, now_ms: i64) -> Result<(), StoreError> {
        let del = "DELETE FROM friendships WHERE (requester_id = $1 AND addressee_id = $2) \
                   OR (requester_id = $2 AND addressee_id = $1)";
        let ins = "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (blocker_id, blocked_id) DO NOTHING";
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(del).bind(blocker).bind(blocked).execute(&mut *tx).await?;
            sqlx::query(ins).bind(blocker).bind(blocked).bind(now_ms).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// Lifts a block; false if there was none.
    pub async fn unblock(&self, blocker: Uuid, blocked: Uuid) -> Result<bool, StoreError> {
        let sql = "DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2";
        let done = on_db!(&self.db, |pool| sqlx::query(sql).bind(blocker).bind(blocked).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// `id`'s username, accepted friends and blocks in both directions; `None` for an unknown
    /// user.
    pub async fn social_graph(&self, id: Uuid) -> Result<Option<SocialGraph>, StoreError> {
        let user = "SELECT username FROM users WHERE id = $1";
        let friends = "SELECT u.id, u.username FROM friendships f \
                       JOIN users u ON u.id = CASE WHEN f.requester_id = $1 THEN f.addressee_id ELSE f.requester_id END \
                       WHERE f.status = 'accepted' AND (f.requester_id = $1 OR f.addressee_id = $1) ORDER BY u.username_key";
        let blocked = "SELECT blocked_id FROM blocks WHERE blocker_id = $1 ORDER BY blocked_id";
        let blocked_by = "SELECT blocker_id FROM blocks WHERE blocked_id = $1 ORDER BY blocker_id";
        let username: Option<String> =
            on_db!(&self.db, |pool| sqlx::query_scalar(user).bind(id).fetch_optional(pool).await)?;
        let Some(username) = username else { return Ok(None) };
        Ok(Some(SocialGraph {
            id,
            username,
            friends: on_db!(&self.db, |pool| sqlx::query_as(friends).bind(id).fetch_all(pool).await)?,
            blocked: on_db!(&self.db, |pool| sqlx::query_scalar(blocked).bind(id).fetch_all(pool).await)?,
            blocked_by: on_db!(&self.db, |pool| sqlx::query_scalar(blocked_by).bind(id).fetch_all(pool).await)?,
        }))
    }

    /// The (id, username) of each known id among `ids`, in no particular order; unknown ids are
    /// left out. One statement with one placeholder per id, so callers bound `ids`.
    pub async fn usernames(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT id, username FROM users WHERE id IN ({})", placeholders.join(", "));
        Ok(on_db!(&self.db, |pool| {
            let mut q = sqlx::query_as(&sql);
            for id in ids {
                q = q.bind(*id);
            }
            q.fetch_all(pool).await
        })?)
    }

    /// Everything on `id`'s friend page, each list ordered by name.
    pub async fn friend_list(&self, id: Uuid) -> Result<FriendList, StoreError> {
        let friends = "SELECT u.id, u.username, u.display_name, f.updated_at AS since FROM friendships f \
                       JOIN users u ON u.id = CASE WHEN f.requester_id = $1 THEN f.addressee_id ELSE f.requester_id END \
                       WHERE f.status = 'accepted' AND (f.requester_id = $1 OR f.addressee_id = $1) ORDER BY u.username_key";
        let incoming = "SELECT u.id, u.username, u.display_name, f.created_at AS since FROM friendships f \
                        JOIN users u ON u.id = f.requester_id WHERE f.addressee_id = $1 AND f.status = 'pending' \
                        ORDER BY u.username_key";
        let outgoing = "SELECT u.id, u.username, u.display_name, f.created_at AS since FROM friendships f \
                        JOIN users u ON u.id = f.addressee_id WHERE f.requester_id = $1 AND f.status = 'pending' \
                        ORDER BY u.username_key";
        let blocked = "SELECT u.id, u.username, u.display_name, b.created_at AS since FROM blocks b \
                       JOIN users u ON u.id = b.blocked_id WHERE b.blocker_id = $1 ORDER BY u.username_key";
        let mut out = FriendList::default();
        for (sql, list) in [
            (friends, &mut out.friends),
            (incoming, &mut out.incoming),
            (outgoing, &mut out.outgoing),
            (blocked, &mut out.blocked),
        ] {
            *list = on_db!(&self.db, |pool| sqlx::query_as::<_, UserRef>(sql).bind(id).fetch_all(pool).await)?;
        }
        Ok(out)
    }
}
