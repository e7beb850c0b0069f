"""The plain values of the gift path: a request, and the rows a batch decides from. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

from wallet import errors
from wallet.models import GiftEvent, request_hash

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
    # The age gate lets the sender gift: the token's adult claim, or GIFTING_AGE_GATE=off
    # (set at the boundary; direct callers of the wallet are trusted code).
    adult: bool = True
    # A paid message (validated at the boundary: wallet.rules.message.validate_message).
    message: str | None = None

    @property
    def fingerprint(self) -> str:
        """What makes two requests with one key the same request (the sender is in the key).

        Short and plain on purpose: it is computed for every gift on the hot path."""
        if self.message is not None:
            # Another text under the same key is another request (409 idempotency_conflict).
            return f"gift|{self.stream_id}|{self.gift_id}|{self.count}|{request_hash(self.message)}"
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


@dataclass(frozen=True)
class Refused:
    """A refusal already stored under (sender, key): the same request gets the same answer."""

    request_hash: str
    error: errors.WalletError
