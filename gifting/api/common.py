"""What every HTTP handler shares: the error shape, JSON parsing, authentication.

Every body, query parameter and path id is parsed through the boundary
validator (``wallet.inputs``), the same one the WebSocket gateway uses; its
``InvalidInput`` is a ``WalletError`` and answers with its own status and code.

Errors are ``{"error": {"code", "message"}}``. Domain errors carry their code
and status; a store that cannot be reached (Postgres down or restarting, a
connection cut) is a 503 ``unavailable`` the client may retry with the same
idempotency key; anything else unexpected is a 500 with no stack trace for the
client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from gifting import auth
from gifting.settings import Settings
from wallet import inputs
from wallet.errors import WalletError

log = logging.getLogger("gifting.api")

MAX_BODY = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers)


def bad_request(message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, message)


def invalid(message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(422, code, message)


# The store is unreachable or went away mid-request: nothing was committed that a
# retry with the same key would not find. OSError covers refused connections;
# InternalClientError is what asyncpg raises when it resets a pooled connection
# that the server ended in the middle of a query.
STORE_UNAVAILABLE = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                     asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.InternalClientError, OSError)

_HTTP_CODES = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.code, e.message)
    except WalletError as e:
        return web.json_response({"error": e.to_json()}, status=e.status)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, "http_error")
        message = e.reason if e.status != 413 else f"request body is limited to {MAX_BODY} bytes"
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        return error_response(e.status, code, message, headers)
    except STORE_UNAVAILABLE as e:
        log.warning("unavailable (a store or a connection failed) on %s %s: %s: %s",
                    request.method, request.path, type(e).__name__, e)
        return error_response(503, "unavailable", "temporarily unavailable; retry with the same idempotency key",
                              {"Retry-After": "1"})
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error")


async def read_json(request: web.Request, allowed: set[str] | None = None) -> dict[str, Any]:
    """The request's JSON object, through the boundary validator (``wallet.inputs.parse_json``): strict
    UTF-8, no lone surrogates, no duplicate keys, and with ``allowed`` no unknown field."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"request body is limited to {MAX_BODY} bytes")
    body = await request.read()
    if not body:
        raise bad_request("request body must be a JSON object")
    doc = inputs.parse_json(body)
    if allowed is None:
        if not isinstance(doc, dict):
            raise bad_request("request body must be a JSON object")
        return doc
    return inputs.closed_object(doc, allowed)


def field(doc: dict[str, Any], name: str) -> Any:
    """A body field, or ``inputs.MISSING`` (a JSON null stays None: the validators tell them apart)."""
    return doc.get(name, inputs.MISSING)


def require_str(doc: dict[str, Any], name: str, *, max_len: int = 128, min_len: int = 1) -> str:
    """A required text field (no NUL, no lone surrogate): ``inputs.text``, kept for existing callers.
    Text that is shown to people wants ``inputs.text(..., shown=True)`` or a named validator."""
    return inputs.text(field(doc, name), name, max_len=max_len, min_len=min_len)


def idempotency_key(doc: dict[str, Any]) -> str:
    """The body's ``idempotency_key`` (``inputs.idempotency_key``)."""
    return inputs.idempotency_key(field(doc, "idempotency_key"))


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    return inputs.query_int(request.query.getall(name, []), name, default, lo, hi)


def query_text(request: web.Request, name: str, max_len: int = inputs.MAX_QUERY_TEXT) -> str | None:
    return inputs.query_text(request.query.getall(name, []), name, max_len)


def principal(request: web.Request, *roles: str) -> auth.Principal:
    """The caller, from the bearer token; 401 without a valid one, 403 with the wrong role."""
    settings = request.app[SETTINGS]
    assert settings.jwt_secret
    try:
        who = auth.verify(settings.jwt_secret, auth.bearer(request.headers.get("Authorization")),
                          now=time.time())
    except auth.AuthError as e:
        raise ApiError(401, "unauthorized", str(e)) from None
    if roles and who.role not in roles:
        raise ApiError(403, "forbidden", f"this needs the {' or '.join(roles)} role")
    return who
