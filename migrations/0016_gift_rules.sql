-- The gift-path rules (wallet/rules). Two things every rule relies on:
--
-- streams.rules_version: every change to rule state made outside a gift batch
-- (a goal set, a block, a pause, a battle starting or ending) bumps it on the
-- affected streams, in the same transaction and under the stream row's lock.
-- A batch whose read waited for that lock sees the bump and reads again, so it
-- never decides on a snapshot older than the change it waited for.
--
-- gift_refusals: a gift refused inside a batch (funds, not live, a rule) is
-- stored with that batch, so a retry of the same key gets the same answer
-- instead of a different outcome later (a request that began executing keeps
-- its result). Append-only; one outcome per (sender, key) across gifts and
-- refusals is held by the batch's lock on the sender's wallet and the batch's
-- re-read (see wallet/gifts.py).

ALTER TABLE streams ADD COLUMN IF NOT EXISTS rules_version bigint NOT NULL DEFAULT 0;

CREATE TABLE gift_refusals (
    sender_id        text NOT NULL,
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    request_hash     text NOT NULL,
    stream_id        bigint NOT NULL,
    code             text NOT NULL,
    message          text NOT NULL,
    details          jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sender_id, idempotency_key)
);

CREATE TRIGGER gift_refusals_append_only BEFORE UPDATE OR DELETE ON gift_refusals
    FOR EACH ROW EXECUTE FUNCTION append_only();
CREATE TRIGGER gift_refusals_no_truncate BEFORE TRUNCATE ON gift_refusals
    FOR EACH STATEMENT EXECUTE FUNCTION append_only();
