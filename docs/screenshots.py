"""Screenshots of the viewer page and the creator dashboard, phone (390x844) and desktop (1280x800),
taken from a running ``gifting demo`` with Debian's Chromium; saved under docs/img/ for the README.

    python docs/screenshots.py            # starts its own demo (embedded Postgres and Redis in a temp dir)
    python docs/screenshots.py --keep     # leaves the demo's data dir for a look afterwards

The demo's simulated viewers send gifts; so the pictures show a celebration, the script
itself signs in as the demo's "You" viewer, buys coins in the sandbox and sends one big
gift just before the viewer page's pictures (as a person on that page would).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img"
CHROMIUM = os.environ.get("GIFTING_CHROMIUM", "/usr/bin/chromium")
SIZES = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_demo(data_dir: Path) -> tuple[subprocess.Popen[bytes], str, str, Path]:
    http_port, ws_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
    env["GIFTING_DATA_DIR"] = str(data_dir)
    log_path = data_dir / "demo.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gifting", "--log-format", "text", "demo",
                                 "--http-port", str(http_port), "--ws-port", str(ws_port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        viewer = re.search(r"viewer page +(\S+)", text)
        dashboard = re.search(r"creator dashboard +(\S+)", text)
        if viewer and dashboard:
            return proc, viewer.group(1), dashboard.group(1), log_path
        if proc.poll() is not None:
            raise SystemExit(f"gifting demo exited:\n{text[-3000:]}")
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("gifting demo printed no URLs in 180 s")


async def big_gift(base: str, stream_id: str) -> None:
    """The demo's "You" viewer buys coins and sends one big gift (tier 7: the overlay shows)."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/dev/token", json={"user_id": "demo_you", "name": "You"}) as r:
            token = (await r.json())["token"]
        h = {"Authorization": f"Bearer {token}"}
        async with http.post(f"{base}/v1/purchases", headers=h,
                             json={"pack_id": "coins_3500", "idempotency_key": f"shot-{time.time()}"}) as r:
            pid = (await r.json())["purchase"]["id"]
        for _ in range(100):
            async with http.get(f"{base}/v1/purchases/{pid}", headers=h) as r:
                if (await r.json())["purchase"]["status"] != "pending":
                    break
            await asyncio.sleep(0.1)
        async with http.post(f"{base}/v1/streams/{stream_id}/gifts", headers=h,
                             json={"gift_id": "whale", "count": 1, "idempotency_key": f"shot-{time.time()}"}) as r:
            assert r.status == 201, await r.text()


async def shoot(viewer_url: str, dashboard_url: str, settle: float, exe: str | None) -> list[Path]:
    from playwright.async_api import async_playwright

    base = viewer_url.split("/viewer")[0]
    stream_id = re.search(r"stream=(\d+)", viewer_url).group(1)  # type: ignore[union-attr]
    OUT.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            await asyncio.sleep(settle)  # let the simulated viewers fill the feed and the chart
            for size, viewport in SIZES.items():
                ctx = await browser.new_context(viewport=viewport, device_scale_factor=1)
                page = await ctx.new_page()
                await page.goto(dashboard_url)
                await page.wait_for_selector("#live-controls:not([hidden])")
                await page.wait_for_selector("#chart rect", state="attached")
                await asyncio.sleep(2)
                path = OUT / f"dashboard-{size}.png"
                await page.screenshot(path=str(path))
                saved.append(path)
                await ctx.close()

                ctx = await browser.new_context(viewport=viewport, device_scale_factor=1)
                page = await ctx.new_page()
                await page.goto(viewer_url)
                await page.wait_for_function("document.querySelector('#conn')?.dataset.state === 'live'")
                await page.wait_for_selector("#feed li", state="attached")
                await big_gift(base, stream_id)
                await page.wait_for_selector("#celebration .burst")
                await asyncio.sleep(0.8)  # past the overlay's entrance animation
                path = OUT / f"viewer-{size}.png"
                await page.screenshot(path=str(path))
                saved.append(path)
                if size == "phone":  # and the gift sheet, open, with a gift picked
                    await page.click("#open-sheet")
                    await page.click("#catalog [data-gift=galaxy]")
                    await page.select_option("#count", "5")
                    await asyncio.sleep(0.5)
                    path = OUT / "viewer-phone-sheet.png"
                    await page.screenshot(path=str(path))
                    saved.append(path)
                await ctx.close()
        finally:
            await browser.close()
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settle", type=float, default=25.0,
                        help="seconds of simulated gifting before the first picture (default 25)")
    parser.add_argument("--keep", action="store_true", help="keep the demo's data dir")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="gifting-shots-"))
    proc, viewer_url, dashboard_url, _ = start_demo(data_dir / "data")
    try:
        exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
        for path in asyncio.run(shoot(viewer_url, dashboard_url, args.settle, exe)):
            print(path.relative_to(ROOT))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
