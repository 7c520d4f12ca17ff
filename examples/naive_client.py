"""A voice client for `rtreplay check --cmd`, written against nothing but the environment.

It connects to $RTREPLAY_WS_URL and streams its microphone (here: silence) for as long as the
connection is open. It never types a user turn: the server hears the user and answers. It plays
the assistant's audio on a real-time clock, answers function calls, and when the user starts
speaking it truncates the assistant item at the played ms, even at 0 ms: the bug this tool exists
to catch. FIXED=1 applies the livekit/agents PR #6249 logic instead.

    rtreplay check --cmd "python examples/naive_client.py"
    rtreplay check --cmd "FIXED=1 python examples/naive_client.py"
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

FIXED = os.environ.get("FIXED") == "1"
BYTES_PER_MS = 48  # pcm16, 24 kHz, mono: the session's default audio format, both ways
CHUNK_MS = 20
SILENCE = base64.b64encode(bytes(BYTES_PER_MS * CHUNK_MS)).decode()


class Playback:
    """The assistant item being played: audio plays in real time from when it arrives, as on a speaker."""

    def __init__(self, item_id: str | None = None, kind: str | None = None) -> None:
        self.item_id = item_id
        self.kind = kind  # "audio", "text" or "function_call"
        self.received_ms = 0.0
        self.ends_at = 0.0  # when the speaker runs out of what it was given

    def add(self, ms: float) -> None:
        self.ends_at = max(self.ends_at, time.monotonic()) + ms / 1000
        self.received_ms += ms

    def played_ms(self) -> int:
        return int(self.received_ms - max(0.0, self.ends_at - time.monotonic()) * 1000)


async def microphone(ws: ClientConnection) -> None:
    """20 ms of audio every 20 ms, on a clock that does not drift."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    try:
        while True:
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": SILENCE}))
            next_at += CHUNK_MS / 1000
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    except ConnectionClosed:
        return


def on_interrupt(playing: Playback, held: set[str]) -> list[dict[str, Any]]:
    """What to send when the user starts speaking over the assistant."""
    if playing.item_id is None:
        return []
    played = max(0, playing.played_ms())
    truncate = {"type": "conversation.item.truncate", "item_id": playing.item_id, "content_index": 0,
                "audio_end_ms": played}
    if not FIXED:
        return [truncate]  # naive: even at 0 ms, even for a text item or a function call
    if playing.kind != "audio":
        return []  # only model audio can be truncated
    if played > 0:
        truncate["audio_end_ms"] = min(played, int(playing.received_ms))
        return [truncate]
    if playing.item_id in held:
        return [{"type": "conversation.item.delete", "item_id": playing.item_id}]  # nobody heard it
    return []  # the server does not hold the item yet: nothing to undo


def answer_function_calls(response: dict[str, Any]) -> list[dict[str, Any]]:
    calls = [item for item in response.get("output") or [] if item.get("type") == "function_call"]
    if response.get("status") != "completed" or not calls:
        return []
    outputs = [{"type": "conversation.item.create", "item": {"type": "function_call_output",
                                                             "call_id": call["call_id"], "output": '{"ok": true}'}}
               for call in calls]
    return [*outputs, {"type": "response.create"}]


async def main() -> None:
    headers = {"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"}
    if os.environ.get("RTREPLAY_DIALECT") == "beta":
        headers["OpenAI-Beta"] = "realtime=v1"
    async with connect(os.environ["RTREPLAY_WS_URL"], additional_headers=headers, max_size=None) as ws:
        mic = asyncio.create_task(microphone(ws))
        playing, modalities, held = Playback(), ["audio"], set()
        try:
            async for raw in ws:
                event = json.loads(raw)
                kind = event["type"]
                sends: list[dict[str, Any]] = []
                if kind == "response.created":
                    response = event["response"]
                    modalities = response.get("output_modalities") or response.get("modalities") or ["audio"]
                    playing = Playback()
                elif kind == "response.output_item.added":
                    item = event["item"]
                    function = item.get("type") == "function_call"
                    playing = Playback(item["id"], "function_call" if function else
                                       "audio" if "audio" in modalities else "text")
                elif kind == "response.content_part.added" and event["item_id"] == playing.item_id:
                    playing.kind = "audio" if event["part"]["type"] == "audio" else "text"
                elif kind in ("conversation.item.added", "conversation.item.created"):
                    held.add(event["item"]["id"])
                elif kind == "conversation.item.deleted":
                    held.discard(event["item_id"])
                elif kind in ("response.output_audio.delta", "response.audio.delta"):
                    if event["item_id"] != playing.item_id:
                        playing = Playback(event["item_id"], "audio")
                    playing.add(len(base64.b64decode(event["delta"])) / BYTES_PER_MS)
                elif kind == "input_audio_buffer.speech_started":
                    sends = on_interrupt(playing, held)
                elif kind == "response.done":
                    sends = answer_function_calls(event["response"])
                elif kind == "error":
                    print("server error:", event["error"]["message"], flush=True)
                for message in sends:
                    await ws.send(json.dumps(message))
        except ConnectionClosed:
            pass  # the server hung up: the conversation is over
        finally:
            mic.cancel()


if __name__ == "__main__":
    asyncio.run(main())
