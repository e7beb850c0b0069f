"""A battle's lifecycle as a pure state machine, and the pure decisions around it.

No I/O. ``wallet.battles`` turns each transition into ONE conditional UPDATE
of the battle row (``... WHERE id = $1 AND status = <the from state>``): the
row is the state, and only one caller can win a transition. This module says
which transitions exist, who may ask for each, what a battle's window is, who
won, and which gifts count.

    invited --accept--> live --end_time-----> ended (ended_reason "time")
       |                  \\--end_stream---> ended (ended_reason "stream_ended")
       |--decline--> declined
       |--cancel---> cancelled   (also: either stream ends while invited)
       \\--expire---> expired     (30 s after the invitation)

declined, cancelled, expired and ended are final: every event on them is
illegal (``BattleNotOpen``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from wallet import errors

INVITE_TTL = timedelta(seconds=30)
MIN_DURATION_S = 60
MAX_DURATION_S = 900
DEFAULT_DURATION_S = 300


class Status(StrEnum):
    INVITED = "invited"
    LIVE = "live"
    ENDED = "ended"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Event(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    CANCEL = "cancel"
    EXPIRE = "expire"
    END_TIME = "end_time"
    END_STREAM = "end_stream"


OPEN = frozenset({Status.INVITED, Status.LIVE})
FINAL = frozenset(Status) - OPEN

# (from, event) -> to. Anything not listed is illegal.
TRANSITIONS: dict[tuple[Status, Event], Status] = {
    (Status.INVITED, Event.ACCEPT): Status.LIVE,
    (Status.INVITED, Event.DECLINE): Status.DECLINED,
    (Status.INVITED, Event.CANCEL): Status.CANCELLED,
    (Status.INVITED, Event.EXPIRE): Status.EXPIRED,
    # A stream that ends while its invitation is open takes the invitation with it.
    (Status.INVITED, Event.END_STREAM): Status.CANCELLED,
    (Status.LIVE, Event.END_TIME): Status.ENDED,
    (Status.LIVE, Event.END_STREAM): Status.ENDED,
}


def transition(status: Status | str, event: Event) -> Status:
    """The state after ``event``, or ``BattleNotOpen`` when the event is illegal in ``status``."""
    to = TRANSITIONS.get((Status(status), event))
    if to is None:
        raise errors.BattleNotOpen(f"cannot {event.value.replace('_', ' ')} a battle that is {Status(status).value}")
    return to


def may(event: Event, actor: str, inviter_id: str, opponent_id: str, *, is_admin: bool = False) -> None:
    """Who may ask for an event: accept and decline are the invited creator's, cancel the inviter's."""
    if event in (Event.ACCEPT, Event.DECLINE):
        allowed = actor == opponent_id
    elif event is Event.CANCEL:
        allowed = actor == inviter_id or is_admin
    else:  # expire and the ends are the server's own
        allowed = False
    if not allowed:
        raise errors.NotBattler(f"only the {'inviter' if event is Event.CANCEL else 'invited creator'} "
                                f"may {event.value} this battle")


def check_duration(value: object) -> int:
    if value is None:
        return DEFAULT_DURATION_S
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_DURATION_S <= value <= MAX_DURATION_S:
        raise errors.InvalidDuration()
    return value


def check_opponent(inviter_id: str, opponent_id: str) -> None:
    if inviter_id == opponent_id:
        raise errors.SelfBattle()


def ended_reason(now: datetime, ends_at: datetime, stream_ended: bool) -> str:
    """A battle ended by a stream after its time was already up ended by time: its scores were fixed."""
    return "time" if now >= ends_at or not stream_ended else "stream_ended"


def winner(inviter_id: str, inviter_score: int, opponent_id: str, opponent_score: int) -> str | None:
    """The higher score wins; equal scores are a draw (None)."""
    if inviter_score > opponent_score:
        return inviter_id
    if opponent_score > inviter_score:
        return opponent_id
    return None


@dataclass(frozen=True, slots=True)
class Window:
    """A live battle as a gift batch sees it (the locked battle row)."""

    id: int
    status: str
    inviter_stream: int
    opponent_stream: int
    starts_at: datetime | None
    ends_at: datetime | None

    def counts(self, stream_id: int, committed_at: datetime) -> bool:
        """A gift counts when its batch commits inside [starts_at, ends_at) on the database's clock.

        ``committed_at`` is the batch's now(), which is the gift's created_at: the one
        clock every gift and the battle row share, whichever process wrote them.
        """
        return (self.status == Status.LIVE and self.starts_at is not None and self.ends_at is not None
                and stream_id in (self.inviter_stream, self.opponent_stream)
                and self.starts_at <= committed_at < self.ends_at)

    def side(self, stream_id: int) -> int:
        """0 for the inviter's stream, 1 for the opponent's."""
        return 0 if stream_id == self.inviter_stream else 1
