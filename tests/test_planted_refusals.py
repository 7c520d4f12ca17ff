"""Every validation path of the engine, one row each: the frame, the rule, the exact answer (docs/mutation.md).

A table of client events (malformed, unknown, or accepted) and what the engine answers, kept in
tests/data/planted_refusals.json: the exact `error` frames of the V-missing / V-type / T13 / T13c /
T17 paths, at their params, for both dialects. Each row is readable there; when a change to an answer
is meant, regenerate with ``RTREPLAY_REGOLD=1 python -m pytest tests/test_planted_refusals.py``.
"""

# ruff: noqa: E501 (one event a line: the table reads better unwrapped)
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from replay.engine.conversation import Conversation
from replay.wire.protocol import IdFactory

TABLE = Path(__file__).parent / "data" / "planted_refusals.json"

U = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}

GA: list[dict[str, Any]] = [
 {"type": "conversation.item.create"},
 {"type": "conversation.item.create", "item": "x"},
 {"type": "conversation.item.create", "item": {}},
 {"type": "conversation.item.create", "item": {"type": "nope"}},
 {"type": "conversation.item.create", "item": {"type": "message"}},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "bot", "content": []}},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "user"}},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": ["x"]}},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{}]}},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "output_text"}]}},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "assistant", "content": [{"type": "input_text"}]}},
 {"type": "conversation.item.create", "item": {"type": "function_call"}},
 {"type": "conversation.item.create", "item": {"type": "function_call", "name": "f", "call_id": 1, "arguments": "{}"}},
 {"type": "conversation.item.create", "item": {"type": "function_call", "name": "f", "call_id": "c"}},
 {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c"}},
 {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c", "output": 5}},
 {"type": "conversation.item.create", "item": {**U, "id": 5}},
 {"type": "conversation.item.create", "item": U, "previous_item_id": 5},
 {"type": "conversation.item.create", "item": U, "previous_item_id": "root"},
 {"type": "conversation.item.create", "item": U, "previous_item_id": ""},
 {"type": "conversation.item.create", "item": {**U, "id": "item_mine"}},
 {"type": "conversation.item.create", "item": {"type": "function_call", "name": "f", "call_id": "c", "arguments": "{}"}},
 {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c", "output": "42"}},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hey"}]}},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "assistant", "content": [{"type": "output_text"}]}},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "s"}]}},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": "t", "audio": "AAAA"}]}},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "u"}]}},
 {"type": "response.create", "response": "x"},
 {"type": "response.create", "response": {"conversation": "other"}},
 {"type": "response.create", "response": {"output_modalities": "audio"}},
 {"type": "response.create", "response": {"output_modalities": ["audio", "video"]}},
 {"type": "response.create", "response": {"instructions": 5}},
 {"type": "response.cancel", "response_id": 5},
 {"type": "response.cancel", "response_id": "resp_nope"},
 {"type": "session.update"},
 {"type": "session.update", "session": {"type": "nope"}},
 {"type": "session.update", "session": {"type": "realtime", "audio": "x"}},
 {"type": "session.update", "session": {"type": "realtime", "audio": {"input": "x"}}},
 {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"format": "pcm16"}}}},
 {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"format": {"type": "nope"}}}}},
 {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": "24000"}}}}},
 {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}},
 {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": "x"}}}},
 {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "nope"}}}}},
 {"type": "session.update", "session": {"type": "realtime", "output_modalities": "text"}},
 {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text", "video"]}},
 {"type": "session.update", "session": {"type": "transcription"}},
 {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}},
 {"type": "input_audio_buffer.append"},
 {"type": "input_audio_buffer.append", "audio": 5},
 {"type": "input_audio_buffer.append", "audio": {"$audio": {"bytes": 4800}}},
 {"type": "input_audio_buffer.commit"},
 {"type": "conversation.item.truncate", "item_id": 5, "content_index": 0, "audio_end_ms": 0},
 {"type": "conversation.item.truncate", "item_id": "i", "content_index": "0", "audio_end_ms": 0},
 {"type": "conversation.item.truncate", "item_id": "i", "content_index": True, "audio_end_ms": 0},
 {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 1.5},
 {"type": "conversation.item.truncate", "content_index": 0, "audio_end_ms": 0},
 {"type": "conversation.item.truncate", "item_id": "i", "audio_end_ms": 0},
 {"type": "conversation.item.delete"},
 {"type": "conversation.item.delete", "item_id": None},
 {"type": "conversation.item.retrieve", "item_id": []},
 {"type": "input_audio_buffer.clear"},
 {"type": "session.close"},
 {"type": "session.input_audio_buffer.append", "audio": "AAAA"},
 {"type": "output_audio_buffer.clear"},
 {"type": 5},
 {"type": "nope", "event_id": 5},
 {"type": "response.create", "event_id": 5},
 {"type": "response.create", "event_id": None},
]
BETA: list[dict[str, Any]] = [
 {"type": "session.update", "session": {"output_audio_format": "nope"}},
 {"type": "session.update", "session": {"turn_detection": {"type": "nope"}}},
 {"type": "transcription_session.update"},
 {"type": "transcription_session.update", "session": 5},
 {"type": "transcription_session.update", "session": {"x": 1}},
 {"type": "output_audio_buffer.clear"},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "hey"}]}},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hey"}]}},
 {"type": "conversation.item.create", "item": {"type": "message", "role": "assistant", "content": [{"type": "audio"}]}},
 {"type": "response.create", "response": {"modalities": ["text", "video"]}},
 {"type": "response.create", "response": {"output_modalities": ["video"]}},
 {"type": "session.close"},
 {"type": "nope"},
]
FRAMES = ["[1]", "5", "{\"a\": ", "[" * 3000, "\"x\""]


def strip(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "event_id"}


def answers() -> list[Any]:
    rows: list[Any] = []
    for dialect, events in (("ga", GA), ("beta", BETA)):
        for event in events:
            received = Conversation(dialect, ids=IdFactory(5)).receive_event(event)  # type: ignore[arg-type]
            rows.append([dialect, event, received.rule, [strip(r) for r in received.reactions]])
    for frame in FRAMES:
        received = Conversation("ga", ids=IdFactory(5)).receive_client(frame)
        rows.append(["ga", frame, received.rule, [strip(r) for r in received.reactions], received.event])
    return rows


def test_every_validation_path_answers_as_in_the_table() -> None:
    rows = json.loads(json.dumps(answers()))
    if os.environ.get("RTREPLAY_REGOLD"):
        TABLE.write_text(json.dumps(rows, indent=1) + "\n")
    expected = json.loads(TABLE.read_text())
    assert len(rows) == len(expected)
    moved = [(row[0], row[1]) for row, want in zip(rows, expected, strict=True) if row != want]
    assert moved == []
