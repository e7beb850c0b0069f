"""The configuration matrix: {JWT secret} x {webhook secret} x {payment provider}.

Every combination is decided by the pure ``decide_mode`` (tested first, all of
them), and then started as a real ``gifting serve`` process: the mode it
announces (or the one line refusing it), whether ``POST /v1/dev/token`` is
mounted, whether the sandbox completes a purchase by itself, and that no
secret, configured or generated, ever reaches its stdout or stderr.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from gifting import auth
from gifting.server import describe
from gifting.settings import DEVELOPMENT, PRODUCTION, Mode, Settings, SettingsError, decide_mode
from tests.conftest import create_test_db, delete_prefix, drop_test_db, with_database
from tests.live import free_port
from tests.service import stop_process

ROOT = Path(__file__).resolve().parent.parent
JWT = "matrix-jwt-" + secrets.token_hex(16)
HOOK = "matrix-hook-" + secrets.token_hex(16)
PROVIDERS = ("", "sandbox", "external")

# (jwt set, webhook set, provider) -> mode and provider, or the variable the refusal names.
EXPECTED: dict[tuple[bool, bool, str], tuple[str, str] | str] = {
    (False, False, ""): (DEVELOPMENT, "sandbox"),
    (False, False, "sandbox"): (DEVELOPMENT, "sandbox"),
    (False, False, "external"): (DEVELOPMENT, "external"),
    (True, True, ""): (PRODUCTION, "external"),
    (True, True, "external"): (PRODUCTION, "external"),
    (True, True, "sandbox"): "GIFTING_SANDBOX_WITH_CONFIGURED_SECRETS",
    **{(True, False, p): "GIFTING_WEBHOOK_SECRET" for p in PROVIDERS},
    **{(False, True, p): "GIFTING_JWT_SECRET" for p in PROVIDERS},
}
COMBOS = list(itertools.product((False, True), (False, True), PROVIDERS))


def combo_id(combo: tuple[bool, bool, str]) -> str:
    jwt, hook, provider = combo
    return f"jwt={'set' if jwt else 'unset'}-webhook={'set' if hook else 'unset'}-provider={provider or 'unset'}"


def test_the_expected_table_covers_every_combination() -> None:
    """The table below is the whole matrix: 2 x 2 x 3 combinations, none missing."""
    assert sorted(EXPECTED) == sorted(COMBOS)


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_decide_mode_for_every_combination(combo: tuple[bool, bool, str]) -> None:
    """Development only with neither secret; one secret refuses, naming the other; sandbox beside secrets: opt-in."""
    jwt, hook, provider = combo
    want = EXPECTED[combo]
    if isinstance(want, str):
        with pytest.raises(SettingsError, match=want):
            decide_mode(jwt_secret=jwt, webhook_secret=hook, provider=provider)
    else:
        mode = decide_mode(jwt_secret=jwt, webhook_secret=hook, provider=provider)
        assert (mode.name, mode.provider) == want
        assert mode.dev_sign_in is (mode.name == DEVELOPMENT)


def test_the_sandbox_beside_configured_secrets_runs_only_with_the_opt_in() -> None:
    """GIFTING_SANDBOX_WITH_CONFIGURED_SECRETS=1 is a staging deployment: production mode, sandbox, no dev sign-in."""
    mode = decide_mode(jwt_secret=True, webhook_secret=True, provider="sandbox", sandbox_opt_in=True)
    assert mode == Mode(PRODUCTION, "sandbox") and mode.free_coins and not mode.dev_sign_in
    # The opt-in changes nothing else: one secret is still refused, development still needs none.
    with pytest.raises(SettingsError, match="GIFTING_WEBHOOK_SECRET"):
        decide_mode(jwt_secret=True, webhook_secret=False, provider="sandbox", sandbox_opt_in=True)
    assert decide_mode(jwt_secret=False, webhook_secret=False, provider="", sandbox_opt_in=True).name == DEVELOPMENT


def test_half_configured_settings_generate_nothing(tmp_path: Path) -> None:
    """With one secret configured, with_dev_secrets refuses and writes no secret file."""
    for given in ({"jwt_secret": JWT}, {"webhook_secret": HOOK}):
        with pytest.raises(SettingsError):
            Settings(data_dir=tmp_path, **given).with_dev_secrets()  # type: ignore[arg-type]
    assert not (tmp_path / "secrets").exists()


def test_what_serve_says_names_the_mode_and_never_a_secret(tmp_path: Path) -> None:
    """The start-up lines say the mode, the sign-in and the provider, warn where owed, and hold no secret."""
    dev = Settings(data_dir=tmp_path).with_dev_secrets()
    prod = Settings(jwt_secret=JWT, webhook_secret=HOOK)
    staging = prod.replace(payment_provider="sandbox", sandbox_with_configured_secrets=True)
    cases = [(dev, "all"), (dev.replace(http_host="0.0.0.0"), "api"), (prod, "all"), (staging, "api"),
             (prod, "gateway")]
    said = {}
    for s, role in cases:
        info, warnings = describe(s, s.mode(), role)
        text = "\n".join(info + warnings)
        assert dev.jwt_secret not in text and dev.webhook_secret not in text
        assert JWT not in text and HOOK not in text
        said[(s.mode().name, s.http_host, s.payment_provider, role)] = (info, warnings)
    info, warnings = said[(DEVELOPMENT, "127.0.0.1", "", "all")]
    assert info[0].startswith("gifting: development mode") and "/v1/dev/token on" in info[0]
    assert "payment provider sandbox" in info[0] and warnings == [
        "development secrets: never use this process in production"]
    assert any("anyone who can reach it" in w for w in said[(DEVELOPMENT, "0.0.0.0", "", "api")][1])
    info, warnings = said[(PRODUCTION, "127.0.0.1", "", "all")]
    assert "sign-in off" in info[0] and "payment provider external" in info[0] and warnings == []
    assert any("without a payment" in w for w in said[(PRODUCTION, "127.0.0.1", "sandbox", "api")][1])
    assert "provider" not in said[(PRODUCTION, "127.0.0.1", "", "gateway")][0][0]  # a gateway takes no payments


def test_settings_repr_hides_secrets_and_url_passwords() -> None:
    """repr/str of Settings (what a log line or a traceback would show) holds no secret."""
    s = Settings(jwt_secret=JWT, webhook_secret=HOOK, database_url="postgresql://app:pg-pass@db:5432/gifting",
                 redis_url="redis://:rd-pass@cache:6379/0")
    for text in (repr(s), str(s), repr(s.replace(dev_mode=True))):
        for secret in (JWT, HOOK, "pg-pass", "rd-pass"):
            assert secret not in text
        assert "jwt_secret='<set>'" in text and "postgresql://app:***@db:5432/gifting" in text


# ---- real processes ----------------------------------------------------------------------


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    http: str
    data_dir: Path
    out_path: Path
    err_path: Path

    def output(self) -> str:
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")


def _env(servers: dict[str, str], db_url: str, prefix: str, data_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
    env.update({"GIFTING_DATABASE_URL": db_url, "GIFTING_REDIS_URL": servers["redis_url"],
                "GIFTING_REDIS_PREFIX": prefix, "GIFTING_DATA_DIR": str(data_dir), "GIFTING_BATCH_WINDOW_MS": "1"})
    env.update(extra)
    return env


@pytest.fixture
async def start(servers: dict[str, str], template_db: str, tmp_path: Path) -> AsyncIterator[object]:
    """Starts ``gifting serve --role all`` with some variables; stops and cleans up after the test."""
    started: list[tuple[subprocess.Popen[bytes], str, str]] = []

    async def run(extra: dict[str, str], name: str) -> Started:
        db = await create_test_db(servers, template_db)
        prefix = f"t{secrets.token_hex(5)}:"
        http_port, ws_port = free_port(), free_port()
        data_dir = tmp_path / name / "data"
        data_dir.parent.mkdir(parents=True)
        out, err = tmp_path / name / "stdout", tmp_path / name / "stderr"
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gifting", "--log-format", "json", "serve", "--role", "all",
                 "--http-port", str(http_port), "--ws-port", str(ws_port)],
                cwd=ROOT, env=_env(servers, with_database(servers["database_url"], db), prefix, data_dir, extra),
                stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        started.append((proc, db, prefix))
        return Started(proc, f"http://127.0.0.1:{http_port}", data_dir, out, err)

    yield run
    for proc, db, prefix in started:
        await stop_process(proc)
        await drop_test_db(servers, db)
        await delete_prefix(servers["redis_url"], prefix)


async def _ready_or_exit(s: Started, http: aiohttp.ClientSession, timeout: float = 60.0) -> int | None:
    """None once the process answers /readyz; its exit code if it stops first."""
    deadline = time.monotonic() + timeout
    while True:
        code = s.proc.poll()
        if code is not None:
            return code
        try:
            async with http.get(f"{s.http}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                if r.status == 200:
                    return None
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, f"neither ready nor exited: {s.output()[-2000:]}"
        await asyncio.sleep(0.1)


async def _purchase(http: aiohttp.ClientSession, s: Started, token: str) -> tuple[dict[str, object], str]:
    """Buys coins_70; returns the checkout answer and the purchase's status once the sandbox had its chance."""
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{s.http}/v1/purchases", headers=headers,
                         json={"pack_id": "coins_70", "idempotency_key": "matrix-1"}) as r:
        assert r.status == 201, await r.text()
        doc = await r.json()
    pid, checkout = doc["purchase"]["id"], doc["checkout"]
    status = doc["purchase"]["status"]
    if checkout.get("completes") == "automatically":  # wait for the sandbox's webhook, with a timeout
        deadline = time.monotonic() + 15
        while status == "pending" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            async with http.get(f"{s.http}/v1/purchases/{pid}", headers=headers) as r:
                status = (await r.json())["purchase"]["status"]
    else:
        async with http.get(f"{s.http}/v1/purchases/{pid}", headers=headers) as r:
            status = (await r.json())["purchase"]["status"]
    return checkout, status


