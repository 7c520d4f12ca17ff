"""The full conformance sweep of the bundled corpus against reference-fixed.

Prints wall time and cases per second for the default run (recorded timing, 16 cases at once,
target: under 10 s on a 2-core machine), and, as the baseline measured in the same run, the same
sweep with recorded timing but one case at a time — what the runner's concurrency buys.
"""

from __future__ import annotations

import asyncio
import time

from replay.cassettes.corpus import conformance_corpus
from replay.clients.reference import FIXED
from replay.conformance.cuts import build_cases
from replay.conformance.runner import RunOptions, run_cases


async def sweep(options: RunOptions) -> tuple[float, int, dict[str, int]]:
    cases = build_cases(conformance_corpus())
    start = time.perf_counter()
    report = await run_cases(cases, FIXED, options)
    return time.perf_counter() - start, len(cases), report.counts()


def main() -> None:
    runs = [("default: speed 1, 16 at once", RunOptions()),
            ("speed 0, 16 at once", RunOptions(speed=0)),
            ("baseline: speed 1, one at a time", RunOptions(concurrency=1))]
    results = {}
    for label, options in runs:
        elapsed, count, counts = asyncio.run(sweep(options))
        results[label] = elapsed
        print(f"{label:<34} {count} cases in {elapsed:6.2f} s = {count / elapsed:5.1f} cases/s  {counts}")
    ratio = results["baseline: speed 1, one at a time"] / results["default: speed 1, 16 at once"]
    print(f"concurrency speed-up over the one-at-a-time baseline: {ratio:.1f}x "
          f"(default run target: under 10 s)")


if __name__ == "__main__":
    main()
