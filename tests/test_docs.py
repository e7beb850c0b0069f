"""The repository's own docs carry the whole contract, in step with the code.

docs/api.md is the client contract: every OpenAPI path, every error code the
code can answer and every setting must be in it (or, for the settings, in the
README's table), and nothing may point outside the repository.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from gifting.api.common import _HTTP_CODES
from gifting.openapi import PATHS
from wallet import errors

ROOT = Path(__file__).resolve().parent.parent
API = (ROOT / "docs" / "api.md").read_text()
DOCS = "\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
README = (ROOT / "README.md").read_text()

# An error code handed to a constructor: ApiError(404, "code"), invalid("…", "code"),
# bad_request(…, "code"), p.error(ref, "code", …), ProtocolError("code", …), and the boundary
# validator's _invalid(field, "…", "code") / _malformed(field, "…", "code").
CODE_SITES = re.compile(r'(?:ApiError\(\d+,\s*|invalid\(.*,\s*|bad_request\(.*,\s*|_malformed\(.*,\s*'
                        r'|\berror\([^,()]+,\s*|ProtocolError\()"([a-z][a-z0-9_]*)"')


def _codes_in_code() -> set[str]:
    codes = set(_HTTP_CODES.values())
    todo: list[type[errors.WalletError]] = [errors.WalletError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls is not errors.WalletError:
            codes.add(cls.code)
    for package in ("gifting", "streams", "wallet"):
        for path in (ROOT / package).rglob("*.py"):
            codes.update(CODE_SITES.findall(path.read_text()))
    return codes


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_openapi_path_is_in_the_contract() -> None:
    """Each path of /openapi.json appears in docs/api.md (parameter names aside)."""
    documented = _shape(API)
    missing = [path for path in PATHS if _shape(path) not in documented]
    assert not missing, f"docs/api.md lacks {missing}"


def test_every_error_code_the_code_can_answer_is_documented() -> None:
    """Each code from the exception tree and every error call site is named in docs/api.md or another doc."""
    missing = sorted(c for c in _codes_in_code() if f"`{c}`" not in API and f"`{c}`" not in DOCS)
    assert not missing, f"undocumented error codes: {missing}"
    assert {"insufficient_funds", "idempotency_conflict", "invalid_signature", "unknown_field"} <= _codes_in_code()


def test_every_setting_is_in_the_readme_table() -> None:
    """Each GIFTING_* variable gifting.settings reads is a row (or part of one) of the README's table."""
    source = (ROOT / "gifting" / "settings.py").read_text()
    variables = set(re.findall(r'"(GIFTING_[A-Z_]+)"', source))
    assert {"GIFTING_JWT_SECRET", "GIFTING_HTTP_GIFT_RATE", "GIFTING_PRESENCE_TTL"} <= variables
    table = "\n".join(line for line in README.splitlines() if line.startswith("| `GIFTING_"))
    missing = sorted(v for v in variables if f"`{v}`" not in table)
    assert not missing, f"README configuration table lacks {missing}"


def test_nothing_points_outside_the_repository() -> None:
    """No tracked file refers to the contract beside the repository (../shared): the repo carries its own."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = [f for f in files if (ROOT / f).is_file() and f != "tests/test_docs.py"
                 and re.search(r"\.\./shared|shared/contract", (ROOT / f).read_text(errors="replace"))]
    assert not offenders, offenders
