"""A second process for tests: sends gifts through its own GiftService.

python -m tests.gift_worker DSN STREAM_ID SENDER N  -> prints the seqs it got, one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys

from gifting.stores import open_pool
from wallet.gift_decide import GiftRequest
from wallet.gifts import GiftService


async def main(dsn: str, stream_id: int, sender: str, n: int) -> None:
    pool = await open_pool(dsn, max_size=4)
    gifts = GiftService(pool, window_ms=1.0, lanes=2)
    await gifts.start()
    results = await asyncio.gather(*(
        gifts.send(GiftRequest(sender, sender, stream_id, "rose", 1, f"w{i}")) for i in range(n)))
    await gifts.close()
    await pool.close()
    print(json.dumps([r.event.seq for r in results]))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
