"""HTTP: the payment webhook credits once, takes back on refund/dispute, and refuses what it cannot trust."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from gifting.runtime import Runtime
from tests.conftest import bearer, signed
from tests.test_api_wallet import assert_error
from tests.wallet_helpers import (
    assert_books_balance,
    balance,
    buy,
    buy_paid,
    deliver,
    event_body,
    platform,
    snapshot,
    spend,
)

Client = TestClient[Any, Any]


async def purchase_status(rt: Runtime, purchase_id: str) -> str:
    return str(await rt.pool.fetchval("SELECT status FROM purchases WHERE id = $1", purchase_id))


async def test_payment_succeeded_credits_the_packs_coins(client: Client, rt: Runtime) -> None:
    """payment.succeeded: 200 {received: true}, the pack's coins in the wallet, the cash receivable."""
    purchase = await buy(client, "alice", "coins_350")
    status, body = await deliver(client, purchase["id"], "payment.succeeded", 370)
    assert (status, body) == (200, {"received": True})
    assert await balance(client, "alice") == 350
    assert await purchase_status(rt, purchase["id"]) == "succeeded"
    assert await platform(rt.pool, "provider_receivable") == 370
    assert await platform(rt.pool, "coin_sales") == -370
    assert await platform(rt.pool, "coins_issued") == -350
    await assert_books_balance(rt.pool)


async def test_a_repeated_event_id_answers_200_and_changes_nothing(client: Client, rt: Runtime) -> None:
    """The same event delivered again: 200, no second credit, no new rows."""
    purchase = await buy(client, "alice")
    assert (await deliver(client, purchase["id"], "payment.succeeded", 74, event_id="evt_once"))[0] == 200
    before = await snapshot(rt.pool)
    for _ in range(3):
        assert await deliver(client, purchase["id"], "payment.succeeded", 74, event_id="evt_once") == (
            200, {"received": True})
    assert await snapshot(rt.pool) == before
    assert await balance(client, "alice") == 70


async def test_a_second_success_with_another_event_id_credits_nothing(client: Client, rt: Runtime) -> None:
    """A provider sending two different success events for one purchase still credits once."""
    purchase = await buy(client, "alice")
    for _ in range(2):
        assert (await deliver(client, purchase["id"], "payment.succeeded", 74))[0] == 200
    assert await balance(client, "alice") == 70
    await assert_books_balance(rt.pool)


async def test_amount_or_currency_mismatch_is_422_and_changes_nothing(client: Client, rt: Runtime) -> None:
    """A success for the wrong amount or currency: 422 amount_mismatch, nothing credited or recorded."""
    purchase = await buy(client, "alice")
    before = await snapshot(rt.pool)
    for amount, currency in ((73, "USD"), (75, "USD"), (0, "USD"), (74, "EUR")):
        status, body = await deliver(client, purchase["id"], "payment.succeeded", amount, currency)
        assert_error(status, body, 422, "amount_mismatch")
    assert await snapshot(rt.pool) == before
    # the right amount still works afterwards
    assert (await deliver(client, purchase["id"], "payment.succeeded", 74))[0] == 200
    assert await balance(client, "alice") == 70


async def test_a_forged_signature_is_400_and_changes_nothing(client: Client, rt: Runtime) -> None:
    """Signed with another secret: 400 invalid_signature, no credit, no event recorded."""
    purchase = await buy(client, "alice")
    before = await snapshot(rt.pool)
    status, body = await deliver(client, purchase["id"], "payment.succeeded", 74,
                                 secret="forged-secret-0123456789abcdef")
    assert_error(status, body, 400, "invalid_signature")
    assert await snapshot(rt.pool) == before


