"""OpenTelemetry spans for sampled gifts: imported only when ``GIFTING_OTEL`` is on.

Each sampled gift (``GIFTING_TRACE_SAMPLE``) becomes one ``gift`` span from the
gateway's receive to the ack written, with one child span per stage, made after
the fact from the timestamps the gift carried (``wallet.tracing.GiftTrace``), so
the gift path itself never calls into OpenTelemetry. The exporter is the
operator's: configure the SDK as usual (``OTEL_*`` variables with
``opentelemetry-instrument``, or a provider set up in code); without an SDK the
API's no-op tracer makes this free.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gifting.otel")


def gift_spans() -> Callable[[Any], None] | None:
    """A function turning a finished ``GiftTrace`` into spans, or None without the package."""
    try:
        from opentelemetry.trace import get_tracer, set_span_in_context
    except ImportError:
        log.warning("GIFTING_OTEL is set but opentelemetry-api is not installed: no spans")
        return None
    tracer = get_tracer("gifting")
    offset = time.time_ns() - time.perf_counter_ns()

    def ns(t: float) -> int:
        return offset + int(t * 1e9)

    def emit(t: Any) -> None:
        root = tracer.start_span("gift", start_time=ns(t.received), attributes={
            "gifting.gift_id": f"g_{t.stream_id}_{t.seq}", "gifting.stream_id": t.stream_id,
            "gifting.batch_size": t.batch})
        ctx = set_span_in_context(root)
        for name, a, b in (("enqueue", t.received, t.enqueued), ("batch_wait", t.enqueued, t.started),
                           ("commit", t.started, t.committed), ("ack", t.committed, t.acked)):
            if a and b:
                tracer.start_span(name, context=ctx, start_time=ns(a)).end(end_time=ns(b))
        root.end(end_time=ns(t.acked))

    return emit
