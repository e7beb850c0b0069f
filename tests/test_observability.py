"""Operators' view over HTTP against real Postgres and Redis: metrics, request ids, logs, dev sign-in."""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gifting.logs import AccessSummary, JsonFormatter, RequestIdFilter
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
    with caplog.at_level(logging.DEBUG):
        resp = await client.post(f"/v1/streams/{stream['id']}/gifts",
                                 json={"gift_id": "rose", "count": 1, "idempotency_key": "k"},
                                 headers={**headers, "X-Request-Id": "trace-0001"})
    assert resp.status == 201
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    ours = [line for line in lines if line.get("request_id") == "trace-0001"]
    access = [line for line in ours if line["logger"] == "gifting.http"]
    assert len(access) == 1  # one line per request (at debug), the gift's ids on it
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
    assert body["user"] == {"id": "carol", "role": "creator", "name": "Carol", "adult": True}
    started = await dev_client.post("/v1/streams", json={"title": "hi"},
                                    headers={"Authorization": f"Bearer {body['token']}"})
    assert started.status == 201 and (await started.json())["stream"]["creator_id"] == "carol"
    for bad, status in (({"user_id": "a b"}, 422), ({"user_id": "x", "role": "root"}, 422), ({}, 400),
                        ({"user_id": "x", "adult": "yes"}, 422)):
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
        async with http.get(f"{s.ws_http}/stats/latency") as r:
            assert r.status == 200 and set(await r.json()) == {"gift", "batch", "fanout"}
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{s.http}/healthz")  # the HTTP port is not bound


# ---- latency stages -------------------------------------------------------------------------

def test_stage_histogram_buckets_and_quantiles_are_exact_at_bucket_edges():
    from gifting.metrics import StageHistogram, quantile, summarize

    h = StageHistogram((0.001, 0.01, 0.1))
    for v in (0.0005, 0.001, 0.005, 0.005, 0.05, 3.0):
        h.observe(v)
    assert h.counts == [2, 2, 1, 1]  # <= 1 ms, <= 10 ms, <= 100 ms, +Inf
    assert h.count == 6
    assert h.cumulative() == [("0.001", 2.0), ("0.01", 4.0), ("0.1", 5.0), ("+Inf", 6.0)]
    assert quantile(h.bounds, [2, 2, 0, 0], 0.5) == pytest.approx(0.001)  # rank 2: the first bucket's top
    assert quantile(h.bounds, [2, 2, 0, 0], 0.75) == pytest.approx(0.001 + 0.009 / 2)
    assert quantile(h.bounds, [0, 0, 0, 4], 0.99) == 0.1  # +Inf: reported as the highest bound
    assert math.isnan(quantile(h.bounds, [0, 0, 0, 0], 0.5))
    s = summarize(h.bounds, h.counts, h.total)
    assert s["count"] == 6 and s["mean_ms"] == pytest.approx(sum((0.0005, 0.001, 0.005, 0.005, 0.05, 3.0)) / 6 * 1000,
                                                             abs=1e-3)
    assert s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["p999_ms"]
    assert summarize(h.bounds, [0, 0, 0, 0], 0.0) == {"count": 0}


def test_stages_sample_one_gift_in_n_by_seq_and_log_it_with_its_trace_id(caplog):
    from gifting.metrics import Stages
    from wallet.tracing import GiftTrace

    stages = Stages(sample=10, slow=10.0)
    t = GiftTrace(1.0, stream_id=7)
    t.enqueued, t.started, t.committed, t.acked, t.seq, t.batch = 1.001, 1.003, 1.007, 1.008, 20, 4
    with caplog.at_level(logging.DEBUG, logger="gifting.trace"):
        stages.on_gift(t)
        t.seq = 21
        stages.on_gift(t)  # not sampled, not slow: counted, not logged
        stages.on_delivery(7, 18, 22, 100.0, 100.002, 100.003, 100.004, 100.006)  # holds seq 20
        stages.on_delivery(7, 23, 25, 100.0, 100.002, 100.003, 100.004, 100.006)
    traced = [r for r in caplog.records if r.name == "gifting.trace"]
    assert [r.trace for r in traced] == ["g_7_20", "g_7_20"]  # type: ignore[attr-defined]
    assert traced[0].start_to_commit_ms == pytest.approx(4.0)  # type: ignore[attr-defined]
    summary = stages.summary()
    assert summary["gift"]["receive_to_ack"]["count"] == 2
    assert summary["fanout"]["commit_to_last_write"]["count"] == 2
    assert summary["batch"]["batch_window"] == {"count": 0}


