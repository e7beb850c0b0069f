"""Operators' view over HTTP against real Postgres and Redis: metrics, request ids, logs, dev sign-in."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gifting.logs import JsonFormatter, RequestIdFilter
from gifting.provider import ExternalProvider
from gifting.server import build_app
from tests.conftest import JWT_SECRET, bearer, signed
from tests.helpers import fund
from tests.test_gifts_api import gift, start_stream


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


async def metrics_text(client: Any) -> str:
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    return await resp.text()


async def test_metrics_count_committed_and_rejected_gifts_batches_and_outbox_lag(client, rt):
    stream = await start_stream(client)
    await fund(rt.wallet, "bob", 70)
    assert (await gift(client, stream["id"], "bob", "k1")).status == 201
    assert (await gift(client, stream["id"], "bob", "k1")).status == 201  # a replay
    assert (await gift(client, stream["id"], "bob", "k2", "lion")).status == 402
    assert (await gift(client, stream["id"], "alice", "k3")).status == 403
    text = await metrics_text(client)
    assert sample(text, "gifting_gifts_committed_total") == 1
    assert sample(text, "gifting_gifts_replayed_total") == 1
    assert sample(text, "gifting_gifts_rejected_total", reason="insufficient_funds") == 1
    assert sample(text, "gifting_gifts_rejected_total", reason="self_gift") == 1
    assert sample(text, "gifting_gift_batch_size_count") >= 3
    assert sample(text, "gifting_gift_commit_seconds_count") >= 3
    assert sample(text, "gifting_http_requests_total", method="POST", route="/v1/streams/{stream_id}/gifts",
                  status="201") == 2
    assert "process_cpu_seconds_total" in text
    # the Redis applier observes lag once it has published the batch
    for _ in range(200):
        if sample(await metrics_text(client), "gifting_outbox_lag_seconds_count") >= 1:
            break
        await rt.hot.catch_up(int(stream["id"]))
    assert sample(await metrics_text(client), "gifting_outbox_lag_seconds_count") >= 1


async def test_metrics_count_purchases_and_webhook_outcomes(client):
    resp = await client.post("/v1/purchases", json={"pack_id": "coins_70", "idempotency_key": "p1"},
                             headers=bearer("bob"))
    purchase = (await resp.json())["purchase"]
    await client.post("/v1/purchases", json={"pack_id": "coins_70", "idempotency_key": "p1"}, headers=bearer("bob"))
    event = json.dumps({"id": "evt_1", "type": "payment.succeeded",
                        "data": {"purchase_id": purchase["id"], **purchase["price"]}}).encode()
    for _ in range(2):
        assert (await client.post("/v1/payments/webhook", data=event, headers=signed(event))).status == 200
    bad = await client.post("/v1/payments/webhook", data=event, headers=signed(event, secret="wrong"))
    assert bad.status == 400
    text = await metrics_text(client)
    assert sample(text, "gifting_purchases_total", outcome="created") == 1
    assert sample(text, "gifting_purchases_total", outcome="replayed") == 1
    assert sample(text, "gifting_webhook_events_total", type="payment.succeeded", outcome="credited") == 1
    assert sample(text, "gifting_webhook_events_total", type="payment.succeeded", outcome="duplicate") == 1
    assert sample(text, "gifting_webhook_events_total", type="unknown", outcome="invalid_signature") == 1


async def test_every_response_carries_a_request_id_and_a_sane_incoming_one_is_kept(client):
    resp = await client.get("/v1/gifts")
    assert resp.headers["X-Request-Id"].startswith("req_")
    resp = await client.get("/v1/wallet")  # errors too
    assert resp.status == 401 and resp.headers["X-Request-Id"].startswith("req_")
    resp = await client.get("/v1/gifts", headers={"X-Request-Id": "lb-1234abcd"})
    assert resp.headers["X-Request-Id"] == "lb-1234abcd"
    resp = await client.get("/v1/gifts", headers={"X-Request-Id": "bad id with spaces\u00e9"})
    assert resp.headers["X-Request-Id"].startswith("req_")


async def test_log_lines_are_json_with_the_request_id_and_never_the_token(client, rt, caplog):
    stream = await start_stream(client)
    await fund(rt.wallet, "bob", 70)
    headers = bearer("bob")
    token = headers["Authorization"].split()[1]
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO):
        resp = await client.post(f"/v1/streams/{stream['id']}/gifts",
                                 json={"gift_id": "rose", "count": 1, "idempotency_key": "k"},
                                 headers={**headers, "X-Request-Id": "trace-0001"})
    assert resp.status == 201
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    ours = [line for line in lines if line.get("request_id") == "trace-0001"]
    access = [line for line in ours if line["logger"] == "gifting.http"]
    assert len(access) == 1  # one line per request, the gift's ids on it
    assert access[0]["status"] == 201 and access[0]["route"] == "/v1/streams/{stream_id}/gifts"
    assert access[0]["gift_id"] == f"g_{stream['id']}_1" and access[0]["seq"] == 1
    everything = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert token not in everything and JWT_SECRET not in everything


async def test_dev_sign_in_is_absent_without_development_secrets(client):
    resp = await client.post("/v1/dev/token", json={"user_id": "bob"})
    assert resp.status == 404
    config = await (await client.get("/v1/config")).json()
    assert config["dev_sign_in"] is False


@pytest.fixture
async def dev_client(rt: Any) -> Any:
    rt.settings = rt.settings.replace(dev_mode=True)
    async with TestClient(TestServer(build_app(rt, ExternalProvider()))) as c:
        yield c


async def test_dev_sign_in_mints_a_working_token_for_the_chosen_user_and_role(dev_client):
    resp = await dev_client.post("/v1/dev/token", json={"user_id": "carol", "role": "creator", "name": "Carol"})
    assert resp.status == 201
    body = await resp.json()
    assert body["user"] == {"id": "carol", "role": "creator", "name": "Carol"}
    started = await dev_client.post("/v1/streams", json={"title": "hi"},
                                    headers={"Authorization": f"Bearer {body['token']}"})
    assert started.status == 201 and (await started.json())["stream"]["creator_id"] == "carol"
    for bad, status in (({"user_id": "a b"}, 422), ({"user_id": "x", "role": "root"}, 422), ({}, 400)):
        assert (await dev_client.post("/v1/dev/token", json=bad)).status == status
    assert (await (await dev_client.get("/v1/config")).json())["dev_sign_in"] is True


async def test_pages_and_their_static_files_are_served(client):
    for path, kind in (("/", "text/html"), ("/viewer", "text/html"), ("/dashboard", "text/html"),
                       ("/static/app.js", "text/javascript"), ("/static/viewer.js", "text/javascript"),
                       ("/static/dashboard.js", "text/javascript"), ("/static/style.css", "text/css")):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.content_type == kind
    assert (await client.get("/static/..%2Fopenapi.py")).status == 404
    assert (await client.get("/static/nope.js")).status == 404


async def test_settlement_runs_show_in_the_metrics_from_postgres(client, rt):
    from tests.settlement_support import settlement

    stream = await start_stream(client)
    await fund(rt.wallet, "bob", 70)
    assert (await gift(client, stream["id"], "bob", "k1")).status == 201
    text = await metrics_text(client)
    assert sample(text, "gifting_settlement_runs") == 0
    cutoff = datetime.now(UTC)
    await settlement(rt).settle(cutoff)
    text = await metrics_text(client)
    assert sample(text, "gifting_settlement_runs") == 1
    assert sample(text, "gifting_settlement_last_cutoff_timestamp_seconds") == pytest.approx(cutoff.timestamp())


async def test_a_gateway_only_process_serves_health_and_metrics(rt):
    from gifting.api import create_ops_app

    async with TestClient(TestServer(create_ops_app(rt.pool, rt.redis, rt.metrics))) as c:
        assert (await c.get("/readyz")).status == 200
        assert "gifting_gifts_committed_total" in await metrics_text(c)
        assert (await c.get("/v1/gifts")).status == 404


async def test_serve_role_gateway_answers_health_and_metrics_with_its_gateway_gauges(servers, template_db, tmp_path):
    from tests.service import running_service

    async with running_service(servers, template_db, tmp_path, name="gateway-only", args=("--role", "gateway")) as s, \
            aiohttp.ClientSession() as http:
        async with http.get(f"{s.ws_http}/metrics") as r:  # on the WebSocket port: no second port
            assert r.status == 200
            text = await r.text()
        assert any(f.name == "gifting_gateway_connections" and f.samples
                   for f in text_string_to_metric_families(text))
        async with http.get(f"{s.ws_http}/v1/gifts") as r:
            assert r.status == 404  # no API in this process
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{s.http}/healthz")  # the HTTP port is not bound
