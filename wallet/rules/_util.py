"""Small helpers the engagement rules share. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def ts(value: Any) -> datetime:
    """A timestamp from a locked row: a datetime, or the ISO text ``to_jsonb`` makes of one."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