async def test_stale_and_future_timestamps_are_400_and_change_nothing(client: Client, rt: Runtime) -> None:
    """Correctly signed but older or newer than 300 s: 400 invalid_signature, nothing changes."""
    purchase = await buy(client, "alice")
    before = await snapshot(rt.pool)
    now = int(time.time())
    for at in (now - 301 - 5, now + 301 + 5, now - 86_400):
        status, body = await deliver(client, purchase["id"], "payment.succeeded", 74, at=at)
        assert_error(status, body, 400, "invalid_signature")
    assert await snapshot(rt.pool) == before


async def test_missing_or_malformed_signature_headers_are_400(client: Client, rt: Runtime) -> None:
    """No header, a garbage header, or a body changed after signing: 400 invalid_signature."""
    purchase = await buy(client, "alice")
    body = event_body(purchase["id"], "payment.succeeded", 74)
    before = await snapshot(rt.pool)
    for headers in ({}, {"Gifting-Signature": "nonsense"}, {"Gifting-Signature": "t=1,v1=00"},
                    signed(body.replace(b"74", b"75"))):
        resp = await client.post("/v1/payments/webhook", data=body, headers=headers)
        assert_error(resp.status, await resp.json(), 400, "invalid_signature")
    assert await snapshot(rt.pool) == before


async def test_a_signed_but_malformed_event_is_400_invalid_event(client: Client, rt: Runtime) -> None:
    """A correctly signed body that is not a payment event: 400 invalid_event, nothing written."""
    before = await snapshot(rt.pool)
    for body in (b"{}", b"[1]", b'{"id": "evt_1", "type": "payment.captured", "data": {}}', b"[" * 50_000):
        resp = await client.post("/v1/payments/webhook", data=body, headers=signed(body))
        assert_error(resp.status, await resp.json(), 400, "invalid_event")
    assert await snapshot(rt.pool) == before


async def test_an_event_for_an_unknown_purchase_is_404(client: Client, rt: Runtime) -> None:
    """A signed event naming no purchase we know: 404 unknown_purchase, nothing written."""
    before = await snapshot(rt.pool)
    status, body = await deliver(client, "pur_unknown", "payment.succeeded", 74)
    assert_error(status, body, 404, "unknown_purchase")
    assert await snapshot(rt.pool) == before


async def test_payment_failed_marks_the_purchase_and_credits_nothing(client: Client, rt: Runtime) -> None:
    """payment.failed: status failed, no coins; a late success then still credits once."""
    purchase = await buy(client, "alice")
    assert (await deliver(client, purchase["id"], "payment.failed", 74))[0] == 200
    assert await purchase_status(rt, purchase["id"]) == "failed" and await balance(client, "alice") == 0
    assert (await deliver(client, purchase["id"], "payment.succeeded", 74))[0] == 200
    assert await balance(client, "alice") == 70
    await assert_books_balance(rt.pool)


async def test_a_refund_takes_the_coins_back_and_reverses_the_sale(client: Client, rt: Runtime) -> None:
    """payment.refunded with the coins unspent: wallet back to 0, the sale reversed, no loss."""
    purchase = await buy_paid(client, "alice", "coins_350")
    assert (await deliver(client, purchase["id"], "payment.refunded", 370))[0] == 200
    assert await balance(client, "alice") == 0
    assert await purchase_status(rt, purchase["id"]) == "refunded"
    for kind in ("provider_receivable", "coin_sales", "coins_issued", "chargeback_losses"):
        assert await platform(rt.pool, kind) == 0, kind
    await assert_books_balance(rt.pool)


async def test_a_dispute_takes_the_coins_back_once(client: Client, rt: Runtime) -> None:
    """payment.disputed takes the coins back; a later refund or second dispute finds nothing left: 422."""
    keep = await buy_paid(client, "alice", "coins_350")
    purchase = await buy_paid(client, "alice", "coins_70")
    assert (await deliver(client, purchase["id"], "payment.disputed", 74))[0] == 200
    assert await balance(client, "alice") == 350
    assert await purchase_status(rt, purchase["id"]) == "disputed"
    before = await snapshot(rt.pool)
    for kind in ("payment.refunded", "payment.disputed"):
        status, body = await deliver(client, purchase["id"], kind, 74)
        assert_error(status, body, 422, "amount_mismatch")
    assert await snapshot(rt.pool) == before
    assert await balance(client, "alice") == 350
    assert await purchase_status(rt, keep["id"]) == "succeeded"
    await assert_books_balance(rt.pool)


