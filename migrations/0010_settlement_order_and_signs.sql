-- Settlement: lines chained by an explicit number, and the ledger signs of
-- docs/ledger.md.
--
-- 1. A creator whose agency changed inside a run gets one line per agency, and
--    the creator's and platform's sub-cent remainders are chained through those
--    lines in the agencies' code-point order. The next run read the "last" line
--    back in the database collation's order, which on a database created with
--    another locale is not that order: a remainder was lost or counted twice.
--    Each line now stores its place in the chain; older lines keep none and are
--    read in code-point order (agency_id COLLATE "C"), the order they were
--    chained in.
ALTER TABLE settlement_lines ADD COLUMN line_no int;
ALTER TABLE settlement_lines
    ADD CONSTRAINT settlement_lines_numbered CHECK (line_no IS NOT NULL AND line_no > 0) NOT VALID;
CREATE UNIQUE INDEX settlement_lines_run_line ON settlement_lines (run_id, creator_id, line_no);
CREATE INDEX settlement_lines_creator_chain
    ON settlement_lines (creator_id, run_id DESC, line_no DESC NULLS LAST, agency_id COLLATE "C" DESC);
DROP INDEX settlement_lines_creator;

-- 2. Settlement booked coin_sales (deferred revenue, negative) with a minus, so
--    the deferred revenue grew as coins were earned, and the payables, the
--    platform's revenue and the cash paid out with the opposite of the ledger's
--    convention. From now on a run posts coin_sales +gross, each payable and
--    platform_revenue -share, and a payout payable +amount, cash_paid_out -total.
--    The ledger is append-only: the runs and payouts already posted are not
--    edited. One correcting transaction (kind adjustment) moves each USD account
--    they touched by minus twice what they moved there, so every balance is what
--    the convention gives; the audit reads the transactions before it with their
--    signs flipped (wallet/settlement_audit.py). Nothing is posted when nothing
--    was settled or paid before.
WITH moved AS (
    SELECT e.account_id, sum(e.amount)::bigint AS amount
      FROM ledger_entries e JOIN ledger_txns t ON t.id = e.txn_id
     WHERE t.kind IN ('settlement', 'payout') AND e.asset = 'USD'
     GROUP BY e.account_id HAVING sum(e.amount) <> 0
), txn AS (
    INSERT INTO ledger_txns (kind, cause, ref)
    SELECT 'adjustment', 'correction:0010:settlement-sign', '0010'
     WHERE EXISTS (SELECT 1 FROM moved)
    RETURNING id, created_at
), applied AS (
    UPDATE accounts a
       SET balance = a.balance - 2 * m.amount, version = a.version + 1
      FROM moved m, txn
     WHERE a.id = m.account_id
    RETURNING a.id, a.asset, a.balance, -2 * m.amount AS amount
)
INSERT INTO ledger_entries (txn_id, account_id, asset, amount, balance_after, created_at)
SELECT txn.id, applied.id, applied.asset, applied.amount, applied.balance, txn.created_at
  FROM txn, applied;
