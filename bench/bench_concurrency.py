"""Many concurrent paced sessions on one server: how late do frames reach the clients?

A server process (a multiprocessing child, so the clients' CPU does not count against it) serves
`cassettes/ga_text_turn_audio_response.yaml` at speed 1; this process opens N raw `websockets`
clients at once, and each drives the recording's script (session.update; conversation.item.create
and response.create once session.updated is in) and timestamps every frame on arrival. A frame's
lateness is its arrival minus its scheduled time: the arrival of `response.created` plus the
frame's recorded offset from the recorded `response.created`, times the speed. Measured on the
client side, so the figure stays valid whatever the server does inside. "answer" is how late
`response.created` itself arrives after `response.create` was sent, against the recording.

All N sessions connect first; then each starts its script at a random moment within `--spread`
seconds (1 s: about 40 responses play at any moment of a 100-session level, as independent users
would), and the `--burst` row starts them all in the same instant, the worst case.

Baseline, in the same run: a minimal paced server on raw `websockets` in the same kind of child
process, sending the same frames pre-serialized at the same recorded offsets with `asyncio.sleep`
(no engine, no validation): the floor that the clients' own loop, the kernel and the timer set.
Server CPU and RSS per session come from the child: CPU over the level, peak RSS over the level
minus RSS before it, each divided by N; every level gets a fresh server process. "loop lag" is how
late a 5 ms sleep wakes up in the server's event loop during the level: when it is as large as the
frames' lateness, the server's loop was busy, not the clients or the kernel. Each level runs
`--rounds` times per server, alternating; the round with the lowest p99 is shown (the one least
disturbed by the rest of the machine), with the errors of the worst round. Target: 100 sessions,
0 errors, p99 lateness < 2 ms.

    python bench/bench_concurrency.py [--levels 1,10,100,200] [--spread 1] [--burst 100] [--rounds 3]
                                      [--profile N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from benchlib import ROOT, ServerProcess, percentile
from websockets.asyncio.client import ClientConnection, connect

from replay.cassettes.cassette import Frame, load

CASSETTE = ROOT / "cassettes" / "ga_text_turn_audio_response.yaml"
SPEED = 1.0
LEVEL_TIMEOUT = 60.0  # a level that has not finished by then counts its unfinished sessions as errors
HANDSHAKES_AT_ONCE = 50  # below the listen backlog, so no SYN is dropped and retried a second later


# ---------------------------------------------------------------------------- the clients


@dataclass
class SessionResult:
    lateness_ms: list[float] = field(default_factory=list)
    answer_ms: float | None = None  # response.created's arrival after response.create, beyond the recording
    error: str | None = None


def recorded() -> tuple[list[Frame], dict[tuple[str, int], float], float]:
    """The client frames to send, and each response frame's recorded offset by (type, occurrence)."""
    frames = load(CASSETTE).sessions[0].frames
    created = next(f.t for f in frames if f.type == "response.created")
    create = next(f.t for f in frames if f.type == "response.create")
    offsets: dict[tuple[str, int], float] = {}
    seen: dict[str, int] = {}
    for frame in frames:
        if frame.source == "server" and frame.t >= created and frame.type is not None:
            seen[frame.type] = seen.get(frame.type, 0) + 1
            offsets[(frame.type, seen[frame.type])] = frame.t - created
    return [f for f in frames if f.source == "client"], offsets, created - create


def type_of(message: str) -> str | None:
    """The event's type without parsing a 6 KB audio frame: servers put ``type`` first (JSON as fallback)."""
    if message.startswith('{"type":"'):
        end = message.find('"', 9)
        if end > 0:
            return message[9:end]
    etype = json.loads(message).get("type")
    return etype if isinstance(etype, str) else None


async def _until(ws: ClientConnection, wanted: str, arrivals: list[tuple[float, str]]) -> None:
    while True:
        message = await ws.recv()
        arrivals.append((time.perf_counter(), message if isinstance(message, str) else message.decode()))
        if type_of(arrivals[-1][1]) == wanted:
            return


