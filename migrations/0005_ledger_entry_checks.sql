-- Per-row foreign keys on ledger_entries cost ~5 µs a row (~105 ms of a
-- settlement posting 20,000 legs). Entries are posted one statement per
-- transaction already, and a statement trigger checks each statement's
-- entries; it now also checks that every entry's transaction and account
-- exist. Accounts and ledger transactions are never deleted (triggers refuse),
-- so the check at insert is all the foreign keys gave.

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_txn_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_account_id_fkey;

CREATE OR REPLACE FUNCTION ledger_entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad record;
BEGIN
    SELECT n.txn_id, n.asset, sum(n.amount) AS total INTO bad
      FROM new_entries n GROUP BY n.txn_id, n.asset HAVING sum(n.amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced in %: %', bad.txn_id, bad.asset, bad.total
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT n.txn_id, n.account_id, n.asset, a.id AS found INTO bad
      FROM new_entries n LEFT JOIN accounts a ON a.id = n.account_id
     WHERE a.id IS NULL OR a.asset <> n.asset LIMIT 1;
    IF FOUND THEN
        IF bad.found IS NULL THEN
            RAISE EXCEPTION 'ledger transaction % posts to account %, which does not exist', bad.txn_id, bad.account_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RAISE EXCEPTION 'ledger transaction % posts % to an account of another asset', bad.txn_id, bad.asset
            USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT txn_id FROM new_entries) n
                LEFT JOIN ledger_txns t ON t.id = n.txn_id WHERE t.id IS NULL) THEN
        RAISE EXCEPTION 'a ledger entry names a transaction that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM ledger_entries e
                WHERE e.txn_id IN (SELECT DISTINCT txn_id FROM new_entries)
                  AND e.id NOT IN (SELECT id FROM new_entries)) THEN
        RAISE EXCEPTION 'a ledger transaction is posted in one statement'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
