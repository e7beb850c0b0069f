-- Engagement: goals, combos, paid messages and creator moderation.
--
-- Every number a viewer sees (a goal's progress, the gift that reached it, a
-- combo's count, a pin's end) is decided inside the gift batch's transaction
-- and stored on the gift row, so replays, the HTTP history and every gateway
-- show the same values. State that a batch decides on lives in rows the batch
-- locks (streams, goals, sender_combos); state kept elsewhere (blocks) is changed
-- only together with a bump of streams.rules_version, which tells a batch
-- that read it from an older snapshot to read again.

-- Bumped (under the stream row's lock) by every change to rule state that a
-- batch reads without locking it. The framework's migration may add it too.
ALTER TABLE streams ADD COLUMN IF NOT EXISTS rules_version bigint NOT NULL DEFAULT 0;
-- While true, gifts to the stream are refused (409 gifts_paused). On the stream
-- row itself: a batch always reads it at its newest version.
ALTER TABLE streams ADD COLUMN gifts_paused boolean NOT NULL DEFAULT false;

-- A stream's goal. The current one (active or reached) is unique per stream;
-- the batch locks it and adds to progress_coins. Cleared goals stay as history.
CREATE TABLE goals (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       bigint NOT NULL REFERENCES streams (id),
    title           text NOT NULL CHECK (length(title) BETWEEN 1 AND 80),
    target_coins    bigint NOT NULL CHECK (target_coins BETWEEN 1 AND 1000000000),
    gift_id         text,
    progress_coins  bigint NOT NULL DEFAULT 0 CHECK (progress_coins >= 0),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'reached', 'cleared')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    reached_at      timestamptz,
    cleared_at      timestamptz,
    -- the stream's last_seq when the goal was set: only later gifts count
    start_seq       bigint NOT NULL DEFAULT 0,
    CHECK ((status = 'reached') <= (reached_at IS NOT NULL)),
    CHECK ((status = 'cleared') = (cleared_at IS NOT NULL))
);
CREATE UNIQUE INDEX goals_one_current_per_stream ON goals (stream_id) WHERE status <> 'cleared';

-- Combo state, one row per sender, created with the sender's wallet (and backfilled
-- here): a gift needs a wallet, so whenever a batch sees a sender's wallet it sees
-- this row too, and locks it at its newest version. It holds the sender's combos
-- still within the window, {"<stream>:<gift>": {"id", "n", "at"}}; the batch
-- rewrites it whole, dropping combos that can no longer continue.
CREATE TABLE sender_combos (
    sender_id  text PRIMARY KEY,
    combos     jsonb NOT NULL DEFAULT '{}'
) WITH (fillfactor = 50);  -- rewritten once per batch a sender is in: room for HOT updates
CREATE FUNCTION sender_combos_for_wallet() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sender_combos (sender_id) VALUES (NEW.owner) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER accounts_sender_combos AFTER INSERT ON accounts
    FOR EACH ROW WHEN (NEW.kind = 'wallet') EXECUTE FUNCTION sender_combos_for_wallet();
INSERT INTO sender_combos (sender_id) SELECT DISTINCT owner FROM accounts WHERE kind = 'wallet'
    ON CONFLICT DO NOTHING;

-- A creator's blocks: a blocked user's gifts to any of the creator's streams are
-- refused. Adding or removing one bumps rules_version of the creator's live stream.
CREATE TABLE creator_blocks (
    creator_id  text NOT NULL,
    user_id     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (creator_id, user_id)
);

-- Every block, unblock, pause and resume, append-only, with the stream's last_seq
-- at that moment (taken under the stream row's lock, so it splits the stream's
-- gifts exactly into before and after). The audit replays it against the gifts.
CREATE TABLE moderation_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    creator_id  text NOT NULL,
    action      text NOT NULL CHECK (action IN ('block', 'unblock', 'pause', 'resume')),
    user_id     text,
    stream_id   bigint,
    stream_seq  bigint,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((action IN ('block', 'unblock')) = (user_id IS NOT NULL)),
    CHECK ((stream_id IS NULL) = (stream_seq IS NULL))
);
CREATE INDEX moderation_log_stream ON moderation_log (stream_id, stream_seq);
CREATE TRIGGER moderation_log_append_only BEFORE UPDATE OR DELETE ON moderation_log
    FOR EACH ROW EXECUTE FUNCTION append_only();

-- Hidden paid messages. Gifts are append-only: hiding is a record of its own,
-- joined wherever a gift is read. The gift and its coins stay.
CREATE TABLE gift_hides (
    stream_id   bigint NOT NULL,
    seq         bigint NOT NULL,
    hidden_by   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, seq)
);
CREATE TRIGGER gift_hides_append_only BEFORE UPDATE OR DELETE ON gift_hides
    FOR EACH ROW EXECUTE FUNCTION append_only();

-- What the batch decided, stored with each gift (NULL where it does not apply).
ALTER TABLE gifts
    ADD COLUMN combo_id      text,
    ADD COLUMN combo_count   int CHECK (combo_count > 0),
    ADD COLUMN goal_id       bigint,
    ADD COLUMN goal_progress bigint,
    ADD COLUMN goal_target   bigint,
    ADD COLUMN goal_reached  boolean,
    ADD COLUMN message       text CHECK (length(message) BETWEEN 1 AND 200),
    ADD COLUMN pinned_until  timestamptz,
    ADD CONSTRAINT gifts_goal_fields CHECK ((goal_id IS NULL) = (goal_reached IS NULL)
                                            AND (goal_id IS NULL) = (goal_progress IS NULL)),
    ADD CONSTRAINT gifts_pin_needs_message CHECK (pinned_until IS NULL OR message IS NOT NULL);
-- Exactly one gift reaches a goal, whatever races: the store says so.
CREATE UNIQUE INDEX gifts_goal_reached_once ON gifts (goal_id) WHERE goal_reached;
-- GET /pinned: the stream's messages pinned now.
CREATE INDEX gifts_pinned ON gifts (stream_id, pinned_until) WHERE pinned_until IS NOT NULL;
