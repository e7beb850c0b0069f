"""``gifting audit``: the wallet's books plus the checks that need Redis."""

from __future__ import annotations

from gifting.runtime import Runtime
from wallet.audit import Report, audit


async def full_audit(rt: Runtime, *, catch_up: bool = True) -> Report:
    extra = []
    hot = getattr(rt, "hot", None)
    if hot is not None and rt.redis is not None:
        if catch_up:
            await hot.catch_up_all()
        extra.append(hot.audit_check)
    return await audit(rt.pool, extra)
