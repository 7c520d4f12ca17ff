"""What recording costs a client: the proxy's added latency per frame against a direct connection.

A raw `websockets` echo server on 127.0.0.1 plays the upstream. One client sends small JSON events
and waits for each echo (a ping-pong round trip), alternately straight to the echo server and
through `RecordingProxy`, in the same run, so both see the same machine state. The proxy parses,
records and forwards every frame in both directions; the difference of the round-trip times is
its price. The cassette write at the end is timed separately: it happens after the session, not
per frame.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replay.net.recorder import RecordingProxy

ROUND_TRIPS = 2000  # per path
ROUNDS = 4  # alternating direct / proxied, so drift hits both alike
WARMUP = 100
PAD = "x" * 120  # about the size of a small Realtime event


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def round_trips(url: str, count: int) -> list[float]:
    """Seconds per round trip of one text frame, after a warm-up."""
    times: list[float] = []
    async with connect(url, additional_headers={"Authorization": "Bearer sk-bench"}) as ws:
        for seq in range(WARMUP + count):
            message = json.dumps({"type": "bench.ping", "event_id": f"event_{seq}", "pad": PAD})
            start = time.perf_counter()
            await ws.send(message)
            await ws.recv()
            if seq >= WARMUP:
                times.append(time.perf_counter() - start)
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


async def main() -> None:
    per_round = ROUND_TRIPS // ROUNDS
    direct: list[float] = []
    proxied: list[float] = []
    async with serve(echo, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            proxy = RecordingProxy(Path(tmp) / "bench.yaml", upstream=f"ws://127.0.0.1:{port}", api_key="sk-bench")
            await proxy.start()
            for _ in range(ROUNDS):
                direct += await round_trips(f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime", per_round)
                proxied += await round_trips(proxy.ws_url(), per_round)
            start = time.perf_counter()
            result = await proxy.close()
            write_ms = (time.perf_counter() - start) * 1000
    frames = 2 * ROUNDS * (WARMUP + per_round)
    us = 1e6
    d_med, p_med = statistics.median(direct) * us, statistics.median(proxied) * us
    d_95, p_95 = p95(direct) * us, p95(proxied) * us
    print(f"rtreplay record proxy: {len(direct)} ping-pong round trips per path, 127.0.0.1, "
          f"{ROUNDS} alternating rounds")
    print(f"{'':16}{'median':>12}{'p95':>12}")
    print(f"{'direct':16}{d_med:>10.1f}µs{d_95:>10.1f}µs")
    print(f"{'through proxy':16}{p_med:>10.1f}µs{p_95:>10.1f}µs")
    print(f"{'added':16}{p_med - d_med:>+10.1f}µs{p_95 - d_95:>+10.1f}µs   "
          f"ratio {p_med / d_med:.2f}x (median)")
    print(f"added per frame (one way): {(p_med - d_med) / 2:+.1f}µs median")
    print(f"cassette written on close: {result.sessions} sessions, {frames} frames in {write_ms:.0f} ms, "
          f"complete={result.complete}")


if __name__ == "__main__":
    asyncio.run(main())
