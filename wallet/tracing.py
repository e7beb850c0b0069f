"""Per-gift stage timestamps, carried from the gateway through the gift batch.

Whoever receives a gift (the WebSocket gateway) makes a ``GiftTrace`` and hands
it to ``GiftService.submit`` (or sets it in ``CURRENT`` in the task that calls
``GiftService.send``); the gift service stamps it as the gift is queued, its
batch starts and the batch commits. The caller stamps the ack and hands the
trace to an observer (``gifting.metrics``).
Nothing here does I/O or decides anything; a gift sent without a trace (the
HTTP API, tests) costs one context-variable lookup.

Times are ``time.perf_counter()`` seconds: comparable within one process only.
"""

from __future__ import annotations

from contextvars import ContextVar


class GiftTrace:
    """When one gift passed each stage in this process (0.0: not reached)."""

    __slots__ = ("acked", "batch", "committed", "enqueued", "received", "seq", "started", "stream_id")

    def __init__(self, received: float, stream_id: int = 0) -> None:
        self.received = received  # the gateway read the send_gift frame
        self.enqueued = 0.0  # GiftService.send queued it for a batch
        self.started = 0.0  # its batch started (after the batch window and the lane's slot)
        self.committed = 0.0  # its batch committed in Postgres
        self.acked = 0.0  # the ack (or error) was written to the sender's socket
        self.batch = 0  # gifts in its batch
        self.stream_id = stream_id
        self.seq = 0  # the gift's seq once committed (its trace id, with stream_id)


CURRENT: ContextVar[GiftTrace | None] = ContextVar("gift_trace", default=None)
