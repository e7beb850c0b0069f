-- The per-row foreign key from gifts to streams cost ~80 µs a row (a row lock
-- on the stream per gift: most of a batch insert's time). It is replaced by one
-- set-based check per INSERT statement that also checks what the key never did:
-- the sender's account is that sender's wallet and the creator's account is the
-- stream's creator's unsettled income. Streams are never deleted, so the check
-- at insert is all a foreign key gave.

ALTER TABLE gifts DROP CONSTRAINT gifts_stream_id_fkey;

CREATE FUNCTION gifts_reference_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad record;
BEGIN
    SELECT n.stream_id, n.seq INTO bad
      FROM new_gifts n
      LEFT JOIN streams s ON s.id = n.stream_id
      LEFT JOIN accounts w ON w.id = n.sender_account
      LEFT JOIN accounts c ON c.id = n.creator_account
     WHERE s.id IS NULL OR s.creator_account <> n.creator_account
        OR w.kind IS DISTINCT FROM 'wallet' OR w.owner IS DISTINCT FROM n.sender_id
        OR c.kind IS DISTINCT FROM 'creator_unsettled'
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'gift %/% references a stream or account that does not match', bad.stream_id, bad.seq
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER gifts_reference_check AFTER INSERT ON gifts
    REFERENCING NEW TABLE AS new_gifts FOR EACH STATEMENT
    EXECUTE FUNCTION gifts_reference_check();

CREATE FUNCTION no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER streams_no_delete BEFORE DELETE ON streams FOR EACH ROW EXECUTE FUNCTION no_delete();
CREATE TRIGGER streams_no_truncate BEFORE TRUNCATE ON streams FOR EACH STATEMENT EXECUTE FUNCTION no_delete();
CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts FOR EACH ROW EXECUTE FUNCTION no_delete();
CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON accounts FOR EACH STATEMENT EXECUTE FUNCTION no_delete();
