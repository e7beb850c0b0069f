"""What every HTTP handler shares: the error shape, JSON parsing, authentication.

Errors are ``{"error": {"code", "message"}}``. Domain errors carry their code
and status; a store that cannot be reached (Postgres down or restarting, a
connection cut) is a 503 ``unavailable`` the client may retry with the same
idempotency key; anything else unexpected is a 500 with no stack trace for the
client.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from gifting import auth
from gifting.settings import Settings
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
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"request body is limited to {MAX_BODY} bytes")
    body = await request.read()
    if not body:
        raise bad_request("request body must be a JSON object")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        raise bad_request("request body is not valid JSON", "invalid_json") from None
    if not isinstance(doc, dict):
        raise bad_request("request body must be a JSON object")
    if allowed is not None:
        unknown = sorted(set(doc) - allowed)
        if unknown:
            raise bad_request(f"unknown field(s): {', '.join(unknown)}", "unknown_field")
    return doc


def require_str(doc: dict[str, Any], name: str, *, max_len: int = 128, min_len: int = 1) -> str:
    value = doc.get(name)
    if value is None:
        raise bad_request(f"{name} is required")
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    if not min_len <= len(value) <= max_len:
        raise invalid(f"{name} must be {min_len}-{max_len} characters")
    if "\x00" in value:  # Postgres text cannot hold NUL: refuse it here, not with a 500 there
        raise invalid(f"{name} must not contain NUL characters")
    return value


def idempotency_key(doc: dict[str, Any]) -> str:
    value = doc.get("idempotency_key")
    if value is None:
        raise bad_request("idempotency_key is required")
    if not isinstance(value, str):
        raise bad_request("idempotency_key must be a string")
    if not 1 <= len(value) <= 128:
        raise invalid("idempotency_key must be 1-128 characters", "invalid_idempotency_key")
    if "\x00" in value:
        raise invalid("idempotency_key must not contain NUL characters", "invalid_idempotency_key")
    return value


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    values = request.query.getall(name, [])
    if not values:
        return default
    if len(values) > 1:
        raise bad_request(f"{name} is given more than once")
    raw = values[0]
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise invalid(f"{name} must be {lo}-{hi}")
    return value


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
