"""Reference clients: the interrupt logic before and after livekit/agents PR #6249, on a raw socket.

Both replay the recorded client frames of the session (each once the server frames that preceded
it in the recording have arrived), simulate a real-time player for the assistant's audio, and on
`input_audio_buffer.speech_started` do what their logic says:

- ``reference-naive``: truncate the current assistant item at the played ms, even 0 and even for
  items that are not audio — the bug livekit, pipecat and others shipped.
- ``reference-fixed``: when played ms > 0, truncate (clamped to the audio received); at 0, delete
  the item if the server holds it, else send nothing — PR #6249.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from replay import __version__
from replay.cassettes.cassette import load
from replay.clients._support import PlaybackClock
from replay.clients.base import ClientOutcome, Target
from replay.wire.protocol import AUDIO_DELTA_TYPES, ITEM_ADDED, b64_decoded_len, format_bytes_per_ms


@dataclass
class Player:
    """What the client knows of the assistant item being played, on a real-time playback clock."""

    item_id: str | None = None
    kind: str | None = None  # "audio" | "text" | "function_call", as far as the client can tell
    clock: PlaybackClock = field(default_factory=PlaybackClock)
    bytes_per_ms: int = 48
    modalities: tuple[str, ...] = ("audio",)
    held: set[str] = field(default_factory=set)

    def new_item(self, item: dict[str, Any]) -> None:
        self.item_id = item.get("id")
        self.kind = "function_call" if item.get("type") == "function_call" else \
            "audio" if "audio" in self.modalities else "text"
        self.clock = PlaybackClock()

    def on_audio(self, item_id: str, nbytes: int) -> None:
        if item_id != self.item_id:
            self.new_item({"id": item_id, "type": "message"})
        self.kind = "audio"
        self.clock.add(nbytes / self.bytes_per_ms)

    @property
    def received_ms(self) -> int:
        return int(self.clock.received_ms)

    def played_ms(self) -> int:
        return self.clock.played_ms()


@functools.lru_cache(maxsize=64)
def _script(cassette: str, session_index: int, mtime_ns: int) -> tuple[tuple[int, dict[str, Any]], ...]:
    """Each recorded client event with the number of server frames that preceded it.

    Parsed once per cassette, not once per case: every case of a sweep replays the same script.
    """
    session = load(cassette).sessions[session_index]
    script = []
    server_seen = 0
    for frame in session.frames:
        if frame.source == "server":
            server_seen += 1
        elif frame.event is not None and frame.type != "input_audio_buffer.append":
            script.append((server_seen, frame.event))
    return tuple(script)


class ReferenceClient:
    def __init__(self, name: str, *, fixed: bool) -> None:
        self.name = name
        self.fixed = fixed

    def version(self) -> str | None:
        return __version__

    async def run(self, target: Target, stop: asyncio.Event) -> ClientOutcome:
        outcome = ClientOutcome()
        headers = {"Authorization": f"Bearer {target.api_key}"}
        if target.dialect == "beta":
            headers["OpenAI-Beta"] = "realtime=v1"
        try:
            async with connect(target.ws_url, additional_headers=headers, max_size=None) as ws:
                reader = asyncio.create_task(self._session(ws, target, outcome))
                stopper = asyncio.create_task(stop.wait())
                try:
                    await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:  # also when the run is cancelled (Ctrl-C): the session ends before its socket does
                    for task in (reader, stopper):
                        task.cancel()
                    await asyncio.gather(reader, stopper, return_exceptions=True)
        except (TimeoutError, OSError) as exc:
            outcome.crashed = f"cannot connect: {exc}"
        return outcome

    async def _session(self, ws: ClientConnection, target: Target, outcome: ClientOutcome) -> None:
        # Each recorded client frame goes out once as many server frames as preceded it have arrived.
        script = _script(target.cassette, target.session_index, Path(target.cassette).stat().st_mtime_ns)
        player = Player()
        received = 0
        sent = 0
        user_spoke = False  # once the user speaks, the typed script is over: the conversation is theirs
        while True:
            while not user_spoke and sent < len(script) and script[sent][0] <= received:
                await ws.send(json.dumps(script[sent][1]))
                sent += 1
            raw = await ws.recv()
            received += 1
            event = json.loads(raw)
            etype = event.get("type")
            if etype in ("session.created", "session.updated"):
                player.bytes_per_ms = _output_bytes_per_ms(event.get("session") or {})
            elif etype == "response.created":
                response = event.get("response") or {}
                player.modalities = tuple(response.get("output_modalities") or response.get("modalities")
                                          or ("audio",))
            elif etype == "response.output_item.added":
                player.new_item(event.get("item") or {})
            elif etype == "response.content_part.added" and event.get("item_id") == player.item_id:
                player.kind = "audio" if (event.get("part") or {}).get("type") == "audio" else "text"
            elif etype in (ITEM_ADDED["ga"], ITEM_ADDED["beta"]):
                player.held.add(str((event.get("item") or {}).get("id")))
            elif etype == "conversation.item.deleted":
                player.held.discard(event.get("item_id"))
            elif etype in AUDIO_DELTA_TYPES:
                player.on_audio(event.get("item_id"), b64_decoded_len(event.get("delta") or ""))
            elif etype == "input_audio_buffer.speech_started":
                user_spoke = True
                for reaction in self.on_interrupt(player):
                    outcome.notes.append(f"sent {reaction['type']}")
                    await ws.send(json.dumps(reaction))

    def on_interrupt(self, player: Player) -> list[dict[str, Any]]:
        """What this client sends when the user barges in."""
        item_id = player.item_id
        if item_id is None:
            return []
        played = player.played_ms()
        truncate = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                    "audio_end_ms": played}
        if not self.fixed:
            return [truncate]
        if player.kind != "audio":
            return []
        if played > 0:
            truncate["audio_end_ms"] = min(played, player.received_ms)
            return [truncate]
        if item_id in player.held:
            return [{"type": "conversation.item.delete", "item_id": item_id}]
        return []


def _output_bytes_per_ms(session: dict[str, Any]) -> int:
    fmt = session.get("audio", {}).get("output", {}).get("format") if "audio" in session \
        else session.get("output_audio_format")
    return format_bytes_per_ms(fmt)


NAIVE = ReferenceClient("reference-naive", fixed=False)
FIXED = ReferenceClient("reference-fixed", fixed=True)
