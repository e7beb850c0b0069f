"""The payment provider, behind a small interface.

``SandboxProvider`` stands in for a real one in development and the demo: it
completes a purchase by POSTing a correctly signed webhook to this service, so
the real verification path always runs. ``ExternalProvider`` does nothing: a
real provider's checkout happens in the client and its webhooks arrive on
their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import Any, Protocol

import aiohttp

from wallet.models import Purchase
from wallet.webhook import sign

log = logging.getLogger("gifting.provider")


class PaymentProvider(Protocol):
    name: str

    async def checkout(self, purchase: Purchase) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class ExternalProvider:
    name = "external"

    async def checkout(self, purchase: Purchase) -> dict[str, Any]:
        return {"provider": self.name}

    async def close(self) -> None:
        return None


class SandboxProvider:
    name = "sandbox"

    def __init__(self, webhook_url: str, secret: str, *, delay: float = 0.05) -> None:
        self.webhook_url = webhook_url
        self.secret = secret
        self.delay = delay
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def checkout(self, purchase: Purchase) -> dict[str, Any]:
        task = asyncio.create_task(self._complete(purchase))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"provider": self.name, "completes": "automatically"}

    async def _complete(self, purchase: Purchase) -> None:
        await asyncio.sleep(self.delay)
        try:
            await self.send(purchase.id, "payment.succeeded", purchase.price_amount, purchase.currency)
        except Exception:
            log.warning("sandbox could not complete purchase %s", purchase.id, exc_info=True)

    async def send(self, purchase_id: str, event_type: str, amount: int, currency: str,
                   event_id: str | None = None) -> int:
        body = json.dumps({
            "id": event_id or "evt_" + secrets.token_hex(12),
            "type": event_type,
            "data": {"purchase_id": purchase_id, "amount": amount, "currency": currency},
        }).encode()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        headers = {"Content-Type": "application/json",
                   "Gifting-Signature": sign(self.secret, body, int(time.time()))}
        async with self._session.post(self.webhook_url, data=body, headers=headers) as resp:
            await resp.read()
            return resp.status

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
