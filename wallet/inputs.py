"""The boundary validator: every text and number that enters from outside passes here once.

Owns the rules for what the service accepts from a client, a token, the
payment provider or a query string, for the HTTP API and the WebSocket
gateway alike (``gifting.api`` and ``streams.protocol`` both call it; it lives
in ``wallet`` so that both may import it, and it imports nothing but the
wallet's error tree). Pure functions: no I/O, no clock (callers pass ``now``).

Must never: let a value through that a store cannot hold or a page cannot
show. Postgres ``text`` holds no NUL and no lone UTF-16 surrogate (asyncpg
cannot encode one: the whole statement, so the whole gift batch, fails);
``json.loads`` accepts ``"\\ud800"`` and Python strings hold it, so it is
looked for and refused here. A ``$`` in a pattern matches before a final
newline, so every pattern here is applied with ``re.fullmatch``.

The rules
---------
- JSON (``parse_json``): strict UTF-8 (no UTF-16/32 guessing), no ``NaN`` or
  ``Infinity``, no duplicate keys, no lone surrogate in any key or string,
  nesting bounded. Malformed: ``400 invalid_json``; a lone surrogate or a
  duplicate key: ``400 invalid_request``.
- Text: valid Unicode (no lone surrogates), no NUL, length in characters
  (code points). Text that is shown to people (names, titles, messages) also
  holds no C0 or C1 control character and no bidirectional override or
  isolate (``U+202A``-``U+202E``, ``U+2066``-``U+2069``), nor the line and
  paragraph separators ``U+2028``/``U+2029``; a zero-width joiner stays
  allowed (emoji sequences need it).
- Numbers: real JSON integers only (not ``true``, not ``2.0``, not ``"2"``);
  a query parameter is text and must be ASCII digits (``int()`` alone takes
  ``" 5"``, ``"1_0"`` and an Arabic-Indic five).
- A missing field or a value of the wrong type is ``400 invalid_request``
  (``malformed``: over WebSocket it counts towards the 1008 close); a value of
  the right type that is out of range is ``422`` with the field's own code
  (``invalid_count``, ``invalid_idempotency_key``, ``invalid_title``, …).
  ``count`` keeps the contract's ``422 invalid_count`` for any bad value, of
  any type, as v1 always answered.
- An id that cannot name anything (a stream id that is not a positive
  bigint, a creator id outside ``[A-Za-z0-9_-]{1,64}``) is the resource's
  ``404`` (``unknown_stream``, …): the HTTP API and the gateway (close 4404)
  say the same.

Validators (``field`` names the field in the error message)
-----------------------------------------------------------
v1: ``idempotency_key``, ``user_id``, ``stream_id``, ``catalog_id`` (gift and
pack ids), ``purchase_id``, ``event_id``, ``currency``, ``display_name``,
``stream_title``, ``count``, ``integer``, ``ref`` (WebSocket), ``query_int``,
``query_text``, ``since``, ``ledger_cursor``, ``settlement_cursor``,
``timestamp``, ``token`` (the compact JWT shape), ``token_name``, ``host`` (the
``Host`` header).

v2 (for the engagement and responsible-spending endpoints; call these, do not
re-check by hand):

- ``goal_title(v)``: 1-80 characters of display text -> ``422 invalid_goal``.
- ``goal_target(v)``: integer 1..1,000,000,000 -> ``422 invalid_goal``.
- ``paid_message(v)``: ``None`` stays ``None``; else trimmed, 1-200
  characters of display text -> ``422 invalid_message``. Returns the trimmed text.
- ``battle_duration(v)``: ``None`` is the default 300; else integer 60..900
  -> ``422 invalid_duration``.
- ``coin_limit(v, field)``: ``None`` (no limit) or integer 0..10**12 ->
  ``422 invalid_limit`` (used for ``daily_coins`` and ``weekly_coins``).
- ``until(v, now=)``: RFC 3339 with a zone, 1 day to 5 years after ``now``
  -> ``422 invalid_until``; returns an aware UTC ``datetime``.
- ``boolean(v, field)``: a JSON ``true``/``false`` (``paused``).

Every validator raises ``InvalidInput`` (a ``WalletError`` with this request's
status and code) or the resource's ``NotFound``; ``InvalidInput.malformed``
says whether it is a 400.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from wallet import errors

MISSING: Any = object()  # "the field is absent" (a JSON null is a value: None)

MAX_IDEMPOTENCY_KEY = 128
MAX_ID = 64
MAX_EVENT_ID = 128
MAX_NAME = 64
MAX_TITLE = 200
MAX_REF = 64
MAX_COUNT = 999
MAX_BIGINT = 2**63 - 1
MAX_CURSOR = 256
MAX_QUERY_TEXT = 256
GOAL_TITLE_MAX = 80
GOAL_TARGET_MAX = 1_000_000_000
MESSAGE_MAX = 200
DURATION_MIN, DURATION_MAX, DURATION_DEFAULT = 60, 900, 300
COIN_LIMIT_MAX = 10**12
UNTIL_MIN, UNTIL_MAX = timedelta(days=1), timedelta(days=5 * 365)

USER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CATALOG_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # gift and coin-pack ids (the catalog's own)
# Opaque ids minted by us (purchases: pur_…) or by the provider (events: evt_…).
OPAQUE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
CURRENCY = re.compile(r"[A-Z]{3}")
DIGITS = re.compile(r"[0-9]{1,19}")
SIGNED_DIGITS = re.compile(r"-?[0-9]{1,19}")
LEDGER_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,256}")
SETTLEMENT_CURSOR = re.compile(r"([0-9]{1,18}):([A-Za-z0-9_-]{0,64})")
TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
HOST = re.compile(r"(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,253})(?::[0-9]{1,5})?")

# Characters no text may hold: NUL (Postgres text cannot) and lone surrogates
# (not Unicode; asyncpg and every UTF-8 encoder refuse them).
_NEVER = re.compile("[\x00\ud800-\udfff]")
# Characters shown text may not hold: C0 and C1 controls, DEL, the line and
# paragraph separators, bidirectional embeddings, overrides and isolates.
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


class InvalidInput(errors.WalletError):
    """A value from outside that the service refuses, with the contract's status and code."""

    code = "invalid_request"  # the default; each instance carries its own
    status = 400

    def __init__(self, field: str, message: str, *, code: str = "invalid_request", status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.code = code
        self.status = status

    @property
    def malformed(self) -> bool:
        """A 400: not JSON, missing, or the wrong type (counts towards the WebSocket 1008 close)."""
        return self.status == 400


def _malformed(field: str, message: str, code: str = "invalid_request") -> InvalidInput:
    return InvalidInput(field, message, code=code, status=400)


def _invalid(field: str, message: str, code: str) -> InvalidInput:
    return InvalidInput(field, message, code=code, status=422)


# ---- JSON ---------------------------------------------------------------------------------

def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise _DuplicateKey
    return doc


class _DuplicateKey(ValueError):
    pass


# One decoder for every document: json.loads with hooks builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_pairs)


def parse_json(raw: bytes | str) -> Any:
    """A JSON document from outside, strictly: see the module docstring."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        doc = _DECODER.decode(text)
    except _DuplicateKey:
        raise _malformed("body", "a JSON object has a key twice") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: absurd nesting
        raise _malformed("body", "not valid UTF-8 JSON", "invalid_json") from None
    if has_lone_surrogate(doc):
        raise _malformed("body", "a JSON string holds a lone UTF-16 surrogate (not Unicode text)")
    return doc


def has_lone_surrogate(doc: Any) -> bool:
    """Whether any string (or object key) in a parsed JSON document holds a lone surrogate."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _has_surrogate(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _has_surrogate(s: str) -> bool:
    # Fast path: pure ASCII (almost every request) holds none.
    return not s.isascii() and re.search("[\ud800-\udfff]", s) is not None


def closed_object(doc: Any, allowed: set[str]) -> dict[str, Any]:
    """A request body: a JSON object with no field outside ``allowed`` (400 unknown_field)."""
    if not isinstance(doc, dict):
        raise _malformed("body", "request body must be a JSON object")
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise _malformed("body", f"unknown field(s): {', '.join(unknown)[:200]}", "unknown_field")
    return doc


# ---- text ---------------------------------------------------------------------------------

def text(value: Any, field: str, *, max_len: int, min_len: int = 1, code: str = "invalid_value",
         shown: bool = False) -> str:
    """A string field: present and a string (else 400), within length and clean (else 422 ``code``)."""
    if value is MISSING or value is None:
        raise _malformed(field, f"{field} is required")
    if not isinstance(value, str):
        raise _malformed(field, f"{field} must be a string")
    if not min_len <= len(value) <= max_len:
        raise _invalid(field, f"{field} must be {min_len}-{max_len} characters", code)
    check_clean(value, field, code=code, shown=shown)
    return value


def check_clean(value: str, field: str, *, code: str = "invalid_value", shown: bool = False) -> str:
    """No NUL and no lone surrogate; with ``shown``, no control or bidi-override characters either."""
    if value.isascii() and value.isprintable():
        return value
    bad = (_UNSHOWABLE if shown else _NEVER).search(value)
    if bad is not None:
        ch = bad.group()
        what = "a NUL" if ch == "\x00" else "a lone surrogate" if "\ud800" <= ch <= "\udfff" else \
            f"the control character U+{ord(ch):04X}"
        raise _invalid(field, f"{field} must not contain {what}", code)
    return value


def _pattern(value: Any, field: str, pattern: re.Pattern[str], code: str, what: str) -> str:
    if value is MISSING or value is None:
        raise _malformed(field, f"{field} is required")
    if not isinstance(value, str):
        raise _malformed(field, f"{field} must be a string")
    if pattern.fullmatch(value) is None:
        raise _invalid(field, f"{field} is {what}", code)
    return value


def idempotency_key(value: Any) -> str:
    """1-128 characters, no NUL, no lone surrogate: ``422 invalid_idempotency_key``."""
    return text(value, "idempotency_key", max_len=MAX_IDEMPOTENCY_KEY, code="invalid_idempotency_key")


def user_id(value: Any, field: str = "user_id", code: str = "invalid_user_id") -> str:
    """1-64 characters of ``[A-Za-z0-9_-]`` (the whole string)."""
    return _pattern(value, field, USER_ID, code, "1-64 characters of [A-Za-z0-9_-]")


def is_user_id(value: object) -> bool:
    return isinstance(value, str) and USER_ID.fullmatch(value) is not None


def catalog_id(value: Any, field: str) -> str:
    """A gift or coin-pack id: 1-64 characters of ``[A-Za-z0-9_.:-]`` (``422 invalid_value``)."""
    return _pattern(value, field, CATALOG_ID, "invalid_value", "1-64 characters of [A-Za-z0-9_.:-]")


def stream_id(raw: object) -> int:
    """A stream id (an opaque string to clients; here a positive bigint) or ``404 unknown_stream``."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and DIGITS.fullmatch(raw):
        value = int(raw)
    else:
        raise errors.UnknownStream()
    if not 0 < value <= MAX_BIGINT:
        raise errors.UnknownStream()
    return value


def purchase_id(raw: object) -> str:
    """A purchase id (1-128 characters of ``[A-Za-z0-9_.:-]``; minted as ``pur_`` + hex), or
    ``404 unknown_purchase``: no purchase has any other id."""
    if not isinstance(raw, str) or OPAQUE_ID.fullmatch(raw) is None:
        raise errors.UnknownPurchase()
    return raw


def event_id(value: Any) -> str:
    """The provider's event id: 1-128 characters of ``[A-Za-z0-9_.:-]`` (``400 invalid_event``)."""
    if not isinstance(value, str) or OPAQUE_ID.fullmatch(value) is None:
        raise _malformed("id", "id must be 1-128 characters of [A-Za-z0-9_.:-]", "invalid_event")
    return value


def event_purchase_id(value: Any) -> str:
    """A webhook's ``data.purchase_id``: a string of 1-128 id characters (``400 invalid_event``).

    Shape only: a well-formed id of no purchase is the handler's ``404 unknown_purchase``."""
    if not isinstance(value, str) or OPAQUE_ID.fullmatch(value) is None:
        raise _malformed("data.purchase_id", "data.purchase_id must be 1-128 characters of [A-Za-z0-9_.:-]",
                         "invalid_event")
    return value


def currency(value: Any, field: str = "currency", code: str = "invalid_event") -> str:
    """An ISO 4217 code: exactly three capital ASCII letters."""
    if not isinstance(value, str) or CURRENCY.fullmatch(value) is None:
        raise _malformed(field, f"{field} must be a 3-letter code", code)
    return value


def display_name(value: Any, field: str = "name", code: str = "invalid_value") -> str:
    """A name shown to others: 1-64 characters of display text, not blank."""
    name = text(value, field, max_len=MAX_NAME, code=code, shown=True)
    if not name.strip():
        raise _invalid(field, f"{field} must not be blank", code)
    return name


def stream_title(value: Any) -> str:
    """A stream's title: 1-200 characters of display text, not blank; returned trimmed (``422 invalid_title``)."""
    title = text(value, "title", max_len=MAX_TITLE, code="invalid_title", shown=True)
    if not title.strip():
        raise _invalid("title", "title must not be blank", "invalid_title")
    return title.strip()


def token(value: str) -> str | None:
    """A compact JWT (three base64url parts) of at most 4 KiB, else None (the caller answers 401/4401)."""
    if len(value) > 4096 or TOKEN.fullmatch(value) is None:
        return None
    return value


def token_name(value: object) -> str:
    """A token's ``name`` claim: absent or empty is ``""``; else display text of at most 64 characters."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise _malformed("name", "name must be a string of at most 64 characters")
    return check_clean(value, "name", shown=True)


def host(value: str | None) -> str | None:
    """The host name of an HTTP ``Host`` header (a name, an IPv4 address or a bracketed IPv6 one, an
    optional port dropped), or None when it is none of those."""
    if value is None:
        return None
    m = HOST.fullmatch(value)
    return m.group(1) if m else None


# ---- numbers ------------------------------------------------------------------------------

def integer(value: Any, field: str, lo: int, hi: int, code: str = "invalid_value") -> int:
    """A JSON integer (not a bool, a float or a numeric string) in ``lo..hi``: else 400, out of range 422."""
    if value is MISSING or value is None:
        raise _malformed(field, f"{field} is required")
    if type(value) is not int:
        raise _malformed(field, f"{field} must be an integer")
    if not lo <= value <= hi:
        raise _invalid(field, f"{field} must be {lo}-{hi}", code)
    return value


def count(value: Any) -> int:
    """A gift's count: an integer 1-999; anything else is the contract's ``422 invalid_count``."""
    if type(value) is not int or not 1 <= value <= MAX_COUNT:
        raise errors.InvalidCount(f"count must be an integer from 1 to {MAX_COUNT}")
    return value


def boolean(value: Any, field: str) -> bool:
    """A JSON ``true`` or ``false``, nothing else (``400 invalid_request``)."""
    if type(value) is not bool:
        raise _malformed(field, f"{field} must be true or false")
    return value


def ref(value: Any) -> str | int | None:
    """A WebSocket message's ``ref``, echoed back: null, a clean string of at most 64 characters, or an
    integer below 2**53 in magnitude (what every JSON client can hold)."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) > MAX_REF:
            raise _malformed("ref", f"ref is at most {MAX_REF} characters")
        try:
            return check_clean(value, "ref")
        except InvalidInput:
            raise _malformed("ref", "ref must not contain a NUL or a lone surrogate") from None
    if type(value) is int:
        if abs(value) >= 2**53:
            raise _malformed("ref", "ref is out of range")
        return value
    raise _malformed("ref", "ref must be a string or an integer")


# ---- query strings and cursors ------------------------------------------------------------

def query_int(values: list[str], field: str, default: int, lo: int, hi: int) -> int:
    """A query parameter's integer: given at most once, ASCII digits (``-`` allowed), in ``lo..hi``."""
    if not values:
        return default
    if len(values) > 1:
        raise _malformed(field, f"{field} is given more than once")
    raw = values[0]
    if SIGNED_DIGITS.fullmatch(raw) is None:
        raise _malformed(field, f"{field} must be an integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise _invalid(field, f"{field} must be {lo}-{hi}", "invalid_value")
    return value


def query_text(values: list[str], field: str, max_len: int = MAX_QUERY_TEXT) -> str | None:
    """A query parameter's text, given at most once, clean; empty or absent is None."""
    if not values:
        return None
    if len(values) > 1:
        raise _malformed(field, f"{field} is given more than once")
    raw = values[0]
    if not raw:
        return None
    if len(raw) > max_len:
        raise _malformed(field, f"{field} is at most {max_len} characters")
    try:
        return check_clean(raw, field)
    except InvalidInput as e:
        raise _malformed(field, e.message) from None


def ledger_cursor(values: list[str]) -> str | None:
    """A wallet-history cursor as handed out (base64url), or ``400 invalid_cursor``; what it says is
    checked by the ledger when it is decoded."""
    raw = _cursor_text(values)
    if raw is not None and LEDGER_CURSOR.fullmatch(raw) is None:
        raise _malformed("cursor", "invalid cursor", "invalid_cursor")
    return raw


def settlement_cursor(values: list[str]) -> tuple[int, str] | None:
    """A settlement-lines cursor ``<run id>:<agency id or empty>``, or ``400 invalid_cursor``."""
    raw = _cursor_text(values)
    if raw is None:
        return None
    m = SETTLEMENT_CURSOR.fullmatch(raw)
    if m is None:
        raise _malformed("cursor", "invalid cursor", "invalid_cursor")
    return int(m.group(1)), m.group(2)


def _cursor_text(values: list[str]) -> str | None:
    if not values or not values[0]:
        return None
    if len(values) > 1:
        raise _malformed("cursor", "cursor is given more than once", "invalid_cursor")
    if len(values[0]) > MAX_CURSOR:
        raise _malformed("cursor", "invalid cursor", "invalid_cursor")
    return values[0]


def since(raw: str | None) -> int | None:
    """The WebSocket ``since`` seq: ASCII digits of a bigint, else None (ignored: nothing is replayed and
    ``welcome.recovered`` is null, which tells the client so)."""
    if raw is None or DIGITS.fullmatch(raw) is None:
        return None
    value = int(raw)
    return value if value <= MAX_BIGINT else None


# ---- time ---------------------------------------------------------------------------------

def timestamp(value: Any, field: str, code: str) -> datetime:
    """An RFC 3339 timestamp with a zone (``Z`` or an offset), years 1970-9000, as an aware UTC datetime.
    Not a string: 400; not a timestamp: 422 ``code``."""
    if value is MISSING or value is None:
        raise _malformed(field, f"{field} is required")
    if not isinstance(value, str):
        raise _malformed(field, f"{field} must be an RFC 3339 string")
    if len(value) > 40 or not value.isascii():
        raise _invalid(field, f"{field} is not an RFC 3339 timestamp", code)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _invalid(field, f"{field} is not an RFC 3339 timestamp", code) from None
    if parsed.tzinfo is None:
        raise _invalid(field, f"{field} needs a time zone", code)
    # Years 1 and 9999 parse, then overflow when shifted to UTC and back (a 500).
    if not 1970 <= parsed.year <= 9000:
        raise _invalid(field, f"{field} must be between the years 1970 and 9000", code)
    return parsed.astimezone(UTC)


# ---- v2 -----------------------------------------------------------------------------------

def goal_title(value: Any) -> str:
    """A goal's title: 1-80 characters of display text, not blank; trimmed (``422 invalid_goal``)."""
    title = text(value, "title", max_len=GOAL_TITLE_MAX, code="invalid_goal", shown=True)
    if not title.strip():
        raise _invalid("title", "title must not be blank", "invalid_goal")
    return title.strip()


def goal_target(value: Any) -> int:
    """A goal's ``target_coins``: an integer 1-1,000,000,000 (``422 invalid_goal``)."""
    return integer(value, "target_coins", 1, GOAL_TARGET_MAX, "invalid_goal")


def paid_message(value: Any) -> str | None:
    """A gift's optional ``message``: absent or null is None; else a string that is 1-200 characters
    after trimming, of display text (``422 invalid_message``). Returns the trimmed text. Whether the
    gift is worth a message (``message_not_allowed``) is the gift path's rule, not this one."""
    if value is MISSING or value is None:
        return None
    if not isinstance(value, str):
        raise _malformed("message", "message must be a string")
    trimmed = value.strip()
    if not 1 <= len(trimmed) <= MESSAGE_MAX:
        raise _invalid("message", f"message must be 1-{MESSAGE_MAX} characters after trimming", "invalid_message")
    return check_clean(trimmed, "message", code="invalid_message", shown=True)


def battle_duration(value: Any) -> int:
    """A battle's ``duration_s``: absent or null is 300; else an integer 60-900 (``422 invalid_duration``)."""
    if value is MISSING or value is None:
        return DURATION_DEFAULT
    return integer(value, "duration_s", DURATION_MIN, DURATION_MAX, "invalid_duration")


def coin_limit(value: Any, field: str) -> int | None:
    """A spending limit (``daily_coins``, ``weekly_coins``): null is no limit; else an integer
    0-10**12 (``422 invalid_limit``). Absent is the caller's decision: pass ``None`` to mean null."""
    if value is None:
        return None
    if value is MISSING:
        raise _malformed(field, f"{field} is required (null for no limit)")
    return integer(value, field, 0, COIN_LIMIT_MAX, "invalid_limit")


def until(value: Any, *, now: datetime) -> datetime:
    """A self-exclusion's ``until``: RFC 3339 with a zone, 1 day to 5 years after ``now``
    (``422 invalid_until``); an aware UTC datetime."""
    when = timestamp(value, "until", "invalid_until")
    if not now + UNTIL_MIN <= when <= now + UNTIL_MAX:
        raise _invalid("until", "until must be 1 day to 5 years ahead", "invalid_until")
    return when
