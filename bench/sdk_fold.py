"""The JavaScript SDK in Chromium: folding one 128-gift frame into the room state, per frame.

    ./dev bench sdk_fold [--chromium /usr/bin/chromium]

Runs ``clients/js/bench/fold.mjs`` (2,000 frames of 128 gifts, each with a combo and goal progress,
through the path a socket frame takes: JSON parse, dedupe by seq, fold, events) in headless Debian
Chromium driven by Playwright, the SDK's modules served over a local HTTP server, and prints what the
page measured (median, p99 and max per frame). No server of the project is involved.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import threading
from pathlib import Path

import cli_help

SDK = Path(__file__).resolve().parent.parent / "clients" / "js"
PAGE = b"""<!doctype html><meta charset="utf-8"><title>fold</title>
<script type="module">
const lines = [];
const log = console.log;
console.log = (...a) => { lines.push(a.join(" ")); log(...a); };
await import("/bench/fold.mjs");
window.result = lines;
</script>"""


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(PAGE)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


async def main() -> None:
    ap = cli_help.parser(__doc__)
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="the browser binary")
    args = ap.parse_args()
    from playwright.async_api import async_playwright

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(SDK)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=args.chromium,
                                              args=["--no-sandbox", "--disable-gpu"])
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/")
            await page.wait_for_function("window.result", timeout=120_000)
            print(f"Chromium {browser.version}:")
            for line in await page.evaluate("window.result"):
                print(" ", line)
            await browser.close()
    finally:
        httpd.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
