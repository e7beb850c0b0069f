"""Responsible spending, the pure part: windows, limits in force, cooling-off, counters.

No I/O and no clock of its own: every function takes ``now`` (the gift batch's
Postgres time, or the API's). The gift rule (``wallet.rules.spending``) and the
limits repository (``wallet.spending_store``) both decide with these, so a limit
means the same thing wherever it is read.

Windows are UTC calendar days and weeks that begin Monday 00:00 UTC. A lower
limit (or a first one) applies at once; a higher one, or removing one, waits
out a cooling-off (24 hours for the daily, 7 days for the weekly) and is
``pending`` until then. A lower limit asked while a raise is pending applies at
once and cancels the raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from wallet import errors

DAILY_COOLING_OFF = timedelta(hours=24)
WEEKLY_COOLING_OFF = timedelta(days=7)
MAX_LIMIT = 10**12  # coins; far above any real spending, safe in JSON numbers
MIN_EXCLUSION = timedelta(days=1)
MAX_EXCLUSION_YEARS = 5


def day_of(now: datetime) -> date:
    return now.astimezone(UTC).date()


def week_of(now: datetime) -> date:
    d = day_of(now)
    return d - timedelta(days=d.weekday())  # Monday


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def day_resets_at(now: datetime) -> datetime:
    return _midnight(day_of(now) + timedelta(days=1))


def week_resets_at(now: datetime) -> datetime:
    return _midnight(week_of(now) + timedelta(days=7))


# ---- one limit (daily or weekly) and its pending change -------------------------
@dataclass(frozen=True)
class Limit:
    coins: int | None = None  # in force (null: none)
    pending_at: datetime | None = None  # a change waits until then (null: none)
    pending: int | None = None  # the value from pending_at (null: removed)

    def in_force(self, now: datetime) -> int | None:
        if self.pending_at is not None and now >= self.pending_at:
            return self.pending
        return self.coins

    def settled(self, now: datetime) -> Limit:
        """The same limit with a pending change that is due folded in."""
        if self.pending_at is not None and now >= self.pending_at:
            return Limit(self.pending)
        return self

    def is_pending(self, now: datetime) -> bool:
        return self.pending_at is not None and now < self.pending_at


def is_lower(requested: int | None, current: int | None) -> bool:
    """Whether ``requested`` is at least as strict as ``current`` (None: no limit)."""
    if requested is None:
        return current is None
    return current is None or requested <= current


def change(limit: Limit, requested: int | None, now: datetime, cooling_off: timedelta) -> Limit:
    """The limit after the user asks for ``requested``.

    Lower, equal or first: in force at once, and any pending raise is dropped.
    Higher or removed: pending until ``now + cooling_off``; asking again for the
    same pending value keeps its time (a repeated PUT does not restart the wait),
    asking for another value restarts it.
    """
    current = limit.settled(now)
    if is_lower(requested, current.coins):
        return Limit(requested)
    if current.is_pending(now) and current.pending == requested:
        return current
    return Limit(current.coins, now + cooling_off, requested)


def check_limit_value(value: object, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_LIMIT:
        raise errors.InvalidLimit(f"{name} must be null or an integer from 0 to {MAX_LIMIT}")
    return value


def effective(user: int | None, platform: int | None) -> int | None:
    """The lower of the user's limit and the platform's cap (None: none)."""
    if user is None:
        return platform
    if platform is None:
        return user
    return min(user, platform)


# ---- counters ------------------------------------------------------------------
class ClockTooFarBehind(RuntimeError):
    """A batch's clock is more than one window behind the counters (never in practice)."""


@dataclass(frozen=True)
class Counters:
    """Gift coins spent in window ``start`` and in the window just before it."""

    start: date
    spent: int = 0
    prev_spent: int = 0

    def spent_in(self, window: date, step: timedelta) -> int:
        if window == self.start:
            return self.spent
        if window > self.start:
            return 0
        if window == self.start - step:
            return self.prev_spent
        raise ClockTooFarBehind(f"window {window} is before {self.start - step}")

    def add(self, window: date, step: timedelta, coins: int) -> Counters:
        if window == self.start:
            return Counters(self.start, self.spent + coins, self.prev_spent)
        if window > self.start:
            prev = self.spent if window == self.start + step else 0
            return Counters(window, coins, prev)
        if window == self.start - step:
            return Counters(self.start, self.spent, self.prev_spent + coins)
        raise ClockTooFarBehind(f"window {window} is before {self.start - step}")


DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class Spending:
    """One user's spending row."""

    user_id: str
    daily: Limit = Limit()
    weekly: Limit = Limit()
    self_excluded_until: datetime | None = None
    days: Counters = Counters(date(2000, 1, 1))
    weeks: Counters = Counters(date(2000, 1, 3))

    def excluded(self, now: datetime) -> bool:
        return self.self_excluded_until is not None and now < self.self_excluded_until

    def spent_today(self, now: datetime) -> int:
        return self.days.spent_in(day_of(now), DAY)

    def spent_this_week(self, now: datetime) -> int:
        return self.weeks.spent_in(week_of(now), WEEK)

    def add(self, now: datetime, coins: int) -> Spending:
        return self.add_in(day_of(now), week_of(now), coins)

    def add_in(self, day: date, week: date, coins: int) -> Spending:
        """``add`` with the day and the week already worked out (the gift batch has one clock)."""
        return Spending(self.user_id, self.daily, self.weekly, self.self_excluded_until,
                        self.days.add(day, DAY, coins), self.weeks.add(week, WEEK, coins))


@dataclass(frozen=True)
class Caps:
    """The platform's caps on everyone (None: none)."""

    daily: int | None = None
    weekly: int | None = None


@dataclass(frozen=True)
class InForce:
    daily: int | None
    weekly: int | None


def in_force(s: Spending, caps: Caps, now: datetime) -> InForce:
    return InForce(effective(s.daily.in_force(now), caps.daily),
                   effective(s.weekly.in_force(now), caps.weekly))


def refusal(s: Spending, limits: InForce, now: datetime, coins: int) -> errors.SpendingLimit | None:
    """The refusal of a gift of ``coins`` now, or None if it fits both windows.

    When it passes both, the one reported is the one with less room left (its
    ``remaining_coins`` is then the most the user can spend now); on a tie, the
    weekly, which resets later.
    """
    return refusal_in(s, limits, day_of(now), week_of(now), coins)


def refusal_in(s: Spending, limits: InForce, day: date, week: date, coins: int) -> errors.SpendingLimit | None:
    """``refusal`` with the day and the week already worked out."""
    if limits.daily is None and limits.weekly is None:
        return None
    return over_limit(limits.daily, limits.weekly, s.days.spent_in(day, DAY), s.weeks.spent_in(week, WEEK),
                      day, week, coins)


def over_limit(daily: int | None, weekly: int | None, spent_today: int, spent_this_week: int,
               day: date, week: date, coins: int) -> errors.SpendingLimit | None:
    """The one place a gift is measured against the limits in force (see ``refusal``)."""
    over: list[tuple[int, int, str, date]] = []
    if weekly is not None:
        room = max(0, weekly - spent_this_week)
        if coins > room:
            over.append((room, 0, "weekly", week + WEEK))
    if daily is not None:
        room = max(0, daily - spent_today)
        if coins > room:
            over.append((room, 1, "daily", day + DAY))
    if not over:
        return None
    room, _, which, resets = min(over)
    return errors.SpendingLimit.of(which, room, rfc3339(_midnight(resets)))


# ---- self-exclusion ----------------------------------------------------------
def _years_later(t: datetime, years: int) -> datetime:
    try:
        return t.replace(year=t.year + years)
    except ValueError:  # 29 February
        return t.replace(year=t.year + years, day=28)


