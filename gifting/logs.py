"""Logging: one JSON object per line, or human-readable text on a terminal.

HTTP access lines (logger ``gifting.http``) are written at debug: by default a
process prints one summary line (``gifting.http.summary``) every few seconds
instead of one line per request, so a terminal keeps what matters in view;
``--access-log lines`` shows every request's line.

Never log tokens or secrets: handlers log ids, not headers or bodies.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

# The id of the HTTP request being handled (set by the API's request middleware);
# every log line written while handling it carries it as ``request_id``.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


class MalformedRequestFilter(logging.Filter):
    """aiohttp's parser logs every request it cannot parse (a bad header byte, a line over 8 KiB) as an
    ERROR with a traceback whose message quotes the raw line: one request from anyone could write a
    bearer token or a webhook signature into the log, and many would flood it. Such a record becomes
    one warning line naming only the kind of refusal."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "refused a malformed HTTP request: %s (%s)"
            record.args = (type(exc).__name__, exc.code)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value if isinstance(value, int | float | str | bool | None) else str(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class AccessSummary:
    """Counts HTTP requests by status class; once ``every`` seconds have passed since the last
    summary, the next request closes the window and gets its one-line summary back.

    Pure over an injected clock; an idle process writes nothing (there is nothing to sum up).
    """

    def __init__(self, every: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.started = clock()
        self.classes: Counter[str] = Counter()
        self.total = 0
        self.slowest_ms = 0.0

    def count(self, status: int, ms: float) -> str | None:
        self.total += 1
        self.classes[f"{status // 100}xx"] += 1
        self.slowest_ms = max(self.slowest_ms, ms)
        now = self.clock()
        elapsed = now - self.started
        if elapsed < self.every:
            return None
        by_class = " ".join(f"{k} {v}" for k, v in sorted(self.classes.items()))
        line = (f"{self.total} HTTP request{'s' if self.total != 1 else ''} in the last {elapsed:.0f} s "
                f"({by_class}; slowest {self.slowest_ms:.0f} ms)")
        self.started, self.total, self.slowest_ms = now, 0, 0.0
        self.classes.clear()
        return line


def setup_logging(fmt: str = "auto", level: int = logging.INFO, access: str = "summary") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json" or (fmt == "auto" and not sys.stderr.isatty()):
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Per-request lines are debug records: shown with --access-log lines, else summed up.
    logging.getLogger("gifting.http").setLevel(logging.DEBUG if access == "lines" else logging.NOTSET)
    logging.getLogger("gifting.http.summary").disabled = access != "summary"
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server_log.filters):
        server_log.addFilter(MalformedRequestFilter())
    logging.getLogger("websockets").setLevel(logging.WARNING)
