"""Pure decisions of a gift batch (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from wallet import errors
from wallet.gift_decide import BatchView, Decision, Existing, GiftRequest, Price, Refused, StreamRow
from wallet.gift_decide import decide as decide_view
from wallet.models import GiftEvent

PRICES = {"rose": Price("rose", 1, "Rose", 1), "galaxy": Price("galaxy", 1, "Galaxy", 1000)}


def streams() -> dict[int, StreamRow]:
    return {1: StreamRow(1, "alice", 100, True, 0, 0), 2: StreamRow(2, "bob", 200, False, 5, 50)}


NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def decide(requests: list[GiftRequest], streams: dict[int, StreamRow], wallets: dict[str, tuple[int, int]],
           prices: dict[str, Price], existing: dict[tuple[str, str], Existing],
           refused: dict[tuple[str, str], Refused] | None = None) -> Decision:
    view = BatchView(now=NOW, requests=requests, streams=streams, stream_docs={}, wallets=wallets, prices=prices)
    return decide_view(requests, view, existing, refused)


def req(sender: str, key: str, gift: str = "rose", count: int = 1, stream: int = 1) -> GiftRequest:
    return GiftRequest(sender, sender.title(), stream, gift, count, key)


def test_gifts_from_one_sender_apply_in_order_against_the_running_balance():
    d = decide([req("v", "a", count=6), req("v", "b", count=5), req("v", "c", count=4)],
               streams(), {"v": (7, 10)}, PRICES, {})
    assert [a.request.idempotency_key for a in d.accepted] == ["a", "c"]
    assert isinstance(d.rejected[1], errors.InsufficientFunds)
    assert [a.balance_after for a in d.accepted] == [4, 0]
    assert [a.seq for a in d.accepted] == [1, 2]
    assert d.account_deltas == {7: (-10, 2), 100: (10, 2)}
    assert d.stream_updates == {1: (2, 10)}


def test_one_senders_failure_never_fails_anothers_gift():
    d = decide([req("poor", "a", "galaxy"), req("rich", "b", "galaxy")], streams(),
               {"poor": (1, 5), "rich": (2, 5000)}, PRICES, {})
    assert isinstance(d.rejected[0], errors.InsufficientFunds)
    assert [a.index for a in d.accepted] == [1]


def test_each_error_has_its_contract_reason():
    d = decide([req("v", "1", stream=9), req("v", "2", gift="nope"), req("v", "3", stream=2),
                req("alice", "4"), req("debtor", "5"), req("nowallet", "6")], streams(),
               {"v": (1, 100), "alice": (2, 100), "debtor": (3, -5)}, PRICES, {})
    assert [type(d.rejected[i]) for i in range(6)] == [
        errors.UnknownStream, errors.UnknownGift, errors.StreamNotLive, errors.SelfGift,
        errors.WalletInDebt, errors.InsufficientFunds]
    assert not d.accepted


def test_a_committed_key_replays_with_the_same_request_and_conflicts_with_another():
    event = GiftEvent(1, 3, "v", "V", "rose", "Rose", 1, 1, 1, datetime.now(UTC))
    existing = {("v", "k"): Existing(event, req("v", "k").fingerprint, 42)}
    d = decide([req("v", "k"), req("v", "k", count=2)], streams(), {"v": (1, 100)}, PRICES, existing)
    assert d.replays[0].event.seq == 3
    assert isinstance(d.rejected[1], errors.IdempotencyConflict)
    assert not d.accepted


def test_the_same_key_twice_in_one_batch_commits_once():
    d = decide([req("v", "k"), req("v", "k"), req("v", "k", count=3)], streams(), {"v": (1, 100)}, PRICES, {})
    assert len(d.accepted) == 1
    assert d.twins == {1: 0}
    assert isinstance(d.rejected[2], errors.IdempotencyConflict)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 999),
                          st.sampled_from(["rose", "galaxy"])), max_size=60),
       st.integers(0, 5000), st.integers(0, 5000))
def test_no_batch_ever_overspends_and_seq_stays_gap_free(gifts, bal_a, bal_b):
    wallets = {"a": (1, bal_a), "b": (2, bal_b)}
    requests = [req(s, f"k{i}", g, c) for i, (s, c, g) in enumerate(gifts)]
    d = decide(requests, streams(), wallets, PRICES, {})
    spent = {"a": 0, "b": 0, "c": 0}
    for a in d.accepted:
        spent[a.request.sender_id] += a.coins
    assert spent["a"] <= bal_a and spent["b"] <= bal_b and spent["c"] == 0
    assert [a.seq for a in d.accepted] == list(range(1, len(d.accepted) + 1))
    assert len(d.accepted) + len(d.rejected) == len(requests)
    assert sum(delta for delta, _ in d.account_deltas.values()) == 0


def test_refusals_decided_in_the_batch_are_kept_for_their_key_but_replays_and_conflicts_are_not():
    event = GiftEvent(1, 3, "v", "V", "rose", "Rose", 1, 1, 1, datetime.now(UTC))
    d = decide([req("poor", "a", "galaxy"), req("v", "k", count=2), req("v", "n", stream=9)], streams(),
               {"poor": (1, 5), "v": (2, 100)}, PRICES, {("v", "k"): Existing(event, req("v", "k").fingerprint, 1)})
    assert [(f.index, f.error.code) for f in d.refusals] == [(0, "insufficient_funds"), (2, "unknown_stream")]
    assert isinstance(d.rejected[1], errors.IdempotencyConflict)


def test_a_stored_refusal_replays_for_the_same_request_and_conflicts_with_another():
    stored = {("v", "k"): Refused(req("v", "k").fingerprint, errors.InsufficientFunds())}
    d = decide([req("v", "k"), req("v", "k", count=2)], streams(), {"v": (1, 100)}, PRICES, {}, stored)
    assert isinstance(d.rejected[0], errors.InsufficientFunds)  # even though the wallet holds enough now
    assert isinstance(d.rejected[1], errors.IdempotencyConflict)
    assert not d.accepted and not d.refusals
