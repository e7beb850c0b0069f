"""Rule: paid messages. Checks 422 message_not_allowed; sets ``message`` and ``pinned_until``.

The text itself is validated at the boundary (``wallet.inputs.paid_message``:
1-200 characters after trimming, display text only, else 422 invalid_message),
before a gift reaches a batch, so a malformed text is never stored as a
refusal. Whether the gift is large enough to carry one needs its price, so it
is decided here, at the batch's catalog version. The pin's end is the batch's
commit clock (``BatchView.now``) plus the tier's seconds: the same on every
gateway and in every replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from wallet import errors, inputs
from wallet.models import rfc3339
from wallet.rules.base import BatchView, Candidate, Rule, RuleState

MAX_MESSAGE = 200
DEFAULT_MIN_COINS = 100
DEFAULT_PIN_TIERS = "500:120,1000:300,2000:600,5000:1800,10000:3600,20000:7200,50000:18000"

Tiers = tuple[tuple[int, int], ...]  # (coins, seconds), coins ascending


def validate_message(raw: object) -> str | None:
    """The message to store (trimmed), None when absent: the boundary validator's rule
    (``wallet.inputs.paid_message``: 1-200 characters after trimming, display text only)."""
    return inputs.paid_message(inputs.MISSING if raw is None else raw)


def parse_tiers(raw: str) -> Tiers:
    """``coins:seconds,...`` (GIFTING_PIN_TIERS) as sorted pairs; raises ValueError when malformed."""
    tiers: dict[int, int] = {}
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        coins_s, sep, secs_s = part.partition(":")
        if not sep:
            raise ValueError(f"pin tier {part!r} is not coins:seconds")
        coins, secs = int(coins_s), int(secs_s)
        if coins <= 0 or secs <= 0:
            raise ValueError(f"pin tier {part!r} needs positive coins and seconds")
        if coins in tiers:
            raise ValueError(f"pin tier for {coins} coins is given twice")
        tiers[coins] = secs
    return tuple(sorted(tiers.items()))


def pin_seconds(tiers: Tiers, coins: int) -> int | None:
    """The highest tier the gift's coins reach, or None under the lowest."""
    seconds = None
    for at, secs in tiers:
        if coins >= at:
            seconds = secs
        else:
            break
    return seconds


def message_allowed(coins: int, min_coins: int) -> bool:
    return coins >= min_coins


class _State(RuleState):
    def __init__(self, now: datetime, min_coins: int, tiers: Tiers, any_message: bool) -> None:
        self.now = now
        self.min_coins = min_coins
        self.tiers = tiers
        self.idle = not any_message  # a gift without a message is neither refused nor annotated

    def check(self, c: Candidate) -> errors.WalletError | None:
        if c.request.message is not None and not message_allowed(c.coins, self.min_coins):
            return errors.MessageNotAllowed(
                f"a message needs a gift of at least {self.min_coins} coins")
        return None

    def accept(self, c: Candidate) -> None:
        text = c.request.message
        if text is None:
            return
        c.facts["message"] = text
        secs = pin_seconds(self.tiers, c.coins)
        if secs is not None:
            c.facts["pinned_until"] = self.now + timedelta(seconds=secs)


class Message(Rule):
    kind = "message"
    codes = ("message_not_allowed",)
    gift_columns = (("message", "text"), ("pinned_until", "timestamptz"))

    def __init__(self, min_coins: int = DEFAULT_MIN_COINS, tiers: Tiers | None = None) -> None:
        self.min_coins = min_coins
        self.tiers = tiers if tiers is not None else parse_tiers(DEFAULT_PIN_TIERS)

    def configure(self, min_coins: int, tiers: Tiers) -> None:
        """Set once at start from the settings (GIFTING_MESSAGE_MIN_COINS, GIFTING_PIN_TIERS)."""
        self.min_coins = min_coins
        self.tiers = tiers

    def begin(self, view: BatchView) -> RuleState:
        return _State(view.now, self.min_coins, self.tiers,
                      any(r.message is not None for r in view.requests))

    def event_json(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        text = facts.get("message")
        if text is None:
            return {"message": None, "pinned_until": None, "message_hidden": None}
        hidden = bool(facts.get("message_hidden"))
        until = facts.get("pinned_until")
        if isinstance(until, str):
            until = datetime.fromisoformat(until)
        return {"message": None if hidden else text,
                "pinned_until": rfc3339(until) if until is not None else None,
                "message_hidden": hidden}


RULE = Message()
