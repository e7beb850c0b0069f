-- Refunds and disputes held to the ledger's standard, and cash only in a
-- currency the ledger books.
--
-- Each refund or dispute event now records what it returned: cash_back (minor
-- units of the purchase's currency going back to the buyer: the event's amount)
-- and coins_back (coins it took from the wallet). After returns totalling R of
-- a pack of c coins sold for p, exactly ceil(c * R / p) coins have been taken
-- back (wallet.payments). seq orders a purchase's events as they arrived
-- (never by their text ids, whose order depends on the collation).

ALTER TABLE payment_events
    ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY,
    ADD COLUMN cash_back bigint CHECK (cash_back > 0),
    ADD COLUMN coins_back bigint CHECK (coins_back >= 0);

-- Before this migration a refund or dispute returned the whole price, whatever
-- its amount said: taken back (all the coins, the receivable moved by the
-- price) or voided. Recorded as such, so that the history reads as it was booked.
UPDATE payment_events e
   SET cash_back = p.price_amount,
       coins_back = CASE WHEN e.outcome = 'taken_back' THEN p.coins END
  FROM purchases p
 WHERE p.id = e.purchase_id AND e.outcome IN ('taken_back', 'voided');

-- Exactly the events that return money carry cash_back; only applied ones carry coins_back.
ALTER TABLE payment_events
    ADD CONSTRAINT payment_events_return_recorded CHECK (
        (cash_back IS NOT NULL) = (outcome IN ('taken_back', 'deferred', 'voided'))
        AND (coins_back IS NOT NULL) = (outcome = 'taken_back'));

CREATE INDEX payment_events_purchase_seq ON payment_events (purchase_id, seq);

-- The ledger books cash in USD only (accounts.asset): a pack priced in another
-- currency would be booked on the USD accounts. New packs in another currency
-- are refused here; an older one (NOT VALID leaves existing rows to the check
-- below) is hidden from the catalog and cannot be bought (wallet.service).
ALTER TABLE coin_packs ADD CONSTRAINT coin_packs_currency_booked CHECK (currency = 'USD') NOT VALID;
