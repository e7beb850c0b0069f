"""The second wall: a gift whose data the store refuses fails alone, never the batch it rides in.

The boundary validator (``wallet.inputs``) is the first wall: nothing with a
NUL or a lone surrogate reaches the gift path from the HTTP API or the
gateway. This test goes past it, calling ``GiftService`` directly with the
poison the issue found, in the same batch window as eight good gifts.

The gift path splits a batch that fails on one request's value until that
request fails alone (``wallet.gifts.POISON``).
"""

from __future__ import annotations

import asyncio

import pytest

from gifting.settings import Settings
from tests.helpers import fund
from wallet import errors
from wallet.audit import audit
from wallet.gift_decide import GiftRequest


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A window wide enough that the nine gifts below share one batch.
    return settings.replace(batch_window_ms=50.0)


async def test_a_poisoned_gift_past_the_validator_fails_alone_and_the_batch_commits(rt) -> None:
    """Eight good gifts and two poisoned ones (a NUL key, a lone surrogate in the sender's name) at once:
    the eight commit with their balances, the two are refused with a 4xx wallet error, the books balance."""
    stream = await rt.streams.create("crwall", "crwall", "second wall")
    senders = [f"wall{i}" for i in range(8)]
    for user in [*senders, "poison"]:
        await fund(rt.wallet, user, 70)
    good = [GiftRequest(sender_id=u, sender_name=u, stream_id=stream.id, gift_id="rose", count=1,
                        idempotency_key=f"good-{u}") for u in senders]
    poison = [GiftRequest(sender_id="poison", sender_name="poison", stream_id=stream.id, gift_id="rose", count=1,
                          idempotency_key="nul\x00key"),
              GiftRequest(sender_id="poison", sender_name="\ud800", stream_id=stream.id, gift_id="rose", count=1,
                          idempotency_key="surrogate-name")]
    results = await asyncio.gather(*(rt.gifts.send(r) for r in [*good[:4], *poison, *good[4:]]),
                                   return_exceptions=True)
    committed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(committed) == 8, refused
    assert sorted(r.balance for r in committed) == [69] * 8
    assert len(refused) == 2 and all(isinstance(e, errors.WalletError) and 400 <= e.status < 500 for e in refused)
    assert await rt.wallet.balance("poison") == 70
    assert (await audit(rt.pool)).ok
