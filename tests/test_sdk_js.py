"""The JavaScript SDK (clients/js) from the one test command: its type check, its size budget, and its
own tests (node's test runner: unit tests, and integration tests against real ``gifting serve``
processes that the tests start on a temporary data dir)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SDK = Path(__file__).resolve().parent.parent / "clients" / "js"
NODE, NPM = shutil.which("node"), shutil.which("npm")
needs_node = pytest.mark.skipif(not (NODE and NPM), reason="node and npm are needed for the JavaScript SDK's tests")


def run(*cmd: str, timeout: float = 300) -> str:
    env = dict(os.environ)
    gifting = Path(sys.executable).parent / "gifting"
    if gifting.exists():
        env["GIFTING_BIN"] = str(gifting)
    done = subprocess.run(cmd, cwd=SDK, env=env, capture_output=True, text=True, timeout=timeout)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-6000:]}"
    return out

@pytest.fixture(scope="module")
def dev_dependencies() -> None:
    """TypeScript, esbuild and ws, as package-lock.json pins them (CI installs them first: `npm ci`)."""
    assert NPM is not None
    if not (SDK / "node_modules" / ".package-lock.json").exists():
        done = subprocess.run([str(NPM), "ci", "--no-audit", "--no-fund"], cwd=SDK, capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            pytest.skip(f"npm ci failed (no registry?): {done.stderr[-500:]}")


@needs_node
def test_the_sdk_type_checks(dev_dependencies: None) -> None:
    """tsc --noEmit over the JSDoc-typed sources, strict; and the .d.ts files a package ships build."""
    run(str(NPM), "run", "-s", "check")
    run(str(NPM), "run", "-s", "types")
    assert (SDK / "types" / "index.d.ts").exists()


@needs_node
def test_the_sdk_is_within_10_kb_minified_and_gzipped(dev_dependencies: None) -> None:
    """esbuild bundles and minifies it; the script fails over the budget."""
    assert "gzipped" in run(str(NPM), "run", "-s", "size")


@needs_node
def test_the_sdk_unit_and_integration_tests_pass(dev_dependencies: None) -> None:
    """node --test: the unit tests, and the integration tests against real gifting serve processes."""
    out = run(str(NODE), "--test", "test/")
    assert "# fail 0" in out and "# skipped 0" in out, out[-3000:]


async def test_the_pages_can_import_the_sdk_from_the_api(client) -> None:
    """/static/sdk/ serves every module of clients/js/src as JavaScript, and every relative import resolves."""
    for path in sorted((SDK / "src").glob("*.js")):
        resp = await client.get(f"/static/sdk/{path.name}")
        assert resp.status == 200 and resp.content_type == "text/javascript", path.name
        body = await resp.text()
        assert body == path.read_text()
        for name in re.findall(r'from "\./([\w.]+)"', body):
            assert (await client.get(f"/static/sdk/{name}")).status == 200, (path.name, name)
    assert (await client.get("/static/sdk/..%2Fpackage.json")).status == 404
