"""Pure decisions for one gift batch: which gifts commit, with what seq and balance.

No I/O. ``wallet.gifts`` reads the locked rows, calls ``decide`` and writes
what it returns. Each gift is decided on its own and in arrival order: one
sender's insufficient funds never fails another's gift, and several gifts
from one sender are applied against the running balance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from wallet import errors
from wallet.models import GiftEvent

MAX_COUNT = 999


@dataclass(frozen=True)
class GiftRequest:
    sender_id: str
    sender_name: str
    stream_id: int
    gift_id: str
    count: int
    idempotency_key: str
    sender_role: str = "viewer"
    adult: bool = True  # the age gate lets the sender gift (set from the token at the boundary)

    @property
    def fingerprint(self) -> str:
        """What makes two requests with one key the same request (the sender is in the key).

        Short and plain on purpose: it is computed for every gift on the hot path."""
        return f"gift|{self.stream_id}|{self.gift_id}|{self.count}"


def check_count(count: object) -> int:
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise errors.InvalidCount()
    return count


@dataclass
class StreamRow:
    id: int
    creator_id: str
    creator_account: int
    live: bool
    last_seq: int
    coins_received: int


@dataclass(frozen=True)
class Price:
    gift_id: str
    version: int
    name: str
    coins: int


@dataclass(frozen=True)
class Existing:
    """A gift already committed under (sender, key)."""

    event: GiftEvent
    request_hash: str
    balance_after: int


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


@dataclass
class Decision:
    accepted: list[Accepted] = field(default_factory=list)
    # index -> error, or index -> Existing to replay, or index -> index of an accepted twin
    rejected: dict[int, errors.WalletError] = field(default_factory=dict)
    replays: dict[int, Existing] = field(default_factory=dict)
    twins: dict[int, int] = field(default_factory=dict)
    # account id -> (delta, number of changes)
    account_deltas: dict[int, tuple[int, int]] = field(default_factory=dict)
    # stream id -> (new last_seq, coins added)
    stream_updates: dict[int, tuple[int, int]] = field(default_factory=dict)


def decide(
    requests: list[GiftRequest],
    streams: dict[int, StreamRow],
    wallets: dict[str, tuple[int, int]],
    prices: dict[str, Price],
    existing: dict[tuple[str, str], Existing],
) -> Decision:
    """wallets: sender_id -> (account id, balance) for senders that have a wallet."""
    d = Decision()
    balances = {sender: bal for sender, (_, bal) in wallets.items()}
    seqs = {sid: s.last_seq for sid, s in streams.items()}
    stream_coins: dict[int, int] = {}
    first_in_batch: dict[tuple[str, str], int] = {}
    deltas: dict[int, list[int]] = {}

    def move(account: int, amount: int) -> None:
        entry = deltas.setdefault(account, [0, 0])
        entry[0] += amount
        entry[1] += 1

    for i, req in enumerate(requests):
        key = (req.sender_id, req.idempotency_key)
        prior = existing.get(key)
        if prior is not None:
            if prior.request_hash == req.fingerprint:
                d.replays[i] = prior
            else:
                d.rejected[i] = errors.IdempotencyConflict()
            continue
        if key in first_in_batch:
            first = first_in_batch[key]
            if requests[first].fingerprint != req.fingerprint:
                d.rejected[i] = errors.IdempotencyConflict()
            else:
                d.twins[i] = first
            continue
        first_in_batch[key] = i
        stream = streams.get(req.stream_id)
        if stream is None:
            d.rejected[i] = errors.UnknownStream()
            continue
        price = prices.get(req.gift_id)
        if price is None:
            d.rejected[i] = errors.UnknownGift()
            continue
        if not stream.live:
            d.rejected[i] = errors.StreamNotLive()
            continue
        if stream.creator_id == req.sender_id:
            d.rejected[i] = errors.SelfGift()
            continue
        coins = price.coins * req.count
        wallet = wallets.get(req.sender_id)
        balance = balances.get(req.sender_id, 0)
        if balance < 0:
            d.rejected[i] = errors.WalletInDebt()
            continue
        if wallet is None or balance < coins:
            d.rejected[i] = errors.InsufficientFunds()
            continue
        balances[req.sender_id] = balance - coins
        seqs[stream.id] += 1
        stream_coins[stream.id] = stream_coins.get(stream.id, 0) + coins
        move(wallet[0], -coins)
        move(stream.creator_account, coins)
        d.accepted.append(Accepted(
            index=i, request=req, seq=seqs[stream.id], price=price, coins=coins,
            sender_account=wallet[0], creator_account=stream.creator_account,
            balance_after=balance - coins,
        ))
    # A twin whose first copy failed fails the same way.
    for twin, first in list(d.twins.items()):
        if first in d.rejected:
            d.rejected[twin] = d.rejected[first]
            del d.twins[twin]
    d.account_deltas = {acc: (v[0], v[1]) for acc, v in deltas.items()}
    d.stream_updates = {sid: (seqs[sid], stream_coins[sid]) for sid in stream_coins}
    return d


def event_for(a: Accepted, created_at: datetime, creator_id: str) -> GiftEvent:
    return GiftEvent(
        stream_id=a.request.stream_id, seq=a.seq, sender_id=a.request.sender_id,
        sender_name=a.request.sender_name, gift_id=a.price.gift_id, gift_name=a.price.name,
        unit_coins=a.price.coins, count=a.request.count, coins=a.coins, created_at=created_at,
        creator_id=creator_id,
    )
