-- Responsible spending: each user's own gift limits, their spending counters
-- and their self-exclusion, in ONE row per user that the gift batch locks
-- (FOR UPDATE) and updates in the same transaction as the gifts it counts.
-- The row is created with the user's wallet (a trigger) and backfilled here for
-- every wallet that exists, so it is there before any gift can depend on it:
-- a row a batch cannot see in its snapshot could not be locked.

-- THE clock of spending windows and of every gift's created_at. It is now() (the
-- transaction's start) unless the session sets gifting.now: only the tests do,
-- to put a batch at 23:59:59.9 and the next at 00:00:00.1 without sleeping. The
-- service never sets it.
CREATE FUNCTION gifting_now() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('gifting.now', true), '')::timestamptz, now())
$$;
-- The same, but the wall clock at the moment of the call (after a lock wait):
-- when a self-exclusion begins.
CREATE FUNCTION gifting_clock() RETURNS timestamptz LANGUAGE sql VOLATILE AS $$
    SELECT coalesce(nullif(current_setting('gifting.now', true), '')::timestamptz, clock_timestamp())
$$;

CREATE TABLE spending (
    user_id              text PRIMARY KEY,
    -- the user's own limits in force (null: none); platform caps come from the
    -- environment and are applied on top
    daily_coins          bigint CHECK (daily_coins >= 0),
    weekly_coins         bigint CHECK (weekly_coins >= 0),
    -- a raise or a removal waiting out its cooling-off: in force from *_pending_at
    -- (*_pending null with a time: the limit is removed then)
    daily_pending        bigint CHECK (daily_pending >= 0),
    daily_pending_at     timestamptz,
    weekly_pending       bigint CHECK (weekly_pending >= 0),
    weekly_pending_at    timestamptz,
    self_excluded_until  timestamptz,
    -- gift coins spent in the UTC day day_start (and the day before it), in the
    -- week that starts on Monday week_start (and the week before it). The day
    -- before is kept for a batch whose transaction began before midnight and got
    -- the row after a batch of the new day.
    day_start            date NOT NULL DEFAULT '2000-01-01',
    day_spent            bigint NOT NULL DEFAULT 0 CHECK (day_spent >= 0),
    prev_day_spent       bigint NOT NULL DEFAULT 0 CHECK (prev_day_spent >= 0),
    week_start           date NOT NULL DEFAULT '2000-01-03' CHECK (extract(isodow FROM week_start) = 1),
    week_spent           bigint NOT NULL DEFAULT 0 CHECK (week_spent >= 0),
    prev_week_spent      bigint NOT NULL DEFAULT 0 CHECK (prev_week_spent >= 0),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (daily_pending IS NULL OR daily_pending_at IS NOT NULL),
    CHECK (weekly_pending IS NULL OR weekly_pending_at IS NOT NULL)
-- Every batch rewrites its senders' rows: room on each page keeps those updates
-- HOT (no new index entry, less WAL).
) WITH (fillfactor = 70);

-- A self-exclusion is never shortened or lifted, by anyone: the store refuses it.
CREATE FUNCTION spending_exclusion_never_shortened() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.self_excluded_until IS NOT NULL
       AND (NEW.self_excluded_until IS NULL OR NEW.self_excluded_until < OLD.self_excluded_until) THEN
        RAISE EXCEPTION 'a self-exclusion of % is never shortened', OLD.user_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER spending_exclusion_never_shortened BEFORE UPDATE ON spending FOR EACH ROW
    WHEN (NEW.self_excluded_until IS DISTINCT FROM OLD.self_excluded_until)
    EXECUTE FUNCTION spending_exclusion_never_shortened();
CREATE TRIGGER spending_no_delete BEFORE DELETE ON spending FOR EACH ROW EXECUTE FUNCTION no_delete();
CREATE TRIGGER spending_no_truncate BEFORE TRUNCATE ON spending FOR EACH STATEMENT EXECUTE FUNCTION no_delete();