async def test_stage_metrics_of_gifts_over_websocket_exist_and_add_up(rt):
    """A few gifts through a real gateway: every stage observed, in a sensible order."""
    from prometheus_client.parser import text_string_to_metric_families as families

    from gifting.api import create_ops_app
    from gifting.live import build_gateway
    from tests.live import Client

    gateway = build_gateway(rt)
    await gateway.start("127.0.0.1", 0)
    rt.metrics.watch_gateway(gateway)
    try:
        stream = await rt.streams.create("cr", "Cr", "t")
        await fund(rt.wallet, "s1", 100)
        base = f"ws://127.0.0.1:{gateway.port}/v1/streams/{stream.id}/live?token="
        from tests.conftest import token

        sender = await Client.open(base + token("s1"))
        watcher = await Client.open(base + token("w1"))
        await sender.wait_type("welcome")
        await watcher.wait_type("welcome")
        for i in range(5):
            await sender.send({"type": "send_gift", "ref": f"g{i}", "gift_id": "rose", "count": 1,
                               "idempotency_key": f"k{i}"})
        await sender.wait(lambda c: len(c.of("ack")) == 5)
        await watcher.wait(lambda c: len(c.gift_seqs) == 5)
        await sender.close()
        await watcher.close()
    finally:
        await gateway.stop()
    summary = rt.metrics.stages.summary()
    gift, fan = summary["gift"], summary["fanout"]
    assert all(gift[s]["count"] == 5 for s in gift)
    assert summary["batch"]["batch_window"]["count"] >= 1 and summary["batch"]["commit_to_publish"]["count"] >= 1
    assert all(fan[s]["count"] >= 1 for s in fan)
    # The parts never exceed the whole; the last write never precedes the first.
    parts = sum(gift[s]["mean_ms"] for s in ("receive_to_enqueue", "enqueue_to_start", "start_to_commit",
                                              "commit_to_ack"))
    assert parts == pytest.approx(gift["receive_to_ack"]["mean_ms"], rel=0.01, abs=0.01)
    assert fan["commit_to_last_write"]["mean_ms"] >= fan["commit_to_first_write"]["mean_ms"]
    async with TestClient(TestServer(create_ops_app(rt.pool, rt.redis, rt.metrics))) as c:
        text = await metrics_text(c)
        view = await (await c.get("/stats/latency")).json()
    counts = {s.labels["stage"]: s.value for f in families(text) if f.name == "gifting_gift_stage_seconds"
              for s in f.samples if s.name.endswith("_count")}
    assert counts["receive_to_ack"] == 5 and counts["start_to_commit"] == 5
    assert view["gift"]["commit_to_ack"]["count"] == 5


def test_batches_queued_behind_an_apply_merge_into_what_applying_them_in_turn_would_do():
    from streams.hot import merge_batches
    from wallet.gifts import BalanceChange, CommittedBatch
    from wallet.models import GiftEvent

    def ev(sid: int, seq: int) -> GiftEvent:
        return GiftEvent(sid, seq, "u", "U", "rose", "Rose", 1, 1, 1, datetime.now(UTC), "cr")

    a = CommittedBatch([ev(1, 1), ev(2, 1)], {1: 1, 2: 1}, {"cr": 2}, [BalanceChange("u", 8, 3)], committed_at=10.0)
    b = CommittedBatch([ev(1, 3), ev(1, 2)], {1: 3}, {"cr": 4}, [BalanceChange("u", 6, 5)], committed_at=10.5)
    c = CommittedBatch([ev(2, 2)], {2: 2}, {"cr": 5}, [BalanceChange("u", 7, 4), BalanceChange("w", 1, 1)],
                       committed_at=11.0)
    m = merge_batches([a, b, c])
    assert [(e.stream_id, e.seq) for e in m.events] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
    assert m.stream_coins == {1: 3, 2: 2} and m.creator_unsettled == {"cr": 5}
    assert sorted(m.wallets, key=lambda w: w.user_id) == [BalanceChange("u", 6, 5), BalanceChange("w", 1, 1)]
    assert m.committed_at == 10.0  # the earliest: lag is never understated
    assert merge_batches([a]) is a


def test_sampled_gifts_become_a_span_with_one_child_per_stage_when_opentelemetry_is_on():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gifting.metrics import Metrics
    from wallet.tracing import GiftTrace

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    import opentelemetry.trace as ot

    with mock_tracer_provider(ot, provider):
        metrics = Metrics(process=False, trace_sample=2, otel=True)
        for seq in (3, 4):  # only 4 is sampled
            t = GiftTrace(1.0, stream_id=9)
            t.enqueued, t.started, t.committed, t.acked, t.seq = 1.001, 1.002, 1.006, 1.007, seq
            metrics.stages.on_gift(t)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"gift", "enqueue", "batch_wait", "commit", "ack"}
    root = spans["gift"]
    assert root.attributes is not None and root.attributes["gifting.gift_id"] == "g_9_4"
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id
               for name, s in spans.items() if name != "gift")
    assert root.end_time - root.start_time == pytest.approx(7_000_000, abs=2_000)  # 7 ms, in ns


def mock_tracer_provider(ot: Any, provider: Any) -> Any:
    """Hands ``provider`` to ``trace.get_tracer`` for a while (the global one can be set only once)."""
    import contextlib
    from unittest import mock

    @contextlib.contextmanager
    def cm() -> Any:
        with mock.patch.object(ot, "get_tracer", lambda name, *a, **k: provider.get_tracer(name)):
            yield

    return cm()


def test_access_summary_sums_requests_up_once_per_window_and_says_nothing_in_between():
    now = [0.0]
    summary = AccessSummary(every=5.0, clock=lambda: now[0])
    assert summary.count(200, 3.0) is None
    now[0] = 2.0
    assert summary.count(404, 9.5) is None
    now[0] = 5.5
    line = summary.count(201, 1.0)
    assert line == "3 HTTP requests in the last 6 s (2xx 2 4xx 1; slowest 10 ms)"
    now[0] = 11.0
    assert summary.count(500, 2.0) == "1 HTTP request in the last 6 s (5xx 1; slowest 2 ms)"
