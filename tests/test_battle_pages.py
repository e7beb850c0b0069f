"""LIVE Match in a real browser: two creators' dashboards and a viewer page in each room."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.service import OUTPUT, Service, running_service
from tests.test_pages import browser, go_live, live, open_page  # noqa: F401 (the browser fixture)


@pytest.fixture(scope="module")
async def service(servers: dict[str, str], template_db: str,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    async with running_service(servers, template_db, tmp_path_factory.mktemp("battle-pages"), name="battle") as s:
        yield s


async def score(page: Any, side: int) -> int:
    return int(await page.eval_on_selector(f"#battle .side-{side} .score", "e => e.dataset.score"))


async def test_two_creators_battle_from_their_dashboards_and_both_rooms_watch_it(browser, service):  # noqa: F811
    ann, sa = await go_live(browser, service, "ann", "Ramen")
    ben, sb = await go_live(browser, service, "ben", "Synths")
    va = await open_page(browser, f"{service.http}/viewer?user=vera&stream={sa}")
    vb = await open_page(browser, f"{service.http}/viewer?user=walt&stream={sb}")
    for page in (va, vb):
        await live(page)
        await page.click("#packs [data-pack=coins_350]")
        await page.wait_for_function("document.querySelector('#balance').dataset.coins === '350'")
    assert await va.is_hidden("#battle")

    # Ann picks Ben from the live list and invites him; Ben's dashboard shows the invitation live.
    await ann.reload()
    await live(ann)
    await ann.click("#battle .live-list button[data-creator=ben]")
    await ann.select_option("#battle .duration", "60")
    await ann.click("#battle .invite-form button[type=submit]")
    await ann.wait_for_selector("#battle[data-status=invited] .cancel")
    await ben.wait_for_selector("#battle[data-status=invited] .accept")
    await ben.click("#battle .accept")
    for page in (ann, ben, va, vb):
        await page.wait_for_selector("#battle[data-status=live] .countdown")
    assert await va.is_visible("#battle .bar")

    # Each room gifts to its own side; both rooms see both scores move.
    await va.click("#catalog [data-gift=heart]")  # 5 coins to Ann
    await vb.select_option("#count", "5")
    await vb.click("#catalog [data-gift=heart]")  # 25 coins to Ben
    for page in (ann, ben, va, vb):
        await page.wait_for_function("document.querySelector('#battle .side-0 .score').dataset.score === '5' && "
                                     "document.querySelector('#battle .side-1 .score').dataset.score === '25'")
    countdown = await va.text_content("#battle .countdown") or ""
    assert countdown.startswith("0:") or countdown == "1:00"
    await va.screenshot(path=str(OUTPUT / "battle-viewer-live.png"), full_page=True)

    # Its time runs out (moved to a second from now, on the database's clock): everyone sees the result.
    conn = await asyncpg.connect(service.env["GIFTING_DATABASE_URL"])
    try:
        await conn.execute("UPDATE battles SET starts_at = now() - interval '59 seconds', "
                           "ends_at = now() + interval '1 second' WHERE status = 'live'")
    finally:
        await conn.close()
    for page in (ann, ben, va, vb):
        await page.wait_for_selector("#battle[data-status=ended] .result", timeout=15000)
        assert await page.text_content("#battle .result") == "ben wins"
        assert (await score(page, 0), await score(page, 1)) == (5, 25)
        assert "walt" in (await page.text_content("#battle .side-1 .battle-top") or "")
    await vb.screenshot(path=str(OUTPUT / "battle-viewer-ended.png"), full_page=True)
    await ben.screenshot(path=str(OUTPUT / "battle-dashboard-ended.png"), full_page=True)
    for page in (ann, ben, va, vb):
        assert page.errors == []
        await page.context.close()
