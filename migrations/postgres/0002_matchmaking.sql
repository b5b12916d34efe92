-- Ratings and match history, owned by the matchmaker.
-- Users are referenced by id without a foreign key: `users` belongs to login, and match history
-- outlives the accounts it names.

CREATE TABLE ratings (
    user_id         UUID NOT NULL,
    -- The mode's name from the matchmaker's registry ("duel", "duo").
    mode            TEXT NOT NULL,
    rating          DOUBLE PRECISION NOT NULL,
    deviation       DOUBLE PRECISION NOT NULL,
    volatility      DOUBLE PRECISION NOT NULL,
    games           BIGINT NOT NULL DEFAULT 0,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (user_id, mode)
);

CREATE TABLE matches (
    -- The primary key is what makes a result idempotent: a second report of the same match
    -- inserts nothing and so changes nothing.
    match_id        UUID PRIMARY KEY,
    mode            TEXT NOT NULL,
    region          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    ended_at        BIGINT NOT NULL,
    -- 0 or 1; NULL for a draw.
    winning_team    INTEGER CHECK (winning_team IN (0, 1)),
    -- How it ended, as the instance reported it ("hero_destroyed", "concede", "forfeit", ...).
    reason          TEXT NOT NULL,
    recorded_at     BIGINT NOT NULL
);
CREATE INDEX matches_ended ON matches(ended_at);

CREATE TABLE match_players (
    match_id        UUID NOT NULL REFERENCES matches(match_id) ON DELETE CASCADE,
    user_id         UUID NOT NULL,
    team            INTEGER NOT NULL CHECK (team IN (0, 1)),
    outcome         TEXT NOT NULL CHECK (outcome IN ('win', 'loss', 'draw')),
    rating_before   DOUBLE PRECISION NOT NULL,
    deviation_before DOUBLE PRECISION NOT NULL,
    rating_after    DOUBLE PRECISION NOT NULL,
    deviation_after DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (match_id, user_id)
);
CREATE INDEX match_players_user ON match_players(user_id);
