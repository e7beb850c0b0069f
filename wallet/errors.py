"""The wallet's exception tree. Every error carries the contract's code.

    WalletError
    ├── Malformed                 400 invalid_request (a value the store refused: never a batch's fault)
    ├── InvalidRequest            422 (invalid values)
    │   ├── InvalidCount          422 invalid_count
    │   ├── AmountMismatch        422 amount_mismatch
    │   ├── InvalidDuration       422 invalid_duration
    │   ├── InvalidLimit          422 invalid_limit
    │   ├── InvalidUntil          422 invalid_until
    │   ├── InvalidGoal           422 invalid_goal
    │   ├── InvalidMessage        422 invalid_message
    │   └── MessageNotAllowed     422 message_not_allowed
    ├── NotFound                  404
    │   ├── UnknownPack           404 unknown_pack
    │   ├── UnknownGift           404 unknown_gift
    │   ├── UnknownStream         404 unknown_stream
    │   ├── UnknownPurchase       404 unknown_purchase
    │   ├── UnknownBattle         404 unknown_battle
    │   ├── UnknownBlock          404 unknown_block
    │   └── UnknownGoal           404 unknown_goal (the stream has no goal to clear)
    ├── InsufficientFunds         402 insufficient_funds
    ├── Forbidden                 403
    │   ├── WalletInDebt          403 wallet_in_debt
    │   ├── SelfGift              403 self_gift
    │   ├── AgeRestricted         403 age_restricted
    │   ├── SelfExcluded          403 self_excluded
    │   ├── SpendingLimit         403 spending_limit (details: limit, remaining_coins, resets_at)
    │   ├── Blocked               403 blocked (the creator blocked the sender)
    │   ├── NotStreamOwner        403 forbidden
    │   ├── SelfBattle            403 forbidden
    │   └── NotBattler            403 forbidden
    ├── Conflict                  409
    │   ├── IdempotencyConflict   409 idempotency_conflict
    │   ├── StreamNotLive         409 stream_not_live
    │   ├── AlreadyLive           409 already_live
    │   ├── HistoryIsSettled      409 history_is_settled
    │   ├── AlreadyInBattle       409 already_in_battle
    │   ├── BattleNotOpen         409 battle_not_open
    │   └── GiftsPaused           409 gifts_paused
    └── Unavailable               503 unavailable (shutting down, store unreachable)

Driver errors never leave this package untranslated where they carry meaning
(a unique violation on an idempotency key becomes IdempotencyConflict or a replay).
"""

from __future__ import annotations

from typing import Any


class WalletError(Exception):
    code = "wallet_error"
    status = 500

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message or self.__doc__ or self.code)
        # What a client can act on (e.g. a spending limit's remaining coins), JSON-ready.
        self.details = details

    @property
    def message(self) -> str:
        return str(self.args[0])

    def to_json(self) -> dict[str, Any]:
        """The error object of the contract's body: code, message and, when there are any, details."""
        doc: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            doc["details"] = self.details
        return doc


def from_stored(code: str, message: str, details: dict[str, Any] | None = None) -> WalletError:
    """The error a stored refusal replays: the most specific class with that code."""
    found: type[WalletError] = WalletError
    todo: list[type[WalletError]] = [WalletError]
    while todo:
        cls = todo.pop()
        if cls.code == code:
            found = cls
        todo.extend(cls.__subclasses__())
    err = found(message, details=details)
    if found is WalletError:  # a code this build no longer knows: keep it as it was said
        err.code = code
        err.status = 409
    return err


class Malformed(WalletError):
    """The request holds a value that cannot be stored."""

    code = "invalid_request"
    status = 400


class InvalidRequest(WalletError):
    """The request has an invalid value."""

    code = "invalid_request"
    status = 422


class InvalidCount(InvalidRequest):
    """count must be an integer from 1 to 999."""

    code = "invalid_count"


class AmountMismatch(InvalidRequest):
    """The payment's amount or currency differs from the purchase."""

    code = "amount_mismatch"


class InvalidDuration(InvalidRequest):
    """duration_s must be an integer from 60 to 900."""

    code = "invalid_duration"


class NotFound(WalletError):
    code = "not_found"
    status = 404


class UnknownPack(NotFound):
    """No such coin pack."""

    code = "unknown_pack"


