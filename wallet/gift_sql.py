"""The gift batch's SQL: a lock statement, a read statement and a write statement, composed from the rules.

Owns: the text of the three statements, built once from ``wallet.rules.RULES``
(each rule's lock, read and write fragments and its gift-row columns), the
session function that runs the first two in one round trip, and the parameter
numbering. Runs nothing: ``wallet.gifts`` executes them.

The lock statement takes every lock, in this order, which is the lock order for
every writer, and returns the locked rows:
  1. ``s``: the batch's stream rows, locked by id;
  2. each rule's ``lock_sql`` rows (``l:<kind>``), in RULES order;
  3. ``a``: the account rows (sender wallets, creators' unsettled income), by id.
A rule's locked rows are read at the statement's snapshot, so a row inserted
while the statement waited for the stream rows (a new goal) would be missing;
every such change bumps ``rules_version`` under the stream lock. The staleness
guard compares the stream rows' ``rules_version`` read before the statement with
the one read once it holds every lock; where one moved, the lock statement runs
again (a ``v`` row first: the rows before it no longer count), with the stream
locks held.
The read statement runs next, in the same transaction, with every lock held: its
snapshot (READ COMMITTED takes one per statement) is taken after the last batch or
writer that held those rows committed, so what it reads is current for every row
those locks guard. It returns, without locks: prices (``p``), committed keys
(``e``), stored refusals (``r``), each rule's ``read_sql`` rows (``d:<kind>``,
which may name ``s``: the batch's stream rows, as of this snapshot) and the
transaction's clock (``n``).
Both run inside one call (``begin``) of a plpgsql function each lane connection
creates in its own ``pg_temp`` (``begin_ddl``): a VOLATILE function takes a new
snapshot for each statement, so the guarantees are those of two statements sent
one after the other, for one round trip instead of two or three.
Every arm has the same columns (k, id, t1, t2, n1, n2, n3, b, j); a rule's rows
travel as ``j`` (jsonb).

Parameters, for the rules' fragments too:
  $1 bigint[] stream ids, $2 text[] sender ids (distinct, sorted): the lock statement uses only these two;
  the read statement takes them and $3 text[] gift ids (distinct, sorted), then one per request:
  $4 text[] sender, $5 text[] idempotency key, $6 bigint[] stream, $7 text[] gift.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from wallet.rules.base import Rule

_PAD = "0::bigint, ''::text, ''::text, 0::bigint, 0::bigint, 0::bigint, false"

_STREAMS = """s AS (
    SELECT * FROM streams WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE
)"""
# The ids are computed once (an init plan) before any row is locked: when a lock
# wait ends, Postgres rechecks only "id = ANY(that array)", which the newer row
# version still passes. (A join or IN (subquery) here is rechecked against other
# relations and could drop a row it had waited for.)
_ACCOUNTS = """a AS (
    SELECT a.id, a.kind, a.owner, a.balance, a.version FROM accounts a
     WHERE a.id = ANY(ARRAY(SELECT w.id FROM accounts w
                             WHERE w.kind = 'wallet' AND w.asset = 'COIN' AND w.owner = ANY($2::text[])
                            UNION ALL SELECT creator_account FROM s))
     ORDER BY a.id FOR UPDATE
)"""
# The stream rows' columns every batch reads; ``j`` carries those the rules ask for (``stream_columns``).
_STREAM_ARM = ("SELECT 's' AS k, id, creator_id AS t1, ''::text AS t2, creator_account AS n1, last_seq AS n2,"
               " coins_received AS n3, status = 'live' AS b, {doc} AS j FROM s")
_ACCOUNT_ARM = "SELECT 'a', id, kind, owner, balance, version, 0::bigint, false, NULL::jsonb FROM a"
_PRICE_ARM = ("SELECT 'p' AS k, version::bigint AS id, id AS t1, name AS t2, coins AS n1, 0::bigint AS n2,"
              " 0::bigint AS n3, false AS b, NULL::jsonb AS j"
              " FROM gift_catalog_current WHERE id = ANY($3::text[]) AND active")
# unnest(...) JOIN gifts: a plan that stays good when asyncpg prepares it.
# A replay says whether the creator hid the gift's message since (gift_hides), as every read of gifts does.
_EXISTING_ARM = (f"SELECT 'e', {_PAD}, to_jsonb(g) || jsonb_build_object('message_hidden', EXISTS ("
                 "SELECT 1 FROM gift_hides h WHERE h.stream_id = g.stream_id AND h.seq = g.seq))"
                 " FROM unnest($4::text[], $5::text[]) AS u(s, k)"
                 " JOIN gifts g ON g.sender_id = u.s AND g.idempotency_key = u.k")
_REFUSED_ARM = (f"SELECT 'r', {_PAD}, to_jsonb(r) FROM unnest($4::text[], $5::text[]) AS u(s, k)"
                " JOIN gift_refusals r ON r.sender_id = u.s AND r.idempotency_key = u.k")
# The staleness guard: the batch's stream rows' rules_version, read before the lock
# statement (so at a snapshot no later than its own) and again once it holds every lock.
# Where they differ, a change to rule state committed while the lock statement waited for
# the stream rows, and a rule row it inserted (a new goal) may be missing from the
# statement's other locks. The function then emits a 'v' row (the batch forgets the rows
# before it) and runs the lock statement again: it holds the stream locks by then, so that
# run sees every such change. (rules_version only grows, so equal means unchanged.)
_VERSIONS = "SELECT array_agg(rules_version ORDER BY id) FROM streams WHERE id = ANY($1::bigint[])"
# One round trip for every read a batch makes before it decides. A VOLATILE plpgsql
# function takes a new snapshot for each statement (READ COMMITTED), so the read
# statement's snapshot is taken after the lock statement returned, with every lock held,
# exactly as if it were sent on its own. It lives in the session's pg_temp schema, named by
# a hash of its text: nothing to migrate, and processes with other rules never collide.
# (It takes the read statement's parameters; the lock statement uses $1 and $2 of them.)
_BEGIN = """CREATE OR REPLACE FUNCTION pg_temp.{name}(bigint[], text[], text[], text[], text[], bigint[], text[])
RETURNS TABLE (k text, id bigint, t1 text, t2 text, n1 bigint, n2 bigint, n3 bigint, b boolean, j jsonb)
LANGUAGE plpgsql VOLATILE AS $gift_batch$
#variable_conflict use_column
DECLARE
    before bigint[];
