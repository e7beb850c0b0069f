"""Settlement arithmetic: splitting gross coins into cash shares, exactly.

Pure functions and dataclasses, no I/O: ``wallet.settlement`` feeds them the
aggregated rows it read and writes back what they return. Must never use
floats, and never let a fraction of a cent disappear.

The rounding rule (also in ``docs/settlement.md``):

- A coin is worth ``coin_value_micros`` micro-units of the payout currency;
  a minor unit (a cent) is 10,000 micro-units; shares are in basis points.
  So party X's exact share of ``coins`` is ``coins * coin_value_micros * bps_X``
  in units of 1e-8 of a cent (``SCALE`` units per cent): an integer, always.
- Each party (creator, agency, platform) is paid the floor of its exact share
  plus the remainder it carried in; the new remainder (0 <= r < SCALE) is
  carried to the creator's next line. Over any number of runs each party has
  received exactly floor(sum of its exact shares / SCALE) cents.
- A line's gross cash is defined as creator + agency + platform, so the three
  always add up to it; the exact gross (coins * value) is that plus the
  change in the three remainders, which the audit checks line by line.
- The platform's share is 10,000 - creator - agency basis points. An agency
  is paid out of the platform's part (as TikTok does).
- The creator's and the platform's remainders follow the creator; the
  agency's remainder follows the (creator, agency) pair, so an agency never
  receives a fraction earned under another agency.
- A creator's lines in one run are chained in the order of their ``line_no``
  (1, 2, ...: agencies by code point, '' first), which is stored with each
  line; the next run continues from the highest line number, never from an
  order the database's collation would choose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

BPS = 10_000
MICROS_PER_MINOR = 10_000  # USD: a cent is 10^4 micro-dollars
SCALE = BPS * MICROS_PER_MINOR  # remainder units per minor unit
DEFAULT_CREATOR_BPS = 5_000


@dataclass(frozen=True)
class Policy:
    creator_bps: int = DEFAULT_CREATOR_BPS
    agency_id: str | None = None
    agency_bps: int = 0

    def __post_init__(self) -> None:
        for name in ("creator_bps", "agency_bps"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= BPS:
                raise ValueError(f"{name} must be an integer from 0 to {BPS}")
        if self.creator_bps + self.agency_bps > BPS:
            raise ValueError(f"creator_bps + agency_bps must be at most {BPS}")
        if self.agency_id is None and self.agency_bps:
            raise ValueError("agency_bps needs an agency_id")
        if self.agency_id == "":
            raise ValueError("agency_id must not be empty")

    @property
    def platform_bps(self) -> int:
        return BPS - self.creator_bps - self.agency_bps


@dataclass(frozen=True)
class Segment:
    """Gifts of one creator settled under one policy."""

    gifts: int
    coins: int
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True)
class Shares:
    creator: int
    agency: int
    platform: int

    @property
    def total(self) -> int:
        return self.creator + self.agency + self.platform


@dataclass
class Carries:
    """What one creator carries between runs, in 1e-8 of a cent."""

    creator: int = 0
    platform: int = 0
    agency: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Line:
    creator_id: str
    agency_id: str  # '' when none
    gifts: int
    gross_coins: int
    exact: Shares
    cash: Shares
    carry_in: Shares
    carry_out: Shares
    # 1, 2, ... per creator and run: the order the carries were chained in
    line_no: int = 1

    @property
    def gross_cash(self) -> int:
        return self.cash.total


def pay(exact: int, carry_in: int) -> tuple[int, int]:
    """(cash in minor units, remainder carried out) for an exact share plus a carry.

    Everything here is non-negative (settled gifts are never reversed; see
    docs/settlement.md), so floor division is the rounding rule; a negative
    input is a bug and is refused rather than rounded the wrong way.
    """
    if exact < 0 or not 0 <= carry_in < SCALE:
        raise ValueError("exact shares are non-negative and carries are below SCALE")
    return divmod(exact + carry_in, SCALE)


def settle_creator(creator_id: str, segments: Iterable[Segment], coin_value_micros: int,
                   carries: Carries) -> list[Line]:
    """One line per agency for one creator's run, numbered 1, 2, ... in the order they chain.

    The order is the agencies' code-point order ('' first), the same on every
    machine and database. Updates ``carries`` in place: the creator's and
    platform's remainders are chained through the lines in that order; each
    agency keeps its own.
    """
    if coin_value_micros <= 0:
        raise ValueError("the coin value is positive")
    by_agency: dict[str, list[Segment]] = {}
    for seg in segments:
        if seg.coins < 0 or seg.gifts < 0:
            raise ValueError("segments are non-negative")
        if seg.gifts == 0:
            continue
        by_agency.setdefault(seg.policy.agency_id or "", []).append(seg)
    lines: list[Line] = []
    for agency_id in sorted(by_agency):
        # One pass per line (this runs once per creator per night: keep it lean).
        ex_c = ex_a = ex_p = gifts = coins = 0
        for seg in by_agency[agency_id]:
            value = seg.coins * coin_value_micros
            p = seg.policy
            ex_c += value * p.creator_bps
            ex_a += value * p.agency_bps
            ex_p += value * (BPS - p.creator_bps - p.agency_bps)
            gifts += seg.gifts
            coins += seg.coins
        a_in = carries.agency.get(agency_id, 0) if agency_id else 0
        carry_in = Shares(carries.creator, a_in, carries.platform)
        c_cash, c_out = pay(ex_c, carry_in.creator)
        a_cash, a_out = pay(ex_a, carry_in.agency)
        p_cash, p_out = pay(ex_p, carry_in.platform)
        carries.creator, carries.platform = c_out, p_out
        if agency_id:
            carries.agency[agency_id] = a_out
        lines.append(Line(
            creator_id=creator_id, agency_id=agency_id, gifts=gifts, gross_coins=coins,
            exact=Shares(ex_c, ex_a, ex_p), cash=Shares(c_cash, a_cash, p_cash),
            carry_in=carry_in, carry_out=Shares(c_out, a_out, p_out), line_no=len(lines) + 1,
        ))
    return lines


@dataclass(frozen=True)
class Totals:
    creators: int
    lines: int
    gifts: int
    gross_coins: int
    cash: Shares


def totals(lines: Iterable[Line]) -> Totals:
    ls = list(lines)
    return Totals(
        creators=len({ln.creator_id for ln in ls}), lines=len(ls),
        gifts=sum(ln.gifts for ln in ls), gross_coins=sum(ln.gross_coins for ln in ls),
        cash=Shares(sum(ln.cash.creator for ln in ls), sum(ln.cash.agency for ln in ls),
                    sum(ln.cash.platform for ln in ls)),
    )


def payable_legs(lines: Iterable[Line]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(coins per creator, cash per creator, cash per agency) to book for these lines."""
    coins: dict[str, int] = {}
    creator: dict[str, int] = {}
    agency: dict[str, int] = {}
    for ln in lines:
        coins[ln.creator_id] = coins.get(ln.creator_id, 0) + ln.gross_coins
        creator[ln.creator_id] = creator.get(ln.creator_id, 0) + ln.cash.creator
        if ln.agency_id:
            agency[ln.agency_id] = agency.get(ln.agency_id, 0) + ln.cash.agency
    return coins, creator, agency


def due_payouts(balances: Mapping[tuple[str, str], int], threshold: int) -> list[tuple[str, str, int]]:
    """Payees whose payable balance reached the threshold, in (kind, id) order.

    Balances below it roll over to a later batch; nothing negative is paid.
    """
    if threshold < 1:
        raise ValueError("the payout threshold is at least one minor unit")
    return [(kind, pid, amount) for (kind, pid), amount in sorted(balances.items()) if amount >= threshold]


def last_midnight(now: datetime) -> datetime:
    """The default cutoff: the last UTC midnight at or before ``now``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    utc = now.astimezone(UTC)
    return utc.replace(hour=0, minute=0, second=0, microsecond=0)


def parse_cutoff(raw: str | None, now: datetime) -> datetime:
    """An RFC 3339 cutoff (or the last UTC midnight); never in the future."""
    if raw is None:
        return last_midnight(now)
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"cutoff {raw!r} is not an RFC 3339 timestamp") from None
    if value.tzinfo is None:
        raise ValueError("cutoff needs a time zone (e.g. 2026-11-25T00:00:00Z)")
    if value > now + timedelta(0):
        raise ValueError("cutoff may not be in the future")
    return value.astimezone(UTC)
