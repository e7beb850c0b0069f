-- Battles (LIVE Match): two live creators, each side scored by the coins
-- gifted to its stream while the battle is live. The row is the state: every
-- transition is one conditional UPDATE on status (wallet.battles). Battles
-- move no money: every coin in them is an ordinary gift row, which carries
-- the battle it counted toward and its side's score after it.

CREATE TABLE battles (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    inviter_id       text NOT NULL,
    opponent_id      text NOT NULL,
    inviter_stream   bigint NOT NULL REFERENCES streams (id),
    opponent_stream  bigint NOT NULL REFERENCES streams (id),
    duration_s       int NOT NULL CHECK (duration_s BETWEEN 60 AND 900),
    status           text NOT NULL DEFAULT 'invited'
                     CHECK (status IN ('invited', 'live', 'ended', 'declined', 'cancelled', 'expired')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- an invitation not accepted by then is expired
    expires_at       timestamptz NOT NULL DEFAULT now() + interval '30 seconds',
    starts_at        timestamptz,
    ends_at          timestamptz,
    -- when the end (or the decline, cancel, expiry) was committed: ended_at - ends_at is the end lag
    closed_at        timestamptz,
    ended_reason     text CHECK (ended_reason IN ('time', 'stream_ended')),
    -- running scores, written by the gift batches that count toward a side
    -- (under the battle row's lock); at the end, set from the committed gifts
    inviter_score    bigint NOT NULL DEFAULT 0 CHECK (inviter_score >= 0),
    opponent_score   bigint NOT NULL DEFAULT 0 CHECK (opponent_score >= 0),
    winner_id        text,
    -- each stream's last_seq when the battle started (under the stream locks) and the
    -- seq of its last gift that counted: the gifts that counted are exactly (start, end]
    inviter_start_seq  bigint,
    opponent_start_seq bigint,
    inviter_end_seq    bigint,
    opponent_end_seq   bigint,
    -- top-3 gifters of each side, fixed at the end: [[{user_id, name, coins}], [...]]
    final_top        jsonb,
    -- bumped by every write: room messages carry it, and a gateway never shows an older one
    version          bigint NOT NULL DEFAULT 1,
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    request_hash     text NOT NULL,
    UNIQUE (inviter_id, idempotency_key),
    CHECK (inviter_id <> opponent_id),
    CHECK (inviter_stream <> opponent_stream),
    CHECK ((status IN ('live', 'ended')) = (starts_at IS NOT NULL)),
    CHECK (starts_at IS NULL OR ends_at = starts_at + make_interval(secs => duration_s)),
    CHECK ((status = 'ended') = (ended_reason IS NOT NULL)),
    CHECK ((status IN ('invited', 'live')) = (closed_at IS NULL))
);
-- At most one open battle per creator on each side; a creator being the inviter of
-- one and the opponent of another is refused under the stream row locks.
CREATE UNIQUE INDEX battles_open_inviter ON battles (inviter_id) WHERE status IN ('invited', 'live');
CREATE UNIQUE INDEX battles_open_opponent ON battles (opponent_id) WHERE status IN ('invited', 'live');
CREATE INDEX battles_live_ends ON battles (ends_at) WHERE status = 'live';
CREATE INDEX battles_invited_expires ON battles (expires_at) WHERE status = 'invited';
CREATE INDEX battles_recent ON battles (closed_at) WHERE status = 'ended';

CREATE TRIGGER battles_no_delete BEFORE DELETE ON battles FOR EACH ROW EXECUTE FUNCTION no_delete();

-- The live battle of a stream: set on both streams at the accept, cleared at the
-- end, both under the stream row locks a gift batch takes first.
ALTER TABLE streams ADD COLUMN battle_id bigint REFERENCES battles (id);
-- Bumped by any change made outside the gift batch to what a batch decides on
-- (the battle start and end here; goals, blocks, pauses elsewhere): a batch whose
-- snapshot is older than the stream row it locked reads again. Another migration
-- may add it as well.
ALTER TABLE streams ADD COLUMN IF NOT EXISTS rules_version bigint NOT NULL DEFAULT 0;

ALTER TABLE gifts ADD COLUMN battle_id bigint;
ALTER TABLE gifts ADD COLUMN battle_score bigint;
-- No index on gifts.battle_id: a battle's gifts are a run of each side's seq after its
-- start_seq, read through the primary key (stream_id, seq), so a counted gift costs the
-- gift path no extra index insert.
