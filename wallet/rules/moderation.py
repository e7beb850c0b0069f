"""Rules: a creator's blocks (403 blocked) and a stream's pause (409 gifts_paused).

Blocks live in ``creator_blocks``, read without a lock but with the batch's
locks held: every change to them takes the creator's live stream row's lock
first (see ``wallet.rules``), so it committed before the read or waits for the
batch. The pause is a column of the stream row, which the batch
locks: always current. Either way no gift committed after the change's commit
gets through, on any process.
"""

from __future__ import annotations

from wallet import errors
from wallet.rules.base import BatchView, Candidate, Rule, RuleState


def is_blocked(blocks: set[tuple[str, str]], creator_id: str, sender_id: str) -> bool:
    return (creator_id, sender_id) in blocks


class _Blocked(RuleState):
    def __init__(self, blocks: set[tuple[str, str]]) -> None:
        self.blocks = blocks
        self.idle = not blocks

    def check(self, c: Candidate) -> errors.WalletError | None:
        return errors.Blocked() if is_blocked(self.blocks, c.stream.creator_id, c.request.sender_id) else None


class Blocked(Rule):
    kind = "blocked"
    codes = ("blocked",)
    # Only the batch's senders, only the batch's creators: a handful of index probes.
    read_sql = """
SELECT b.creator_id, b.user_id FROM creator_blocks b
 WHERE b.user_id = ANY($2::text[]) AND b.creator_id IN (SELECT creator_id FROM s)
"""

    def begin(self, view: BatchView) -> RuleState:
        return _Blocked({(r["creator_id"], r["user_id"]) for r in view.docs.get(self.kind, ())})


class _Paused(RuleState):
    def __init__(self, paused: set[int]) -> None:
        self.paused = paused
        self.idle = not paused

    def check(self, c: Candidate) -> errors.WalletError | None:
        return errors.GiftsPaused() if c.stream.id in self.paused else None


class Paused(Rule):
    kind = "gifts_paused"
    codes = ("gifts_paused",)
    stream_columns = ("gifts_paused",)

    def begin(self, view: BatchView) -> RuleState:
        return _Paused({sid for sid, doc in view.stream_docs.items() if doc["gifts_paused"]})


BLOCKED = Blocked()
PAUSED = Paused()
