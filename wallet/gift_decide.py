"""Pure decisions for one gift batch: which gifts commit, with what seq, balance and facts.

No I/O. ``wallet.gifts`` reads the locked rows, calls ``decide`` and writes
what it returns. Each gift is decided on its own and in arrival order: one
sender's insufficient funds never fails another's gift, and several gifts
from one sender are applied against the running balance.

``decide`` owns only what every gift has: the idempotency key (replay, twin or
conflict), the lookups (stream, catalog price), the money (balances and the
ledger deltas) and the stream's ``seq``. Everything that can refuse or
annotate a gift is a rule in ``wallet.rules``, checked and then applied in the
order of ``wallet.rules.RULES``; a rule whose state says it is idle in this batch
(``RuleState.idle``: no block, no goal, no message ...) is skipped for every gift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from wallet import errors
from wallet.gift_types import MAX_COUNT, Existing, GiftRequest, Price, Refused, StreamRow, check_count
from wallet.models import GiftEvent
from wallet.rules import RULES, render
from wallet.rules.base import BatchView, Candidate, Rule, RuleState

__all__ = [
    "MAX_COUNT", "Accepted", "BatchView", "Decision", "Existing", "GiftRequest", "NewRefusal", "Price", "Refused",
    "StreamRow", "check_count", "decide", "event_for",
]


@dataclass(slots=True)
class Accepted:
    index: int
    request: GiftRequest
    seq: int
    price: Price
    coins: int
    sender_account: int
    creator_account: int
    balance_after: int
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewRefusal:
    """A refusal this batch decided: stored with the batch, so a retry of the key gets it again."""

    index: int
    request: GiftRequest
    error: errors.WalletError


@dataclass
class Decision:
    accepted: list[Accepted] = field(default_factory=list)
    # index -> error, or index -> Existing to replay, or index -> index of an accepted twin
    rejected: dict[int, errors.WalletError] = field(default_factory=dict)
    replays: dict[int, Existing] = field(default_factory=dict)
    twins: dict[int, int] = field(default_factory=dict)
    # refusals to store (a replayed or conflicting key is never stored again)
    refusals: list[NewRefusal] = field(default_factory=list)
    # account id -> (delta, number of changes)
    account_deltas: dict[int, tuple[int, int]] = field(default_factory=dict)
    # stream id -> (new last_seq, coins added)
    stream_updates: dict[int, tuple[int, int]] = field(default_factory=dict)
    # each rule's arrays for its write_sql, in RULES order
    rule_writes: list[list[object]] = field(default_factory=list)


def decide(
    requests: list[GiftRequest],
    view: BatchView,
    existing: dict[tuple[str, str], Existing],
    refused: dict[tuple[str, str], Refused] | None = None,
    rules: Sequence[Rule] = RULES,
) -> Decision:
    d = Decision()
    refused = refused or {}
    states: list[RuleState] = [rule.begin(view) for rule in rules]
    # Bound methods of the hooks each rule really has: the per-gift loops skip the rest.
    # Rules idle in this batch (no block, no goal, no message ...) are skipped too.
    checks = [st.check for st in states if type(st).check is not RuleState.check and not st.idle]
    accepts = [st.accept for st in states if type(st).accept is not RuleState.accept and not st.idle]
    wallets = view.wallets
    balances = {sender: bal for sender, (_, bal) in wallets.items()}
    seqs = {sid: s.last_seq for sid, s in view.streams.items()}
    stream_coins: dict[int, int] = {}
    first_in_batch: dict[tuple[str, str], int] = {}
    deltas: dict[int, list[int]] = {}

    def move(account: int, amount: int) -> None:
        entry = deltas.setdefault(account, [0, 0])
        entry[0] += amount
        entry[1] += 1

    def refuse(i: int, req: GiftRequest, error: errors.WalletError) -> None:
        d.rejected[i] = error
        d.refusals.append(NewRefusal(i, req, error))

    for i, req in enumerate(requests):
        key = (req.sender_id, req.idempotency_key)
        prior = existing.get(key)
        if prior is not None:
            if prior.request_hash == req.fingerprint:
                d.replays[i] = prior
            else:
                d.rejected[i] = errors.IdempotencyConflict()
            continue
        before = refused.get(key)
        if before is not None:
            d.rejected[i] = before.error if before.request_hash == req.fingerprint else errors.IdempotencyConflict()
            continue
        if key in first_in_batch:
            first = first_in_batch[key]
            if requests[first].fingerprint != req.fingerprint:
                d.rejected[i] = errors.IdempotencyConflict()
            else:
                d.twins[i] = first
            continue
        first_in_batch[key] = i
        stream = view.streams.get(req.stream_id)
        if stream is None:
            refuse(i, req, errors.UnknownStream())
            continue
        price = view.prices.get(req.gift_id)
        if price is None:
            refuse(i, req, errors.UnknownGift())
            continue
        wallet = wallets.get(req.sender_id)
        c = Candidate(i, req, stream, price, price.coins * req.count, wallet[0] if wallet else None,
                      balances.get(req.sender_id, 0), {})
        error = None
        for check in checks:
            error = check(c)
            if error is not None:
                break
        if error is not None:
            refuse(i, req, error)
            continue
        assert wallet is not None, "a rule let a gift through without a wallet"
        for accept in accepts:
            accept(c)
        balances[req.sender_id] = c.balance - c.coins
        seqs[stream.id] += 1
        stream_coins[stream.id] = stream_coins.get(stream.id, 0) + c.coins
        move(wallet[0], -c.coins)
        move(stream.creator_account, c.coins)
        d.accepted.append(Accepted(i, req, seqs[stream.id], price, c.coins, wallet[0], stream.creator_account,
                                   c.balance - c.coins, c.facts))
    # A twin whose first copy failed fails the same way.
    for twin, first in list(d.twins.items()):
        if first in d.rejected:
            d.rejected[twin] = d.rejected[first]
            del d.twins[twin]
    d.account_deltas = {acc: (v[0], v[1]) for acc, v in deltas.items()}
    d.stream_updates = {sid: (seqs[sid], stream_coins[sid]) for sid in stream_coins}
    d.rule_writes = [state.write_args() for state in states]
    return d


def event_for(a: Accepted, created_at: datetime, creator_id: str, rules: Sequence[Rule] = RULES) -> GiftEvent:
    return GiftEvent(
        stream_id=a.request.stream_id, seq=a.seq, sender_id=a.request.sender_id,
        sender_name=a.request.sender_name, gift_id=a.price.gift_id, gift_name=a.price.name,
        unit_coins=a.price.coins, count=a.request.count, coins=a.coins, created_at=created_at,
        creator_id=creator_id, extra=render(a.facts, tuple(rules)),
    )
