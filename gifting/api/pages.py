"""HTTP: the viewer page, the creator dashboard, their static files, the client config
and the OpenAPI document.

Plain files from ``gifting/static`` (no build step). Only names listed in the
package directory are served: the path never reaches the file system as given.
The JavaScript SDK's ES modules (``clients/js/src``, linked in as ``static/sdk``)
are served the same way under ``/static/sdk/``, for the pages to import.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from aiohttp import web

from gifting.api.common import SETTINGS, ApiError
from wallet import inputs

routes = web.RouteTableDef()

_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


@cache
def static_files() -> dict[str, tuple[bytes, str]]:
    root = resources.files("gifting") / "static"
    files: dict[str, tuple[bytes, str]] = {}
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in _TYPES:
            files[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return files


@cache
def sdk_files() -> dict[str, tuple[bytes, str]]:
    root = resources.files("gifting") / "static" / "sdk"
    if not root.is_dir():
        return {}
    return {e.name: (e.read_bytes(), "text/javascript")
            for e in root.iterdir() if e.is_file() and e.name.endswith(".js")}


def _file(name: str, files: dict[str, tuple[bytes, str]] | None = None) -> web.Response:
    found = (static_files() if files is None else files).get(name)
    if found is None:
        raise ApiError(404, "not_found", "No such file.")
    body, content_type = found
    # no-cache: a browser revalidates, so a new release's pages are seen at once
    return web.Response(body=body, content_type=content_type, charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return _file("index.html")


@routes.get("/viewer")
async def viewer_page(request: web.Request) -> web.Response:
    return _file("viewer.html")


@routes.get("/dashboard")
async def dashboard_page(request: web.Request) -> web.Response:
    return _file("dashboard.html")


@routes.get("/static/{name}")
async def static(request: web.Request) -> web.Response:
    return _file(request.match_info["name"])


@routes.get("/static/sdk/{name}")
async def sdk(request: web.Request) -> web.Response:
    return _file(request.match_info["name"], sdk_files())


@routes.get("/v1/config")
async def client_config(request: web.Request) -> web.Response:
    """Where the pages find the WebSocket gateway, and whether development sign-in exists."""
    s = request.app[SETTINGS]
    # The gateway listens on its own port of the host the page came from. Behind a
    # load balancer that terminates TLS, route wss:// on that port to the gateways.
    # The Host header is the caller's text: request.url would raise on one yarl cannot parse (a 500).
    host = inputs.host(request.host)
    if host is None:
        raise ApiError(400, "invalid_request", "the Host header is not a host name")
    scheme = "wss" if request.secure else "ws"
    ws_url = f"{scheme}://{host}:{s.ws_port}"
    return web.json_response({"ws_url": ws_url, "dev_sign_in": s.dev_mode})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_bytes(), content_type="application/json")


@cache
def openapi_bytes() -> bytes:
    from gifting.openapi import document

    return json.dumps(document()).encode()