async def test_a_refund_after_the_coins_were_spent_leaves_a_debt_and_balanced_books(
        client: Client, rt: Runtime) -> None:
    """Coins spent, then refunded: the wallet goes negative, the spent part is the platform's loss, books balance."""
    purchase = await buy_paid(client, "alice", "coins_700")
    await spend(rt.pool, "alice", 500)
    assert (await deliver(client, purchase["id"], "payment.refunded", 740))[0] == 200
    assert await balance(client, "alice") == -500
    # 500 of 700 coins were spent: loss = 740 * 500 // 700 = 528 cents; the sale reverses 212
    assert await platform(rt.pool, "chargeback_losses") == 528
    assert await platform(rt.pool, "coin_sales") == -740 + 212
    assert await platform(rt.pool, "provider_receivable") == 0
    report = await assert_books_balance(rt.pool)
    conserved = next(c for c in report.checks if c.name == "coins_conserved")
    assert conserved.detail == {"credited": 700, "taken_back": 700, "in_wallets": -500, "gifted": 500}
    # a later purchase pays the debt down first
    await buy_paid(client, "alice", "coins_700")
    assert await balance(client, "alice") == 200
    await assert_books_balance(rt.pool)


async def test_a_dispute_of_a_fully_spent_pack_books_the_whole_price_as_loss(client: Client, rt: Runtime) -> None:
    """Every coin spent, then disputed: the whole price is chargeback loss."""
    purchase = await buy_paid(client, "alice", "coins_70")
    await spend(rt.pool, "alice", 70)
    assert (await deliver(client, purchase["id"], "payment.disputed", 74))[0] == 200
    assert await balance(client, "alice") == -70
    assert await platform(rt.pool, "chargeback_losses") == 74
    # the sale stands: the gifted coins are still owed to the creator; the cash is what was lost
    assert await platform(rt.pool, "coin_sales") == -74
    assert await platform(rt.pool, "provider_receivable") == 0
    await assert_books_balance(rt.pool)


async def test_a_refund_that_overtakes_its_success_voids_the_purchase(client: Client, rt: Runtime) -> None:
    """Refund delivered before the success: no coins now, and the late success credits nothing."""
    purchase = await buy(client, "alice")
    assert (await deliver(client, purchase["id"], "payment.refunded", 74))[0] == 200
    assert await purchase_status(rt, purchase["id"]) == "refunded"
    assert (await deliver(client, purchase["id"], "payment.succeeded", 74))[0] == 200
    assert await balance(client, "alice") == 0
    assert await purchase_status(rt, purchase["id"]) == "refunded"
    assert await rt.pool.fetchval("SELECT count(*) FROM ledger_txns") == 0
    await assert_books_balance(rt.pool)


async def test_the_webhook_needs_no_bearer_token_but_a_signature(client: Client) -> None:
    """The provider authenticates with the signature alone."""
    purchase = await buy(client, "alice")
    assert (await deliver(client, purchase["id"], "payment.succeeded", 74))[0] == 200


# ---- refunds and disputes of part of the price ------------------------------------------------


async def returned(rt: Runtime, purchase_id: str) -> tuple[int, int]:
    """(cash returned, coins taken back) as the purchase's events record them."""
    row = await rt.pool.fetchrow(
        "SELECT coalesce(sum(cash_back), 0)::bigint AS cash, coalesce(sum(coins_back), 0)::bigint AS coins"
        " FROM payment_events WHERE purchase_id = $1", purchase_id)
    return row["cash"], row["coins"]


