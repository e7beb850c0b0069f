"""The command line: migrate and token behave as the contract and README say."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from gifting import auth
from gifting.migrate import load
from tests.conftest import drop_test_db, with_database

ROOT = Path(__file__).resolve().parent.parent


def gifting(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
    return subprocess.run([sys.executable, "-m", "gifting", *args], cwd=ROOT, env=base | env,
                          capture_output=True, text=True, timeout=60)


async def test_migrate_applies_everything_once_and_reports_it_as_json(servers: dict[str, str], tmp_path: Path) -> None:
    """`gifting migrate` on an empty database applies every file; run again, it applies none."""
    name = f"gifting_cli_{os.getpid()}"
    admin = await asyncpg.connect(servers["database_url"])
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        env = {"GIFTING_DATABASE_URL": with_database(servers["database_url"], name),
               "GIFTING_DATA_DIR": str(tmp_path / "data")}
        first = await asyncio.to_thread(gifting, "migrate", env=env)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout) == {"applied": [m.version for m in load()]}
        again = await asyncio.to_thread(gifting, "migrate", env=env)
        assert json.loads(again.stdout) == {"applied": []}
        assert not (tmp_path / "data").exists()
    finally:
        await drop_test_db(servers, name)


def test_token_mints_a_verifiable_token_with_the_given_claims(tmp_path: Path) -> None:
    """`gifting token` signs with GIFTING_JWT_SECRET: sub, role, name and ttl as asked."""
    secret = "cli-secret-" + "x" * 32
    out = gifting("token", "--user", "carol", "--role", "creator", "--name", "Carol", "--ttl", "120",
                  env={"GIFTING_JWT_SECRET": secret, "GIFTING_WEBHOOK_SECRET": "w" * 32,
                       "GIFTING_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 0, out.stderr
    who = auth.verify(secret, out.stdout.strip())
    assert (who.id, who.role, who.name, who.adult) == ("carol", "creator", "Carol", True)
    assert not (tmp_path / "data").exists()  # real secrets given: nothing generated


def test_token_minor_leaves_out_the_adult_claim(tmp_path: Path) -> None:
    """`gifting token --minor`: a token the age gate refuses on every money path."""
    secret = "cli-secret-" + "x" * 32
    out = gifting("token", "--user", "kid", "--minor",
                  env={"GIFTING_JWT_SECRET": secret, "GIFTING_WEBHOOK_SECRET": "w" * 32,
                       "GIFTING_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 0, out.stderr
    assert auth.verify(secret, out.stdout.strip()).adult is False


def test_token_refuses_an_invalid_user_id_with_exit_2(tmp_path: Path) -> None:
    """A user id outside [A-Za-z0-9_-]{1,64} is refused, not minted."""
    out = gifting("token", "--user", "not valid!", env={"GIFTING_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 2 and out.stdout == "" and "user id" in out.stderr
