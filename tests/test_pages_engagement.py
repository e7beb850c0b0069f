"""Goals, combos, paid messages and moderation on the pages, in Chromium against a real ``gifting serve``.

A paid message of markup and script shows as text: nothing of it runs or renders as markup."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.service import OUTPUT, Service
from tests.test_pages import browser as browser  # the fixtures: a Chromium, and a served process
from tests.test_pages import buy, go_live, live, open_page, open_sheet
from tests.test_pages import service as service

HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script><b>bold</b>'


async def funded_viewer(browser: Any, service: Service, user: str, stream_id: str, pack: str = "coins_3500",
                        coins: str = "3500") -> Any:
    page = await open_page(browser, f"{service.http}/viewer?user={user}&stream={stream_id}")
    await live(page)
    await buy(page, pack, int(coins))
    return page


async def send(page: Any, gift: str) -> None:
    """Select, then send, from the gift sheet."""
    await open_sheet(page)
    await page.click(f"#catalog [data-gift={gift}]")
    await page.click("#send")


async def test_a_goal_set_on_the_dashboard_fills_on_every_page_and_combos_grow_one_bubble(browser, service):
    dash, stream_id = await go_live(browser, service, "baker", "Bread")
    fan = await funded_viewer(browser, service, "fan1", stream_id)
    other = await open_page(browser, f"{service.http}/viewer?user=watcher1&stream={stream_id}")
    await live(other)
    await dash.fill("#goal-title", "New oven")
    await dash.fill("#goal-target", "12")
    await dash.click("#goal-set")
    for page in (dash, fan, other):
        await page.wait_for_selector("#goal:not([hidden]) .goal-title")
        assert await page.text_content("#goal .goal-title") == "New oven"
    # three quick taps of one gift: one bubble whose count grows
    for _ in range(3):
        await send(fan, "heart")
        await fan.wait_for_function("document.querySelector('#message').textContent.startsWith('You sent')")
        await fan.evaluate("document.querySelector('#message').textContent = ''")
    for page in (dash, fan, other):
        await page.wait_for_function("document.querySelector('#goal').dataset.progress === '15'")
        assert await page.eval_on_selector("#goal", "e => e.dataset.status") == "reached"
        assert "Goal reached" in (await page.text_content("#goal") or "")
        bubbles = await page.eval_on_selector_all("#combos .combo", "els => els.map(e => e.dataset.count)")
        assert bubbles == ["3"], bubbles
    # a late joiner gets the goal from its welcome
    late = await open_page(browser, f"{service.http}/viewer?user=late1&stream={stream_id}")
    await live(late)
    await late.wait_for_function("document.querySelector('#goal').dataset.progress === '15'")
    await dash.click("#goal-clear")
    for page in (fan, other, late):
        await page.wait_for_selector("#goal[hidden]", state="attached")
    await fan.screenshot(path=str(OUTPUT / "viewer-goal.png"), full_page=True)
    for page in (dash, fan, other, late):
        assert page.errors == []
        await page.context.close()


async def test_a_paid_message_is_pinned_shown_as_text_and_the_creator_hides_it(browser, service):
    dash, stream_id = await go_live(browser, service, "poet", "Verses")
    fan = await funded_viewer(browser, service, "fan2", stream_id)
    other = await open_page(browser, f"{service.http}/viewer?user=watcher2&stream={stream_id}")
    await live(other)
    await fan.fill("#gift-message", HOSTILE)
    await send(fan, "galaxy")  # 1,000 coins: pinned for 5 minutes
    for page in (dash, fan, other):
        await page.wait_for_selector("#pinned li.pin")
        assert await page.text_content("#pinned li.pin .msg") == HOSTILE  # the text, exactly, as text
        assert await page.text_content("#feed li[data-seq='1'] .msg") == HOSTILE
        # no element came from the text (the feed's own gift icons are the page's, not the message's)
        assert await page.evaluate("document.querySelectorAll('#feed .msg *, #pinned .msg *, img[src=x],"
                                   " #feed b, #pinned b, #feed script, #pinned script').length") == 0
        assert await page.evaluate("window.pwned") is None
        left = await page.text_content("#pinned li.pin .left") or ""
        assert left.startswith(("5:", "4:")), left
    assert await fan.input_value("#gift-message") == ""
    # a message on a gift too small for one is refused, and says why
    await fan.fill("#gift-message", "hi")
    await send(fan, "rose")
    await fan.wait_for_function("document.querySelector('#message').textContent.includes('bigger gift')")
    await dash.click("#feed li[data-seq='1'] .hide-btn")
    for page in (dash, fan, other):
        await page.wait_for_selector("#pinned li.pin", state="detached")
        await page.wait_for_function(
            "document.querySelector(\"#feed li[data-seq='1'] .msg\").textContent === 'message hidden'")
    assert await fan.evaluate("window.pwned") is None
    for page in (dash, fan, other):
        assert page.errors == []
        await page.context.close()


async def test_the_creator_blocks_a_gifter_from_the_feed_and_pauses_gifts(browser, service):
    dash, stream_id = await go_live(browser, service, "dj", "Beats")
    fan = await funded_viewer(browser, service, "fan3", stream_id, "coins_70", "70")
    await send(fan, "rose")
    await dash.wait_for_selector("#feed li[data-seq='1'] .block-btn")
    await dash.click("#feed li[data-seq='1'] .block-btn")
    await dash.wait_for_selector("#blocks li[data-user=fan3]")
    await send(fan, "rose")
    await fan.wait_for_function("document.querySelector('#message').textContent.includes('does not take your gifts')")
    await dash.click("#blocks li[data-user=fan3] button")
    await dash.wait_for_selector("#blocks li[data-user=fan3]", state="detached")
    await dash.click("#pause")
    await dash.wait_for_selector("#paused-note:not([hidden])")
    await send(fan, "rose")
    await fan.wait_for_function("document.querySelector('#message').textContent.includes('paused')")
    await dash.click("#pause")
    await dash.wait_for_selector("#paused-note[hidden]", state="attached")
    await send(fan, "rose")
    await fan.wait_for_function("document.querySelector('#message').textContent.startsWith('You sent')")
    # the leaderboard has a block button too
    await dash.wait_for_selector("#top li[data-user=fan3] .block-btn")
    token = await service.token("dj", "creator", "dj")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http, \
            http.get(f"{service.http}/v1/creators/me/blocks") as r:
        assert (await r.json())["items"] == []
    await dash.screenshot(path=str(OUTPUT / "dashboard-room-controls.png"), full_page=True)
    for page in (dash, fan):
        assert page.errors == []
        await page.context.close()
