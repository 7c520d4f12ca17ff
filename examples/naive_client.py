"""A Realtime client for `rtreplay check --cmd`, written against nothing but the environment.

It connects to $RTREPLAY_WS_URL, asks for a response, plays the assistant's audio on a simulated
real-time clock and, when the user starts speaking, truncates the current assistant item at the
played ms — even at 0 ms, which is the bug this tool exists to catch. Set FIXED=1 for the
livekit/agents PR #6249 logic (delete an unplayed item the server holds, else send nothing).

    rtreplay check --cmd "python examples/naive_client.py"
    rtreplay check --cmd "FIXED=1 python examples/naive_client.py"
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

from websockets.asyncio.client import connect


async def main() -> None:
    url = os.environ["RTREPLAY_WS_URL"]
    fixed = os.environ.get("FIXED") == "1"
    headers = {"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"}
    if os.environ.get("RTREPLAY_DIALECT") == "beta":
        headers["OpenAI-Beta"] = "realtime=v1"
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        item_id, audio_bytes, first_audio, held = None, 0, None, set()
        async for raw in ws:
            event = json.loads(raw)
            kind = event["type"]
            if kind in ("session.created",):
                await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                    "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello!"}]}}))
                await ws.send(json.dumps({"type": "response.create"}))
            elif kind == "response.output_item.added":
                item_id, audio_bytes, first_audio = event["item"]["id"], 0, None
            elif kind in ("conversation.item.added", "conversation.item.created"):
                held.add(event["item"]["id"])
            elif kind in ("response.output_audio.delta", "response.audio.delta"):
                audio_bytes += len(base64.b64decode(event["delta"]))
                first_audio = first_audio or time.monotonic()
            elif kind == "input_audio_buffer.speech_started" and item_id:
                played = 0 if first_audio is None else int((time.monotonic() - first_audio) * 1000)
                played = min(played, audio_bytes // 48)
                if fixed and played == 0:
                    if item_id in held:
                        await ws.send(json.dumps({"type": "conversation.item.delete", "item_id": item_id}))
                    continue
                await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": item_id,
                                          "content_index": 0, "audio_end_ms": played}))
            elif kind == "error":
                print("server error:", event["error"]["message"], flush=True)


if __name__ == "__main__":
    asyncio.run(main())
