"""``gifting serve --demo``: a live stream with simulated viewers buying coins and sending gifts."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from gifting.demo import check
from gifting.settings import Settings
from tests.conftest import wait_for
from tests.service import running_service


def test_the_demo_refuses_real_secrets_and_real_payment_providers():
    real = Settings(jwt_secret="s", webhook_secret="w")
    assert check(real) is not None
    assert check(real.replace(dev_mode=True, payment_provider="external")) is not None
    assert check(real.replace(dev_mode=True)) is None


def totals(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0) + s.value
    return out


async def test_the_demo_prints_both_urls_and_its_viewers_buy_coins_and_send_gifts(servers, template_db, tmp_path: Path):
    async with running_service(servers, template_db, tmp_path, name="demo", args=("--demo",)) as service, \
            aiohttp.ClientSession() as http:
        printed = await wait_for(lambda: re.search(r"viewer page +\S+/viewer\?stream=(\d+)&user=(\w+)",
                                                   service.log()), timeout=30)
        assert "/dashboard?user=demo_creator" in service.log()
        stream_id = printed.group(1)

        async def metrics() -> dict[str, float] | None:
            async with http.get(f"{service.http}/metrics") as r:
                m = totals(await r.text())
            enough = m.get("gifting_gifts_committed_total", 0) >= 10 and m.get("gifting_gateway_connections", 0) >= 5
            enough = enough and m.get("gifting_battles", 0) >= 1  # the two demo creators battle
            return m if enough else None

        m = await wait_for(metrics, timeout=45, interval=0.5)
        assert m["gifting_webhook_events_total"] >= 5  # coins bought through the signed webhook
        async with http.get(f"{service.http}/v1/streams/{stream_id}") as r:
            stream = (await r.json())["stream"]
        assert stream["status"] == "live" and stream["coins_received"] > 0 and stream["viewers"] >= 5
        assert stream["goal"] is not None and stream["goal"]["progress_coins"] > 0  # the creator set a goal
        async with http.get(f"{service.http}/v1/streams/{stream_id}/gifts?limit=1000") as r:
            gifts = (await r.json())["gifts"]
        assert any(g["combo"]["count"] > g["count"] for g in gifts)  # taps of one gift grew a combo
        # the printed viewer URL signs in (development sign-in) like the dashboard's
        async with http.post(f"{service.http}/v1/dev/token", json={"user_id": printed.group(2)}) as r:
            assert r.status == 201

        # SIGTERM (as Ctrl-C): the demo ends its stream before the process exits
        service.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(service.proc.wait, 30) == 0
        conn = await asyncpg.connect(service.env["GIFTING_DATABASE_URL"])
        try:
            status = await conn.fetchval("SELECT status FROM streams WHERE id = $1", int(stream_id))
        finally:
            await conn.close()
        assert status == "ended"
    log = service.log()
    assert "Traceback" not in log
    assert f"gifting demo: stream {stream_id} ended" in log
    # no line per request: the access log is summed up every few seconds
    access = [line for line in log.splitlines() if '"logger": "gifting.http"' in line]
    assert access == []

