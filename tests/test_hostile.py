"""Hostile input against a real ``gifting serve`` process: nothing crashes, nothing leaks, nothing changes.

Hypothesis writes the requests: near misses of every valid body (one field of a
wrong type, out of range, missing or extra), junk bytes, odd query strings and
path ids, forged and malformed webhook signatures, tokens signed the wrong way,
and WebSocket frames. Every answer must be a clean refusal in the contract's
error shape (never a 5xx or a stack trace), the process must stay up with no
unhandled exception in its log, and the books must be exactly as before.
"""

from __future__ import annotations

import base64
import json
import os
import time
import warnings
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import JWT_SECRET, WEBHOOK_SECRET, token
from tests.served import Served, assert_clean_error
from wallet.webhook import sign

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

# CI runs 60 examples per test; GIFTING_FUZZ_EXAMPLES=1000 for a deeper run by hand.
FUZZ = settings(max_examples=int(os.environ.get("GIFTING_FUZZ_EXAMPLES") or 60), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

PACKS = {"coins_70", "coins_350", "coins_700", "coins_1400", "coins_3500", "coins_7000", "coins_17500"}
GIFTS = {"rose", "heart", "donut", "hat", "confetti", "sunglasses", "corgi", "money_gun", "galaxy", "whale",
         "lion", "universe"}


@pytest.fixture(scope="module")
def served(servers: dict[str, str], template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(servers, template_db, tmp_path_factory.mktemp("hostile"))
    try:
        yield s
        assert s.alive(), "the process died under hostile input"
        log = s.log_path.read_text(errors="replace")
        # aiohttp's HTTP parser logs its own refusal of over-long header lines (see
        # test_a_header_line_over_8_kib...); any other traceback is an unhandled error of ours.
        ours = [chunk for chunk in log.split("Traceback")[1:] if "LineTooLong" not in chunk.split("\n\n")[0]]
        assert not ours, f"an unhandled exception in the server log:\n{log[-3000:]}"
    finally:
        s.close()


@pytest.fixture
def unchanged(served: Served) -> Iterator[None]:
    before = served.snapshot()
    yield
    assert served.snapshot() == before, "hostile input changed the books"


# ---- values that are never valid for a field ----------------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_any = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _is_key(v: Any) -> bool:
    return isinstance(v, str) and 1 <= len(v) <= 128


def _is_count(v: Any) -> bool:
    return type(v) is int and 1 <= v <= 999


def _is_bps(v: Any) -> bool:
    return type(v) is int and 0 <= v <= 10_000


def _is_time(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


# field -> (valid example, predicate "this value would be accepted")
BODIES: dict[str, tuple[str, str, dict[str, tuple[Any, Any]]]] = {
    "purchase": ("POST", "/v1/purchases", {
        "pack_id": ("coins_70", lambda v: isinstance(v, str) and v in PACKS),
        "idempotency_key": ("k1", _is_key),
    }),
    "gift": ("POST", "/v1/streams/{sid}/gifts", {
        "gift_id": ("rose", lambda v: isinstance(v, str) and v in GIFTS),
        "count": (1, _is_count),
        "idempotency_key": ("k1", _is_key),
    }),
    "stream": ("POST", "/v1/streams", {
        # cr2 has no stream: a valid title would start one, so only invalid ones are sent.
        "title": ("live", lambda v: isinstance(v, str) and 1 <= len(v) <= 200 and bool(v.strip())),
    }),
    "split": ("PUT", "/v1/admin/creators/cr1/split", {
        "creator_bps": (5000, _is_bps),
        "agency_id": (None, lambda v: v is None or (isinstance(v, str) and 1 <= len(v) <= 64
                                                    and all(c.isascii() and (c.isalnum() or c in "_-") for c in v))),
        "agency_bps": (0, lambda v: v == 0),
        "effective_from": ("2030-01-01T00:00:00Z", _is_time),
    }),
}
ROLE = {"purchase": ("va", "viewer"), "gift": ("va", "viewer"), "stream": ("cr2", "creator"),
        "split": ("adm", "admin")}


@st.composite
def near_miss(draw: st.DrawFn) -> tuple[str, str, str, dict[str, Any]]:
    """A valid body with exactly one thing wrong with it."""
    name = draw(st.sampled_from(sorted(BODIES)))
    method, path, fields = BODIES[name]
    body = {k: v for k, (v, _) in fields.items()}
    how = draw(st.sampled_from(["wrong", "missing", "extra"]))
    field = draw(st.sampled_from(sorted(fields)))
    optional = name == "split" and field in ("agency_id", "agency_bps")  # defaults are valid
    if how == "missing" and not optional:
        del body[field]
    elif how == "extra":
        body[draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in fields))] = draw(json_leaf)
    else:
        valid = fields[field][1]
        body[field] = draw(json_any.filter(lambda v: not valid(v)))
    return name, method, path, body


@FUZZ
@given(case=near_miss())
def test_near_miss_bodies_on_every_money_and_admin_endpoint_are_refused_cleanly(served, unchanged, case):
    """A body with one wrong, missing or extra field is a 4xx in the error shape and changes nothing."""
    name, method, path, body = case
    user, role = ROLE[name]
    status, raw = served.request(method, path.format(sid=served.stream_id), json.dumps(body).encode(),
                                 {"Content-Type": "application/json",
                                  "Authorization": f"Bearer {token(user, role, user)}"})
    assert_clean_error(status, raw)
    assert 400 <= status < 500, (status, raw[:200])


@FUZZ
@given(path=st.sampled_from(["/v1/purchases", "/v1/streams/{sid}/gifts", "/v1/streams",
                             "/v1/admin/creators/cr1/split", "/v1/payments/webhook", "/v1/streams/{sid}/end"]),
       body=st.binary(max_size=300) | json_any.map(lambda d: json.dumps(d).encode()) |
       st.integers(1, 40).map(lambda n: b"[" * (n * 1000)),
       content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=latin-1"]))
def test_junk_bodies_never_crash_the_api_or_leak_a_stack_trace(served, unchanged, path, body, content_type):
    """Random bytes, random JSON and absurd nesting to every POST/PUT: clean refusals only."""
    method = "PUT" if "split" in path else "POST"
    user, role = ("vb", "viewer") if "end" in path else ("adm", "admin") if "split" in path else ("vb", "viewer")
    headers = {"Authorization": f"Bearer {token(user, role)}"}
    if content_type:
        headers["Content-Type"] = content_type
    status, raw = served.request(method, path.format(sid=served.stream_id), body, headers)
    assert_clean_error(status, raw)
    assert status >= 400


query_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@FUZZ
@given(path=st.sampled_from(["/v1/wallet/transactions", "/v1/streams", "/v1/streams/{sid}/leaderboard",
                             "/v1/creators/me/settlements", "/v1/gifts", "/v1/coin-packs", "/v1/wallet"]),
       params=st.dictionaries(st.sampled_from(["limit", "cursor", "status", "since", "x"]), query_text,
                              max_size=3))
def test_fuzzed_query_strings_are_answered_or_refused_cleanly(served, unchanged, path, params):
    """limit, cursor and status take any text: a 200 or a clean 4xx, never a 5xx."""
    from urllib.parse import urlencode

    user, role = ("cr1", "creator") if "creators" in path else ("va", "viewer")
    status, raw = served.request("GET", path.format(sid=served.stream_id) + "?" + urlencode(params),
                                 headers={"Authorization": f"Bearer {token(user, role)}"})
    assert_clean_error(status, raw)


@FUZZ
@given(stream=st.text(st.characters(codec="ascii", exclude_characters="/?#%"), min_size=1, max_size=30) |
       st.integers(-(2**70), 2**70).map(str),
       tail=st.sampled_from(["", "/end", "/gifts", "/leaderboard"]))
def test_fuzzed_path_ids_never_reach_a_500(served, unchanged, stream, tail):
    """Any stream id in a path is a clean 4xx (or a read of a real stream), and ending needs ownership."""
    from urllib.parse import quote

    method = "GET" if tail in ("", "/leaderboard") else "POST"
    status, raw = served.request(method, f"/v1/streams/{quote(stream, safe='')}{tail}",
                                 b"{}" if method == "POST" else None,
                                 {"Authorization": f"Bearer {token('vb')}", "Content-Type": "application/json"})
    assert_clean_error(status, raw)


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120)


@FUZZ
@given(header=header_text | st.builds(lambda t, h: f"t={t},v1={h}", st.integers(-(2**40), 2**40), header_text) |
       st.builds(lambda a, b: f"t={int(time.time()) + a},v1={b}", st.integers(-1000, 1000),
                 st.text("0123456789abcdef", min_size=64, max_size=64)),
       body=st.binary(max_size=200) | json_any.map(lambda d: json.dumps(d).encode()))
def test_forged_or_malformed_webhook_signatures_change_nothing(served, unchanged, header, body):
    """Without the right HMAC over this body and a fresh timestamp: 400 invalid_signature."""
    status, raw = served.request("POST", "/v1/payments/webhook", body,
                                 {"Content-Type": "application/json", "Gifting-Signature": header})
    assert_clean_error(status, raw)
    assert status == 400 and json.loads(raw)["error"]["code"] == "invalid_signature"


@FUZZ
@given(doc=json_any | st.fixed_dictionaries({
    "id": json_any, "type": st.sampled_from(["payment.succeeded", "payment.refunded", "payment.disputed",
                                             "payment.failed", "payment.other"]) | json_leaf,
    "data": st.fixed_dictionaries({"purchase_id": json_any, "amount": json_any, "currency": json_any})}))
def test_signed_but_malformed_events_are_refused_and_change_nothing(served, unchanged, doc):
    """A correctly signed body that is not a valid event for a real purchase: a 4xx, books untouched."""
    body = json.dumps(doc).encode()
    status, raw = served.request("POST", "/v1/payments/webhook", body, {
        "Content-Type": "application/json", "Gifting-Signature": sign(WEBHOOK_SECRET, body, int(time.time()))})
    assert_clean_error(status, raw)
    if status == 200:  # a well-formed event for an unknown purchase is acknowledged, never applied
        assert json.loads(raw) == {"received": True}


def _encode(claims: dict[str, Any], key: str, alg: str = "HS256") -> str:
    with warnings.catch_warnings():  # short keys for HS384/HS512 and wrong secrets are the point here
        warnings.simplefilter("ignore")
        return jwt.encode(claims, key, algorithm=alg)


def _b64(doc: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


claims = st.fixed_dictionaries({"sub": st.sampled_from(["va", "vb", "cr1"]) | json_leaf,
                                "role": st.sampled_from(["viewer", "creator", "admin"]) | json_leaf},
                               optional={"exp": json_leaf, "iat": json_leaf, "name": json_any})


@st.composite
def bad_token(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["none", "hs512", "hs384", "wrong_secret", "expired", "oversized",
                                 "tampered", "junk", "bad_claims"]))
    now = int(time.time())
    good = {"sub": "va", "role": "admin", "iat": now, "exp": now + 600}
    if kind == "none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(good)}."
    if kind in ("hs512", "hs384"):
        return _encode(good, JWT_SECRET, kind.upper())
    if kind == "wrong_secret":
        return _encode(good, draw(st.text(min_size=1, max_size=40).filter(lambda s: s != JWT_SECRET)))
    if kind == "expired":
        return _encode(good | {"exp": now - draw(st.integers(1, 10**6))}, JWT_SECRET)
    if kind == "oversized":  # over the 4 KiB token limit, under the 8 KiB header line (tested apart)
        return _encode(good | {"name": "x" * draw(st.integers(4100, 5600))}, JWT_SECRET)
    if kind == "tampered":
        head, _, sig = token("va").split(".")
        return f"{head}.{_b64(good)}.{sig}"
    if kind == "bad_claims":
        c = draw(claims)
        if {"sub", "role", "exp"} <= set(c) and isinstance(c["exp"], int | float) and c["exp"] > now \
                and c["role"] in ("viewer", "creator", "admin") and isinstance(c["sub"], str) and c["sub"]:
            c["exp"] = now - 1  # would be valid: make it expired
        try:
            return _encode(c, JWT_SECRET)
        except (TypeError, ValueError):
            return "x.y.z"
    return draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200))