async def test_one_cent_back_of_a_17500_coin_pack_takes_one_coin(client: Client, rt: Runtime) -> None:
    """The reported case: refunding 1 of 18,500 cents takes ceil(17,500/18,500) = 1 coin; the rest stays."""
    purchase = await buy_paid(client, "alice", "coins_17500")
    assert (await deliver(client, purchase["id"], "payment.refunded", 1))[0] == 200
    assert await balance(client, "alice") == 17_499
    assert await purchase_status(rt, purchase["id"]) == "succeeded"
    # the receivable moves by the cent that went back, not by the price
    assert await platform(rt.pool, "provider_receivable") == 18_500 - 1
    assert await platform(rt.pool, "coin_sales") == -18_500 + 1
    assert await platform(rt.pool, "coins_issued") == -17_499
    assert await returned(rt, purchase["id"]) == (1, 1)
    await assert_books_balance(rt.pool)


async def test_a_partial_refund_repeated_with_its_event_id_applies_once(client: Client, rt: Runtime) -> None:
    """The same partial refund delivered three times: coins taken back once, nothing else changes."""
    purchase = await buy_paid(client, "alice", "coins_700")
    assert (await deliver(client, purchase["id"], "payment.refunded", 100, event_id="evt_part"))[0] == 200
    after_first = await snapshot(rt.pool)
    for _ in range(3):
        assert await deliver(client, purchase["id"], "payment.refunded", 100, event_id="evt_part") == (
            200, {"received": True})
    assert await snapshot(rt.pool) == after_first
    # ceil(700 * 100 / 740) = ceil(94.6) = 95
    assert await balance(client, "alice") == 700 - 95
    await assert_books_balance(rt.pool)


async def test_two_partial_refunds_adding_up_to_the_price_take_back_exactly_the_pack(
        client: Client, rt: Runtime) -> None:
    """10 then 64 of 74 cents: 10 coins then 60, exactly 70 in all; the purchase is then refunded."""
    purchase = await buy_paid(client, "alice", "coins_70")
    assert (await deliver(client, purchase["id"], "payment.refunded", 10))[0] == 200
    assert await balance(client, "alice") == 70 - 10          # ceil(70 * 10 / 74) = ceil(9.46)
    assert await purchase_status(rt, purchase["id"]) == "succeeded"
    await assert_books_balance(rt.pool)
    assert (await deliver(client, purchase["id"], "payment.refunded", 64))[0] == 200
    assert await balance(client, "alice") == 0
    assert await purchase_status(rt, purchase["id"]) == "refunded"
    assert await returned(rt, purchase["id"]) == (74, 70)
    for kind in ("provider_receivable", "coin_sales", "coins_issued", "chargeback_losses"):
        assert await platform(rt.pool, kind) == 0, kind
    await assert_books_balance(rt.pool)