async def one_session(url: str, handshakes: asyncio.Semaphore, go: asyncio.Event, ready: list[int], delay: float,
                      script: tuple[list[Frame], dict[tuple[str, int], float], float]) -> SessionResult:
    client_frames, offsets, answer_gap = script
    result = SessionResult()
    arrivals: list[tuple[float, str]] = []
    try:
        async with handshakes:
            ws = await connect(url, additional_headers={"Authorization": "Bearer sk-bench"}, max_size=None,
                               open_timeout=30)
        async with ws:
            await _until(ws, "session.created", arrivals)
            ready[0] += 1
            await go.wait()  # every session is connected before any plays
            await asyncio.sleep(delay)
            await ws.send(json.dumps(client_frames[0].event))
            await _until(ws, "session.updated", arrivals)
            for frame in client_frames[1:]:
                await ws.send(json.dumps(frame.event))
            sent_create = time.perf_counter()
            await _until(ws, "response.done", arrivals)
    except Exception as exc:  # any failure of a session is an error of the level
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    start: float | None = None
    seen: dict[str, int] = {}
    for arrived, message in arrivals:
        etype = type_of(message) or ""
        if etype == "response.created" and start is None:
            start = arrived
            result.answer_ms = (arrived - sent_create - answer_gap * SPEED) * 1000
        if start is None:
            continue
        seen[etype] = seen.get(etype, 0) + 1
        offset = offsets.get((etype, seen[etype]))
        if offset is not None:
            result.lateness_ms.append((arrived - (start + offset * SPEED)) * 1000)
    if start is None:
        result.error = "no response.created"
    return result


async def run_level(url: str, n: int, spread: float) -> tuple[list[SessionResult], float]:
    script = recorded()
    handshakes = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
    go = asyncio.Event()
    ready = [0]
    delays = random.Random(n).sample(range(1_000_000), n)  # reproducible start offsets within the spread
    tasks = [asyncio.create_task(one_session(url, handshakes, go, ready, spread * d / 1_000_000, script))
             for d in delays]
    started = time.perf_counter()
    deadline = started + LEVEL_TIMEOUT
    while ready[0] + sum(t.done() for t in tasks) < n and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    go.set()
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()))
    for task in pending:
        task.cancel()
    results = [t.result() if t in done else SessionResult(error="timed out") for t in tasks]
    return results, time.perf_counter() - started


def measure(kind: str, n: int, spread: float, profile: bool = False) -> dict[str, Any]:
    """One level on a fresh server process: the clients' figures and the server's CPU and memory."""
    with ServerProcess(kind, CASSETTE, SPEED, profile=profile) as server:
        before = server.mark()
        results, wall = asyncio.run(run_level(server.url, n, spread))
        after = server.usage()
    if server.profile:
        print(server.profile)
    lateness = [x for r in results for x in r.lateness_ms]
    answers = [r.answer_ms for r in results if r.answer_ms is not None]
    errors = [r.error for r in results if r.error]
    return {"frames": len(lateness), "errors": len(errors), "first_error": errors[:1],
            "p50": statistics.median(lateness) if lateness else float("nan"), "p99": percentile(lateness, 0.99),
            "max": max(lateness) if lateness else float("nan"), "answer_p99": percentile(answers, 0.99),
            "cpu_ms": (after.cpu_s - before.cpu_s) * 1000 / n, "rss_kb": (after.peak_rss - before.rss) / 1024 / n,
            "lag_p99": percentile(after.loop_lag_ms, 0.99), "wall": wall}


def report(n: int, spread: float, rounds: int) -> None:
    results: dict[str, list[dict[str, Any]]] = {"rtreplay": [], "baseline": []}
    for _ in range(rounds):
        for kind in results:
            results[kind].append(measure(kind, n, spread))
    for kind, runs in results.items():
        r = min(runs, key=lambda x: x["p99"])
        errors = max(x["errors"] for x in runs)
        first = next((x["first_error"][0] for x in runs if x["first_error"]), None)
        print(f"{n:>8} {spread:>6.1f}s {kind:<9} {r['frames']:>6} {errors:>6} {r['p50']:>7.2f} {r['p99']:>7.2f} "
              f"{r['max']:>7.2f} {r['answer_p99']:>8.2f}ms {r['lag_p99']:>8.2f}ms {r['cpu_ms']:>10.2f}ms "
              f"{r['rss_kb']:>9.1f} KB {r['wall']:>5.1f}s" + (f"  first error: {first}" if first else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,10,100,200")
    parser.add_argument("--spread", type=float, default=1.0, help="sessions start their script within this many s")
    parser.add_argument("--burst", type=int, default=100, help="also this many sessions starting at once (0: no)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, help="profile the rtreplay server at this level")
    args = parser.parse_args()
    if args.profile:
        print(measure("rtreplay", args.profile, args.spread, profile=True))
        return
    print(f"{CASSETTE.name} at speed {SPEED:g}: lateness of each response frame on arrival at the client, "
          f"vs response.created's arrival + recorded offset; best of {args.rounds} rounds by p99")
    print(f"{'sessions':>8} {'spread':>7} {'server':<9} {'frames':>6} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'answer p99':>10} {'loop lag p99':>10} {'CPU/session':>12} {'RSS/session':>12} {'wall':>6}")
    for n in (int(x) for x in args.levels.split(",")):
        report(n, args.spread, args.rounds)
    if args.burst:
        report(args.burst, 0.0, args.rounds)
    print("target: 100 sessions, 0 errors, p99 lateness < 2 ms (rtreplay rows)")


if __name__ == "__main__":
    main()
