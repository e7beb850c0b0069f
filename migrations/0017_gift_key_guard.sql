-- One outcome per (sender, idempotency key) across gifts and stored refusals.
-- Each table's own unique key stops a second gift or a second refusal; the gift
-- batch's write statement (whose snapshot is taken after it holds every lock)
-- counts the keys it writes that the other table already holds and calls this,
-- so a gift and a refusal for one key can never both commit. The error is a
-- unique violation, which the batch answers by deciding again (and replaying).
-- (This replaces the re-read on a moved sender wallet that 0016's comment
-- describes: that re-read ran for most batches under load; this check costs
-- one index probe per key and only in the write.)

CREATE FUNCTION gift_key_taken(n bigint) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    IF n > 0 THEN
        RAISE EXCEPTION '% idempotency key(s) of this batch already have an outcome', n
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN n;
END $$;
