"""HTTP observability: a request id on every request, one access log line, request metrics.

The request id comes from the caller's ``X-Request-Id`` when it is a sane
token (a load balancer's), else it is made here; it is echoed in the response
header and carried by every log line written while handling the request.

Must never: log headers, query strings or bodies (tokens and signatures live there).
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from aiohttp import web

from gifting.api.common import Handler
from gifting.logs import request_id
from gifting.metrics import Metrics

log = logging.getLogger("gifting.http")

METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
# Fields a handler adds to its request's access log line (a gift's id, say):
# one line per request, even on the hot path.
LOG_FIELDS: web.RequestKey[dict[str, object]] = web.RequestKey("log_fields", dict)
HEADER = "X-Request-Id"
_SANE = re.compile(r"[A-Za-z0-9._:-]{8,64}")  # the whole header: fullmatch


def new_request_id() -> str:
    return "req_" + secrets.token_hex(8)


def route_of(request: web.Request) -> str:
    """The route template, never the concrete path: metric labels stay bounded."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get(HEADER, "")
    rid = incoming if _SANE.fullmatch(incoming) else new_request_id()
    token = request_id.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers[HEADER] = rid
        return response
    except web.HTTPException as e:  # redirects and the like pass through the error middleware
        status = e.status
        e.headers[HEADER] = rid
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = route_of(request)
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.http_requests.labels(request.method, route, str(status)).inc()
            metrics.http_seconds.labels(route).observe(elapsed)
        if route not in ("/metrics", "/healthz", "/readyz"):
            # The path as sent (percent-encoded): decoded, a %0A would start a forged log line.
            path = request.rel_url.raw_path
            fields: dict[str, object] = {"method": request.method, "path": path, "route": route,
                                         "status": status, "ms": round(elapsed * 1000, 2)}
            fields.update(request.get(LOG_FIELDS) or {})
            log.info("%s %s %d", request.method, path, status, extra=fields)
        request_id.reset(token)
