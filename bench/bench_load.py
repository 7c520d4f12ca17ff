"""Cassette loading: ms per MB, cold (no cache entry) and warm (from the per-user cache).

For every bundled cassette, a 4 MB one (60 s of full pcm16 audio in 100 ms deltas) and a dense
1.4 MB one (a 10-minute compacted session of bench_long.py: many small nodes, no big strings):

- baseline: what loading was before the cache, measured in the same run: PyYAML's `CSafeLoader`
  on the file's text, with the garbage collector on (validation and building frames added a few
  per cent on top of it);
- cold: `replay.cassettes.cassette.load` with an empty cache directory (parse, validate, write the entry);
- warm: `load` again (read, hash, read the entry);
- floor: reading the file and hashing it, which a warm load cannot avoid.

Each figure is the best of several runs in each of three passes over all the files (the least
disturbed by the rest of the machine). Then the same for the conformance corpus that
`rtreplay check` loads before its first case. Target: <= 10 ms per MB for every size.

    python bench/bench_load.py
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from bench_engine import big_cassette
from bench_long import build as long_session

from replay.cassettes.cassette import load
from replay.cassettes.corpus import bundled, conformance_corpus

try:
    from yaml import CSafeLoader as BaselineLoader
except ImportError:  # pragma: no cover - PyYAML without libyaml
    from yaml import SafeLoader as BaselineLoader  # type: ignore[assignment]


PASSES = 3


def best(fn: Callable[[], object], runs: int) -> float:
    """Best wall time of `runs` calls, in ms; freeing what a call returned is not part of its time."""
    fastest = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        fastest = min(fastest, time.perf_counter() - started)
        del result
    return fastest * 1000


class FreshCache:
    """Each call points XDG_CACHE_HOME at a new empty directory, so the next load is cold."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def __call__(self) -> None:
        os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="cold", dir=self.root)


def measure(path: Path, root: Path, runs: int) -> tuple[float, float, float, float]:
    """(baseline, cold, warm, floor) in ms."""
    text = path.read_text(encoding="utf-8")
    baseline = best(lambda: yaml.load(text, Loader=BaselineLoader), runs)
    fresh = FreshCache(root)
    cold = float("inf")
    for _ in range(runs):
        fresh()
        started = time.perf_counter()
        cassette = load(path)
        cold = min(cold, (time.perf_counter() - started) * 1000)
        del cassette
    warm = best(lambda: load(path), runs * 20)
    floor = best(lambda: hashlib.sha256(path.read_bytes()).digest(), runs * 20)
    return baseline, cold, warm, floor


def corpus(root: Path, runs: int) -> tuple[float, float, float, float]:
    """The same four figures for `conformance_corpus()`, as `rtreplay check` calls it."""
    paths = [path for path, _ in conformance_corpus()]
    texts = [p.read_text(encoding="utf-8") for p in paths]
    baseline = best(lambda: [yaml.load(t, Loader=BaselineLoader) for t in texts], runs)
    fresh = FreshCache(root / "corpus")
    cold = float("inf")
    for _ in range(runs):
        fresh()
        started = time.perf_counter()
        loaded = conformance_corpus()
        cold = min(cold, (time.perf_counter() - started) * 1000)
        del loaded
    warm = best(conformance_corpus, runs * 10)
    floor = best(lambda: [hashlib.sha256(p.read_bytes()).digest() for p in paths], runs * 10)
    return baseline, cold, warm, floor


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rtreplay-bench-load-") as tmp:
        root = Path(tmp)
        files = root / "files"
        files.mkdir()
        big = files / "big_4mb_full_audio.yaml"
        big_cassette(big, 60)
        dense = files / "dense_10min_compacted.yaml"
        long_session(10, False).save(dense)
        print(f"{'cassette':<52} {'MB':>6} {'baseline':>16} {'cold':>16} {'warm':>16} {'floor':>7}  (ms, ms/MB)")
        paths = [*bundled(), big, dense]
        figures: dict[Path, tuple[float, ...]] = {}
        for _ in range(PASSES):  # passes apart in time, so one busy moment of the machine spoils no file's best
            for path in paths:
                runs = 3 if path.stat().st_size > 1e6 else 7
                now = measure(path, root, runs)
                figures[path] = tuple(map(min, zip(figures.get(path, now), now, strict=True)))
        worst = 0.0
        for path in paths:
            mb = path.stat().st_size / 1e6
            baseline, cold, warm, floor = figures[path]
            worst = max(worst, warm / mb)
            print(f"{path.name:<52} {mb:6.3f} {baseline:7.1f} {baseline / mb:7.1f}  {cold:7.1f} {cold / mb:7.1f}  "
                  f"{warm:7.2f} {warm / mb:7.1f}  {floor:6.2f}")
        print(f"warm load, worst of all sizes: {worst:.1f} ms/MB (target <= 10 ms/MB)")
        paths = [p for p, _ in conformance_corpus()]
        mb = sum(p.stat().st_size for p in paths) / 1e6
        baseline, cold, warm, floor = corpus(root, 5)
        print(f"rtreplay check's corpus ({len(paths)} cassettes, {mb:.2f} MB) before its first case: baseline "
              f"{baseline:.1f} ms, cold {cold:.1f} ms, warm {warm:.2f} ms ({baseline / warm:.0f}x faster than "
              f"the baseline), floor {floor:.2f} ms")


if __name__ == "__main__":
    main()
