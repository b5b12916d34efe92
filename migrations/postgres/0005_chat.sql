-- Chat history, owned by the GCS (DESIGN.md §5): every stored message of every channel.
-- Senders are referenced by id without a foreign key: `users` belongs to login, and the GCS keeps
-- the name the sender had when posting, so history reads need no other service.

CREATE TABLE chat_messages (
    -- Increases with each message; history pages walk it down (`before_id`). Never reused.
    id              BIGSERIAL PRIMARY KEY,
    -- The channel key: "global", "room:<name>", "dm:<lower uuid>:<higher uuid>", "party:<uuid>".
    channel         TEXT NOT NULL,
    sender_id       UUID NOT NULL,
    -- The sender's username when the message was posted.
    sender_name     TEXT NOT NULL,
    body            TEXT NOT NULL,
    sent_at_ms      BIGINT NOT NULL
);
-- A history page is "this channel, ids below N, highest first": one index range scan.
CREATE INDEX chat_messages_channel ON chat_messages(channel, id);
-- Retention deletes by age.
CREATE INDEX chat_messages_sent_at ON chat_messages(sent_at_ms);