-- Every self-exclusion as it was asked for, append-only: the audit checks that
-- no gift or purchase was committed inside one.
CREATE TABLE self_exclusions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     text NOT NULL,
    starts_at   timestamptz NOT NULL,
    until       timestamptz NOT NULL CHECK (until > starts_at),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX self_exclusions_user ON self_exclusions (user_id, until DESC);
CREATE TRIGGER self_exclusions_append_only BEFORE UPDATE OR DELETE ON self_exclusions
    FOR EACH ROW EXECUTE FUNCTION append_only();
CREATE TRIGGER self_exclusions_no_truncate BEFORE TRUNCATE ON self_exclusions
    FOR EACH STATEMENT EXECUTE FUNCTION append_only();

-- Every change of a user's limits, append-only (what support and the audit read).
CREATE TABLE spending_limit_changes (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id            text NOT NULL,
    at                 timestamptz NOT NULL,
    daily_coins        bigint,
    weekly_coins       bigint,
    daily_pending      bigint,
    daily_pending_at   timestamptz,
    weekly_pending     bigint,
    weekly_pending_at  timestamptz
);
CREATE INDEX spending_limit_changes_user ON spending_limit_changes (user_id, at DESC);
CREATE TRIGGER spending_limit_changes_append_only BEFORE UPDATE OR DELETE ON spending_limit_changes
    FOR EACH ROW EXECUTE FUNCTION append_only();
CREATE TRIGGER spending_limit_changes_no_truncate BEFORE TRUNCATE ON spending_limit_changes
    FOR EACH STATEMENT EXECUTE FUNCTION append_only();

-- What each gift was checked against, stored with it: the limits in force at its
-- commit (user's and platform's, the lower; null: none) and the day's and week's
-- spending right after it. The audit proves from these that no window passed
-- its limit and that the counters ran over exactly the window's gifts.
ALTER TABLE gifts ADD COLUMN spend_daily_limit bigint, ADD COLUMN spend_weekly_limit bigint,
                  ADD COLUMN spend_day_total bigint, ADD COLUMN spend_week_total bigint;

-- The row comes with the wallet, in the same transaction.
CREATE FUNCTION spending_row_for_wallet() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO spending (user_id) VALUES (NEW.owner) ON CONFLICT (user_id) DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER accounts_spending_row AFTER INSERT ON accounts FOR EACH ROW
    WHEN (NEW.kind = 'wallet') EXECUTE FUNCTION spending_row_for_wallet();

-- Backfill: a row for every wallet, its counters from the gifts already made.
WITH today AS (
    SELECT (now() AT TIME ZONE 'UTC')::date AS d,
           date_trunc('week', now() AT TIME ZONE 'UTC')::date AS w
)
INSERT INTO spending (user_id, day_start, day_spent, prev_day_spent, week_start, week_spent, prev_week_spent)
SELECT a.owner, t.d,
       coalesce((SELECT sum(g.coins) FROM gifts g WHERE g.sender_id = a.owner
                  AND (g.created_at AT TIME ZONE 'UTC')::date = t.d), 0),
       coalesce((SELECT sum(g.coins) FROM gifts g WHERE g.sender_id = a.owner
                  AND (g.created_at AT TIME ZONE 'UTC')::date = t.d - 1), 0),
       t.w,
       coalesce((SELECT sum(g.coins) FROM gifts g WHERE g.sender_id = a.owner
                  AND date_trunc('week', g.created_at AT TIME ZONE 'UTC')::date = t.w), 0),
       coalesce((SELECT sum(g.coins) FROM gifts g WHERE g.sender_id = a.owner
                  AND date_trunc('week', g.created_at AT TIME ZONE 'UTC')::date = t.w - 7), 0)
  FROM accounts a CROSS JOIN today t
 WHERE a.kind = 'wallet'
ON CONFLICT (user_id) DO NOTHING;
