"""`python -m bench` (`make bench`): run the scenarios, write bench/results/<scenario>.json,
print the table.

    python -m bench                      # all of B1-B7 at full size
    python -m bench --only B1,B5         # some of them
    python -m bench --quick              # short runs at a tenth of the sizes (says so in results)
    python -m bench --scale 0.5          # other sizes
    python -m bench --report             # the table of the results files already written
    python -m bench --only B1 --profile api,worker   # py-spy those processes meanwhile

It exits 1 when a scenario misses a target (or fails to run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import traceback
from pathlib import Path

from bench.report import (
    RESULTS_DIR,
    ScenarioResult,
    format_table,
    machine_info,
    read_results,
    write_result,
)
from bench.scenarios import SCENARIOS, Config


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="", help="comma-separated scenarios (B1..B7); all when empty"
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs at scale 0.1 unless --scale is given"
    )
    parser.add_argument("--scale", type=float, default=None, help="sizes times this (default 1)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument(
        "--keep", action="store_true", help="keep each run's data directory and logs"
    )
    parser.add_argument(
        "--report", action="store_true", help="print the table of the existing results, run none"
    )
    parser.add_argument(
        "--profile",
        default="",
        help="py-spy these processes (api, worker) for the run: collapsed stacks in --results",
    )
    return parser.parse_args(argv)


def _wanted(only: str) -> list[str]:
    """The scenarios named, as SCENARIOS spells them (B1c, B3s), whatever the case given."""
    known = {name.upper(): name for name in SCENARIOS}
    names = [name.strip() for name in only.split(",") if name.strip()]
    return [known.get(name.upper(), name.upper()) for name in names]


async def _run(args: argparse.Namespace) -> list[ScenarioResult]:
    wanted = _wanted(args.only)
    unknown = sorted(set(wanted) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    profile = tuple(name.strip() for name in args.profile.split(",") if name.strip())
    config = Config(
        scale=scale, quick=args.quick, keep=args.keep, profile=profile, results_dir=args.results
    )
    run = {"scale": scale, "quick": args.quick, "argv": sys.argv[1:]}
    results: list[ScenarioResult] = []
    for name in wanted or list(SCENARIOS):
        started = time.monotonic()
        load_before = [round(value, 2) for value in os.getloadavg()]
        print(f"{name}: running (load average {load_before[0]:.2f})", file=sys.stderr)
        try:
            result = await SCENARIOS[name](config)
        except Exception as exc:
            traceback.print_exc()
            result = ScenarioResult(name, "failed to run", error=f"{type(exc).__name__}: {exc}")
        result.details["run"] = {**run, "load_average_before": load_before}
        if scale != 1.0 and not any("scale" in note for note in result.notes):
            result.notes.append(f"scaled run (scale {scale}): not the full sizes")
        path = write_result(result, run=run, started=started, results_dir=args.results)
        print(f"{name}: {time.monotonic() - started:.0f}s → {path}", file=sys.stderr)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.report:
        wanted = _wanted(args.only)
        results = read_results(args.results, wanted or list(SCENARIOS))
    else:
        results = asyncio.run(_run(args))
    machine = machine_info()
    print()
    print(format_table(results, markdown=args.markdown))
    print(
        f"\n{machine['cores']} cores ({machine['cpu_model']}), Python {machine['python']}, "
        f"temporalio {machine['temporalio']}; load average now "
        + ", ".join(f"{value:.2f}" for value in machine["load_average"])
    )
    if any(result.passed is False for result in results):
        return 1
    return 0


if __name__ == "__main__":
    # The Temporal client's Rust threads can abort CPython's finalization (sdk-python#300).
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
