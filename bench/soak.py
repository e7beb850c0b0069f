"""Soak: the whole system at a steady, realistic load for a chosen time, then the books.

    python bench/soak.py                      10 minutes (the default)
    python bench/soak.py --seconds 60 --rate 150 --viewers 30 --watchers 10

Starts what the fault suite starts (embedded Postgres and Redis under a
temporary directory, two API and two gateway processes) and, without faults,
drives viewers that buy coins and send gifts (HTTP and WebSocket, Poisson
arrivals at ``--rate`` gifts/s in total) into a few rooms full of watchers.
Every ``--sample`` seconds it records the memory (PSS, so Postgres's shared
buffers are not counted once per backend) of every process. At the end:
throughput per window, latency percentiles per transport, memory over time
with its growth, errors, and the same checks as the fault suite (every acked
gift stored once, watchers complete and in order, Redis equal to Postgres,
settlement to the coin, ``gifting audit``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import cli_help

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.faults.harness import Run, RunConfig, Viewer  # noqa: E402


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Soak(Run):
    def __init__(self, config: RunConfig, rate: float, sample: float) -> None:
        super().__init__(config)
        self.rate = rate
        self.sample = sample
        self.memory: list[dict[str, Any]] = []
        self.load_started = time.monotonic()

    def processes(self) -> dict[str, list[int]]:
        procs: dict[str, list[int]] = {}
        for p in [*self.apis, *self.gateways]:
            if p.proc is not None and p.proc.returncode is None:
                procs[p.name] = [p.proc.pid]
        if self.stores.pg.proc is not None:
            procs["postgres"] = [self.stores.pg.proc.pid, *children(self.stores.pg.proc.pid)]
        if self.stores.redis.proc is not None:
            procs["redis"] = [self.stores.redis.proc.pid]
        procs["load"] = [os.getpid()]
        return procs

    async def sampler(self) -> None:
        while time.monotonic() < self.stop_at:
            row: dict[str, Any] = {"t": round(time.monotonic() - self.load_started, 1)}
            for name, pids in (await asyncio.to_thread(self.processes)).items():
                row[name] = round(sum(pss_kib(pid) for pid in pids) / 1024, 1)
            self.memory.append(row)
            await asyncio.sleep(self.sample)

    async def viewer_loop(self, viewer: Viewer) -> None:
        per_viewer = self.rate / self.config.viewers
        next_at = time.monotonic() + self.rng.expovariate(per_viewer)
        while time.monotonic() < self.stop_at:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += self.rng.expovariate(per_viewer)  # open loop: arrivals do not wait for answers
            if viewer.to_take_back and self.rng.random() < 0.2:
                await self.take_back(viewer)
                continue
            code = await self.gift(viewer)
            if code in ("insufficient_funds", "wallet_in_debt"):
                await self.buy(viewer)
        await viewer.close()

    async def execute(self) -> dict[str, Any]:
        c = self.config
        viewers = await self.open_rooms()
        self.load_started = time.monotonic()
        self.stop_at = self.load_started + c.seconds
        self.log(f"soak {c.seconds:.0f}s at {self.rate:g} gifts/s: {c.viewers} viewers, "
                 f"{len(self.watchers)} watchers in {len(self.streams)} rooms")
        sampler = asyncio.create_task(self.sampler())
        async with asyncio.timeout(c.seconds + 240):
            await asyncio.gather(*(self.viewer_loop(v) for v in viewers))
        await sampler
        load_seconds = time.monotonic() - self.load_started
        await self.settle_down()
        await self.check()
        return self.soak_report(load_seconds)

    def soak_report(self, load_seconds: float) -> dict[str, Any]:
        timings = self.history.timings
        window = 10.0
        windows: dict[int, int] = {}
        for t, _, _, outcome in timings:
            if outcome == "ok":
                k = int((t - self.load_started) // window)
                windows[k] = windows.get(k, 0) + 1
        rates = [round(windows.get(k, 0) / window, 1) for k in range(int(load_seconds // window))]
        latency = {}
        for via in ("http", "ws"):
            ms = [d * 1000 for _, v, d, o in timings if v == via and o == "ok"]
            latency[via] = {"n": len(ms), "p50": round(percentile(ms, 0.5), 1), "p95": round(percentile(ms, 0.95), 1),
                            "p99": round(percentile(ms, 0.99), 1), "max": round(max(ms, default=0), 1)}
        memory: dict[str, Any] = {}
        if self.memory:
            names = [k for k in self.memory[0] if k != "t"]
            settled = self.memory[max(0, len(self.memory) // 5)]  # after warm-up: a fifth of the run
            last = self.memory[-1]
            minutes = max((last["t"] - settled["t"]) / 60, 1e-9)
            for n in names:
                series = [row.get(n, 0) for row in self.memory]
                memory[n] = {"start_mb": series[0], "after_warmup_mb": settled.get(n, 0), "end_mb": last.get(n, 0),
                             "max_mb": max(series),
                             "growth_mb_per_min": round((last.get(n, 0) - settled.get(n, 0)) / minutes, 2)}
        acked = self.figures.get("acked", 0)
        errors = {k: v for k, v in self.history.errors.items()}
        return {
            "seconds": round(load_seconds, 1), "target_rate": self.rate, "gifts_acked": acked,
            "throughput_per_s": round(acked / load_seconds, 1), "per_10s_window": rates,
            "latency_ms": latency, "memory_pss": memory, "memory_samples": self.memory,
            "errors": errors, "error_count": sum(errors.values()),
            **{k: self.figures.get(k) for k in ("gifts_checked", "all_refused", "unknown", "purchases",
                                                 "watcher_deliveries", "resumes", "settlement", "audit_ok")},
            "violations": self.violations,
        }


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    config = RunConfig(seed=args.seed, seconds=args.seconds, viewers=args.viewers, creators=args.rooms,
                       watchers_per_stream=args.watchers, fault_kinds=(), drop_rate=0.0, refund_rate=0.01,
                       ws_share=args.ws_share)
    run = Soak(config, args.rate, args.sample)
    failed = True
    try:
        await run.setup()
        report = await run.execute()
        failed = bool(report["violations"])
        return report
    finally:
        await run.teardown(failed)


def main() -> int:
    ap = cli_help.parser(__doc__)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--rate", type=float, default=100.0, help="gifts per second, all viewers together")
    ap.add_argument("--viewers", type=int, default=30)
    ap.add_argument("--rooms", type=int, default=3)
    ap.add_argument("--watchers", type=int, default=10, help="watching viewers per room")
    ap.add_argument("--ws-share", type=float, default=0.5)
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between memory samples")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write the full report (JSON) here")
    args = ap.parse_args()
    report = asyncio.run(soak(args))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=str))
    brief = {k: v for k, v in report.items() if k != "memory_samples"}
    print(json.dumps(brief, indent=1, default=str))
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
