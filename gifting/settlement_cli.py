"""``gifting settle`` and ``gifting payouts``: settlement jobs that need nothing but Postgres.

Registered by ``gifting.cli``. Prints the JSON summary on stdout; progress goes
to stderr (a progress line on a terminal, structured log lines otherwise).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gifting.settings import Settings

log = logging.getLogger("gifting.settle")

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]

CSV_FIELDS = ["run_id", "cutoff", "creator_id", "agency_id", "gifts", "gross_coins", "coin_value_micros",
              "gross_cash", "creator_cash", "agency_cash", "platform_cash", "creator_carry_out",
              "agency_carry_out", "platform_carry_out", "currency"]


def add_parsers(sub: Any, commands: dict[str, Command]) -> None:
    p = sub.add_parser("settle", help="settle every unsettled gift committed before the cutoff")
    p.add_argument("--cutoff", default=None, help="RFC 3339 (default: the last UTC midnight)")
    p.add_argument("--report-dir", default=None, type=Path,
                   help="write settlement-<cutoff>.csv (lines) and .json (summary) here")
    commands["settle"] = cmd_settle

    p = sub.add_parser("payouts", help="list payable amounts at or over the threshold; mark a batch paid")
    p.add_argument("--mark-paid", action="store_true", help="mark the list paid and book the cash out")
    p.add_argument("--batch", default=None, help="batch key: a key marks one list paid once")
    commands["payouts"] = cmd_payouts


class _Progress:
    """A progress line on a terminal; one structured log line per step otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()

    async def __call__(self, step: str, info: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - self.t0
        if self.tty:
            detail = " ".join(f"{k}={v}" for k, v in info.items())
            print(f"\rsettle: {step:<14} {elapsed:7.2f}s {detail}\033[K", end="", file=sys.stderr, flush=True)
        else:
            log.info("settle %s", step, extra={"step": step, "elapsed_s": round(elapsed, 3), **info})

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)


def _settlement(rt: Any) -> Any:
    from wallet.settlement import Settlement

    return Settlement(rt.pool, coin_value_micros=rt.settings.coin_value_micros,
                      payout_threshold=rt.settings.payout_threshold_minor)


async def cmd_settle(args: argparse.Namespace, settings: Settings) -> int:
    from gifting.runtime import Runtime
    from wallet.errors import WalletError
    from wallet.settlement_math import parse_cutoff

    try:
        cutoff = parse_cutoff(args.cutoff, datetime.now(UTC))
    except (ValueError, OverflowError) as e:  # OverflowError: year 1 shifted to UTC
        print(f"gifting settle: {e}", file=sys.stderr)
        return 2
    async with Runtime(settings, need_redis=False, pool_size=2) as rt:
        job = _settlement(rt)
        progress = _Progress()
        try:
            result = await job.settle(cutoff, progress=progress)
        except WalletError as e:
            progress.done()
            print(f"gifting settle: {e.message}", file=sys.stderr)
            return 2
        progress.done()
        if not result.created:
            log.info("cutoff %s was settled before; nothing changed", result.summary["cutoff"])
        if args.report_dir is not None:
            lines = await job.lines(int(result.summary["run_id"]))
            paths = write_report(args.report_dir, result.summary, lines)
            log.info("report written", extra={"csv": str(paths[0]), "json": str(paths[1])})
    print(json.dumps(result.summary, indent=2, sort_keys=True))
    return 0


def write_report(directory: Path, summary: dict[str, Any], lines: list[Any]) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = "settlement-" + summary["cutoff"].replace(":", "").replace("-", "")
    csv_path, json_path = directory / f"{stem}.csv", directory / f"{stem}.json"
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(CSV_FIELDS)
        for r in lines:
            out.writerow([r["run_id"], summary["cutoff"], r["creator_id"], r["agency_id"], r["gifts"],
                          r["gross_coins"], r["coin_value_micros"], r["gross_cash"], r["creator_cash"],
                          r["agency_cash"], r["platform_cash"], r["creator_carry_out"], r["agency_carry_out"],
                          r["platform_carry_out"], "USD"])
    tmp.replace(csv_path)
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    tmp.replace(json_path)
    return csv_path, json_path


async def cmd_payouts(args: argparse.Namespace, settings: Settings) -> int:
    from gifting.runtime import Runtime
    from wallet.errors import WalletError

    if args.mark_paid and not args.batch:
        print("gifting payouts: --mark-paid needs --batch KEY", file=sys.stderr)
        return 2
    if args.batch is not None:
        from wallet import inputs

        try:  # the key reaches SQL and a log line: the same rules as any idempotency key
            inputs.check_clean(inputs.text(args.batch, "--batch", max_len=128), "--batch", shown=True)
        except inputs.InvalidInput as e:
            print(f"gifting payouts: {e.message}", file=sys.stderr)
            return 2
    async with Runtime(settings, need_redis=False, pool_size=2) as rt:
        job = _settlement(rt)
        if not args.mark_paid:
            out = await job.due()
        else:
            try:
                out, created = await job.mark_paid(args.batch)
            except WalletError as e:
                print(f"gifting payouts: {e.message}", file=sys.stderr)
                return 2
            if not created:
                log.info("batch %s was marked paid before; nothing changed", args.batch)
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0