BEGIN
    before := ({versions});
    RETURN QUERY {lock};
    IF ({versions}) IS DISTINCT FROM before THEN
        RETURN QUERY SELECT 'v'::text, {pad}, NULL::jsonb;
        RETURN QUERY {lock};
    END IF;
    RETURN QUERY {read};
END
$gift_batch$"""
_PLAIN_STREAMS = """s AS (
    SELECT * FROM streams WHERE id = ANY($1::bigint[])
)"""
# The clock every gift of the batch is stamped with: the transaction's now() (only
# tests move it, through gifting_now(), see migrations/0008); $6 and $7 are named here so the
# statement always takes all seven parameters, whichever rules use them.
_NOW_ARM = ("SELECT 'n', cardinality($2::text[])::bigint + cardinality($6::bigint[]) + cardinality($7::text[]),"
            " ''::text, ''::text,"
            " 0::bigint, 0::bigint, 0::bigint, false, to_jsonb(gifting_now())")

BASE_GIFT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("stream_id", "bigint"), ("seq", "bigint"), ("sender_id", "text"), ("sender_name", "text"),
    ("sender_account", "bigint"), ("creator_account", "bigint"), ("gift_id", "text"), ("gift_version", "int"),
    ("gift_name", "text"), ("unit_coins", "bigint"), ("count", "int"), ("coins", "bigint"),
    ("balance_after", "bigint"), ("idempotency_key", "text"), ("request_hash", "text"),
)
REFUSAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sender_id", "text"), ("idempotency_key", "text"), ("request_hash", "text"), ("stream_id", "bigint"),
    ("code", "text"), ("message", "text"), ("details", "jsonb"),
)

_PLACEHOLDER = re.compile(r"\{(\d+)\}")


@dataclass(frozen=True)
class GiftSql:
    lock: str
    read: str
    write: str
    rule_columns: tuple[tuple[str, str], ...]  # every rule's gift columns, in RULES order
    rule_params: tuple[int, ...]  # how many placeholders each rule's write_sql takes
    begin_ddl: str  # creates the session's function that runs the lock and read statements in one call
    begin: str  # calls it, with the read statement's seven parameters


def _renumber(sql: str, first: int) -> tuple[str, int]:
    """Rewrites {0}, {1}, ... as $first, $first+1, ...; returns the text and how many it took."""
    used = {int(m) for m in _PLACEHOLDER.findall(sql)}
    if used != set(range(len(used))):
        raise ValueError(f"write_sql placeholders must be {{0}}..{{n}} without gaps: {sorted(used)}")
    return _PLACEHOLDER.sub(lambda m: f"${first + int(m.group(1))}", sql), len(used)


def compose(rules: tuple[Rule, ...]) -> GiftSql:
    kinds = [r.kind for r in rules]
    if len(set(kinds)) != len(kinds) or not all(re.fullmatch(r"[a-z_]+", k) for k in kinds):
        raise ValueError(f"rule kinds must be unique snake_case names: {kinds}")
    wanted = sorted({c for r in rules for c in r.stream_columns})
    if not all(re.fullmatch(r"[a-z_]+", c) for c in wanted):
        raise ValueError(f"stream_columns must be column names: {wanted}")
    doc = ("jsonb_build_object(" + ", ".join(f"'{c}', s.{c}" for c in wanted) + ")") if wanted else "NULL::jsonb"
    ctes = [_STREAMS]
    arms = [_STREAM_ARM.format(doc=doc)]
    for r in rules:
        if r.lock_sql:
            if re.search(r"\$[3-9]", r.lock_sql):
                raise ValueError(f"rule {r.kind}: lock_sql may use only $1 and $2")
            ctes.append(f"l_{r.kind} AS (\n    {r.lock_sql}\n)")
            arms.append(f"SELECT 'l:{r.kind}', {_PAD}, to_jsonb(x) FROM l_{r.kind} x")
    ctes.append(_ACCOUNTS)
    arms.append(_ACCOUNT_ARM)
    lock = "WITH " + ",\n".join(ctes) + "\n" + "\nUNION ALL\n".join(arms)
    arms = [_PRICE_ARM, _EXISTING_ARM, _REFUSED_ARM]
    for r in rules:
        if r.read_sql:
            arms.append(f"SELECT 'd:{r.kind}', {_PAD}, to_jsonb(x) FROM (\n    {r.read_sql}\n) x")
    arms.append(_NOW_ARM)
    read = "WITH " + _PLAIN_STREAMS + "\n" + "\nUNION ALL\n".join(arms)
    begin_name = "gift_batch_begin_" + hashlib.sha256((lock + read).encode()).hexdigest()[:16]
    begin = _BEGIN.format(name=begin_name, lock=lock, read=read, versions=_VERSIONS, pad=_PAD)

    rule_columns = tuple(col for r in rules for col in r.gift_columns)
    gift_cols = BASE_GIFT_COLUMNS + rule_columns
    n = 0

    def params(columns: tuple[tuple[str, str], ...]) -> str:
        return ", ".join(param_list(columns))

    def param_list(columns: tuple[tuple[str, str], ...]) -> list[str]:
        nonlocal n
        out = []
        for _, pgtype in columns:
            n += 1
            out.append(f"${n}::{pgtype}[]")
        return out

    n += 1
    gift_rows = f"${n}::json"
    n += 1
    now = f"${n}::timestamptz"
    account_params = params((("id", "bigint"), ("delta", "bigint"), ("n", "bigint")))
    stream_params = params((("id", "bigint"), ("seq", "bigint"), ("coins", "bigint")))
    refusal_list = param_list(REFUSAL_COLUMNS)
    refusal_params, refusal_keys = ", ".join(refusal_list), ", ".join(refusal_list[:2])
    names = ", ".join(c for c, _ in gift_cols)
    write_ctes = [
        # The new gifts travel as one JSON array of objects keyed by column, read into the
        # table's own row type: encoded by orjson in one C call where ~30 arrays cost the
        # driver a type check per element (~6 µs of Python a gift, measured).
        f"""incoming AS MATERIALIZED (
    SELECT {names} FROM json_populate_recordset(NULL::gifts, {gift_rows})
)""",
        f"""ins AS (
    INSERT INTO gifts ({names}, created_at)
    SELECT {names}, {now} FROM incoming
    RETURNING 1
)""",
        f"""acc AS (
    UPDATE accounts a SET balance = a.balance + d.delta, version = a.version + d.n
      FROM unnest({account_params}) AS d(id, delta, n)
     WHERE a.id = d.id
    RETURNING a.id, a.kind, a.owner, a.balance, a.version
)""",
        f"""st AS (
    UPDATE streams s SET last_seq = u.seq, coins_received = s.coins_received + u.coins
      FROM unnest({stream_params}) AS u(id, seq, coins)
     WHERE s.id = u.id
    RETURNING s.id, s.coins_received
)""",
        f"""ref AS (
    INSERT INTO gift_refusals ({", ".join(c for c, _ in REFUSAL_COLUMNS)}, created_at)
    SELECT u.*, {now} FROM unnest({refusal_params}) AS u
    RETURNING 1
)""",
        # This statement's snapshot is taken with every lock held: it sees each batch that
        # wrote these senders' keys. A key may have a gift or a refusal, never both.
        f"""taken AS (
    SELECT gift_key_taken(count(*)) AS n FROM (
        SELECT 1 FROM unnest({refusal_keys}) AS u(s, k)
          JOIN gifts g ON g.sender_id = u.s AND g.idempotency_key = u.k
        UNION ALL
        SELECT 1 FROM incoming u
          JOIN gift_refusals r ON r.sender_id = u.sender_id AND r.idempotency_key = u.idempotency_key
    ) both_kinds
)""",
    ]
    counts = []
    for r in rules:
        if r.write_sql:
            text, used = _renumber(r.write_sql, n + 1)
            n += used
            write_ctes.append(f"w_{r.kind} AS (\n    {text}\n)")
            counts.append(used)
        else:
            counts.append(0)
    write = ("WITH " + ",\n".join(write_ctes) + """
SELECT 'a' AS what, id, kind, owner, balance, version FROM acc
UNION ALL SELECT 's', id, '', '', coins_received, 0 FROM st
UNION ALL SELECT 'g', count(*), '', '', 0, 0 FROM ins
UNION ALL SELECT 'r', count(*), '', '', 0, 0 FROM ref
UNION ALL SELECT 'k', n, '', '', 0, 0 FROM taken""")
    return GiftSql(lock=lock, read=read, write=write, rule_columns=rule_columns, rule_params=tuple(counts),
                   begin_ddl=begin, begin=f"SELECT * FROM pg_temp.{begin_name}($1, $2, $3, $4, $5, $6, $7)")
