-- The coin ledger: accounts, double-entry transactions, the catalog, purchases
-- and payment events. Money is bigint everywhere: coins, or cash in minor units.

CREATE TABLE accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- wallet:              a user's coins (may go negative only through a chargeback)
    -- creator_unsettled:   coins gifted to a creator, not settled yet
    -- creator_payable, agency_payable: cash owed after settlement
    -- platform_revenue:    the platform's share of settled gifts (cash)
    -- coins_issued:        the source of every coin sold (negative: coins outstanding)
    -- coins_settled:       coins retired by settlement
    -- coin_sales:          cash received for coins (deferred revenue, negative)
    -- provider_receivable: cash the payment provider holds for us
    -- chargeback_losses:   cash lost to refunds/disputes of coins already spent
    -- cash_paid_out:       cash sent to creators and agencies
    kind        text NOT NULL CHECK (kind IN (
                    'wallet', 'creator_unsettled', 'creator_payable', 'agency_payable',
                    'platform_revenue', 'coins_issued', 'coins_settled', 'coin_sales',
                    'provider_receivable', 'chargeback_losses', 'cash_paid_out')),
    owner       text NOT NULL DEFAULT '',
    asset       text NOT NULL CHECK (asset IN ('COIN', 'USD')),
    balance     bigint NOT NULL DEFAULT 0,
    -- bumped on every balance change: lets caches apply "newer wins" idempotently
    version     bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, owner, asset),
    CHECK (kind IN ('wallet', 'creator_unsettled', 'creator_payable', 'agency_payable')
           = (owner <> ''))
);

-- A ledger transaction: one business event (a purchase credited, a refund, a
-- settlement, a payout). Its cause is unique: no cause can have two effects.
CREATE TABLE ledger_txns (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN (
                    'purchase', 'refund', 'dispute', 'settlement', 'payout', 'adjustment')),
    cause       text NOT NULL UNIQUE,
    ref         text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_entries (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txn_id        bigint NOT NULL REFERENCES ledger_txns (id),
    account_id    bigint NOT NULL REFERENCES accounts (id),
    asset         text NOT NULL CHECK (asset IN ('COIN', 'USD')),
    amount        bigint NOT NULL CHECK (amount <> 0),
    balance_after bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, created_at DESC, id DESC);
CREATE INDEX ledger_entries_txn ON ledger_entries (txn_id);

-- A transaction's entries are posted by one INSERT statement and must sum to
-- zero per asset; the statement trigger sees them all at once (no per-row query).
CREATE FUNCTION ledger_entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad record;
BEGIN
    SELECT n.txn_id, n.asset, sum(n.amount) AS total INTO bad
      FROM new_entries n GROUP BY n.txn_id, n.asset HAVING sum(n.amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced in %: %', bad.txn_id, bad.asset, bad.total
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT n.txn_id, n.asset, 0 AS total INTO bad
      FROM new_entries n JOIN accounts a ON a.id = n.account_id WHERE a.asset <> n.asset LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % posts % to an account of another asset', bad.txn_id, bad.asset
            USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM ledger_entries e
                WHERE e.txn_id IN (SELECT DISTINCT txn_id FROM new_entries)
                  AND e.id NOT IN (SELECT id FROM new_entries)) THEN
        RAISE EXCEPTION 'a ledger transaction is posted in one statement'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT
    EXECUTE FUNCTION ledger_entries_balanced();

-- Append-only: the books are never edited, only added to.
CREATE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION append_only();
CREATE TRIGGER ledger_txns_append_only BEFORE UPDATE OR DELETE ON ledger_txns
    FOR EACH ROW EXECUTE FUNCTION append_only();
CREATE TRIGGER ledger_txns_no_truncate BEFORE TRUNCATE ON ledger_txns
    FOR EACH STATEMENT EXECUTE FUNCTION append_only();

-- Platform accounts exist from the start.
INSERT INTO accounts (kind, asset) VALUES
    ('coins_issued', 'COIN'), ('coins_settled', 'COIN'),
    ('coin_sales', 'USD'), ('provider_receivable', 'USD'), ('platform_revenue', 'USD'),
    ('chargeback_losses', 'USD'), ('cash_paid_out', 'USD');

-- Catalog, versioned: a new price is a new version; history keeps the version it used.
CREATE TABLE coin_packs (
    id            text NOT NULL,
    version       int NOT NULL CHECK (version > 0),
    coins         bigint NOT NULL CHECK (coins > 0),
    price_amount  bigint NOT NULL CHECK (price_amount > 0),
    currency      text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    active        boolean NOT NULL DEFAULT true,
    sort_order    int NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, version)
);

CREATE TABLE gift_catalog (
    id          text NOT NULL,
    version     int NOT NULL CHECK (version > 0),
    name        text NOT NULL,
    coins       bigint NOT NULL CHECK (coins > 0),
    tier        int NOT NULL CHECK (tier BETWEEN 1 AND 10),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, version)
);

-- The version in force is the newest one; an inactive newest version retires the item.
CREATE VIEW coin_packs_current AS
    SELECT DISTINCT ON (id) * FROM coin_packs ORDER BY id, version DESC;
CREATE VIEW gift_catalog_current AS
    SELECT DISTINCT ON (id) * FROM gift_catalog ORDER BY id, version DESC;

-- TikTok-like defaults: 70 coins for $0.74 up to packs of thousands.
INSERT INTO coin_packs (id, version, coins, price_amount, currency, sort_order) VALUES
    ('coins_70', 1, 70, 74, 'USD', 1),
    ('coins_350', 1, 350, 370, 'USD', 2),
    ('coins_700', 1, 700, 740, 'USD', 3),
    ('coins_1400', 1, 1400, 1480, 'USD', 4),
    ('coins_3500', 1, 3500, 3700, 'USD', 5),
    ('coins_7000', 1, 7000, 7400, 'USD', 6),
    ('coins_17500', 1, 17500, 18500, 'USD', 7);

-- Gifts from 1 coin to tens of thousands.
INSERT INTO gift_catalog (id, version, name, coins, tier) VALUES
    ('rose', 1, 'Rose', 1, 1),
    ('heart', 1, 'Heart', 5, 1),
    ('donut', 1, 'Donut', 30, 2),
    ('hat', 1, 'Hat and Mustache', 99, 2),
    ('confetti', 1, 'Confetti', 100, 3),
    ('sunglasses', 1, 'Sunglasses', 199, 3),
    ('corgi', 1, 'Corgi', 299, 4),
    ('money_gun', 1, 'Money Gun', 500, 5),
    ('galaxy', 1, 'Galaxy', 1000, 6),
    ('whale', 1, 'Whale Diving', 2150, 7),
    ('lion', 1, 'Lion', 29999, 9),
    ('universe', 1, 'TikTok Universe', 44999, 10);

CREATE TABLE purchases (
    id               text PRIMARY KEY,
    user_id          text NOT NULL,
    pack_id          text NOT NULL,
    pack_version     int NOT NULL,
    coins            bigint NOT NULL CHECK (coins > 0),
    price_amount     bigint NOT NULL CHECK (price_amount > 0),
    currency         text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'succeeded', 'failed', 'refunded', 'disputed')),
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    request_hash     text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key),
    FOREIGN KEY (pack_id, pack_version) REFERENCES coin_packs (id, version)
);

-- Each provider event id takes effect at most once: the primary key says so.
CREATE TABLE payment_events (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    purchase_id  text NOT NULL REFERENCES purchases (id),
    amount       bigint NOT NULL,
    currency     text NOT NULL,
    outcome      text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_events_purchase ON payment_events (purchase_id);