@FUZZ
@given(tok=bad_token(), path=st.sampled_from(["/v1/wallet", "/v1/purchases", "/v1/creators/me/earnings",
                                              "/v1/admin/creators/cr1/split", "/v1/streams/{sid}/end"]))
def test_tokens_signed_wrongly_expired_or_oversized_are_401_over_http(served, unchanged, tok, path):
    """alg none, HS384/HS512, a wrong secret, expiry, 4 KiB+ or tampered claims: 401, nothing done."""
    method = "GET" if path in ("/v1/wallet", "/v1/creators/me/earnings") else "PUT" if "split" in path else "POST"
    body = b'{"pack_id": "coins_70", "idempotency_key": "tok"}' if path == "/v1/purchases" else \
        b'{"creator_bps": 9000, "agency_id": null, "agency_bps": 0, "effective_from": "2030-01-01T00:00:00Z"}'
    status, raw = served.request(method, path.format(sid=served.stream_id), body if method != "GET" else None,
                                 {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})
    assert_clean_error(status, raw)
    assert status == 401, (status, raw[:200])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tok=bad_token())
def test_tokens_signed_wrongly_expired_or_oversized_close_the_websocket_with_4401(served, tok):
    """The gateway refuses the same tokens at the handshake: close 4401 before any room message."""
    from urllib.parse import quote

    url = f"ws://127.0.0.1:{served.ws_port}/v1/streams/{served.stream_id}/live?token={quote(tok)}"
    try:
        with connect(url, open_timeout=5, close_timeout=2) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    except InvalidStatus as e:  # a URL too long for the handshake: refused before upgrading
        assert e.response.status_code in (400, 413, 414, 431)


