"""What a gift rule is: a pure decision over its own slice of the batch's read.

Owns: the ``Rule`` / ``RuleState`` interface, ``Candidate`` (one gift being
decided) and ``BatchView`` (everything the batch's read returned). No I/O, no
SQL execution: a rule only *names* the rows it needs (``lock_sql``,
``read_sql``) and the set-based write it makes (``write_sql``); the batch in
``wallet.gifts`` runs them inside its own transaction.

Must never: read a clock other than ``BatchView.now`` (the batch
transaction's ``now()``, which is every gift's ``created_at``), change its
state in ``check`` (a refused gift leaves every rule as it was), or decide on a
row that neither the batch locks nor a locked row guards (see
``wallet.rules`` for the staleness rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from wallet.errors import WalletError
from wallet.gift_types import GiftRequest, Price, StreamRow


@dataclass(slots=True)
class Candidate:
    """One gift on its way through the rules: what it is, and what the rules decided for it."""

    index: int
    request: GiftRequest
    stream: StreamRow
    price: Price
    coins: int  # unit price x count, at this batch's catalog version
    sender_wallet: int | None  # the sender's wallet account id, None without a wallet
    balance: int  # the sender's balance before this gift (after their earlier gifts in this batch)
    # gift-row columns set by the rules' ``accept`` (combo_id, goal_progress, ...)
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchView:
    """The batch's lock and read statements, parsed. Read-only for rules."""

    now: datetime
    requests: list[GiftRequest]
    streams: dict[int, StreamRow]
    stream_docs: dict[int, dict[str, Any]]  # each locked stream row's columns the rules asked for
    wallets: dict[str, tuple[int, int]]  # sender -> (wallet account id, balance)
    prices: dict[str, Price]
    locked: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # rule kind -> its locked rows
    docs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # rule kind -> its plain-read rows


class RuleState:
    """A rule's running state for one batch: gifts are checked and accepted in arrival order."""

    # True when this batch gives the rule nothing to do (no block, no goal, no message ...):
    # ``decide`` then calls neither its check nor its accept, for any gift of the batch. Only
    # for a state whose check returns None and whose accept sets no fact for every gift.
    idle: bool = False

    def check(self, c: Candidate) -> WalletError | None:
        """The refusal for this gift, or None. Pure: never changes the state."""
        return None

    def accept(self, c: Candidate) -> None:
        """The gift passed every check: fold it into the state and set this rule's ``c.facts``."""

    def write_args(self) -> list[object]:
        """The arrays for ``Rule.write_sql``'s placeholders, in order."""
        return []


class Rule:
    """One rule of the gift path. Subclasses are module-level singletons listed in ``wallet.rules.RULES``."""

    kind: str = ""
    # The refusal codes its check may return, in the order it checks them (the order table lists them).
    codes: tuple[str, ...] = ()
    # A SELECT ... FOR UPDATE run after the stream rows are locked and before the account rows.
    lock_sql: str = ""
    # A plain SELECT (no lock); its rows must be guarded by a locked row (see wallet.rules).
    read_sql: str = ""
    # Columns of the locked stream rows this rule reads, in ``BatchView.stream_docs``.
    stream_columns: tuple[str, ...] = ()
    # Columns this rule stores on every gift row: (name, Postgres type).
    gift_columns: tuple[tuple[str, str], ...] = ()
    # One data-modifying statement with {0}, {1}, ... placeholders; harmless with empty arrays.
    write_sql: str = ""

    def begin(self, view: BatchView) -> RuleState:
        return RuleState()

    def event_json(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        """This rule's fields of a GiftEvent, from its gift columns (None where it does not apply)."""
        return {}
