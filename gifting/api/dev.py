"""HTTP: the development sign-in, mounted only when the service runs in development mode.

Development mode means both secrets were generated under the data dir
(``Settings.with_dev_secrets``; one configured secret refuses the start). Then
anyone who can reach the port may mint a token for any user and role: that is
the point for the pages and the demo, and the reason it must never exist with
a configured secret (``create_app`` does not add these routes then, so they
answer 404, and the handler refuses anyway).
"""

from __future__ import annotations

import time

from aiohttp import web

from gifting import auth
from gifting.api.common import SETTINGS, ApiError, field, invalid, read_json
from wallet import inputs

routes = web.RouteTableDef()

DEV_TOKEN_TTL = 12 * 3600


@routes.post("/v1/dev/token")
async def dev_token(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.dev_mode:  # a second wall: create_app mounts this only in development mode
        raise web.HTTPNotFound()
    assert settings.jwt_secret
    doc = await read_json(request, {"user_id", "role", "name"})
    user_id = inputs.user_id(field(doc, "user_id"))
    role = doc.get("role", "viewer")
    if not isinstance(role, str) or role not in auth.ROLES:
        raise invalid(f"role is one of {', '.join(auth.ROLES)}", "invalid_role")
    name = doc.get("name")
    if name is not None:
        name = inputs.display_name(name, "name", "invalid_name")
    now = int(time.time())
    try:
        token = auth.mint(settings.jwt_secret, user_id, role, name, DEV_TOKEN_TTL, now=now)
    except ValueError as e:
        raise ApiError(422, "invalid_value", str(e)) from None
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + DEV_TOKEN_TTL))
    return web.json_response({"token": token, "user": {"id": user_id, "role": role, "name": name or user_id},
                              "expires_at": expires}, status=201)