class UnknownGift(NotFound):
    """No such gift in the catalog."""

    code = "unknown_gift"


class UnknownStream(NotFound):
    """No such stream."""

    code = "unknown_stream"


class UnknownPurchase(NotFound):
    """No such purchase."""

    code = "unknown_purchase"


class UnknownBattle(NotFound):
    """No such battle."""

    code = "unknown_battle"


class InsufficientFunds(WalletError):
    """Not enough coins for this gift."""

    code = "insufficient_funds"
    status = 402


class Forbidden(WalletError):
    code = "forbidden"
    status = 403


class WalletInDebt(Forbidden):
    """The wallet is negative after a chargeback; buy coins to send gifts again."""

    code = "wallet_in_debt"


class SelfGift(Forbidden):
    """A creator cannot send gifts to their own stream."""

    code = "self_gift"


class NotStreamOwner(Forbidden):
    """Only the stream's creator or an admin may do that."""

    code = "forbidden"


class SelfBattle(Forbidden):
    """A creator cannot battle themselves."""

    code = "forbidden"


class NotBattler(Forbidden):
    """Only a creator of this battle may do that."""

    code = "forbidden"


class Conflict(WalletError):
    code = "conflict"
    status = 409


class IdempotencyConflict(Conflict):
    """This idempotency key was already used for a different request."""

    code = "idempotency_conflict"


class StreamNotLive(Conflict):
    """The stream has ended."""

    code = "stream_not_live"


class AlreadyLive(Conflict):
    """The creator already has a live stream."""

    code = "already_live"


class HistoryIsSettled(Conflict):
    """That date is at or before a cutoff already settled."""

    code = "history_is_settled"


class AlreadyInBattle(Conflict):
    """A creator of this battle is already in an invited or live battle."""

    code = "already_in_battle"


class BattleNotOpen(Conflict):
    """The battle is not in a state that allows this."""

    code = "battle_not_open"


class Unavailable(WalletError):
    """The wallet cannot take this request now; retry with the same idempotency key."""

    code = "unavailable"
    status = 503


# ---- responsible spending ----------------------------------------------------
class AgeRestricted(Forbidden):
    """Buying coins, sending gifts and going live need an adult (18+) account."""

    code = "age_restricted"


class SelfExcluded(Forbidden):
    """You have excluded yourself from buying coins and sending gifts until the date you chose."""

    code = "self_excluded"


class SpendingLimit(Forbidden):
    """This gift would take your spending past your limit."""

    code = "spending_limit"

    @classmethod
    def of(cls, limit: str, remaining_coins: int, resets_at: str) -> SpendingLimit:
        """The refusal with its details: which window (daily, weekly), the room left, when it resets."""
        return cls(f"This gift would take your {limit} spending past its limit ({remaining_coins} coins left).",
                   details={"limit": limit, "remaining_coins": remaining_coins, "resets_at": resets_at})


class InvalidLimit(InvalidRequest):
    """A limit must be null or a whole number of coins from 0."""

    code = "invalid_limit"


class InvalidUntil(InvalidRequest):
    """until must be 1 day to 5 years ahead, and never before a self-exclusion already set."""

    code = "invalid_until"


# ---- engagement: goals, paid messages, moderation --------------------------------------

class InvalidGoal(InvalidRequest):
    """A goal needs a title of 1-80 characters and target_coins from 1 to 1,000,000,000."""

    code = "invalid_goal"


class InvalidMessage(InvalidRequest):
    """A message is 1-200 characters after trimming, with no control characters."""

    code = "invalid_message"


class MessageNotAllowed(InvalidRequest):
    """This gift is too small to carry a message."""

    code = "message_not_allowed"


class UnknownBlock(NotFound):
    """That user is not blocked."""

    code = "unknown_block"


class UnknownGoal(NotFound):
    """The stream has no goal."""

    code = "unknown_goal"


class Blocked(Forbidden):
    """The creator has blocked you from sending gifts to their streams."""

    code = "blocked"


class GiftsPaused(Conflict):
    """The creator has paused gifts on this stream."""

    code = "gifts_paused"


class DatabaseSetupError(RuntimeError):
    """The database cannot run the service as configured (a missing privilege): said once, at start."""
