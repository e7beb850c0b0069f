"""Long mode of the fault-injection suite, by command.

    python -m tests.faults --seconds 600 --seed 42       one long run
    python -m tests.faults --runs 5 --seconds 60         five runs, seeds drawn and printed
    python -m tests.faults --seed 42 --seconds 20        replay the choices of a failing run

Prints each run's report as JSON and a summary; exits 1 if any run found a violation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections import Counter
from pathlib import Path

from tests.faults.harness import FAULT_KINDS, RunConfig, run_once


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=None, help="seed of the first run (default: drawn, printed)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=600.0, help="load time per run")
    ap.add_argument("--viewers", type=int, default=16)
    ap.add_argument("--creators", type=int, default=3)
    ap.add_argument("--faults", default=",".join(FAULT_KINDS), help="comma-separated fault kinds")
    ap.add_argument("--fault-every", type=float, nargs=2, default=(1.0, 3.0), metavar=("MIN", "MAX"))
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, data) of passing runs too")
    ap.add_argument("--out", type=Path, default=None, help="append each report as a JSON line here")
    args = ap.parse_args(argv)
    kinds = tuple(k for k in args.faults.split(",") if k)
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        ap.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
    first = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    totals: Counter[str] = Counter()
    failed: list[int] = []
    for i in range(args.runs):
        seed = first + i
        config = RunConfig(seed=seed, seconds=args.seconds, viewers=args.viewers, creators=args.creators,
                           fault_kinds=kinds, fault_every=tuple(args.fault_every), keep=args.keep)
        report = asyncio.run(run_once(config))
        print(json.dumps(report, indent=1, default=str), flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(report, default=str) + "\n")
        totals.update({f"fault:{k}": n for k, n in report["faults"].items()})
        totals.update({"runs": 1, "gifts_checked": report.get("gifts_checked", 0),
                       "violations": len(report["violations"])})
        if report["violations"]:
            failed.append(seed)
    print(json.dumps({"summary": dict(totals), "failed_seeds": failed}, indent=1), flush=True)
    if failed:
        print(f"FAILED seeds {failed}: reproduce with python -m tests.faults --seed N --seconds "
              f"{args.seconds:g}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
