"""The viewer page's spending panel and age gate in a real browser (Chromium, headless) against a real
``gifting serve``: a minor is told why they cannot buy or gift; limits, a refused gift's room left, a break."""

from __future__ import annotations

from typing import Any

from tests.service import OUTPUT
from tests.test_pages import browser, buy, go_live, live, open_page, open_sheet, service

__all__ = ["browser", "service"]  # the fixtures, shared with tests/test_pages.py


def message_has(text: str) -> str:
    return f"document.querySelector('#message').textContent.includes({text!r})"


async def send(page: Any, gift: str) -> None:
    """Select, then send, from the gift sheet (the header menu closed first)."""
    if await page.is_visible("#menu"):
        await page.click("#menu-btn")
    await open_sheet(page)
    await page.click(f"#catalog [data-gift={gift}]")
    await page.click("#send")


async def settings(page: Any) -> None:
    """The spending panel lives in the header menu."""
    if await page.is_hidden("#menu"):
        await page.click("#menu-btn")


async def test_a_minor_is_told_why_they_cannot_buy_or_gift(browser: Any, service: Any) -> None:
    dash, stream_id = await go_live(browser, service, "teacher", "Maths")
    kid = await open_page(browser, f"{service.http}/viewer?user=kiddo&minor=1&stream={stream_id}")
    await live(kid)
    await open_sheet(kid)
    await kid.wait_for_selector("#age-note:not([hidden])")
    if await kid.is_hidden("#packs-box"):
        await kid.click("#recharge")
    await kid.click("#packs [data-pack=coins_70]")
    await kid.wait_for_function(message_has("verified adult (18+)"))
    await send(kid, "rose")
    await kid.wait_for_function(message_has("verified adult (18+)"))
    assert await kid.eval_on_selector("#balance", "e => e.dataset.coins") == "0"
    OUTPUT.mkdir(exist_ok=True)
    await kid.screenshot(path=str(OUTPUT / "viewer-minor.png"), full_page=True)
    assert kid.errors == [] and dash.errors == []
    for page in (kid, dash):
        await page.context.close()


async def test_limits_set_on_the_page_refuse_a_gift_with_the_room_left_and_a_break_stops_gifts(
        browser: Any, service: Any) -> None:
    dash, stream_id = await go_live(browser, service, "painter", "Oils")
    fan = await open_page(browser, f"{service.http}/viewer?user=saver&stream={stream_id}")
    fan.on("dialog", lambda d: d.accept())
    await live(fan)
    assert await fan.is_hidden("#age-note")
    await buy(fan, "coins_70", 70)

    await settings(fan)
    await fan.fill("#limit-daily", "10")
    await fan.click("#save-limits")
    await fan.wait_for_function("document.querySelector('#spending').dataset.daily === '10'")
    await send(fan, "heart")  # 5 of 10
    await fan.wait_for_function("document.querySelector('#spent-today').dataset.coins === '5'")
    await fan.select_option("#count", "5")
    await send(fan, "heart")  # 25: past the limit
    await fan.wait_for_function(message_has("daily limit: 5 coins left"))
    assert await fan.eval_on_selector("#balance", "e => e.dataset.coins") == "65"

    # A raise waits out its cooling-off and shows as pending.
    await settings(fan)
    await fan.fill("#limit-daily", "100")
    await fan.click("#save-limits")
    await fan.wait_for_selector("#limits-pending:not([hidden])")
    assert await fan.eval_on_selector("#spending", "e => e.dataset.daily") == "10"

    await settings(fan)
    await fan.select_option("#exclude-days", "7")
    await fan.click("#exclude")
    await fan.wait_for_selector("#excluded-note:not([hidden])")
    await fan.select_option("#count", "1")
    await send(fan, "rose")
    await fan.wait_for_function(message_has("taking a break"))
    OUTPUT.mkdir(exist_ok=True)
    await fan.screenshot(path=str(OUTPUT / "viewer-spending.png"), full_page=True)
    assert fan.errors == [] and dash.errors == []
    for page in (fan, dash):
        await page.context.close()
