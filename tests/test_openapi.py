"""The OpenAPI document matches the code: every route is documented and every documented operation exists."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gifting.openapi import document
from gifting.provider import ExternalProvider
from gifting.server import build_app
from tests.conftest import bearer, wait_for
from tests.service import OUTPUT, Service, running_service

METHODS = {"get", "put", "post", "delete", "patch"}


def app_operations(app: web.Application) -> set[tuple[str, str]]:
    ops = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD to every GET
            continue
        assert route.resource is not None
        ops.add((route.method.lower(), route.resource.canonical))
    return ops


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items() for method in item if method in METHODS}


async def test_every_route_is_in_the_document_and_every_documented_operation_is_a_route(rt):
    rt.settings = rt.settings.replace(dev_mode=True)  # with the development sign-in mounted
    app = build_app(rt, ExternalProvider())
    assert app_operations(app) == documented_operations(document())


async def test_the_document_is_served_as_openapi_3_1_with_every_reference_resolvable(client):
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for r in refs(doc):
        target: Any = doc
        for part in r.removeprefix("#/").split("/"):
            target = target[part]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (method, path)
            assert all(code.isdigit() for code in operation["responses"]), (method, path)



@pytest.fixture(scope="module")
async def service(servers: dict[str, str], template_db: str,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    async with running_service(servers, template_db, tmp_path_factory.mktemp("st"), name="schemathesis") as s:
        yield s


@pytest.fixture(scope="module")
async def fuzz_config(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The settings file, plus a live stream and a funded viewer, so generated gifts can commit."""
    creator = {"Authorization": f"Bearer {await service.token('st_creator', 'creator')}"}
    viewer = {"Authorization": f"Bearer {await service.token('fuzz_viewer', 'viewer')}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{service.http}/v1/streams", json={"title": "fuzzed"}, headers=creator) as r:
            stream_id = (await r.json())["stream"]["id"]
        async with http.post(f"{service.http}/v1/purchases", headers=viewer,
                             json={"pack_id": "coins_17500", "idempotency_key": "fuzz-funds"}) as r:
            assert r.status == 201

        async def funded() -> bool:
            async with http.get(f"{service.http}/v1/wallet", headers=viewer) as r:
                return (await r.json())["coins"] > 0

        await wait_for(funded, timeout=10)
    path = tmp_path_factory.mktemp("st-config") / "schemathesis.toml"
    path.write_text(Path(__file__).with_name("schemathesis.toml").read_text() + f"""
[dictionaries.live_streams]
values = ["{stream_id}"]

[dictionaries.gifts]
values = ["rose", "heart", "donut", "galaxy", "lion"]

[dictionaries.packs]
values = ["coins_70", "coins_350", "coins_17500"]

[parameters]
"path.stream_id" = {{ dictionary = "live_streams", probability = 0.7 }}
"body.gift_id" = {{ dictionary = "gifts", probability = 0.7 }}
"body.pack_id" = {{ dictionary = "packs", probability = 0.7 }}
""")
    return path


@pytest.mark.parametrize("role", ["viewer", "creator", "admin"])
async def test_schemathesis_finds_no_server_errors_and_no_responses_that_break_the_document(service, fuzz_config,
                                                                                            role):
    token = await service.token(f"fuzz_{role}", role)
    exe = Path(sys.executable).with_name("schemathesis")
    cmd = [str(exe), "--config-file", str(fuzz_config),
           "run", f"{service.http}/openapi.json", "--max-examples", "12",
           "--seed", "7", "--phases", "examples,coverage,fuzzing", "--workers", "1", "--no-shrink",
           "-H", f"Authorization: Bearer {token}", "--exclude-path", "/metrics",
           "--request-timeout", "10", "--max-time", "15"]
    proc = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=120,
                                   env={**os.environ, "NO_COLOR": "1"})
    out = proc.stdout + proc.stderr
    (OUTPUT / f"schemathesis-{role}.txt").write_text(out)
    assert proc.returncode == 0, out[-6000:]


# ---- what schemathesis found, pinned as plain tests ------------------------------------

async def test_a_nul_character_in_a_request_string_is_422_not_a_server_error(client):
    for path, body in (("/v1/purchases", {"pack_id": "coins_70", "idempotency_key": "a\u0000b"}),
                       ("/v1/purchases", {"pack_id": "coins\u000070", "idempotency_key": "k"}),
                       ("/v1/streams", {"title": "live\u0000"})):
        resp = await client.post(path, json=body, headers=bearer("carol", "creator"))
        assert resp.status == 422, (path, body, await resp.text())


async def test_a_query_parameter_given_twice_is_400(client):
    resp = await client.get("/v1/streams?limit=&limit=5")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_request"
    assert (await client.get("/v1/streams?limit=5")).status == 200


async def test_a_split_effective_in_year_1_is_422_not_a_server_error(client):
    resp = await client.put("/v1/admin/creators/alice/split", headers=bearer("root", "admin"),
                            json={"creator_bps": 1, "agency_id": None, "effective_from": "0001-01-01T00:00:00Z"})
    assert resp.status == 422
    assert (await resp.json())["error"]["code"] == "invalid_split"
