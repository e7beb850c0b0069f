"""The boundary validator (wallet/inputs.py): pure rules, the same for HTTP and WebSocket."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet import errors, inputs
from wallet.inputs import MISSING, InvalidInput


def refused(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(errors.WalletError) as e:
        call(*args, **kwargs)
    return e.value.status, e.value.code


# ---- JSON ---------------------------------------------------------------------------------------

def test_json_with_an_escaped_lone_surrogate_anywhere_is_refused_as_malformed():
    """json.loads accepts "\\ud800"; the validator looks in every key and string, however deep."""
    for raw in ('{"k": "\\ud800"}', '{"\\udfff": 1}', '[[{"a": ["x", "\\udc00y"]}]]', '"\\ud83d"'):
        assert refused(inputs.parse_json, raw) == (400, "invalid_request"), raw
    # A pair that makes one character (an emoji) is Unicode: accepted.
    assert inputs.parse_json('{"k": "\\ud83d\\ude00"}') == {"k": "\U0001f600"}


def test_json_must_be_strict_utf8_without_nan_infinity_or_duplicate_keys():
    """Invalid UTF-8, UTF-16 bodies, NaN/Infinity and repeated keys are all refused (400)."""
    assert refused(inputs.parse_json, b'{"a": "\xff"}') == (400, "invalid_json")
    assert refused(inputs.parse_json, '{"a": 1}'.encode("utf-16")) == (400, "invalid_json")
    assert refused(inputs.parse_json, b"[" * 100_000) == (400, "invalid_json")
    for raw in ('{"a": NaN}', '{"a": Infinity}', '[-Infinity]'):
        assert refused(inputs.parse_json, raw) == (400, "invalid_json"), raw
    assert refused(inputs.parse_json, '{"count": 1, "count": 999}') == (400, "invalid_request")


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10))
def test_any_json_document_either_parses_back_to_itself_or_is_refused_cleanly(doc):
    """For every document: the same value back, or an InvalidInput (never another exception)."""
    raw = json.dumps(doc)
    try:
        assert inputs.parse_json(raw) == doc
    except InvalidInput as e:
        assert e.status == 400 and inputs.has_lone_surrogate(doc)


def test_a_closed_object_refuses_unknown_fields_and_non_objects():
    assert inputs.closed_object({"a": 1}, {"a", "b"}) == {"a": 1}
    assert refused(inputs.closed_object, {"a": 1, "c": 2}, {"a"}) == (400, "unknown_field")
    assert refused(inputs.closed_object, [1], {"a"}) == (400, "invalid_request")


# ---- text ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (MISSING, (400, "invalid_request")), (None, (400, "invalid_request")), (5, (400, "invalid_request")),
    (["k"], (400, "invalid_request")), (True, (400, "invalid_request")),
    ("", (422, "invalid_idempotency_key")), ("k" * 129, (422, "invalid_idempotency_key")),
    ("a\x00b", (422, "invalid_idempotency_key")), ("\ud800", (422, "invalid_idempotency_key")),
    ("x\udfffy", (422, "invalid_idempotency_key")),
])
def test_idempotency_keys_are_1_to_128_characters_without_nul_or_lone_surrogates(value, expected):
    assert refused(inputs.idempotency_key, value) == expected


def test_idempotency_keys_count_characters_not_bytes_and_accept_any_other_unicode():
    for key in ("k", "k" * 128, "é" * 128, "\U0001f600" * 128, "tab\there", "line\nbreak", "\u202e"):
        assert inputs.idempotency_key(key) == key


@pytest.mark.parametrize("bad", ["alice\n", "alice\r\n", "\nalice", "al ice", "", "a" * 65, "ålice", "a/b",
                                 "alice\x00", "{tag}"])
def test_user_ids_match_the_whole_string(bad):
    """A ``$`` matches before a final newline: "alice\\n" must not pass as a user id."""
    assert not inputs.is_user_id(bad)
    assert refused(inputs.user_id, bad) == (422, "invalid_user_id")


def test_ids_that_cannot_name_anything_are_the_resources_404():
    for raw in ("0", "-1", "abc", "1.0", " 1", "1 ", "1\n", "\u0663", "¹", "9223372036854775808", "", "1_0", "+1"):
        assert refused(inputs.stream_id, raw) == (404, "unknown_stream"), raw
    for raw in (True, 0, -5, 2**63, None, 1.0):
        assert refused(inputs.stream_id, raw) == (404, "unknown_stream"), raw
    assert inputs.stream_id("9223372036854775807") == 2**63 - 1
    assert inputs.stream_id(42) == inputs.stream_id("42") == 42
    for raw in ("pur_\x00", "pur_x\n", "", "p" * 129, "pur x", "pur_\ud800"):
        assert refused(inputs.purchase_id, raw) == (404, "unknown_purchase"), raw
    assert inputs.purchase_id("pur_0123abcd") == "pur_0123abcd"


def test_catalog_ids_are_a_plain_alphabet():
    assert inputs.catalog_id("money_gun", "gift_id") == "money_gun"
    for bad in ("rose\n", "ro se", "\x00", "r" * 65, "", "róse"):
        assert refused(inputs.catalog_id, bad, "gift_id") == (422, "invalid_value"), bad
    assert refused(inputs.catalog_id, 7, "gift_id") == (400, "invalid_request")


@pytest.mark.parametrize("bad", ["a\x00", "a\x01", "line\nbreak", "tab\t", "del\x7f", "c1\x85", "c1\x9f",
                                 "rtl\u202eevil", "iso\u2066", "sep\u2028", "\ud800"])
def test_shown_text_holds_no_control_bidi_override_or_separator_characters(bad):
    assert refused(inputs.stream_title, bad) == (422, "invalid_title")
    assert refused(inputs.display_name, bad) == (422, "invalid_value")


def test_shown_text_keeps_emoji_sequences_and_other_scripts():
    for ok in ("Family \U0001f468\u200d\U0001f469\u200d\U0001f467", "日本語の配信", "Ünïcödé", "a\u00a0b"):
        assert inputs.stream_title(ok) == ok
        assert inputs.display_name(ok[:64]) == ok[:64]


def test_titles_are_trimmed_and_never_blank():
    assert inputs.stream_title("  hello  ") == "hello"
    for blank in (" ", "\u3000", "\u00a0 "):
        assert refused(inputs.stream_title, blank) == (422, "invalid_title")
    assert refused(inputs.stream_title, "t" * 201) == (422, "invalid_title")
    assert refused(inputs.stream_title, MISSING) == (400, "invalid_request")


def test_token_names_and_shapes():
    assert inputs.token_name(None) == inputs.token_name("") == ""
    assert inputs.token_name("Alice") == "Alice"
    for bad in ("A\x00", "A\nB", "\ud800", 7, "n" * 65):
        with pytest.raises(InvalidInput):
            inputs.token_name(bad)
    assert inputs.token("aGVhZA.Ym9keQ.c2ln") == "aGVhZA.Ym9keQ.c2ln"
    for bad in ("a.b", "a.b.c\n", "a.b.c.d", "å.b.c", "a.b.\udcff", "a .b.c", "x" * 5000):
        assert inputs.token(bad) is None, bad


# ---- numbers ------------------------------------------------------------------------------------

def test_counts_are_real_integers_1_to_999_and_anything_else_is_invalid_count():
    assert inputs.count(1) == 1 and inputs.count(999) == 999
    for bad in (0, 1000, -1, True, False, 2.0, 1.5, "3", None, MISSING, [1], 2**70):
        assert refused(inputs.count, bad) == (422, "invalid_count"), bad


def test_integers_refuse_bools_floats_and_strings_as_malformed_and_range_with_the_fields_code():
    assert inputs.integer(5000, "creator_bps", 0, 10_000, "invalid_split") == 5000
    for bad in (True, 1.0, "5", None, MISSING, {}):
        assert refused(inputs.integer, bad, "creator_bps", 0, 10_000, "invalid_split") == (400, "invalid_request")
    for bad in (-1, 10_001, 2**70):
        assert refused(inputs.integer, bad, "creator_bps", 0, 10_000, "invalid_split") == (422, "invalid_split")


def test_refs_are_echoable():
    assert inputs.ref(None) is None and inputs.ref("r1") == "r1" and inputs.ref(-7) == -7
    for bad in ("r" * 65, "\ud800", "a\x00", True, 1.5, [1], 2**53):
        assert refused(inputs.ref, bad) == (400, "invalid_request"), bad


def test_query_integers_are_ascii_digits_given_once():
    assert inputs.query_int([], "limit", 50, 1, 200) == 50
    assert inputs.query_int(["7"], "limit", 50, 1, 200) == 7
    for bad in (["abc"], [" 5"], ["5 "], ["1_0"], ["\u0665"], ["¹"], ["5\n"], ["+5"], [""], ["1" * 30], ["5", "6"]):
        assert refused(inputs.query_int, bad, "limit", 50, 1, 200) == (400, "invalid_request"), bad
    for bad in (["0"], ["201"], ["-1"]):
        assert refused(inputs.query_int, bad, "limit", 50, 1, 200) == (422, "invalid_value"), bad


def test_cursors_and_since_are_checked_for_shape():
    assert inputs.ledger_cursor([]) is None and inputs.ledger_cursor([""]) is None
    assert inputs.ledger_cursor(["MjAyNi0x"]) == "MjAyNi0x"
    for bad in (["a\x00"], ["a\n"], ["a b"], ["x" * 300], ["a", "b"], ["é"]):
        assert refused(inputs.ledger_cursor, bad) == (400, "invalid_cursor"), bad
    assert inputs.settlement_cursor(["12:"]) == (12, "")
    assert inputs.settlement_cursor(["12:ag_1"]) == (12, "ag_1")
    for bad in (["12:ag\n"], ["¹:"], ["12"], [":x"], ["1" * 19 + ":"], ["12:a b"]):
        assert refused(inputs.settlement_cursor, bad) == (400, "invalid_cursor"), bad
    assert inputs.since("5") == 5 and inputs.since(None) is None
    for bad in ("-1", "5\n", "\u0665", "abc", "9" * 20, ""):
        assert inputs.since(bad) is None, bad


def test_timestamps_need_a_zone_and_a_sane_year():
    assert inputs.timestamp("2030-01-01T00:00:00Z", "t", "c") == datetime(2030, 1, 1, tzinfo=UTC)
    assert inputs.timestamp("2030-01-01T02:00:00+02:00", "t", "c") == datetime(2030, 1, 1, tzinfo=UTC)
    for bad in ("2030-01-01T00:00:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "soon", "2030-01-01T00:00:00Z\n",
                "\uff12\uff10\uff13\uff10-01-01T00:00:00Z"):
        assert refused(inputs.timestamp, bad, "t", "c") == (422, "c"), bad
    assert refused(inputs.timestamp, 5, "t", "c") == (400, "invalid_request")


# ---- v2 -----------------------------------------------------------------------------------------

def test_v2_goal_fields():
    assert inputs.goal_title(" Road to 10k ") == "Road to 10k"
    assert refused(inputs.goal_title, "g" * 81) == (422, "invalid_goal")
    assert refused(inputs.goal_title, "a\nb") == (422, "invalid_goal")
    assert refused(inputs.goal_title, " ") == (422, "invalid_goal")
    assert inputs.goal_target(1) == 1 and inputs.goal_target(10**9) == 10**9
    for bad in (0, 10**9 + 1):
        assert refused(inputs.goal_target, bad) == (422, "invalid_goal")
    assert refused(inputs.goal_target, "100") == (400, "invalid_request")


def test_v2_paid_message_is_trimmed_1_to_200_characters_without_controls():
    assert inputs.paid_message(MISSING) is None and inputs.paid_message(None) is None
    assert inputs.paid_message("  gg \U0001f525 ") == "gg \U0001f525"
    assert inputs.paid_message(" " + "m" * 200 + " ") == "m" * 200
    for bad in ("", "   ", "m" * 201, "a\x00", "two\nlines", "\u202eevil", "\ud800"):
        assert refused(inputs.paid_message, bad) == (422, "invalid_message"), bad
    assert refused(inputs.paid_message, 5) == (400, "invalid_request")


def test_v2_duration_limits_and_until():
    assert inputs.battle_duration(MISSING) == 300 and inputs.battle_duration(60) == 60
    for bad in (59, 901):
        assert refused(inputs.battle_duration, bad) == (422, "invalid_duration")
    assert refused(inputs.battle_duration, 300.0) == (400, "invalid_request")
    assert inputs.coin_limit(None, "daily_coins") is None and inputs.coin_limit(500, "daily_coins") == 500
    for bad in (-1, 10**12 + 1):
        assert refused(inputs.coin_limit, bad, "daily_coins") == (422, "invalid_limit")
    assert refused(inputs.coin_limit, "5", "weekly_coins") == (400, "invalid_request")
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert inputs.until("2030-01-08T00:00:00Z", now=now) == now + timedelta(days=7)
    for bad in ("2030-01-01T12:00:00Z", "2040-01-01T00:00:00Z", "2030-01-08T00:00:00", "tomorrow"):
        assert refused(inputs.until, bad, now=now) == (422, "invalid_until"), bad
    assert inputs.boolean(True, "paused") is True
    for bad in (1, "true", None):
        assert refused(inputs.boolean, bad, "paused") == (400, "invalid_request")


def test_host_headers_are_names_or_addresses_with_an_optional_port():
    assert inputs.host("example.com:8080") == "example.com"
    assert inputs.host("127.0.0.1") == "127.0.0.1"
    assert inputs.host("[::1]:8080") == "[::1]"
    for bad in (None, "", "a b", "ex\x00ample", "evil.com/path", "x:y:z", "bearer\t\ufeff", "h\n"):
        assert inputs.host(bad) is None, bad
