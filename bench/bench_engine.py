"""Engine cost per event.

Prints µs per client event through `Conversation.receive_client` (parse + validate + answer) for
a mix a real client sends, and µs per server event through `send_server`. Baseline measured in the
same run: `json.loads` of the same frames (the floor any server pays to read them). Cassette
loading has its own bench, bench_load.py (which uses `big_cassette` from here).
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replay.cassettes.cassette import Cassette, Frame, WebSocketSession
from replay.engine.conversation import Conversation
from replay.wire.protocol import IdFactory

AUDIO_100MS = base64.b64encode(bytes(4800)).decode()


def best_of(runs: int, fn, n: int) -> float:  # type: ignore[no-untyped-def]
    """Best per-call time in µs over `runs` batches of `n` calls (least disturbed by the machine)."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def client_mix() -> list[str]:
    events = [
        {"type": "input_audio_buffer.append", "audio": AUDIO_100MS},
        {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0, "audio_end_ms": 300},
        {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                       "content": [{"type": "input_text", "text": "hello"}]}},
        {"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}},
        {"type": "conversation.item.delete", "item_id": "missing"},
        {"type": "response.cancel"},
    ]
    return [json.dumps(e) for e in events]


def primed_engine() -> Conversation:
    engine = Conversation("ga", ids=IdFactory(0))
    engine.send_server({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    item = {"id": "item_a", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    engine.send_server({"type": "response.output_item.added", "response_id": "resp_1", "output_index": 0,
                        "item": item})
    engine.send_server({"type": "conversation.item.added", "previous_item_id": None, "item": item})
    engine.send_server({"type": "response.content_part.added", "response_id": "resp_1", "item_id": "item_a",
                        "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}})
    for _ in range(20):
        engine.send_server({"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_a",
                            "output_index": 0, "content_index": 0, "delta": AUDIO_100MS})
    return engine


def bench_client_events() -> None:
    frames = client_mix()
    parsed = [json.loads(f) for f in frames]
    rounds = 400
    n = rounds * len(frames)
    engine = primed_engine()

    def full() -> None:
        for _ in range(rounds):
            for frame in frames:
                engine.receive_client(frame)

    def engine_only() -> None:
        for _ in range(rounds):
            for event in parsed:
                engine.receive_event(event)

    def parse_only() -> None:
        for _ in range(rounds):
            for frame in frames:
                json.loads(frame)

    with_parse = best_of(7, full, n)
    alone = best_of(7, engine_only, n)
    floor = best_of(7, parse_only, n)
    print(f"engine: {alone:6.2f} µs per client event, parsed (mix of {len(frames)} types; target <= 10 µs)")
    print(f"        {with_parse:6.2f} µs with JSON parsing; json.loads alone {floor:.2f} µs "
          f"(baseline: the engine adds {with_parse / floor:.1f}x the parse cost)")
    for event in parsed:
        one = best_of(7, lambda e=event: [engine.receive_event(e) for _ in range(500)], 500)  # type: ignore[misc]
        print(f"        {one:6.2f} µs  {event['type']}")


def bench_server_events() -> None:
    delta = {"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_a", "output_index": 0,
             "content_index": 0, "delta": AUDIO_100MS}
    engine = primed_engine()
    n = 20000
    per = best_of(7, lambda: [engine.send_server(delta) for _ in range(n)], n)
    print(f"engine: {per:6.2f} µs per server audio delta applied (send_server)")


def big_cassette(path: Path, seconds: int) -> None:
    frames = [Frame(0.0, "server", {"type": "session.created", "event_id": "e0", "session": {"type": "realtime"}}),
              Frame(0.1, "client", {"type": "response.create"})]
    for i in range(seconds * 10):
        frames.append(Frame(0.5 + i * 0.04, "server", {
            "type": "response.output_audio.delta", "event_id": f"event_{i}", "response_id": "resp_1",
            "item_id": "item_a", "output_index": 0, "content_index": 0, "delta": AUDIO_100MS}))
    session = WebSocketSession("wss://api.openai.com/v1/realtime?model=gpt-realtime", "ga", frames)
    Cassette({"origin": "synthesized"}, [session]).save(path)


if __name__ == "__main__":
    bench_client_events()
    bench_server_events()
