"""Hour-long sessions: load time, memory and replay throughput at 1, 10 and 60 minutes.

A synthesized GA session (the helpers of `replay/authoring/synth.py`): a user turn every 15 s, each a text
message, `response.create` and a 5 s audio answer (50 deltas of 100 ms, paced as the API sends
them), so 60 minutes hold 240 responses and 20 minutes of model audio. Once with audio compacted
(`{"$audio": {"bytes": N}}`, replayed as silence) and once with full audio (random bytes, so the
file and the wire are as big, and as incompressible, as speech).

For each: the file's size; loading it cold (an empty cassette cache: YAML parsing) and warm (the
cache filled by the cold load; best of 5); the RSS a server process grows by loading it; and a replay at
speed 0 to one client that sends every turn as soon as the previous response is done, timed from
its first turn to the last `response.done`, with the server process's CPU and RSS growth over
the replay. Baselines, in the same run: the same replay from a raw `websockets` server sending the
same frames pre-serialized (benchlib.py), and the 1-minute session's cost per minute, against which
the longer ones show whether cost grows linearly (ratio 1.0x: linear).

    python bench/bench_long.py [--minutes 1,10,60]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import ServerProcess
from websockets.asyncio.client import connect

from replay.authoring.synth import GA_MODEL, SessionScript
from replay.cassettes.cassette import Cassette, WebSocketSession, load

TURN_S = 15
CHUNKS = 50  # 5 s of audio per answer
REPLAY_TIMEOUT = 300.0


def build(minutes: int, full_audio: bool) -> Cassette:
    """`minutes` of turns; with full_audio, every compacted payload becomes that many random bytes."""
    script = SessionScript("ga", seed=f"long-{minutes}", model=GA_MODEL)
    script.connect()
    script.update_session({"type": "realtime", "output_modalities": ["audio"],
                           "instructions": "You are a friendly voice assistant."})
    for turn in range(minutes * 60 // TURN_S):
        text = f"Question number {turn + 1}: tell me something about the number {turn + 1}."
        script.user_text(text, after=max(1, 1000 + turn * TURN_S * 1000 - script.now))
        start = script.response_create()
        script.ack_user_text(text, at=start + 90)
        script.respond_audio(f"Here is a fact about {turn + 1}, told in about five seconds of audio.",
                             chunks=CHUNKS, at=start)
    frames = script.frames
    if full_audio:
        rng = random.Random(minutes)
        for frame in frames:
            event = frame.event or {}
            payload = event.get("delta")
            if isinstance(payload, dict) and "$audio" in payload:
                event["delta"] = base64.b64encode(rng.randbytes(payload["$audio"]["bytes"])).decode()
    session = WebSocketSession(f"wss://api.openai.com/v1/realtime?model={GA_MODEL}", "ga", frames,
                               close=script.close())
    return Cassette({"origin": "synthesized", "source": "bench/bench_long.py", "minutes": minutes,
                     "audio_compacted": not full_audio}, [session])


def timed_load(path: Path, cache_home: Path, runs: int = 1) -> float:
    """Best of `runs` loads with this cache directory, in s."""
    os.environ["XDG_CACHE_HOME"] = str(cache_home)
    fastest = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        cassette = load(path)
        fastest = min(fastest, time.perf_counter() - started)
        del cassette  # freeing it is not part of loading it
    return fastest


async def replay(url: str, cassette: Cassette) -> tuple[float, int, int]:
    """Every turn as soon as the previous response is done: (seconds, frames, bytes) received."""
    frames = cassette.sessions[0].frames
    client = [f.event for f in frames if f.source == "client" and f.event is not None]
    frames_in = bytes_in = 0
    async with connect(url, additional_headers={"Authorization": "Bearer sk-bench"}, max_size=None) as ws:

        async def until(wanted: str) -> None:
            nonlocal frames_in, bytes_in
            while True:
                message = await ws.recv()
                frames_in += 1
                bytes_in += len(message)
                head = message[:80] if isinstance(message, str) else message[:80].decode(errors="replace")
                if head.startswith(f'{{"type":"{wanted}"'):
                    return

        await until("session.created")
        await ws.send(json.dumps(client[0]))
        await until("session.updated")
        started = time.perf_counter()
        for event in client[1:]:
            await ws.send(json.dumps(event))
            if event["type"] == "response.create":
                await until("response.done")
        return time.perf_counter() - started, frames_in, bytes_in


def measure(minutes: int, full_audio: bool, tmp: Path) -> dict[str, Any]:
    cassette = build(minutes, full_audio)
    path = tmp / f"long_{minutes}_{'full' if full_audio else 'compacted'}.yaml"
    cassette.save(path)
    cache = tmp / f"cache_{path.stem}"
    cold = timed_load(path, cache)
    warm = timed_load(path, cache, runs=5)
    out: dict[str, Any] = {"minutes": minutes, "mode": "full audio" if full_audio else "compacted",
                           "mb": path.stat().st_size / 1e6, "frames": len(cassette.sessions[0].frames),
                           "cold_s": cold, "warm_s": warm}
    del cassette
    recorded = load(path)
    for kind in ("rtreplay", "baseline"):
        with ServerProcess(kind, path, 0.0) as server:
            assert server.started is not None
            before = server.mark()
            seconds, frames, received = asyncio.run(asyncio.wait_for(replay(server.url, recorded), REPLAY_TIMEOUT))
            after = server.usage()
        out[kind] = {"s": seconds, "frames": frames, "mb": received / 1e6, "cpu_s": after.cpu_s - before.cpu_s,
                     "grew_mb": (after.peak_rss - before.rss) / 1e6,
                     "load_rss_mb": (server.started.rss_after_load - server.started.rss_before_load) / 1e6}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,10,60")
    args = parser.parse_args()
    minutes = [int(x) for x in args.minutes.split(",")]
    print(f"synthesized GA session: a turn every {TURN_S} s, each a {CHUNKS * 100 // 1000} s audio answer; "
          "replay at speed 0 to one client")
    print(f"{'minutes':>7} {'audio':<10} {'frames':>7} {'file MB':>8} {'cold load':>10} {'ms/MB':>6} "
          f"{'warm load':>10} {'ms/MB':>6} {'load RSS':>9} | {'server':<8} {'replay':>7} {'MB/s':>6} "
          f"{'frames/s':>8} {'CPU':>6} {'µs/frame':>8} {'RSS grew':>8}")
    with tempfile.TemporaryDirectory(prefix="rtreplay-bench-long-") as tmp:
        for full_audio in (False, True):
            first: dict[str, Any] | None = None
            for m in minutes:
                r = measure(m, full_audio, Path(tmp))
                first = first or r
                for kind in ("rtreplay", "baseline"):
                    x = r[kind]
                    lead = (f"{m:>7} {r['mode']:<10} {r['frames']:>7} {r['mb']:>8.2f} {r['cold_s'] * 1000:>8.0f}ms "
                            f"{r['cold_s'] * 1000 / r['mb']:>6.1f} {r['warm_s'] * 1000:>8.1f}ms "
                            f"{r['warm_s'] * 1000 / r['mb']:>6.1f} {x['load_rss_mb']:>7.1f}MB"
                            if kind == "rtreplay" else " " * 87)
                    print(f"{lead} | {kind:<8} {x['s']:>6.2f}s {x['mb'] / x['s']:>6.1f} {x['frames'] / x['s']:>8.0f} "
                          f"{x['cpu_s']:>5.2f}s {x['cpu_s'] / x['frames'] * 1e6:>8.0f} {x['grew_mb']:>6.1f}MB")
                ours, raw = r["rtreplay"], r["baseline"]
                cpu_ratio = ours["cpu_s"] / raw["cpu_s"]
                first_ratio = first["rtreplay"]["cpu_s"] / first["baseline"]["cpu_s"]
                per_minute = first["minutes"]
                cold_growth = r["cold_s"] / m / (first["cold_s"] / per_minute)
                rss_growth = ours["grew_mb"] / m / max(1e-9, first["rtreplay"]["grew_mb"] / per_minute)
                print(f"{'':>18} throughput rtreplay / raw websockets {raw['s'] / ours['s']:.2f}x; server CPU "
                      f"rtreplay / raw {cpu_ratio:.2f}x ({first_ratio:.2f}x at {per_minute} min); per minute vs "
                      f"{per_minute} min: cold load {cold_growth:.2f}x, server RSS growth {rss_growth:.2f}x")
    print("linear growth: per-minute ratios near 1.0x, and a server CPU ratio to raw websockets that stays put "
          "(raw websockets keeps no state, so its cost per frame does not depend on the session's length)")


if __name__ == "__main__":
    main()
