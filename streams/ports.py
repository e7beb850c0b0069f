"""The narrow interface through which live rooms reach the wallet.

``gifting`` builds an implementation over ``wallet`` and hands it to the
gateway; tests may hand a different one. Errors are the wallet's own
(``wallet.errors.WalletError`` subclasses carry the contract's code).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from wallet.tracing import GiftTrace


@dataclass(frozen=True, slots=True)
class StreamInfo:
    id: int
    creator_id: str
    live: bool
    json: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Sender:
    id: str
    name: str
    role: str
    adult: bool = False  # the age gate lets them spend (the wallet refuses gifts without it)


class Committed(Protocol):
    """A gift durably committed: its event (contract GiftEvent JSON, encoded) and the sender's balance."""

    @property
    def seq(self) -> int: ...

    @property
    def event_json(self) -> bytes: ...

    @property
    def balance(self) -> int: ...


class WalletPort(Protocol):
    async def stream(self, stream_id: int) -> StreamInfo:
        """The stream, or raises ``UnknownStream``."""
        ...

    def submit_gift(self, sender: Sender, stream_id: int, gift_id: str, count: int, idempotency_key: str,
                    message: str | None = None, trace: GiftTrace | None = None) -> asyncio.Future[Committed]:
        """Queues one gift (idempotent on the key): the future resolves once it is committed, or
        with a ``WalletError``; a request refused at once raises it here."""
        ...

    async def gifts_after(self, stream_id: int, after_seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Committed gifts of a stream with seq > after_seq, in seq order: (seq, GiftEvent JSON)."""
        ...

    async def pinned(self, stream_id: int) -> list[dict[str, Any]]:
        """The stream's pinned paid messages now (GiftEvent JSON), for ``welcome``; may be a second old."""
        ...

    async def ended(self, stream_ids: list[int]) -> dict[int, tuple[dict[str, Any], int]]:
        """Of these streams, the ended ones: id -> (Stream JSON, last seq)."""
        ...


@dataclass(frozen=True, slots=True)
class Identity:
    """Who holds a connection, from their access token."""

    id: str
    role: str
    name: str
    expires_at: float
    adult: bool = False  # may buy, gift and go live (the token's adult claim, or the age gate is off)


class TokenRejected(Exception):
    """No, invalid or expired token (the gateway closes with 4401)."""


class Authenticator(Protocol):
    def __call__(self, token: str | None) -> Identity:
        """The token's identity, or raises ``TokenRejected``."""
        ...