def check_exclusion(until: datetime, current: datetime | None, now: datetime) -> datetime:
    """A new self-exclusion end: 1 day to 5 years ahead, and never before the current one."""
    if until.tzinfo is None:
        raise errors.InvalidUntil("until must be an RFC 3339 time with an offset")
    if until < now + MIN_EXCLUSION or until > _years_later(now, MAX_EXCLUSION_YEARS):
        raise errors.InvalidUntil("until must be 1 day to 5 years ahead")
    if current is not None and until < current:
        raise errors.InvalidUntil(
            f"a self-exclusion can be extended, never shortened: it lasts until {rfc3339(current)}")
    return until


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---- rows and JSON -------------------------------------------------------------
def spending_from_row(row: Mapping[str, Any]) -> Spending:
    """A ``spending`` row (an asyncpg record or a dict) as ``Spending``."""
    get = row.__getitem__
    return Spending(
        user_id=get("user_id"),
        daily=Limit(get("daily_coins"), get("daily_pending_at"), get("daily_pending")),
        weekly=Limit(get("weekly_coins"), get("weekly_pending_at"), get("weekly_pending")),
        self_excluded_until=get("self_excluded_until"),
        days=Counters(get("day_start"), get("day_spent"), get("prev_day_spent")),
        weeks=Counters(get("week_start"), get("week_spent"), get("prev_week_spent")),
    )


def limits_json(s: Spending, caps: Caps, now: datetime) -> dict[str, object]:
    """The contract's ``Limits`` object (plus the platform's caps, which apply on top).

    ``pending`` holds the limits that will be in force once every waiting change
    has taken effect, and ``effective_at`` the time the last of them does (a
    daily and a weekly raise asked together: the weekly's, 7 days on); the
    time of each is in ``daily_effective_at`` and ``weekly_effective_at``.
    """
    daily, weekly = s.daily.settled(now), s.weekly.settled(now)
    pending: dict[str, object] | None = None
    if daily.is_pending(now) or weekly.is_pending(now):
        times = [t for t in (daily.pending_at, weekly.pending_at) if t is not None]
        pending = {
            "daily_coins": daily.pending if daily.is_pending(now) else daily.coins,
            "weekly_coins": weekly.pending if weekly.is_pending(now) else weekly.coins,
            "effective_at": rfc3339(max(times)),
            "daily_effective_at": rfc3339(daily.pending_at) if daily.pending_at else None,
            "weekly_effective_at": rfc3339(weekly.pending_at) if weekly.pending_at else None,
        }
    return {
        "daily_coins": daily.coins,
        "weekly_coins": weekly.coins,
        "pending": pending,
        "spent_today": s.spent_today(now),
        "spent_this_week": s.spent_this_week(now),
        "day_resets_at": rfc3339(day_resets_at(now)),
        "week_resets_at": rfc3339(week_resets_at(now)),
        "platform_daily_coins": caps.daily,
        "platform_weekly_coins": caps.weekly,
    }


def _window_spent(start: date, spent: int, prev: int, window: date, step: timedelta) -> int:
    if window == start:
        return spent
    if window > start:
        return 0
    if window == start - step:
        return prev
    raise ClockTooFarBehind(f"window {window} is before {start - step}")


# How the gift batch reads a sender's row (locked): compact, because it is parsed
# for every sender of every batch. c: the counters, dates as days since 2000-01-01;
# l: the limits and their pending changes, or null when there are none; e: the
# self-exclusion's end.
LOCKED_ROW = """SELECT sp.user_id AS u,
           ARRAY[sp.day_start - DATE '2000-01-01', sp.day_spent, sp.prev_day_spent,
                 sp.week_start - DATE '2000-01-01', sp.week_spent, sp.prev_week_spent]::bigint[] AS c,
           CASE WHEN num_nonnulls(sp.daily_coins, sp.weekly_coins, sp.daily_pending_at, sp.weekly_pending_at) > 0
                THEN jsonb_build_array(sp.daily_coins, sp.weekly_coins, sp.daily_pending, sp.daily_pending_at,
                                       sp.weekly_pending, sp.weekly_pending_at) END AS l,
           sp.self_excluded_until AS e
      FROM spending sp WHERE sp.user_id = ANY($2::text[]) ORDER BY sp.user_id FOR UPDATE"""
_DAY_ZERO = date(2000, 1, 1).toordinal()


