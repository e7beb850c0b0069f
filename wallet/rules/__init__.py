"""The rules of the gift path, composed in one documented order.

Owns: ``RULES`` (the order in which the batch checks and applies them) and
``render`` (their GiftEvent fields). Each rule is its own pure module over
its own slice of the batch's one read (``wallet.rules.base``); the batch in
``wallet.gifts`` runs every rule's SQL inside its own transaction and
``wallet.gift_decide.decide`` calls them gift by gift.

Refusal order: when several reasons apply, the client always gets the first
in this table (``tests/test_gift_rules.py`` holds the batch to it):

| #  | code                     | rule (kind)   | module                    |
|----|--------------------------|---------------|---------------------------|
| 1  | 409 idempotency_conflict | (the key)     | wallet/gift_decide.py     |
| 2  | 404 unknown_stream       | (the lookup)  | wallet/gift_decide.py     |
| 3  | 404 unknown_gift         | (the lookup)  | wallet/gift_decide.py     |
| 4  | 403 age_restricted       | age           | wallet/rules/age.py       |
| 5  | 403 self_excluded        | self_exclusion | wallet/rules/spending.py |
| 6  | 409 stream_not_live      | live          | wallet/rules/live.py      |
| 7  | 403 self_gift            | self_gift     | wallet/rules/self_gift.py |
| 8  | 403 blocked              | blocked       | wallet/rules/moderation.py |
| 9  | 409 gifts_paused         | gifts_paused  | wallet/rules/moderation.py |
| 10 | 422 message_not_allowed  | message       | wallet/rules/message.py   |
| 11 | 403 wallet_in_debt       | debt          | wallet/rules/funds.py     |
| 12 | 403 spending_limit       | spending_limit | wallet/rules/spending.py |
| 13 | 402 insufficient_funds   | funds         | wallet/rules/funds.py     |

Annotating rules, after every check (they refuse nothing): ``combo``
(wallet/rules/combo.py), ``goal`` (wallet/rules/goal.py), ``battle``
(wallet/rules/battle.py); the pin is set by ``message``.

A gift that passes every check is then accepted by every rule, in the same
order: that is where annotating rules (combo, goal, battle, pin) fold it into
their running state and set its columns. A rule with nothing to do in a batch
(no block, pause, exclusion, goal, battle or message among its gifts) says so
(``RuleState.idle``) and is neither asked nor told about that batch's gifts.

The staleness rule. In READ COMMITTED each statement has its own snapshot,
taken when it starts, possibly before it waits for a row lock. Rows it locks
come back at their newest version, every other row as of the snapshot. The
batch therefore runs two statements (in one round trip: ``wallet.gift_sql``).
The lock statement takes every lock (the stream rows, each rule's ``lock_sql``,
the accounts); each locked stream's ``rules_version`` is compared with its value
before the statement: every change to rule state made outside a batch bumps it
under the stream row's lock, in the same transaction, so when one moved while
the statement waited (a goal row inserted then is not in its snapshot, and so
not locked) the lock statement runs again, holding the stream locks. The read statement (prices, keys, refusals, each
rule's ``read_sql``) runs after that, with every lock held, so its snapshot
sees every commit of every batch or writer that held those locks before. So a
rule decides only on (a) rows the batch locks, or (b) rows whose every writer
holds a lock the batch takes while it writes them: blocks change under the
stream row's lock, and every gift of a stream is written by a batch holding
that stream's lock (which is why ``combo`` can read the latest gift). One key
has one outcome across gifts and refusals (the write's unique checks, for
senders without a wallet to lock); a batch that loses that race decides again.

Rules never write ``gifts``, ``accounts`` or ``streams`` in their
``write_sql`` (one statement cannot change a row twice): they own tables of
their own and columns of the gift row (``gift_columns``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wallet.rules import age, battle, combo, funds, goal, live, message, moderation, self_gift, spending
from wallet.rules.base import Rule

RULES: tuple[Rule, ...] = (
    age.RULE,
    spending.EXCLUSION,
    live.RULE,
    self_gift.RULE,
    moderation.BLOCKED,
    moderation.PAUSED,
    message.RULE,
    funds.DEBT,
    spending.LIMITS,
    funds.FUNDS,
    combo.RULE,
    goal.RULE,
    battle.RULE,
)


def gift_columns(rules: tuple[Rule, ...] = RULES) -> list[tuple[str, str]]:
    """Every rule's gift-row columns, in RULES order."""
    return [col for rule in rules for col in rule.gift_columns]


def _renderers(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    return tuple(r for r in rules if type(r).event_json is not Rule.event_json)


_RENDERERS = _renderers(RULES)


def render(facts: Mapping[str, Any], rules: tuple[Rule, ...] = RULES) -> dict[str, Any]:
    """The rules' GiftEvent fields from a gift's facts (its rule columns)."""
    out: dict[str, Any] = {}
    for rule in _RENDERERS if rules is RULES else _renderers(rules):
        out.update(rule.event_json(facts))
    return out
