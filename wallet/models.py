"""Typed values the wallet hands out. Plain data, JSON-ready through ``to_json``."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson


def rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def request_hash(*parts: object) -> str:
    """Fingerprint of a money-moving request, to tell a replay from a conflict."""
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()[:32]


def money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


@dataclass(frozen=True)
class CoinPack:
    id: str
    version: int
    coins: int
    price_amount: int
    currency: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "coins": self.coins, "price": money(self.price_amount, self.currency)}


@dataclass(frozen=True)
class CatalogGift:
    id: str
    version: int
    name: str
    coins: int
    tier: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "coins": self.coins, "tier": self.tier}


@dataclass(frozen=True)
class Purchase:
    id: str
    user_id: str
    pack_id: str
    coins: int
    price_amount: int
    currency: str
    status: str
    created_at: datetime

    def to_json(self, status: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "pack_id": self.pack_id,
            "coins": self.coins,
            "price": money(self.price_amount, self.currency),
            "status": status or self.status,
            "created_at": rfc3339(self.created_at),
        }


@dataclass(frozen=True)
class WalletTxn:
    id: str
    kind: str
    coins: int
    balance_after: int
    created_at: datetime
    ref: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "coins": self.coins,
            "balance_after": self.balance_after,
            "created_at": rfc3339(self.created_at),
            "ref": self.ref,
        }


def gift_event_id(stream_id: int, seq: int) -> str:
    return f"g_{stream_id}_{seq}"


@dataclass(frozen=True)
class GiftEvent:
    """A committed gift, in the contract's shape."""

    stream_id: int
    seq: int
    sender_id: str
    sender_name: str
    gift_id: str
    gift_name: str
    unit_coins: int
    count: int
    coins: int
    created_at: datetime
    creator_id: str = ""
    # The gift-path rules' fields (combo, goal, battle, message, ...), rendered by wallet.rules.render.
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def id(self) -> str:
        return gift_event_id(self.stream_id, self.seq)

    @functools.cached_property
    def wire(self) -> bytes:
        """``to_json()`` encoded, once per event: the ack, the Redis history and the room share it."""
        return orjson.dumps(self.to_json())

    def to_json(self) -> dict[str, Any]:
        doc = {
            "id": self.id,
            "stream_id": str(self.stream_id),
            "seq": self.seq,
            "sender": {"id": self.sender_id, "name": self.sender_name},
            "gift": {"id": self.gift_id, "name": self.gift_name, "coins": self.unit_coins},
            "count": self.count,
            "coins": self.coins,
            "created_at": rfc3339(self.created_at),
        }
        if self.extra:
            doc.update(self.extra)
        return doc


@dataclass(frozen=True)
class GiftResult:
    """What the sender gets back: the event and their balance right after it."""

    event: GiftEvent
    balance: int
    replayed: bool = False
    # creator's unsettled coins and the stream's coins right after this gift's batch
    creator_unsettled: int = 0
    stream_coins: int = 0

    @property
    def seq(self) -> int:
        return self.event.seq

    @property
    def event_json(self) -> bytes:
        return self.event.wire
