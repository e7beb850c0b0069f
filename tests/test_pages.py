"""The viewer page and the creator dashboard in a real browser (Debian's Chromium, headless)
against a real ``gifting serve``: HTTP API, WebSocket gateway, Postgres, Redis, sandbox payments."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from tests.service import OUTPUT, Service, running_service

CHROMIUM = os.environ.get("GIFTING_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

playwright_api = pytest.importorskip("playwright.async_api",
                                     reason="playwright is not installed (pip install -e '.[dev]')")
if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium; .ci/run does it)", allow_module_level=True)


@pytest.fixture(scope="module")
async def service(servers: dict[str, str], template_db: str,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    async with running_service(servers, template_db, tmp_path_factory.mktemp("pages"), name="pages") as s:
        yield s


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        exe = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
        b = await p.chromium.launch(executable_path=exe, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


async def open_page(browser: Any, url: str) -> Any:
    """A page in a context of its own (own sessionStorage, so its own signed-in user)."""
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    await page.goto(url)
    return page


async def live(page: Any) -> None:
    await page.wait_for_function("window.gifting && window.gifting.room && window.gifting.room.lastWelcome !== null"
                                 " && document.querySelector('#conn').dataset.state === 'live'")


async def feed(page: Any) -> list[tuple[int, str, str]]:
    rows = await page.eval_on_selector_all(
        "#feed li[data-seq]", "els => els.map(e => [Number(e.dataset.seq), e.dataset.sender, e.dataset.giftId])")
    return [tuple(r) for r in rows]


async def go_live(browser: Any, service: Service, creator: str, title: str) -> tuple[Any, str]:
    dash = await open_page(browser, f"{service.http}/dashboard?user={creator}&title={title}")
    await dash.click("#start")
    await dash.wait_for_selector("#live-controls:not([hidden])")
    await live(dash)
    return dash, (await dash.text_content("#stream-id") or "").strip()


async def test_a_gift_sent_from_one_viewer_page_appears_on_another_and_on_the_dashboard(browser, service):
    dash, stream_id = await go_live(browser, service, "chef", "Dumplings")
    alice = await open_page(browser, f"{service.http}/viewer?user=alice&stream={stream_id}")
    bob = await open_page(browser, f"{service.http}/viewer?user=bob&stream={stream_id}")
    await live(alice)
    await live(bob)
    assert await alice.text_content("#room-title") == "Dumplings"

    # buy a pack through the sandbox provider: the signed webhook credits the coins
    await alice.click("#packs [data-pack=coins_70]")
    await alice.wait_for_function("document.querySelector('#balance').dataset.coins === '70'")

    await alice.select_option("#count", "5")
    await alice.click("#catalog [data-gift=heart]")
    await alice.wait_for_function("document.querySelector('#balance').dataset.coins === '45'")
    for page in (alice, bob, dash):
        await page.wait_for_selector("#feed li[data-sender=alice][data-gift-id=heart]")
        assert await feed(page) == [(1, "alice", "heart")]
    await dash.wait_for_function("document.querySelector('#stream-coins').dataset.coins === '25'")
    await dash.wait_for_function("document.querySelector('#chart').dataset.total === '25'")
    await bob.wait_for_function("document.querySelector('#top li .who')?.textContent === 'alice'")
    # two viewers (the gateway counts the creator's own dashboard connection too)
    await dash.wait_for_function("Number(document.querySelector('#viewers').textContent) >= 2", timeout=15000)

    OUTPUT.mkdir(exist_ok=True)
    await alice.screenshot(path=str(OUTPUT / "viewer-sender.png"), full_page=True)
    await bob.screenshot(path=str(OUTPUT / "viewer-other.png"), full_page=True)
    await dash.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)

    # the gateway's connections and deliveries show in the process's metrics
    async with aiohttp.ClientSession() as http, http.get(f"{service.http}/metrics") as r:
        text = await r.text()
    assert re.search(r"^gifting_gateway_connections\{[^}]*\} [3-9]", text, re.M), text
    assert re.search(r"^gifting_fanout_deliveries_total\{[^}]*\} [1-9]", text, re.M)

    # a gift the wallet refuses says why and changes nothing
    await alice.select_option("#count", "1")
    await alice.click("#catalog [data-gift=lion]")
    await alice.wait_for_function("document.querySelector('#message').textContent.includes('Not enough coins')")
    assert await alice.eval_on_selector("#balance", "e => e.dataset.coins") == "45"

    # the creator ends the stream: viewers are told
    await dash.click("#end")
    await dash.wait_for_selector("#offline-controls:not([hidden])")
    await bob.wait_for_function("document.querySelector('#message').textContent.includes('ended')")
    for page in (alice, bob, dash):
        assert page.errors == []
        await page.context.close()


async def test_the_dashboard_shows_past_settlements_and_the_payable_amount(browser, service):
    dash, stream_id = await go_live(browser, service, "singer", "Ballads")
    fan = await open_page(browser, f"{service.http}/viewer?user=fan&stream={stream_id}")
    await live(fan)
    await fan.click("#packs [data-pack=coins_3500]")
    await fan.wait_for_function("document.querySelector('#balance').dataset.coins === '3500'")
    await fan.click("#catalog [data-gift=galaxy]")
    await dash.wait_for_function("document.querySelector('#stream-coins').dataset.coins === '1000'")
    await dash.wait_for_function("document.querySelector('#unsettled').textContent === '1,000'")
    await dash.click("#end")
    await dash.wait_for_selector("#offline-controls:not([hidden])")

    summary = json.loads(await service.cli("settle", "--cutoff", datetime.now(UTC).isoformat()))
    assert summary["gross_coins"] >= 1000, summary  # with the other tests' gifts on this service
    await dash.reload()
    await dash.wait_for_selector("#settlements tbody tr td:nth-child(4)")
    row = await dash.eval_on_selector_all("#settlements tbody tr", "rows => rows.map(r => r.innerText)")
    assert len(row) == 1 and "1,000" in row[0], row
    assert await dash.text_content("#unsettled") == "0"
    # 1,000 coins at 1.06 cents, half to the creator by the default split
    assert await dash.text_content("#payable") == "$5.30"
    await dash.screenshot(path=str(OUTPUT / "dashboard-settled.png"), full_page=True)
    for page in (fan, dash):
        assert page.errors == []
        await page.context.close()


async def test_a_viewer_page_that_loses_its_connection_resumes_with_since_and_shows_nothing_twice(browser, service):
    dash, stream_id = await go_live(browser, service, "painter", "Dusk")
    carol = await open_page(browser, f"{service.http}/viewer?user=carol&stream={stream_id}")
    dave = await open_page(browser, f"{service.http}/viewer?user=dave&stream={stream_id}")
    await live(carol)
    await live(dave)
    await carol.click("#packs [data-pack=coins_70]")
    await carol.wait_for_function("document.querySelector('#balance').dataset.coins === '70'")
    await carol.click("#catalog [data-gift=rose]")
    await dave.wait_for_selector("#feed li[data-seq='1']")

    # dave's connection drops and stays away while carol sends three more gifts over HTTP
    await dave.evaluate("window.gifting.room.drop(1500)")
    await dave.wait_for_function("document.querySelector('#conn').dataset.state === 'reconnecting'")
    token = await service.token("carol", "viewer", "carol")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for i in range(3):
            async with http.post(f"{service.http}/v1/streams/{stream_id}/gifts",
                                 json={"gift_id": "rose", "count": 1, "idempotency_key": f"resume-{i}"}) as r:
                assert r.status == 201, await r.text()
    await dave.wait_for_selector("#feed li[data-seq='4']")
    await live(dave)
    welcome = await dave.evaluate("window.gifting.room.lastWelcome")
    assert welcome["recovered"] is True
    assert sorted(s for s, _, _ in await feed(dave)) == [1, 2, 3, 4]
    assert sorted(s for s, _, _ in await feed(carol)) == [1, 2, 3, 4]
    assert await dave.eval_on_selector("#room-coins", "e => e.dataset.coins") == "4"
    await dave.screenshot(path=str(OUTPUT / "viewer-resumed.png"), full_page=True)
    for page in (carol, dave, dash):
        assert page.errors == []
        await page.context.close()