async def test_many_small_refunds_add_up_to_exactly_the_pack(client: Client, rt: Runtime) -> None:
    """37 refunds of 2 cents each (each rounded up on the running total): 70 coins in all, never more."""
    purchase = await buy_paid(client, "alice", "coins_70")
    for i in range(37):
        assert (await deliver(client, purchase["id"], "payment.refunded", 2))[0] == 200
        assert 70 - await balance(client, "alice") == -(-70 * 2 * (i + 1) // 74)
    assert await balance(client, "alice") == 0
    assert await purchase_status(rt, purchase["id"]) == "refunded"
    await assert_books_balance(rt.pool)


async def test_a_dispute_after_a_partial_refund_takes_the_rest(client: Client, rt: Runtime) -> None:
    """Refund 37 cents (35 coins), then a dispute of the other 37: the other 35 coins, status disputed."""
    purchase = await buy_paid(client, "alice", "coins_70")
    assert (await deliver(client, purchase["id"], "payment.refunded", 37))[0] == 200
    assert await balance(client, "alice") == 35
    assert (await deliver(client, purchase["id"], "payment.disputed", 37))[0] == 200
    assert await balance(client, "alice") == 0
    assert await purchase_status(rt, purchase["id"]) == "disputed"
    assert await platform(rt.pool, "provider_receivable") == 0
    await assert_books_balance(rt.pool)


async def test_a_refund_of_more_than_is_left_is_422_and_changes_nothing(client: Client, rt: Runtime) -> None:
    """After 50 of 74 cents went back, 25 more is amount_mismatch (as is 0, or 75 at first); 24 then works."""
    fresh = await buy_paid(client, "bob", "coins_70")
    before = await snapshot(rt.pool)
    for amount in (75, 0):
        status, body = await deliver(client, fresh["id"], "payment.refunded", amount)
        assert_error(status, body, 422, "amount_mismatch")
    assert await snapshot(rt.pool) == before
    purchase = await buy_paid(client, "alice", "coins_70")
    assert (await deliver(client, purchase["id"], "payment.refunded", 50))[0] == 200
    before = await snapshot(rt.pool)
    for kind in ("payment.refunded", "payment.disputed"):
        status, body = await deliver(client, purchase["id"], kind, 25)
        assert_error(status, body, 422, "amount_mismatch")
    assert await snapshot(rt.pool) == before
    await assert_books_balance(rt.pool)
    assert (await deliver(client, purchase["id"], "payment.refunded", 24))[0] == 200
    assert await balance(client, "alice") == 0 and await purchase_status(rt, purchase["id"]) == "refunded"
    await assert_books_balance(rt.pool)


async def test_a_refund_or_dispute_in_another_currency_is_422_and_changes_nothing(
        client: Client, rt: Runtime) -> None:
    """The right amount in EUR, for a credited or a pending purchase: amount_mismatch, nothing recorded."""
    paid = await buy_paid(client, "alice", "coins_70")
    pending = await buy(client, "alice", "coins_70")
    before = await snapshot(rt.pool)
    for purchase in (paid, pending):
        for kind in ("payment.refunded", "payment.disputed"):
            for amount in (74, 1):
                status, body = await deliver(client, purchase["id"], kind, amount, "EUR")
                assert_error(status, body, 422, "amount_mismatch")
    assert await snapshot(rt.pool) == before
    assert await balance(client, "alice") == 70
    await assert_books_balance(rt.pool)


async def test_a_partial_refund_of_spent_coins_books_the_spent_part_as_loss(client: Client, rt: Runtime) -> None:
    """700 coins, 690 spent, half the price back: 350 coins leave (a debt of 340), the loss is for 340 of them."""
    purchase = await buy_paid(client, "alice", "coins_700")
    await spend(rt.pool, "alice", 690)
    assert (await deliver(client, purchase["id"], "payment.refunded", 370))[0] == 200
    assert await balance(client, "alice") == 10 - 350
    # 350 coins back, 10 still there: loss = 370 * 340 // 350 = 359, the sale reverses 11
    assert await platform(rt.pool, "chargeback_losses") == 359
    assert await platform(rt.pool, "coin_sales") == -740 + 11
    assert await platform(rt.pool, "provider_receivable") == 740 - 370
    report = await assert_books_balance(rt.pool)
    conserved = next(c for c in report.checks if c.name == "coins_conserved")
    assert conserved.detail == {"credited": 700, "taken_back": 350, "in_wallets": -340, "gifted": 690}


async def test_a_partial_refund_that_overtakes_its_success_is_taken_back_when_the_success_arrives(
        client: Client, rt: Runtime) -> None:
    """Refund of 10 cents before the success: nothing moves; the success credits 70 and takes the 10 coins back."""
    purchase = await buy(client, "alice", "coins_70")
    assert (await deliver(client, purchase["id"], "payment.refunded", 10))[0] == 200
    assert await purchase_status(rt, purchase["id"]) == "pending"
    assert await rt.pool.fetchval("SELECT count(*) FROM ledger_txns") == 0
    await assert_books_balance(rt.pool)
    # what is left to return already counts the deferred refund
    status, body = await deliver(client, purchase["id"], "payment.refunded", 65)
    assert_error(status, body, 422, "amount_mismatch")
    assert (await deliver(client, purchase["id"], "payment.succeeded", 74))[0] == 200
    assert await balance(client, "alice") == 60
    assert await purchase_status(rt, purchase["id"]) == "succeeded"
    assert await returned(rt, purchase["id"]) == (10, 10)
    assert await platform(rt.pool, "provider_receivable") == 64
    await assert_books_balance(rt.pool)
    assert (await deliver(client, purchase["id"], "payment.disputed", 64))[0] == 200
    assert await balance(client, "alice") == 0
    assert await purchase_status(rt, purchase["id"]) == "disputed"
    await assert_books_balance(rt.pool)


async def test_partial_refunds_that_return_everything_before_the_success_void_the_purchase(
        client: Client, rt: Runtime) -> None:
    """30 then 44 cents back before the success: voided, the late success credits nothing."""
    purchase = await buy(client, "alice", "coins_70")
    assert (await deliver(client, purchase["id"], "payment.refunded", 30))[0] == 200
    assert (await deliver(client, purchase["id"], "payment.refunded", 44))[0] == 200
    assert await purchase_status(rt, purchase["id"]) == "refunded"
    assert (await deliver(client, purchase["id"], "payment.succeeded", 74))[0] == 200
    assert await balance(client, "alice") == 0
    assert await purchase_status(rt, purchase["id"]) == "refunded"
    assert await rt.pool.fetchval("SELECT count(*) FROM ledger_txns") == 0
    outcomes = await rt.pool.fetch("SELECT outcome FROM payment_events WHERE purchase_id = $1 ORDER BY seq",
                                   purchase["id"])
    assert [r["outcome"] for r in outcomes] == ["voided", "voided", "ignored:refunded"]
    await assert_books_balance(rt.pool)


# ---- currencies the ledger does not book ------------------------------------------------------


async def test_a_pack_in_a_currency_the_ledger_does_not_book_is_refused_by_the_catalog(rt: Runtime) -> None:
    """The ledger books cash in USD only: a new EUR pack is refused by the database itself."""
    with pytest.raises(asyncpg.CheckViolationError, match="coin_packs_currency_booked"):
        await rt.pool.execute("INSERT INTO coin_packs (id, version, coins, price_amount, currency) "
                              "VALUES ('coins_eur', 1, 70, 70, 'EUR')")


async def test_an_older_pack_in_another_currency_is_hidden_unsellable_and_never_booked_on_usd(
        client: Client, rt: Runtime) -> None:
    """An older EUR pack: not listed, 404 unknown_pack; a EUR purchase's success is 422, nothing booked."""
    await rt.pool.execute("ALTER TABLE coin_packs DROP CONSTRAINT coin_packs_currency_booked")
    await rt.pool.execute("INSERT INTO coin_packs (id, version, coins, price_amount, currency) "
                          "VALUES ('coins_eur', 1, 70, 70, 'EUR')")
    packs = (await (await client.get("/v1/coin-packs")).json())["packs"]
    assert "coins_eur" not in {p["id"] for p in packs}
    resp = await client.post("/v1/purchases", json={"pack_id": "coins_eur", "idempotency_key": "k-eur"},
                             headers=bearer("alice"))
    assert_error(resp.status, await resp.json(), 404, "unknown_pack")
    # a pending purchase made before the fix: its success cannot be booked on the USD accounts
    await rt.pool.execute(
        "INSERT INTO purchases (id, user_id, pack_id, pack_version, coins, price_amount, currency,"
        " idempotency_key, request_hash) VALUES ('pur_eur', 'alice', 'coins_eur', 1, 70, 70, 'EUR', 'k0', 'h')")
    before = await snapshot(rt.pool)
    status, body = await deliver(client, "pur_eur", "payment.succeeded", 70, "EUR")
    assert_error(status, body, 422, "amount_mismatch")
    assert await snapshot(rt.pool) == before
    await assert_books_balance(rt.pool)
