"""Pure protocol logic of live rooms: parsing client frames, building messages, the token bucket."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from streams import protocol as p


def test_a_send_gift_frame_parses_into_a_typed_request():
    [msg] = p.parse_frame(json.dumps({"type": "send_gift", "ref": "r1", "gift_id": "rose", "count": 3,
                                      "idempotency_key": "k"}))
    assert msg == p.SendGift("r1", "rose", 3, "k")


def test_ping_and_auth_parse_and_an_array_frame_yields_each_message():
    msgs = p.parse_frame('[{"type":"ping","ref":7},{"type":"auth","token":"t"}]')
    assert msgs == [p.Ping(7), p.Auth("t")]


def test_unreadable_frames_become_malformed_errors():
    for frame, code in [("not json", "invalid_json"), ("[]", "invalid_request"), ("3", "invalid_request"),
                        ('{"type": "dance"}', "unknown_type"), ('{"ref": 1}', "invalid_request"),
                        ('{"type": "send_gift", "gift_id": "rose"}', "invalid_request"),
                        ('{"type": "ping", "ref": [1]}', "invalid_request"), (b"\xff\xfe", "invalid_json")]:
        [err] = p.parse_frame(frame)
        assert isinstance(err, p.ProtocolError) and err.code == code and err.malformed, frame


def test_a_bad_count_is_answered_with_invalid_count_but_not_held_against_the_client():
    for count in (0, 1000, 2.5, True, "3"):
        [err] = p.parse_frame(json.dumps({"type": "send_gift", "ref": "x", "gift_id": "rose", "count": count,
                                          "idempotency_key": "k"}))
        assert isinstance(err, p.ProtocolError)
        assert (err.code, err.ref, err.malformed) == ("invalid_count", "x", False)


def test_frames_over_4_kib_are_refused_before_parsing():
    [err] = p.parse_frame("x" * (p.MAX_CLIENT_FRAME + 1))
    assert isinstance(err, p.ProtocolError) and err.code == "frame_too_large"


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_no_input_makes_the_parser_raise(data):
    for msg in p.parse_frame(data):
        assert isinstance(msg, p.SendGift | p.Ping | p.Auth | p.ProtocolError)


def test_paths_name_a_stream_and_nothing_else():
    assert p.parse_path("/v1/streams/42/live?token=x") == 42
    assert p.parse_path("/v1/streams/42/live/") == 42
    for bad in ("/v1/streams/0/live", "/v1/streams/abc/live", "/v1/streams/42", "/", "/v1/streams/-1/live"):
        assert p.parse_path(bad) is None


def test_messages_have_the_contract_shapes():
    assert p.welcome({"id": "1"}, "u", "viewer", 5, 3, None) == {
        "type": "welcome", "stream": {"id": "1"}, "user": {"id": "u", "role": "viewer"}, "seq": 5,
        "viewers": 3, "recovered": None, "goal": None, "pinned": []}
    assert p.error(None, "rate_limited", "m") == {"type": "error", "ref": None, "code": "rate_limited",
                                                  "message": "m"}
    assert p.earnings(10, 4) == {"type": "earnings", "stream_coins": 10, "unsettled_coins": 4}
    assert p.join_frames(['{"a":1}']) == '{"a":1}'
    assert json.loads(p.join_frames(['{"a":1}', '{"b":2}'])) == [{"a": 1}, {"b": 2}]


def test_the_token_bucket_allows_a_burst_then_refills_at_its_rate():
    b = p.TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.4) is False  # 0.8 tokens
    assert b.take(0.5) is True  # 1.0 token
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped at the burst


def test_contiguous_takes_only_the_gapless_run_after_the_cursor():
    assert p.contiguous(3, {4: "a", 5: "b", 7: "c"}) == [4, 5]
    assert p.contiguous(3, {5: "b"}) == []


def test_send_gift_carries_a_trimmed_message_and_a_bad_one_is_answered_not_held_against_the_client():
    msg = p.parse_message({"type": "send_gift", "gift_id": "rose", "idempotency_key": "k", "message": "  hi  "})
    assert isinstance(msg, p.SendGift) and msg.message == "hi"
    assert p.parse_message({"type": "send_gift", "gift_id": "rose", "idempotency_key": "k"}).message is None  # type: ignore[union-attr]
    for bad in ("", "   ", "x" * 201, "a\nb", "\x85", "a\u202eb"):
        err = p.parse_message({"type": "send_gift", "gift_id": "rose", "idempotency_key": "k", "message": bad})
        assert isinstance(err, p.ProtocolError) and err.code == "invalid_message" and not err.malformed, bad
    err = p.parse_message({"type": "send_gift", "gift_id": "rose", "idempotency_key": "k", "message": 7})
    assert isinstance(err, p.ProtocolError) and err.code == "invalid_request" and err.malformed


def test_a_nul_or_lone_surrogate_key_is_refused_before_it_reaches_the_wallet():
    """The issue's poison: a NUL in idempotency_key is 422 invalid_idempotency_key (answered, not a 1008
    strike), as over HTTP; a lone surrogate anywhere in the frame is a malformed 400."""
    [err] = p.parse_frame(json.dumps({"type": "send_gift", "ref": "x", "gift_id": "rose", "count": 1,
                                      "idempotency_key": "k\x00"}))
    assert isinstance(err, p.ProtocolError)
    assert (err.code, err.ref, err.malformed) == ("invalid_idempotency_key", "x", False)
    for frame in ('{"type":"send_gift","ref":"x","gift_id":"rose","count":1,"idempotency_key":"\\ud800"}',
                  '{"type":"ping","ref":"\\udfff"}', '{"type":"ping","ref":"r","\\ud800":1}'):
        [err] = p.parse_frame(frame)
        assert isinstance(err, p.ProtocolError) and err.code == "invalid_request" and err.malformed, frame


def test_the_socket_and_http_share_one_validator():
    """Same rules, same codes: a bad gift id, a bad key, a duplicate key, a bool count."""
    base = {"type": "send_gift", "ref": 1, "gift_id": "rose", "count": 1, "idempotency_key": "k"}
    for change, code, malformed in [({"gift_id": "ro se"}, "invalid_value", False),
                                    ({"gift_id": 5}, "invalid_request", True),
                                    ({"idempotency_key": ""}, "invalid_idempotency_key", False),
                                    ({"idempotency_key": None}, "invalid_request", True),
                                    ({"count": True}, "invalid_count", False)]:
        [err] = p.parse_frame(json.dumps(base | change))
        assert isinstance(err, p.ProtocolError) and (err.code, err.malformed) == (code, malformed), change
    [err] = p.parse_frame('{"type":"ping","ref":1,"ref":2}')
    assert isinstance(err, p.ProtocolError) and err.code == "invalid_request"
    [err] = p.parse_frame('{"a": 1}'.encode("utf-16"))
    assert isinstance(err, p.ProtocolError) and err.code == "invalid_json"


def test_a_room_path_with_an_id_that_names_no_stream_is_still_a_room_path():
    """Item 6: the gateway upgrades ``/v1/streams/abc/live`` and closes 4404 (not an HTTP 404)."""
    for path in ("/v1/streams/abc/live", "/v1/streams/0/live", "/v1/streams/99999999999999999999/live",
                 "/v1/streams//live", "/v1/streams/%31/live?token=x"):
        assert p.live_path(path) is not None and p.parse_path(path) is None, path
    assert p.live_path("/v1/streams/42/live/") == "42"
    for other in ("/v1/streams/42", "/v1/streams/42/live/x", "/v1/streams/4/2/live", "/x/v1/streams/1/live"):
        assert p.live_path(other) is None, other
