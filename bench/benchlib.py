"""Shared by the benches: a replay server in its own process, and the raw-websockets baseline server.

The server runs in a `multiprocessing` child so the clients' CPU does not count against it; the
child reports its own CPU time (``time.process_time``) and RSS (``/proc/self/statm``, sampled every
20 ms for the peak). Only the public API is used: ``ReplayServer(cassette, ServerOptions(...),
port=0)``, ``async with``, ``ws_url()``.

The baseline serves the same recorded frames pre-serialized on raw ``websockets``: each server
frame goes out at its gate's arrival (the client frame before it in the recording) plus its
recorded offset times the speed, with ``asyncio.sleep``; no engine, no validation, no state.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from replay.cassettes.cassette import expand_audio, load  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
START_TIMEOUT = 120.0  # a 60-minute cassette with full audio takes a while to load


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


@dataclass
class Started:
    url: str
    load_s: float  # loading the cassette in the child (its cache is warm when the parent loaded it first)
    rss_before_load: int
    rss_after_load: int


@dataclass
class Usage:
    cpu_s: float
    rss: int
    peak_rss: int  # since the last `mark`
    loop_lag_ms: list[float]  # since the last `mark`: how late a 5 ms sleep in the server's loop woke up


def _child(kind: str, cassette: str, speed: float, conn: Connection, profile: bool) -> None:
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    asyncio.run(_serve(kind, Path(cassette), speed, conn))
    if profiler is not None:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(45)
        conn.send(out.getvalue())


async def _serve(kind: str, cassette: Path, speed: float, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: commands.put_nowait(conn.recv()))
    before = rss_bytes()
    started = time.perf_counter()
    recorded = load(cassette)
    load_s = time.perf_counter() - started
    after = rss_bytes()
    peak = [after]
    lags: list[float] = []

    async def sample() -> None:
        """The peak RSS, and the loop's lag: a server busy elsewhere sends every frame late by as much."""
        while True:
            peak[0] = max(peak[0], rss_bytes())
            for _ in range(4):
                due = loop.time() + 0.005
                await asyncio.sleep(0.005)
                lags.append((loop.time() - due) * 1000)

    sampler = asyncio.create_task(sample())
    async with _server(kind, recorded, speed) as url:
        conn.send(Started(url, load_s, before, after))
        while (command := await commands.get()) != "stop":
            if command == "mark":
                peak[0] = rss_bytes()
                lags.clear()
            conn.send(Usage(time.process_time(), rss_bytes(), max(peak[0], rss_bytes()), list(lags)))
    sampler.cancel()
    loop.remove_reader(conn.fileno())


@contextlib.asynccontextmanager
async def _server(kind: str, cassette: Any, speed: float) -> AsyncIterator[str]:
    if kind == "rtreplay":
        from replay.net.server import ReplayServer, ServerOptions

        async with ReplayServer(cassette, ServerOptions(speed=speed), port=0) as server:
            yield server.ws_url()
        return
    from websockets.asyncio.server import serve

    async with serve(baseline_handler(cassette, speed), "127.0.0.1", 0, max_size=None) as raw:
        port = raw.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"


def baseline_handler(cassette: Any, speed: float) -> Callable[[Any], Coroutine[Any, Any, None]]:
    """The minimal paced server: pre-serialized frames, each at its gate's arrival + offset x speed."""
    steps: list[tuple[str, float, str]] = []  # ("recv", t, "") or ("send", t, wire)
    for frame in cassette.sessions[0].frames:
        if frame.source == "client":
            if frame.type != "input_audio_buffer.append":
                steps.append(("recv", frame.t, ""))
        elif frame.event is not None:
            steps.append(("send", frame.t, json.dumps(expand_audio(frame.event), separators=(",", ":"))))

    async def handler(ws: Any) -> None:
        loop = asyncio.get_running_loop()
        gate_at, gate_t = loop.time(), 0.0
        with contextlib.suppress(ConnectionClosed):  # the client may leave before the last frame
            for kind, t, wire in steps:
                if kind == "recv":
                    await ws.recv()
                    gate_at, gate_t = loop.time(), t
                    continue
                delay = gate_at + (t - gate_t) * speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await ws.send(wire)
            await ws.wait_closed()

    return handler


class ServerProcess:
    """``with ServerProcess("rtreplay" | "baseline", cassette, speed) as server:`` then ``server.url``."""

    def __init__(self, kind: str, cassette: Path, speed: float, *, profile: bool = False) -> None:
        self.kind = kind
        self._conn, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_child, args=(kind, str(cassette), speed, child, profile), daemon=True)
        self.started: Started | None = None
        self.profile: str | None = None
        self._profiling = profile

    def __enter__(self) -> ServerProcess:
        self._process.start()
        if not self._conn.poll(START_TIMEOUT):
            self._process.kill()
            raise RuntimeError(f"the {self.kind} server did not start within {START_TIMEOUT:g} s")
        try:
            self.started = self._conn.recv()
        except EOFError:
            self._process.join(5)
            raise RuntimeError(f"the {self.kind} server process exited ({self._process.exitcode}) before it "
                               "started") from None
        return self

    @property
    def url(self) -> str:
        assert self.started is not None
        return self.started.url

    def mark(self) -> Usage:
        """CPU and RSS now; the peak RSS starts over from here."""
        self._conn.send("mark")
        usage: Usage = self._conn.recv()
        return usage

    def usage(self) -> Usage:
        self._conn.send("stats")
        usage: Usage = self._conn.recv()
        return usage

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        if self._profiling and self._conn.poll(30):
            self.profile = self._conn.recv()
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
