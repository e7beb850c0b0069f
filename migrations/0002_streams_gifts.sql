-- Live streams and gifts. A gift row is at once the double-entry transfer
-- (sender's wallet -coins, creator's unsettled income +coins, balanced by
-- construction) and the outbox record that Redis and the rooms follow by
-- (stream_id, seq).

CREATE TABLE streams (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    creator_id       text NOT NULL,
    creator_name     text NOT NULL DEFAULT '',
    creator_account  bigint NOT NULL REFERENCES accounts (id),
    title            text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    status           text NOT NULL DEFAULT 'live' CHECK (status IN ('live', 'ended')),
    started_at       timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    -- seq of the last committed gift: assigned under this row's lock, so per
    -- stream the order of seq is the order of commit.
    last_seq         bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    coins_received   bigint NOT NULL DEFAULT 0 CHECK (coins_received >= 0),
    CHECK ((status = 'ended') = (ended_at IS NOT NULL))
);
CREATE UNIQUE INDEX streams_one_live_per_creator ON streams (creator_id) WHERE status = 'live';
CREATE INDEX streams_live ON streams (started_at DESC) WHERE status = 'live';

CREATE TABLE gifts (
    stream_id        bigint NOT NULL REFERENCES streams (id),
    seq              bigint NOT NULL CHECK (seq > 0),
    sender_id        text NOT NULL,
    sender_name      text NOT NULL,
    sender_account   bigint NOT NULL,
    creator_account  bigint NOT NULL,
    gift_id          text NOT NULL,
    gift_version     int NOT NULL,
    gift_name        text NOT NULL,
    unit_coins       bigint NOT NULL CHECK (unit_coins > 0),
    count            int NOT NULL CHECK (count BETWEEN 1 AND 999),
    coins            bigint NOT NULL CHECK (coins = unit_coins * count),
    -- the sender's balance right after this gift (a replay answers with it)
    balance_after    bigint NOT NULL CHECK (balance_after >= 0),
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    request_hash     text NOT NULL,
    -- the writing transaction: settlement uses it as a commit-order horizon
    xid              xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, seq),
    UNIQUE (sender_id, idempotency_key)
);
CREATE INDEX gifts_sender_time ON gifts (sender_id, created_at DESC, stream_id, seq);

CREATE TRIGGER gifts_append_only BEFORE UPDATE OR DELETE ON gifts
    FOR EACH ROW EXECUTE FUNCTION append_only();
CREATE TRIGGER gifts_no_truncate BEFORE TRUNCATE ON gifts
    FOR EACH STATEMENT EXECUTE FUNCTION append_only();
