-- The events outbox (DESIGN.md §7): each service writes its own events here in the same database
-- as its other data, and the `outbox` crate's relay publishes them to the Redis stream in id
-- order, so no event is lost while Redis is down. Each row is written by the service named in
-- `source`; only the relay updates (`published_at_ms`) and deletes (after the retention) rows.

CREATE TABLE events_outbox (
    -- The publication order and the idempotency key consumers dedupe by: ids are never reused.
    id              BIGSERIAL PRIMARY KEY,
    -- The event's name ("game_started", "match_found", ...).
    kind            TEXT NOT NULL,
    -- The event's fields as a JSON object.
    payload         TEXT NOT NULL,
    -- The service that recorded it ("matchmaker", "instance-server", ...).
    source          TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    -- NULL until a sink accepted the event.
    published_at_ms BIGINT NULL
);
-- The relay's question, "unpublished rows in id order", reads only this small index.
CREATE INDEX events_outbox_unpublished ON events_outbox(id) WHERE published_at_ms IS NULL;
-- Retention deletes published rows by age.
CREATE INDEX events_outbox_published ON events_outbox(published_at_ms) WHERE published_at_ms IS NOT NULL;