ws_frame = st.one_of(
    st.binary(max_size=600), st.text(max_size=600), json_any.map(json.dumps),
    st.integers(4097, 9000).map(lambda n: "x" * n),
    st.lists(json_any, min_size=0, max_size=20).map(json.dumps),
)


@st.composite
def ws_near_miss(draw: st.DrawFn) -> str:
    msg: dict[str, Any] = {"type": "send_gift", "ref": "r", "gift_id": "rose", "count": 1, "idempotency_key": "w1"}
    field = draw(st.sampled_from(["type", "ref", "gift_id", "count", "idempotency_key"]))
    valid = {"type": lambda v: isinstance(v, str) and v in ("send_gift", "ping", "auth"),
             "ref": lambda v: v is None or (isinstance(v, str) and len(v) <= 64) or
             (type(v) is int and abs(v) < 2**53),
             "gift_id": lambda v: isinstance(v, str) and v in GIFTS, "count": _is_count,
             "idempotency_key": _is_key}[field]
    if field == "count" and draw(st.booleans()):
        del msg["count"]
        msg["count"] = draw(json_any.filter(lambda v: not valid(v)))
    else:
        msg[field] = draw(json_any.filter(lambda v: not valid(v)))
    return json.dumps(msg)


@FUZZ
@given(frames=st.lists(ws_frame | ws_near_miss(), min_size=1, max_size=6))
def test_fuzzed_websocket_frames_get_errors_or_a_protocol_close_and_change_nothing(served, unchanged, frames):
    """Junk, oversized and near-miss send_gift frames: error messages or 1008/1009/4429, never 1011."""
    url = f"ws://127.0.0.1:{served.ws_port}/v1/streams/{served.stream_id}/live?token={token('va')}"
    seen: list[Any] = []
    with connect(url, open_timeout=5, close_timeout=2, max_size=None) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
        try:
            for frame in frames:
                ws.send(frame)
            ws.send(json.dumps({"type": "ping", "ref": "end"}))
            while True:
                raw = ws.recv(timeout=5)
                assert "Traceback" not in str(raw)
                doc = json.loads(raw)
                seen += doc if isinstance(doc, list) else [doc]
                if any(m.get("type") == "pong" and m.get("ref") == "end" for m in seen):
                    break
        except ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code in (1008, 1009, 4429), e
    for m in seen:
        assert m.get("type") in ("error", "pong", "viewers", "leaderboard", "gift"), m
        if m.get("type") == "error":
            assert m.get("code") != "internal_error", m


def test_a_header_line_over_8_kib_is_refused_by_the_http_parser_without_a_trace(served, unchanged):
    """Beyond aiohttp's 8,190-byte header line the parser answers 400 itself (text, not JSON): no trace."""
    for size in (8200, 20_000, 60_000):
        status, raw = served.request("GET", "/v1/wallet", headers={"Authorization": "Bearer " + "x" * size})
        assert status == 400
        assert b"Traceback" not in raw and b'File "' not in raw and len(raw) < 300
