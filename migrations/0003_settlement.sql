-- Settlement: split policies, settlement runs and lines, payout batches.
-- Append-only like the ledger: a run, a line, a policy or a payout is never
-- edited; a new policy supersedes an older one from its effective date on.

-- Split policy per creator, effective-dated. The policy for a gift is the one
-- with the greatest effective_from <= the gift's created_at (ties: newest id);
-- without one the default applies (creator 5,000 bps, no agency).
CREATE TABLE split_policies (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    creator_id      text NOT NULL,
    creator_bps     int NOT NULL CHECK (creator_bps BETWEEN 0 AND 10000),
    agency_id       text,
    agency_bps      int NOT NULL DEFAULT 0 CHECK (agency_bps BETWEEN 0 AND 10000),
    effective_from  timestamptz NOT NULL,
    created_by      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (creator_bps + agency_bps <= 10000),
    CHECK (agency_id IS NOT NULL OR agency_bps = 0),
    CHECK (agency_id IS NULL OR agency_id <> '')
);
CREATE INDEX split_policies_creator ON split_policies (creator_id, effective_from, id);

-- One row per settled cutoff, written in the same transaction as its lines and
-- its ledger transaction: a run either exists completely or not at all.
-- Its ledger transaction has cause 'settlement:<id>' and ref = the run id.
-- A run settles the gifts with created_at < cutoff AND xid < xid_horizon that
-- the previous run's rectangle did not hold (both bounds never decrease).
CREATE TABLE settlement_runs (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cutoff             timestamptz NOT NULL UNIQUE,
    xid_horizon        xid8 NOT NULL,
    prev_cutoff        timestamptz NOT NULL,
    prev_xid_horizon   xid8 NOT NULL,
    coin_value_micros  bigint NOT NULL CHECK (coin_value_micros > 0),
    currency           text NOT NULL DEFAULT 'USD',
    gifts              bigint NOT NULL,
    gross_coins        bigint NOT NULL,
    gross_cash         bigint NOT NULL,
    creator_cash       bigint NOT NULL,
    agency_cash        bigint NOT NULL,
    platform_cash      bigint NOT NULL,
    summary            jsonb NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (prev_cutoff <= cutoff AND prev_xid_horizon <= xid_horizon),
    CHECK (creator_cash + agency_cash + platform_cash = gross_cash)
);

-- One line per creator and agency per run (one per creator unless the agency
-- changed inside the run). Remainders are in 1e-8 of a minor unit (a cent):
-- for each party, carry_in + exact share = cash * 1e8 + carry_out.
CREATE TABLE settlement_lines (
    -- deferred: a run's row is written last, with its summary, in the same transaction
    run_id            bigint NOT NULL REFERENCES settlement_runs (id) DEFERRABLE INITIALLY DEFERRED,
    creator_id        text NOT NULL,
    agency_id         text NOT NULL DEFAULT '',
    gifts             bigint NOT NULL CHECK (gifts > 0),
    gross_coins       bigint NOT NULL CHECK (gross_coins > 0),
    -- exact shares of the gross, in 1e-8 cent (sum = gross_coins * coin value * 1e4)
    creator_exact     numeric NOT NULL,
    agency_exact      numeric NOT NULL,
    platform_exact    numeric NOT NULL,
    creator_cash      bigint NOT NULL CHECK (creator_cash >= 0),
    agency_cash       bigint NOT NULL CHECK (agency_cash >= 0),
    platform_cash     bigint NOT NULL CHECK (platform_cash >= 0),
    gross_cash        bigint NOT NULL,
    creator_carry_in  bigint NOT NULL, agency_carry_in  bigint NOT NULL, platform_carry_in  bigint NOT NULL,
    creator_carry_out bigint NOT NULL, agency_carry_out bigint NOT NULL, platform_carry_out bigint NOT NULL,
    PRIMARY KEY (run_id, creator_id, agency_id),
    CHECK (creator_cash + agency_cash + platform_cash = gross_cash),
    CHECK (agency_id <> '' OR (agency_cash = 0 AND agency_exact = 0))
);
CREATE INDEX settlement_lines_creator ON settlement_lines (creator_id, run_id DESC, agency_id DESC);

-- Scratch for a run (refilled under the settlement lock, read only by that run):
-- each creator's policy ranges. A regular table, unlike a temp table, lets the
-- run's aggregate scan gifts in parallel; unlogged, it writes no WAL.
CREATE UNLOGGED TABLE settlement_policy_ranges (
    account      bigint NOT NULL,
    seg          int NOT NULL,
    policy_id    bigint NOT NULL,
    valid_from   timestamptz NOT NULL,
    valid_until  timestamptz NOT NULL
);

-- Payouts: a batch key marks one list paid once (ledger cause 'payout:<key>').
CREATE TABLE payout_batches (
    key            text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 128),
    threshold      bigint NOT NULL,
    currency       text NOT NULL DEFAULT 'USD',
    items          int NOT NULL,
    total          bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payout_items (
    batch_key   text NOT NULL REFERENCES payout_batches (key),
    payee_kind  text NOT NULL CHECK (payee_kind IN ('creator', 'agency')),
    payee_id    text NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    PRIMARY KEY (batch_key, payee_kind, payee_id)
);
CREATE INDEX payout_items_payee ON payout_items (payee_kind, payee_id);

CREATE TRIGGER split_policies_append_only BEFORE UPDATE OR DELETE ON split_policies
    FOR EACH ROW EXECUTE FUNCTION append_only();
CREATE TRIGGER settlement_runs_append_only BEFORE UPDATE OR DELETE ON settlement_runs
    FOR EACH ROW EXECUTE FUNCTION append_only();
CREATE TRIGGER settlement_lines_append_only BEFORE UPDATE OR DELETE ON settlement_lines
    FOR EACH ROW EXECUTE FUNCTION append_only();
CREATE TRIGGER payout_batches_append_only BEFORE UPDATE OR DELETE ON payout_batches
    FOR EACH ROW EXECUTE FUNCTION append_only();
CREATE TRIGGER payout_items_append_only BEFORE UPDATE OR DELETE ON payout_items
    FOR EACH ROW EXECUTE FUNCTION append_only();
