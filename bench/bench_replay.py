"""Replay throughput: rtreplay's server vs raw `websockets` sending the same pre-serialized frames.

Both serve one recorded audio response (60 s of pcm16 in 100 ms deltas, ~4 MB of JSON) to the
same client on 127.0.0.1, with permessage-deflate negotiated the same way. Timed from the
client's `response.create` to its last frame; best and median of several alternating rounds.
The baseline does no validation, no state and no scheduling, so the ratio is the price of being a
faithful server (target >= 0.7x).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replay.authoring.synth import GA_MODEL, SessionScript
from replay.cassettes.cassette import Cassette, WebSocketSession, expand_audio
from replay.net.server import ReplayServer, ServerOptions

SECONDS = 60
ROUNDS = 7


def recording() -> WebSocketSession:
    """One audio response of SECONDS x 10 deltas of 100 ms, in the API's event order (replay/authoring/synth.py)."""
    script = SessionScript("ga", seed="bench_replay", model=GA_MODEL)
    script.connect()
    start = script.response_create(after=100)
    script.respond_audio("A long answer, to measure how fast a recorded response can be sent.",
                         chunks=SECONDS * 10, at=start)
    return WebSocketSession(f"wss://api.openai.com/v1/realtime?model={GA_MODEL}", "ga", script.frames)


async def client_round(url: str) -> tuple[float, int]:
    async with connect(url, additional_headers={"Authorization": "Bearer sk-bench"}, max_size=None) as ws:
        await ws.recv()
        start = time.perf_counter()
        await ws.send(json.dumps({"type": "response.create"}))
        received = 0
        while True:
            message = await ws.recv()
            received += len(message)
            if '"response.done"' in message[:40]:
                return time.perf_counter() - start, received


async def main() -> None:
    session = recording()
    wire = [json.dumps(expand_audio(f.event), separators=(",", ":")) for f in session.frames
            if f.source == "server" and f.event is not None]

    async def raw_handler(ws: ServerConnection) -> None:
        await ws.send(wire[0])
        await ws.recv()
        for text in wire[1:]:
            await ws.send(text)
        await ws.wait_closed()

    ours = ReplayServer(Cassette({}, [session]), ServerOptions(speed=0))
    await ours.start()
    async with serve(raw_handler, "127.0.0.1", 0, max_size=None) as raw:
        raw_port = raw.sockets[0].getsockname()[1]
        raw_url = f"ws://127.0.0.1:{raw_port}/v1/realtime?model=gpt-realtime"
        times: dict[str, list[float]] = {"rtreplay": [], "raw websockets": []}
        size = 0
        for _ in range(ROUNDS):
            for name, url in (("rtreplay", ours.ws_url()), ("raw websockets", raw_url)):
                elapsed, size = await client_round(url)
                times[name].append(elapsed)
    await ours.close()
    mb = size / 1e6
    print(f"replay of one recorded audio response: {len(wire)} frames, {mb:.1f} MB, {SECONDS} s of audio, "
          f"{ROUNDS} rounds each")
    for name, samples in times.items():
        print(f"  {name:<15} best {min(samples) * 1000:7.1f} ms  median {statistics.median(samples) * 1000:7.1f} ms"
              f"  = {mb / statistics.median(samples):6.1f} MB/s, {len(wire) / statistics.median(samples):8.0f} "
              "frames/s")
    ratio = statistics.median(times["raw websockets"]) / statistics.median(times["rtreplay"])
    print(f"  throughput ratio rtreplay / raw websockets: {ratio:.2f}x (target >= 0.7x)")


if __name__ == "__main__":
    asyncio.run(main())
