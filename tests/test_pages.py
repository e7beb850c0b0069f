"""The viewer page and the creator dashboard in a real browser (Debian's Chromium, headless)
against a real ``gifting serve``: HTTP API, WebSocket gateway, Postgres, Redis, sandbox payments.

Each flow runs at a phone's size (390x844) and a desktop's (1280x800). Accessibility is
checked with axe-core (tests/a11y, installed with npm ci) inside the same Chromium.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.service import OUTPUT, Service, _wait_ready, running_service

CHROMIUM = os.environ.get("GIFTING_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SIZES = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}
A11Y = Path(__file__).resolve().parent / "a11y"
AXE = A11Y / "node_modules" / "axe-core" / "axe.min.js"

playwright_api = pytest.importorskip("playwright.async_api",
                                     reason="playwright is not installed (pip install -e '.[dev]')")
if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium; .ci/run does it)", allow_module_level=True)

sizes = pytest.mark.parametrize("size", list(SIZES))


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


@pytest.fixture(scope="module")
def axe_source() -> str:
    """axe-core from npm (tests/a11y/package-lock.json); .ci/run installs it, else it is installed here."""
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: cannot install axe-core for the accessibility checks")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(A11Y)], check=True,
                       capture_output=True, timeout=300)
    return AXE.read_text()


async def open_page(browser: Any, url: str, size: str = "desktop") -> Any:
    """A page in a context of its own (own sessionStorage, so its own signed-in user)."""
    context = await browser.new_context(viewport=SIZES[size])
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.size = size
    await page.goto(url)
    return page


async def live(page: Any) -> None:
    await page.wait_for_function("window.gifting && window.gifting.room && window.gifting.room.lastWelcome !== null"
                                 " && document.querySelector('#conn').dataset.state === 'live'")


async def feed(page: Any) -> list[tuple[int, str, str]]:
    rows = await page.eval_on_selector_all(
        "#feed li[data-seq]", "els => els.map(e => [Number(e.dataset.seq), e.dataset.sender, e.dataset.giftId])")
    return [tuple(r) for r in rows]


async def go_live(browser: Any, service: Service, creator: str, title: str, size: str = "desktop") -> tuple[Any, str]:
    dash = await open_page(browser, f"{service.http}/dashboard?user={creator}&title={title}", size)
    await dash.click("#start")
    await dash.wait_for_selector("#live-controls:not([hidden])")
    await live(dash)
    return dash, (await dash.text_content("#stream-id") or "").strip()


async def open_sheet(page: Any) -> None:
    """On a phone the gift sheet opens from the bottom bar; on a desktop it is always there."""
    if await page.is_visible("#open-sheet"):
        await page.click("#open-sheet")
    await page.wait_for_selector("#sheet #catalog button", state="visible")


async def buy(page: Any, pack: str, balance: int) -> None:
    await open_sheet(page)
    if await page.is_hidden("#packs-box"):
        await page.click("#recharge")
    await page.click(f"#packs [data-pack={pack}]")
    await page.wait_for_function(f"document.querySelector('#balance').dataset.coins === '{balance}'")


async def balance(page: Any) -> int:
    return int(await page.eval_on_selector("#balance", "e => e.dataset.coins"))


async def close_all(*pages: Any) -> None:
    for page in pages:
        assert page.errors == []
        await page.context.close()


@sizes
async def test_buy_select_then_send_with_a_confirmation_and_everyone_sees_it(browser, service, size):
    """A click on a gift only selects it; Send sends it; above 1,000 coins a confirmation comes first;
    a big gift gets the overlay on every page; the viewer's feed shows no seq and no seconds."""
    dash, stream_id = await go_live(browser, service, f"chef_{size}", "Dumplings", size)
    alice = await open_page(browser, f"{service.http}/viewer?user=alice_{size}&name=Alice&stream={stream_id}", size)
    bob = await open_page(browser, f"{service.http}/viewer?user=bob_{size}&stream={stream_id}", size)
    await live(alice)
    await live(bob)
    assert await alice.text_content("#room-title") == "Dumplings"
    assert await alice.text_content("#feed-empty") and await alice.is_visible("#feed-empty")  # "No gifts yet"

    # the creator's own dashboard is not a viewer: two viewers, said in the plural; then one
    await dash.wait_for_function("document.querySelector('#viewers').dataset.count === '2'", timeout=15000)
    assert await dash.text_content("#viewers-label") == "viewers"
    await bob.context.close()
    await dash.wait_for_function("document.querySelector('#viewers').dataset.count === '1'", timeout=15000)
    assert await dash.text_content("#viewers-label") == "viewer"
    bob = await open_page(browser, f"{service.http}/viewer?user=bob_{size}&stream={stream_id}", size)
    await live(bob)

    # buy a pack through the sandbox provider, from the sheet: the signed webhook credits the coins
    await buy(alice, "coins_3500", 3500)
    assert await alice.text_content("#sheet-balance") == "3,500"

    # selecting is not sending, and the price follows the count
    await alice.click("#catalog [data-gift=whale]")
    assert await alice.get_attribute("#catalog [data-gift=whale]", "aria-pressed") == "true"
    assert "2,150 coins" in (await alice.text_content("#price") or "")
    await alice.select_option("#count", "5")
    assert "10,750 coins" in (await alice.text_content("#price") or "")
    await alice.select_option("#count", "1")
    assert await balance(alice) == 3500

    # above the threshold: a confirmation; cancelling sends nothing
    await alice.click("#send")
    await alice.wait_for_selector("#confirm[open]")
    assert "2,150 coins" in (await alice.text_content("#confirm-text") or "")
    await alice.click("#confirm-cancel")
    await alice.wait_for_selector("#confirm:not([open])", state="attached")
    assert await balance(alice) == 3500 and await feed(alice) == []
    await alice.click("#send")
    await alice.click("#confirm-ok")
    await alice.wait_for_function("document.querySelector('#balance').dataset.coins === '1350'")

    # a high-tier gift: the overlay on every page, staying while the feed moves on
    for page in (alice, bob, dash):
        await page.wait_for_selector("#celebration .burst[data-gift-id=whale]")
        await page.wait_for_selector("#feed li[data-sender=alice_" + size + "][data-gift-id=whale]", state="attached")
    # a cheap gift below the threshold goes at once, without a dialog
    await alice.click("#catalog [data-gift=heart]")
    await alice.select_option("#count", "5")
    await alice.click("#send")
    await alice.wait_for_function("document.querySelector('#balance').dataset.coins === '1325'")
    assert not await alice.is_visible("#confirm")
    for page in (alice, bob, dash):
        await page.wait_for_selector(f"#feed li[data-seq='2'][data-sender=alice_{size}]", state="attached")
        assert await feed(page) == [(2, f"alice_{size}", "heart"), (1, f"alice_{size}", "whale")]
        assert await page.is_hidden("#feed-empty")
    # what a viewer reads in the feed: who, what, how much; no "#1", no hh:mm:ss
    row = await bob.inner_text("#feed li[data-seq='1']")
    assert "Alice" in row and "Whale Diving" in row and "2,150" in row
    assert "#" not in row and not re.search(r"\d:\d\d:\d\d", row)
    # every catalog gift has its icon, shipped with the pages
    icons = await alice.eval_on_selector_all("#catalog img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
    assert icons and all(icons)

    await dash.wait_for_function("document.querySelector('#stream-coins').dataset.coins === '2175'")
    await dash.wait_for_function("document.querySelector('#chart').dataset.total === '2175'")
    await bob.wait_for_function("document.querySelector('#top li .who')?.textContent === 'Alice'")

    OUTPUT.mkdir(exist_ok=True)
    await alice.screenshot(path=str(OUTPUT / f"viewer-sender-{size}.png"), full_page=True)
    await dash.screenshot(path=str(OUTPUT / f"dashboard-{size}.png"), full_page=True)

    # the gateway's connections and deliveries show in the process's metrics
    async with aiohttp.ClientSession() as http, http.get(f"{service.http}/metrics") as r:
        text = await r.text()
    assert re.search(r"^gifting_gateway_connections\{[^}]*\} [3-9]", text, re.M), text
    assert re.search(r"^gifting_fanout_deliveries_total\{[^}]*\} [1-9]", text, re.M)

    # a gift the wallet refuses says why and changes nothing
    await alice.select_option("#count", "1")
    await alice.click("#catalog [data-gift=lion]")
    await alice.click("#send")
    await alice.click("#confirm-ok")
    await alice.wait_for_function("document.querySelector('#message').textContent.includes('Not enough coins')")
    assert await balance(alice) == 1325

    # the creator ends the stream: viewers are told
    await dash.click("#end")
    await dash.wait_for_selector("#offline-controls:not([hidden])")
    await bob.wait_for_function("document.querySelector('#message').textContent.includes('ended')")
    await close_all(alice, bob, dash)


async def test_go_live_pressed_while_the_dashboard_still_loads_stays_live(browser, service):
    """The dashboard asks for the creator's live stream when it opens; "Go live" pressed before that
    answer came (a slow phone network) must not be undone by it."""
    context = await browser.new_context(viewport=SIZES["desktop"])
    page = await context.new_page()
    held: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def hold(route: Any) -> None:
        if not held.done():
            held.set_result(route)
        else:
            await route.continue_()

    await page.route("**/v1/streams?status=live*", hold)
    await page.goto(f"{service.http}/dashboard?user=early_bird&title=Early")
    route = await asyncio.wait_for(held, 30)  # the opening list is asked for: answered now, delivered late
    answer = await route.fetch()
    await page.click("#start")
    await page.wait_for_selector("#live-controls:not([hidden])")
    await route.fulfill(response=answer)  # no stream of this creator was live when it was asked
    await page.wait_for_function("document.querySelector('#conn').dataset.state === 'live'")
    await page.wait_for_timeout(300)
    assert await page.is_visible("#live-controls") and await page.is_hidden("#offline-controls")
    await context.close()


@sizes
async def test_the_dashboard_chart_and_the_cash_estimate_come_back_after_a_reload(browser, service, size):
    """The chart's history is the server's (coins per minute from committed gifts), not the page's."""
    dash, stream_id = await go_live(browser, service, f"singer_{size}", "Ballads", size)
    assert await dash.text_content("#feed-empty")
    token = await service.token(f"fan_{size}", "viewer", "Fan")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.post(f"{service.http}/v1/purchases",
                             json={"pack_id": "coins_3500", "idempotency_key": f"chart-{size}"}) as r:
            pid = (await r.json())["purchase"]["id"]
        for _ in range(200):
            async with http.get(f"{service.http}/v1/purchases/{pid}") as r:
                if (await r.json())["purchase"]["status"] == "succeeded":
                    break
            await asyncio.sleep(0.05)
        async with http.post(f"{service.http}/v1/streams/{stream_id}/gifts",
                             json={"gift_id": "galaxy", "count": 1, "idempotency_key": f"chart-g-{size}"}) as r:
            assert r.status == 201, await r.text()
    await dash.wait_for_function("document.querySelector('#chart').dataset.total === '1000'")
    await dash.wait_for_function("document.querySelector('#unsettled').textContent === '1,000'")
    # 1,000 coins at 1.06 cents, half to the creator by the default split: an estimate
    await dash.wait_for_function("document.querySelector('#estimate').dataset.cents === '530'")
    assert "estimate" in (await dash.text_content("#estimate-note") or "")

    await dash.reload()
    await live(dash)
    await dash.wait_for_function("document.querySelector('#chart').dataset.total === '1000'")
    bars = await dash.eval_on_selector_all("#chart rect.bar",
                                           "els => els.map(e => [e.dataset.minute, Number(e.dataset.coins)])")
    assert len(bars) == 30 and sum(c for _, c in bars) == 1000
    minutes = [datetime.fromisoformat(m) for m, _ in bars]
    assert all(m.second == 0 for m in minutes) and minutes[-1] <= datetime.now(UTC)
    labels = await dash.eval_on_selector_all("#chart text.axis", "els => els.map(e => e.textContent)")
    assert "now" in labels and any(re.fullmatch(r"\d\d:\d\d", t) for t in labels), labels  # a labelled time axis
    assert "per minute" in (await dash.text_content("#chart-title") or "").lower()

    await dash.click("#end")
    await dash.wait_for_selector("#offline-controls:not([hidden])")
    summary = json.loads(await service.cli("settle", "--cutoff", datetime.now(UTC).isoformat()))
    assert summary["gross_coins"] >= 1000, summary  # with the other tests' gifts on this service
    await dash.reload()
    await dash.wait_for_selector("#settlements tbody tr td:nth-child(4)")
    row = await dash.eval_on_selector_all("#settlements tbody tr", "rows => rows.map(r => r.innerText)")
    assert len(row) == 1 and "1,000" in row[0], row
    assert await dash.text_content("#unsettled") == "0"
    assert await dash.text_content("#payable") == "$5.30"
    await dash.screenshot(path=str(OUTPUT / f"dashboard-settled-{size}.png"), full_page=True)
    await close_all(dash)


@sizes
async def test_names_and_texts_with_markup_are_shown_as_text_and_combos_grow_one_bubble(browser, service, size):
    dash, stream_id = await go_live(browser, service, f"host_{size}", "Open mic", size)
    evil = '<img src=x onerror="window.pwned=1"><b>Bold</b>'
    mallory = await open_page(browser, f"{service.http}/viewer?user=mallory_{size}&stream={stream_id}&name="
                              + aiohttp.helpers.quote(evil, safe=""), size)
    await live(mallory)
    await buy(mallory, "coins_70", 70)
    await mallory.click("#catalog [data-gift=rose]")
    await mallory.click("#send")
    await mallory.wait_for_function("document.querySelector('#balance').dataset.coins === '69'")
    for page in (mallory, dash):
        await page.wait_for_selector("#feed li[data-seq='1']", state="attached")
        assert await page.text_content("#feed li[data-seq='1'] .who") == evil
        assert await page.eval_on_selector("#feed li[data-seq='1'] .who", "e => e.children.length") == 0
        assert await page.evaluate("window.pwned") is None
    await dash.wait_for_function(f"document.querySelector('#top li .who')?.textContent === {json.dumps(evil)}")

    # combo bubbles: gifts that carry one combo id grow one bubble (GiftEvent.combo, from the commit)
    await mallory.evaluate("""() => {
      const handlers = window.gifting.room.h;  // the page's live-room handlers, as the room calls them
      const base = { stream_id: '0', sender: { id: 'x', name: 'Combo <i>fan</i>' },
                     gift: { id: 'rose', name: 'Rose', coins: 1 }, count: 1, coins: 1,
                     created_at: new Date().toISOString() };
      for (const n of [1, 2, 3]) {
        handlers.gift({ ...base, id: 'c' + n, seq: 10000 + n, combo: { id: 'combo-1', count: n } });
      }
    }""")
    await mallory.wait_for_selector("#combos [data-combo-id=combo-1]", state="attached")
    assert await mallory.eval_on_selector_all("#combos [data-combo-id=combo-1]", "els => els.length") == 1
    text = await mallory.text_content("#combos [data-combo-id=combo-1]") or ""
    assert "3" in text and "Combo <i>fan</i>" in text
    await close_all(mallory, dash)


@sizes
async def test_a_viewer_page_resumes_after_the_gateway_restarts_and_shows_nothing_twice(
        browser, servers, template_db, tmp_path, size):
    async with running_service(servers, template_db, tmp_path, name=f"pages-restart-{size}") as service:
        dash, stream_id = await go_live(browser, service, "painter", "Dusk", size)
        carol = await open_page(browser, f"{service.http}/viewer?user=carol&stream={stream_id}", size)
        dave = await open_page(browser, f"{service.http}/viewer?user=dave&stream={stream_id}", size)
        await live(carol)
        await live(dave)
        await buy(carol, "coins_70", 70)
        await carol.click("#catalog [data-gift=rose]")
        await carol.click("#send")
        await dave.wait_for_selector("#feed li[data-seq='1']", state="attached")

        # the process (HTTP API and gateway) stops and comes back on the same ports, database and Redis
        service.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(service.proc.wait, 30) == 0
        await dave.wait_for_function("document.querySelector('#conn').dataset.state !== 'live'")
        with open(service.log_path, "ab") as log:
            again = subprocess.Popen([sys.executable, "-m", "gifting", "--log-format", "json", "serve"],
                                     env=service.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            service.proc = again
            await _wait_ready(service, 60)
            await resumed(browser, service, stream_id, dash, carol, dave, size)
        finally:
            if again.poll() is None:
                again.send_signal(signal.SIGTERM)
                await asyncio.to_thread(again.wait, 30)


async def resumed(browser: Any, service: Service, stream_id: str, dash: Any, carol: Any, dave: Any, size: str) -> None:
    """After the restart: three gifts over HTTP; every page shows each gift once."""
    token = await service.token("carol", "viewer", "carol")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for i in range(3):
            async with http.post(f"{service.http}/v1/streams/{stream_id}/gifts",
                                 json={"gift_id": "rose", "count": 1, "idempotency_key": f"resume-{i}"}) as r:
                assert r.status == 201, await r.text()
    for page in (dave, carol, dash):
        await page.wait_for_selector("#feed li[data-seq='4']", state="attached", timeout=30000)
        await live(page)
        seqs = [s for s, _, _ in await feed(page)]
        assert sorted(seqs) == [1, 2, 3, 4] and len(set(seqs)) == len(seqs)
    assert (await dave.evaluate("window.gifting.room.lastWelcome"))["recovered"] is True
    assert await dave.eval_on_selector("#room-coins", "e => e.dataset.coins") == "4"
    await dave.screenshot(path=str(OUTPUT / f"viewer-resumed-{size}.png"), full_page=True)
    await close_all(carol, dave, dash)


async def serious_violations(page: Any, axe_source: str) -> list[str]:
    await page.add_script_tag(content=axe_source)
    result = await page.evaluate(
        "async () => (await axe.run(document, { resultTypes: ['violations'] })).violations"
        ".map(v => ({ id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' ')) }))")
    return [f"{v['id']} ({v['impact']}): {v['nodes'][:3]}" for v in result if v["impact"] in ("serious", "critical")]


async def tab_reaches_every_control(page: Any) -> None:
    """Tabbing from the top reaches every visible control of the page."""
    wanted = await page.evaluate("""() => {
      const els = [...document.querySelectorAll('a[href], button, input, select, textarea, [tabindex]')]
        .filter(e => !e.disabled && e.tabIndex >= 0 && e.getClientRects().length
                     && getComputedStyle(e).visibility !== 'hidden' && !e.closest('[hidden], dialog:not([open])'));
      els.forEach((e, i) => e.dataset.k = 'k' + i);
      return els.map(e => e.dataset.k);
    }""")
    await page.evaluate("document.activeElement && document.activeElement.blur()")
    reached: set[str] = set()
    for _ in range(len(wanted) + 10):
        await page.keyboard.press("Tab")
        k = await page.evaluate("document.activeElement && document.activeElement.dataset.k")
        if k:
            reached.add(k)
        if reached >= set(wanted):
            break
    missing = await page.evaluate("ks => ks.map(k => document.querySelector(`[data-k=${k}]`).outerHTML.slice(0, 120))",
                                  [k for k in wanted if k not in reached])
    assert not missing, missing


@sizes
async def test_both_pages_have_no_serious_accessibility_violation_and_every_control_takes_the_keyboard(
        browser, service, axe_source, size):
    dash, stream_id = await go_live(browser, service, f"a11y_{size}", "Accessible", size)
    viewer = await open_page(browser, f"{service.http}/viewer?user=a11y_viewer_{size}&stream={stream_id}", size)
    await live(viewer)
    await buy(viewer, "coins_3500", 3500)
    await viewer.click("#catalog [data-gift=galaxy]")
    await viewer.click("#send")
    await dash.wait_for_selector("#feed li[data-seq='1']", state="attached")
    await viewer.click("#menu-btn")  # the menu open, so its controls count too
    for page in (viewer, dash):
        assert await serious_violations(page, axe_source) == [], page.url
    # the open sheet and the confirmation dialog too (the menu closed: it covers part of the page)
    await viewer.click("#menu-btn")
    if size == "phone":
        await open_sheet(viewer)
        assert await serious_violations(viewer, axe_source) == []
    await viewer.click("#catalog [data-gift=lion]")
    await viewer.click("#send")
    await viewer.wait_for_selector("#confirm[open]")
    assert await serious_violations(viewer, axe_source) == []
    await viewer.keyboard.press("Escape")  # the dialog closes from the keyboard, nothing sent
    await viewer.wait_for_selector("#confirm:not([open])", state="attached")
    assert await balance(viewer) == 2500

    # the keyboard: every control is reached by Tab, and a gift can be picked and sent without a mouse
    await dash.click("#menu-btn")
    await tab_reaches_every_control(dash)
    await viewer.reload()
    await live(viewer)
    await viewer.click("#menu-btn")
    await tab_reaches_every_control(viewer)
    await viewer.click("#menu-btn")
    if size == "phone":
        await viewer.focus("#open-sheet")
        await viewer.keyboard.press("Enter")
        await viewer.wait_for_selector("#sheet #catalog button", state="visible")
        await tab_reaches_every_control(viewer)
    await viewer.focus("#catalog [data-gift=rose]")
    await viewer.keyboard.press("Enter")
    await viewer.focus("#send")
    await viewer.keyboard.press("Enter")
    await viewer.wait_for_function("document.querySelector('#balance').dataset.coins === '2499'")
    await close_all(viewer, dash)
