-- A gift's combo follows from the latest gift before it of the same (stream,
-- sender, gift): that gift is the combo's state (wallet/rules/combo.py). The
-- batch finds it through this index, with its locks held, so the latest gift of
-- a stream it has locked is current. This replaces sender_combos, a per-sender
-- jsonb row that every batch locked and rewrote for each of its senders: measured
-- (bench/gifts.py, 64 concurrent) that rewrite cost ~19 us of Postgres CPU and
-- ~500 bytes of WAL per gift; the index costs ~1 us and ~60 bytes.
CREATE INDEX gifts_combo ON gifts (stream_id, sender_id, gift_id, seq);
DROP TRIGGER accounts_sender_combos ON accounts;
DROP FUNCTION sender_combos_for_wallet();
DROP TABLE sender_combos;