CASES = [(jwt, hook, provider, False) for jwt, hook, provider in COMBOS] + [(True, True, "sandbox", True)]


@pytest.mark.parametrize(("jwt", "hook", "provider", "opt_in"), CASES,
                         ids=[combo_id(c[:3]) + ("-opt-in" if c[3] else "") for c in CASES])
async def test_serve_for_every_combination(start, jwt: bool, hook: bool, provider: str, opt_in: bool) -> None:
    """A real start: the mode announced or one refusal line, /v1/dev/token mounted or 404, sandbox or not, no secret."""
    extra = {}
    if jwt:
        extra["GIFTING_JWT_SECRET"] = JWT
    if hook:
        extra["GIFTING_WEBHOOK_SECRET"] = HOOK
    if provider:
        extra["GIFTING_PAYMENT_PROVIDER"] = provider
    if opt_in:
        extra["GIFTING_SANDBOX_WITH_CONFIGURED_SECRETS"] = "1"
    want = (PRODUCTION, "sandbox") if opt_in else EXPECTED[(jwt, hook, provider)]
    s = await start(extra, combo_id((jwt, hook, provider)) + ("-opt-in" if opt_in else ""))
    async with aiohttp.ClientSession() as http:
        code = await _ready_or_exit(s, http)
        if isinstance(want, str):
            assert code == 2, s.output()[-2000:]
            err = s.err_path.read_text()
            assert s.out_path.read_text() == "" and err.count("\n") == 1 and want in err, err
            assert "Traceback" not in err
            assert not (s.data_dir / "secrets").exists()  # nothing generated beside a configured secret
        else:
            assert code is None, s.output()[-2000:]
            mode, provider_used = want
            async with http.post(f"{s.http}/v1/dev/token", json={"user_id": "mx", "role": "viewer"}) as r:
                assert r.status == (201 if mode == DEVELOPMENT else 404)
                token = (await r.json())["token"] if r.status == 201 else auth.mint(JWT, "mx", "viewer", None, 600)
            async with http.get(f"{s.http}/v1/config") as r:
                assert (await r.json())["dev_sign_in"] is (mode == DEVELOPMENT)
            checkout, status = await _purchase(http, s, token)
            assert checkout["provider"] == provider_used
            assert status == ("succeeded" if provider_used == "sandbox" else "pending")
            out = s.out_path.read_text()
            assert f"gifting: {mode} mode: " in out
            assert f"payment provider {provider_used}" in out
            assert ("WARNING" in out) is (mode == DEVELOPMENT or provider_used == "sandbox")
            assert (s.data_dir / "secrets").exists() is (mode == DEVELOPMENT)
    # Stopped, so every line it would ever write is written.
    s.proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(s.proc.wait, 20)
    text = s.output()
    secrets_seen = [JWT, HOOK]
    if (s.data_dir / "secrets").exists():
        secrets_seen += [p.read_text().strip() for p in (s.data_dir / "secrets").iterdir()]
    for secret in secrets_seen:
        assert secret not in text
