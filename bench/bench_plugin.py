"""The pytest plugin against the CLI, on the same cases: wall time per case.

The README's plugin example (one test parametrized over the conformance corpus, each calling
`run_conformance(rtreplay_case, get_client("reference-fixed"))`) run by pytest as a new user would,
with and without `-n 2`, against `rtreplay check --client reference-fixed` on the same 57 cases,
each a fresh process (start-up, imports and collection included). Rounds alternate; the median of
each is shown. Baseline, in the same run: the example with `RunOptions(concurrency=1)`, which runs
each case only when its test asks for it, as the plugin did before it ran cases ahead. Target: the
plugin's cost per case within 1.5x of the CLI's.

    python bench/bench_plugin.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = """
from replay.clients.registry import get_client
from replay.pytest_plugin import run_conformance

def test_barge_in(rtreplay_case):
    result = run_conformance(rtreplay_case, get_client("reference-fixed"))
    assert result.verdict.verdict != "FAILED", result.verdict.reason
"""
ONE_AT_A_TIME = """
from replay.clients.registry import get_client
from replay.pytest_plugin import run_conformance
from replay.conformance.runner import RunOptions

def test_barge_in(rtreplay_case):
    result = run_conformance(rtreplay_case, get_client("reference-fixed"), RunOptions(concurrency=1))
    assert result.verdict.verdict != "FAILED", result.verdict.reason
"""
RUN_TIMEOUT = 300


def cli() -> list[str]:
    script = Path(sys.executable).with_name("rtreplay")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from cli import app; app()"]


def run(command: list[str], cwd: Path) -> tuple[float, float, int]:
    """(wall s, CPU s of the process tree, cases passed or OK)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    out = done.stdout + done.stderr
    found = re.search(r"(\d+) passed", out) or re.search(r"(\d+) OK", out)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{out[-2000:]}")
    return wall, cpu, int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rtreplay-bench-plugin-") as tmp:
        work = Path(tmp)
        (work / "test_example.py").write_text(EXAMPLE, encoding="utf-8")
        (work / "test_one_at_a_time.py").write_text(ONE_AT_A_TIME, encoding="utf-8")
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        ways = {
            "rtreplay check": [*cli(), "check", "--client", "reference-fixed"],
            "pytest": [*pytest, "test_example.py"],
            "pytest -n 2": [*pytest, "-n", "2", "test_example.py"],
        }
        run(ways["rtreplay check"], work)  # warm: the cassette cache, the page cache
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, command in ways.items():
                results[name].append(run(command, work))
        baseline = run([*pytest, "-n", "2", "test_one_at_a_time.py"], work)
    cli_wall = statistics.median(w for w, _, _ in results["rtreplay check"])
    print(f"the README's plugin example vs rtreplay check on the same cases; median of {args.rounds} rounds, "
          "each a fresh process")
    print(f"{'how':<40} {'cases':>5} {'wall':>7} {'per case':>9} {'CPU':>7} {'vs CLI':>7}")
    rows = [(name, statistics.median(w for w, _, _ in runs), statistics.median(c for _, c, _ in runs), runs[0][2])
            for name, runs in results.items()]
    rows.append(("baseline: one case at a time, pytest -n 2", baseline[0], baseline[1], baseline[2]))
    for name, wall, cpu, cases in rows:
        print(f"{name:<40} {cases:>5} {wall:>6.2f}s {wall / cases * 1000:>7.0f}ms {cpu:>6.2f}s "
              f"{wall / cli_wall:>6.2f}x")
    print("target: the plugin's cost per case within 1.5x of the CLI's")


if __name__ == "__main__":
    main()
