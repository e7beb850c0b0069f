"""Autobahn|Testsuite's fuzzing client against the WebSocket gateway; prints a summary per case group.

    python bench/autobahn.py --install       once: the suite is Python 2.7 code (see below)
    python bench/autobahn.py [--cases 1.*,2.*] [--out test-output/autobahn]

``autobahntestsuite`` on PyPI (25.10.1) is Python 2.7 code: on Python 3 it
installs but fails at import (implicit relative imports, ``from _version
import``). It runs under a Python 2.7 interpreter (here pyenv's 2.7.18) with
its pinned stack (autobahn 0.10.9, Twisted 20.3.0) installed into ``.autobahn/``
with ``pip --prefix``; ``--install`` does exactly that.

The gateway is not an echo server: it speaks the room protocol (JSON
messages, 4 KiB client frames). So the cases that expect a message to be
echoed back (1.*, most of 5.*, 6.* with valid UTF-8, 9.*) cannot pass by
design and are reported as "needs echo"; the cases about framing, control
frames, reserved bits and opcodes, invalid UTF-8 and closing (2.*, 3.*, 4.*,
5.1-5.2, 6.* invalid, 7.*) apply to any server and must be OK or
NON-STRICT. Compression (12.*, 13.*) is off in the gateway: UNIMPLEMENTED.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import cli_help

REPO = Path(__file__).resolve().parents[1]
PREFIX = REPO / ".autobahn"
PY2 = os.environ.get("PYTHON2") or shutil.which("python2.7") or "/root/.pyenv/versions/2.7.18/bin/python"


def py2() -> str:
    for candidate in (PY2, os.path.expanduser("~/.pyenv/versions/2.7.18/bin/python")):
        if candidate and Path(candidate).exists():
            r = subprocess.run([candidate, "--version"], capture_output=True, text=True)
            if r.returncode == 0 and "2.7" in (r.stdout + r.stderr):
                return candidate
    raise SystemExit("no Python 2.7 interpreter found (set PYTHON2): autobahntestsuite needs one")


def site_dir() -> Path:
    return PREFIX / "lib" / "python2.7" / "site-packages"


def install() -> None:
    python = py2()
    base = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--prefix", str(PREFIX)]
    subprocess.run([*base, "setuptools<45", "wheel<0.38"], check=True)
    env = dict(os.environ, PYTHONPATH=str(site_dir()))
    subprocess.run([*base, "autobahn==0.10.9", "twisted==20.3.0", "six", "autobahntestsuite==25.10.1"],
                   check=True, env=env)
    print(f"installed autobahntestsuite under {PREFIX} for {python}")


def wstest(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # txaio (pulled in by autobahn 0.10.9) needs its framework chosen before any protocol is built.
    code = (f"import site,sys; site.addsitedir({str(site_dir())!r}); sys.argv[0]='wstest'; "
            "import txaio; txaio.use_twisted(); from autobahntestsuite.wstest import run; run()")
    return subprocess.run([py2(), "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=3600)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def group(case: str) -> str:
    major = case.split(".")[0]
    if case.startswith(("5.1.", "5.2.")) or case in ("5.1", "5.2"):
        return "5.1-5.2 fragmented control frames"
    names = {"1": "1 framing (echo)", "2": "2 pings/pongs", "3": "3 reserved bits", "4": "4 opcodes",
             "5": "5 fragmentation (echo)", "6": "6 UTF-8", "7": "7 close handling", "9": "9 limits (echo)",
             "10": "10 misc", "12": "12 compression", "13": "13 compression"}
    return names.get(major, major)


ROOM_MESSAGES = ('{"type":"welcome"', '{"type":"viewers"', '{"type":"leaderboard"')


def judge(report: dict[str, object]) -> str:
    """One case's verdict for a server that is not an echo server.

    - "ok": Autobahn's OK, NON-STRICT or INFORMATIONAL, or its expected events once the
      room's own messages (welcome, viewers, leaderboard) are set aside, and a clean close;
    - "by contract": an echo of more than 4 KiB was expected; the gateway closed with 1009;
    - "needs echo": the case expects its message echoed back (does not apply to this server),
      split by whether the closing part of the case (a failed or clean close) was as expected;
    - "deviation": anything else.
    """
    expected = report["expected"]
    received = report["received"]
    assert isinstance(expected, dict) and isinstance(received, list)
    echo = any(e[0] == "message" for events in expected.values() for e in events)
    close_ok = report["behaviorClose"] in ("OK", "INFORMATIONAL")
    if echo:
        if report.get("remoteCloseCode") == 1009:
            return "by contract"
        return "needs echo, close as expected" if close_ok else "needs echo"
    if report["behavior"] in ("OK", "NON-STRICT", "INFORMATIONAL") and close_ok:
        return "ok"
    own = [e for e in received if not (e[0] == "message" and str(e[1]).startswith(ROOM_MESSAGES))]
    if own in list(expected.values()) and close_ok:
        return "ok"
    return "deviation"


def main() -> int:
    ap = cli_help.parser(__doc__)
    ap.add_argument("--install", action="store_true")
    ap.add_argument("--cases", default="*")
    ap.add_argument("--exclude", default="9.*,12.*,13.*")
    ap.add_argument("--out", type=Path, default=REPO / "test-output" / "autobahn")
    args = ap.parse_args()
    if args.install:
        install()
        return 0
    if not (site_dir() / "autobahntestsuite").exists():
        raise SystemExit("autobahntestsuite is not installed: python bench/autobahn.py --install")
    tmp = Path(tempfile.mkdtemp(prefix="gifting-autobahn-"))
    http_port, ws_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
    env.update({"GIFTING_DATA_DIR": str(tmp / "data"), "GIFTING_JWT_SECRET": "autobahn-secret-0123456789abcdef",
                "GIFTING_WEBHOOK_SECRET": "autobahn-webhook-0123456789", "GIFTING_PAYMENT_PROVIDER": "external",
                "GIFTING_WS_MAX_CONNECTIONS_PER_USER": "10000", "PYTHONPATH": str(REPO)})
    log = open(tmp / "serve.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "gifting", "--log-format", "text", "serve", "--role", "all",
                               "--http-port", str(http_port), "--ws-port", str(ws_port)],
                              env=env, stdout=log, stderr=log, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"gifting serve did not start; see {tmp / 'serve.log'}") from None
                time.sleep(0.1)
        sys.path.insert(0, str(REPO))
        from gifting import auth

        secret = env["GIFTING_JWT_SECRET"]
        req = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v1/streams", data=b'{"title": "autobahn"}', method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {auth.mint(secret, 'ab_creator', 'creator', ttl=7200)}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            stream_id = json.load(resp)["stream"]["id"]
        tok = auth.mint(secret, "ab_viewer", "viewer", ttl=7200)
        out = args.out.resolve()
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        spec = {"outdir": str(out), "servers": [{
            "agent": "gifting-gateway", "url": f"ws://127.0.0.1:{ws_port}/v1/streams/{stream_id}/live?token={tok}"}],
            "cases": args.cases.split(","), "exclude-cases": [c for c in args.exclude.split(",") if c],
            "exclude-agent-cases": {}}
        (tmp / "fuzzingclient.json").write_text(json.dumps(spec))
        started = time.monotonic()
        r = wstest(["-m", "fuzzingclient", "-s", str(tmp / "fuzzingclient.json")], tmp)
        elapsed = time.monotonic() - started
        (out / "wstest.log").write_text(r.stdout + r.stderr)
        index = json.loads((out / "index.json").read_text()).get("gifting-gateway")
        if r.returncode != 0 or not index:
            print(r.stdout[-3000:], r.stderr[-3000:], file=sys.stderr)
            raise SystemExit("wstest ran no case")
        by_group: dict[str, Counter[str]] = defaultdict(Counter)
        deviations: list[str] = []
        for case, result in index.items():
            verdict = judge(json.loads((out / result["reportfile"]).read_text()))
            by_group[group(case)][verdict] += 1
            if verdict == "deviation":
                deviations.append(case)
        alive = server.poll() is None
        summary = {"cases": len(index), "seconds": round(elapsed, 1), "server_alive_after": alive,
                   "verdicts": dict(sum(by_group.values(), Counter())),
                   "groups": {g: dict(c) for g, c in sorted(by_group.items())},
                   "deviations": sorted(deviations, key=lambda c: [int(x) for x in c.split(".")])}
        print(json.dumps(summary, indent=1))
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        return 0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
