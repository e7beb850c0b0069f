"""``gifting audit``: the wallet's books plus the checks that need Redis."""

from __future__ import annotations

from gifting.runtime import Runtime
from wallet import battles
from wallet.audit import ExtraCheck, Report, audit


async def full_audit(rt: Runtime, *, catch_up: bool = True) -> Report:
    extra: list[ExtraCheck] = [battles.audit_check]
    hot = getattr(rt, "hot", None)
    if hot is not None and rt.redis is not None:
        if catch_up:
            await hot.catch_up_all()
        extra.append(hot.audit_check)
    return await audit(rt.pool, extra)