def locked_doc(s: Spending) -> dict[str, Any]:
    """``s`` as the batch's read carries it (``LOCKED_ROW`` through ``to_jsonb``): for tests and tools."""
    def ts(t: datetime | None) -> str | None:
        return None if t is None else t.isoformat()
    limits = None
    if any(v is not None for v in (s.daily.coins, s.weekly.coins, s.daily.pending_at, s.weekly.pending_at)):
        limits = [s.daily.coins, s.weekly.coins, s.daily.pending, ts(s.daily.pending_at), s.weekly.pending,
                  ts(s.weekly.pending_at)]
    return {"u": s.user_id,
            "c": [s.days.start.toordinal() - _DAY_ZERO, s.days.spent, s.days.prev_spent,
                  s.weeks.start.toordinal() - _DAY_ZERO, s.weeks.spent, s.weeks.prev_spent],
            "l": limits, "e": ts(s.self_excluded_until)}


class Running:
    """One sender's spending through one gift batch: what ``Spending`` decides, lean for the hot path.

    Built straight from the locked row as ``LOCKED_ROW`` selects it, with the
    batch's day and week and the limits in force worked out once; ``add``
    changes it in place (the batch's running state).
    ``tests/test_spending_rules.py`` holds it to ``Spending`` and ``refusal``.
    """

    __slots__ = ("d_prev", "d_spent", "d_start", "daily", "day", "touched", "user_id", "w_prev", "w_spent",
                 "w_start", "week", "weekly")

    def __init__(self, doc: Mapping[str, Any], now: datetime, day: date, week: date, caps: Caps) -> None:
        self.user_id: str = doc["u"]
        self.day, self.week = day, week
        self.touched = False  # a gift was added: the row is written back
        c = doc["c"]
        self.d_start = date.fromordinal(_DAY_ZERO + c[0])
        self.d_spent: int = c[1]
        self.d_prev: int = c[2]
        self.w_start = date.fromordinal(_DAY_ZERO + c[3])
        self.w_spent: int = c[4]
        self.w_prev: int = c[5]
        daily = weekly = None
        limits = doc["l"]
        if limits is not None:
            daily, weekly, daily_pending, daily_at, weekly_pending, weekly_at = limits
            if daily_at is not None and now >= datetime.fromisoformat(daily_at):
                daily = daily_pending
            if weekly_at is not None and now >= datetime.fromisoformat(weekly_at):
                weekly = weekly_pending
        self.daily: int | None = effective(daily, caps.daily)
        self.weekly: int | None = effective(weekly, caps.weekly)

    def spent_today(self) -> int:
        if self.day == self.d_start:
            return self.d_spent
        return _window_spent(self.d_start, self.d_spent, self.d_prev, self.day, DAY)

    def spent_this_week(self) -> int:
        if self.week == self.w_start:
            return self.w_spent
        return _window_spent(self.w_start, self.w_spent, self.w_prev, self.week, WEEK)

    def refusal(self, coins: int) -> errors.SpendingLimit | None:
        daily, weekly = self.daily, self.weekly
        if daily is None and weekly is None:
            return None
        # The common case, without building the refusal: the gift fits both windows.
        if ((weekly is None or coins <= weekly - self.spent_this_week())
                and (daily is None or coins <= daily - self.spent_today())):
            return None
        return over_limit(self.daily, self.weekly, self.spent_today(), self.spent_this_week(), self.day, self.week,
                          coins)

    def add(self, coins: int) -> None:
        self.touched = True
        if self.day == self.d_start:  # the common case: the row is already in the batch's day
            self.d_spent += coins
        else:
            days = Counters(self.d_start, self.d_spent, self.d_prev).add(self.day, DAY, coins)
            self.d_start, self.d_spent, self.d_prev = days.start, days.spent, days.prev_spent
        if self.week == self.w_start:
            self.w_spent += coins
        else:
            weeks = Counters(self.w_start, self.w_spent, self.w_prev).add(self.week, WEEK, coins)
            self.w_start, self.w_spent, self.w_prev = weeks.start, weeks.spent, weeks.prev_spent
