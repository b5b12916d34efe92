-- Accounts, sessions and friendships (owned by login) and refresh tokens (owned by the token service).
-- Timestamps are unix milliseconds (BIGINT) so both dialects store and compare them the same way.

CREATE TABLE users (
    id              UUID PRIMARY KEY,
    username        TEXT NOT NULL,
    -- Lowercased username: usernames are unique without regard to case.
    username_key    TEXT NOT NULL UNIQUE,
    display_name    TEXT NOT NULL,
    -- NULL for guest (device) accounts until they set a password.
    password_hash   TEXT,
    device_id       TEXT UNIQUE,
    is_guest        BOOLEAN NOT NULL DEFAULT FALSE,
    banned          BOOLEAN NOT NULL DEFAULT FALSE,
    -- Account lockout: consecutive failed logins and when the lock ends.
    failed_logins   INTEGER NOT NULL DEFAULT 0,
    locked_until    BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE refresh_tokens (
    -- SHA-256 of the token; the token itself is never stored.
    token_hash      BYTEA PRIMARY KEY,
    family_id       UUID NOT NULL,
    user_id         UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id      UUID NOT NULL,
    issued_at       BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    -- Set when the token is exchanged for a new pair; presenting it again is reuse.
    spent_at        BIGINT,
    -- Set on the whole family by logout, logout-all or reuse detection.
    revoked_at      BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens(user_id);

CREATE TABLE friendships (
    -- A pending request goes from requester to addressee; accepted rows are stored once per pair.
    requester_id    UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    addressee_id    UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'accepted')),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (requester_id, addressee_id)
);
CREATE INDEX friendships_addressee ON friendships(addressee_id);

CREATE TABLE blocks (
    blocker_id      UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    blocked_id      UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);
