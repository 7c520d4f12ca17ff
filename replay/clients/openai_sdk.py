"""A minimal reference client on the openai SDK's raw Realtime connection.

The SDK has no interrupt logic of its own, so this driver is the reference behaviour: it replays
the recorded setup events (session.update, conversation.item.create, response.create) and reacts
to ``input_audio_buffer.speech_started`` the way livekit PR #6249 does, with its own playback
clock: ``conversation.item.truncate`` when some audio was played (clamped to the audio received),
``conversation.item.delete`` at 0 ms only if the server announced the item, otherwise nothing.
``response.cancel`` is added only when the server will not cancel by itself
(``interrupt_response`` not true), as openai-agents does. A text item is never truncated or deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from replay.wire.protocol import AUDIO_DELTA_TYPES, b64_decoded_len, format_bytes_per_ms

from ._support import PlaybackClock, captured_logs, turn_may_start, wait_for_stop
from .base import ClientOutcome, MissingDependency, Target

INSTALL_HINT = "pip install 'rtreplay[openai]'"
CONNECT_TIMEOUT_S = 10.0
SESSION_TIMEOUT_S = 5.0  # session.created after connect, session.updated after session.update
CLOSE_TIMEOUT_S = 2.0  # per step; the runner allows 10 s between stop and our return

# Only the setup is replayed; the recorded client's own reactions (truncate, cancel, ...) are not.
REPLAYED_TYPES = frozenset({"session.update", "conversation.item.create", "response.create"})
ITEM_ADDED_TYPES = frozenset({"conversation.item.added", "conversation.item.created"})


def _load() -> Any:
    """Import the openai SDK lazily so the package works without the extra installed."""
    try:
        import openai
        import websockets  # noqa: F401  (the realtime extra)
    except ImportError as e:
        raise MissingDependency(INSTALL_HINT) from e
    return openai


@dataclass
class _State:
    """What the client has learned from the server so far."""

    session_created: asyncio.Event = field(default_factory=asyncio.Event)
    session_updated: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # no response running or requested
    barge_in: asyncio.Event = field(default_factory=asyncio.Event)
    interrupt_response: bool = True
    bytes_per_ms: int = 48  # output audio; pcm16 at 24 kHz until the session says otherwise
    known_items: set[str] = field(default_factory=set)  # announced by conversation.item.added/created
    audio_out: bool = True  # the session's output modalities include audio
    item_id: str | None = None  # the assistant item being played
    item_audio: bool = True  # audio as far as the client can tell; a text item has nothing to truncate
    content_index: int = 0
    item_done: bool = False
    clock: PlaybackClock = field(default_factory=PlaybackClock)

    def __post_init__(self) -> None:
        self.idle.set()

    def read_session(self, session: dict[str, Any]) -> None:
        """Output audio format and interrupt_response, from a GA or beta session object."""
        audio = session.get("audio") or {}
        if audio:  # GA
            fmt = (audio.get("output") or {}).get("format")
            turn_detection = (audio.get("input") or {}).get("turn_detection")
        else:  # beta
            fmt = session.get("output_audio_format")
            turn_detection = session.get("turn_detection")
        if fmt is not None:
            self.bytes_per_ms = format_bytes_per_ms(fmt)
        modalities = session.get("output_modalities", session.get("modalities"))
        if isinstance(modalities, list):
            self.audio_out = "audio" in modalities
        if isinstance(turn_detection, dict):
            self.interrupt_response = turn_detection.get("interrupt_response", True) is not False

    def start_item(self, item_id: str) -> None:
        self.item_id, self.content_index, self.item_done, self.clock = item_id, 0, False, PlaybackClock()
        self.item_audio = self.audio_out


class OpenAISDKClient:
    """Reference transport: the openai SDK connection plus the PR #6249 barge-in rule."""


    def __init__(self, name: str = "openai") -> None:
        self.name = name

    def version(self) -> str | None:
        _load()  # says a missing library before any case runs, and keeps the import out of them
        return importlib.metadata.version("openai")

    async def run(self, target: Target, stop: asyncio.Event) -> ClientOutcome:
        openai = _load()
        outcome = ClientOutcome()
        # INFO: the SDK logs every received frame at DEBUG
        with captured_logs(("openai",), logging.INFO) as tail:
            try:
                await self._drive(openai, target, stop, outcome)
            except Exception:
                outcome.crashed = traceback.format_exc()
        outcome.output = "\n".join(tail)
        return outcome

    def _connect(self, openai: Any, target: Target) -> Any:
        """GA through ``client.realtime``; beta needs ``websocket_base_url``, or it forces wss://."""
        if target.dialect == "beta":
            parts = urlsplit(target.http_base_url)
            ws_base = urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path, "", ""))
            client = openai.AsyncOpenAI(api_key=target.api_key, websocket_base_url=ws_base)
            return client.beta.realtime.connect(model=target.model)
        client = openai.AsyncOpenAI(api_key=target.api_key, base_url=target.http_base_url)
        return client.realtime.connect(model=target.model)

    async def _drive(self, openai: Any, target: Target, stop: asyncio.Event, outcome: ClientOutcome) -> None:
        manager = self._connect(openai, target)
        conn = await asyncio.wait_for(manager.__aenter__(), CONNECT_TIMEOUT_S)
        state = _State()
        receiver = asyncio.create_task(self._receive(conn, state, outcome))
        sender = asyncio.create_task(self._replay(conn, state, target, outcome))
        try:
            await wait_for_stop(stop, outcome, {"connection ended before stop": receiver})
        finally:
            sender.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(manager.__aexit__(None, None, None), CLOSE_TIMEOUT_S)
            receiver.cancel()
            for task, what in ((sender, "replay"), (receiver, "receive loop")):
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_S)
                    if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                        outcome.notes.append(f"{what} failed: {exc!r}"[:500])

    async def _replay(self, conn: Any, state: _State, target: Target, outcome: ClientOutcome) -> None:
        """Send the recorded setup and turns in order, each once the server is ready for it; stop at the barge-in."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.session_created.wait(), SESSION_TIMEOUT_S)
        turn_open = True  # False once a response.create went out: the next item or response starts a turn
        for event in target.client_script:
            kind = event.get("type")
            if kind not in REPLAYED_TYPES:
                continue
            if kind != "session.update" and not turn_open:
                if not await turn_may_start(state.idle, state.barge_in, outcome):
                    break
                turn_open = True
            if state.barge_in.is_set():
                break
            if kind == "response.create":
                state.idle.clear()
                turn_open = False
            if kind == "session.update":
                state.session_updated.clear()
            await _send_recorded(conn, event)
            if kind == "session.update":
                try:
                    await asyncio.wait_for(state.session_updated.wait(), SESSION_TIMEOUT_S)
                except TimeoutError:
                    outcome.notes.append("no session.updated for a replayed session.update")

    async def _receive(self, conn: Any, state: _State, outcome: ClientOutcome) -> None:
        """Track the conversation and playback; react to speech_started in order, before later events."""
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                event = json.loads(await conn.recv_bytes())
            except ConnectionClosed:
                return
            kind = event.get("type")
            if kind in ("session.created", "session.updated"):
                state.read_session(event.get("session") or {})
                (state.session_created if kind == "session.created" else state.session_updated).set()
            elif kind in ITEM_ADDED_TYPES:
                state.known_items.add(str((event.get("item") or {}).get("id")))
            elif kind == "conversation.item.deleted":
                state.known_items.discard(event.get("item_id"))
            elif kind == "response.created":
                state.idle.clear()
            elif kind == "response.done":
                state.idle.set()
            elif kind == "response.output_item.added":
                item = event.get("item") or {}
                if item.get("type") == "message" and item.get("role") == "assistant":
                    state.start_item(str(item.get("id")))
            elif kind == "response.content_part.added" and event.get("item_id") == state.item_id:
                state.content_index = event.get("content_index", 0)
                state.item_audio = (event.get("part") or {}).get("type") in ("audio", "output_audio")
            elif kind in AUDIO_DELTA_TYPES:
                if event.get("item_id") != state.item_id:
                    state.start_item(str(event.get("item_id")))
                state.item_audio = True
                state.clock.add(b64_decoded_len(event.get("delta") or "") / state.bytes_per_ms)
            elif kind == "response.output_item.done" and (event.get("item") or {}).get("id") == state.item_id:
                state.item_done = True
            elif kind == "input_audio_buffer.speech_started":
                state.barge_in.set()
                await self._barge_in(conn, state, outcome)
            elif kind == "error":
                outcome.notes.append(f"server error: {json.dumps(event.get('error'))}"[:500])

    async def _barge_in(self, conn: Any, state: _State, outcome: ClientOutcome) -> None:
        """Stop playback and tell the server what was heard (PR #6249 rule)."""
        played, received = state.clock.played_ms(), state.clock.received_ms
        item = state.item_id
        if item is None:
            outcome.notes.append("speech_started: no assistant item, nothing to truncate")
        elif not state.item_audio:
            outcome.notes.append(f"speech_started: {item} is text, nothing to truncate")
        elif state.item_done and state.clock.first_at is not None and played >= received:
            outcome.notes.append(f"speech_started: {item} fully played ({played} ms), nothing to truncate")
        elif played > 0:
            audio_end_ms = min(played, int(received))
            outcome.notes.append(f"speech_started: truncate {item} at {audio_end_ms} ms (received {received:.0f})")
            await conn.conversation.item.truncate(
                item_id=item, content_index=state.content_index, audio_end_ms=audio_end_ms
            )
        elif item in state.known_items:
            outcome.notes.append(f"speech_started: nothing played, delete {item}")
            await conn.conversation.item.delete(item_id=item)
        else:
            outcome.notes.append(f"speech_started: nothing played and {item} not announced, nothing sent")
        if not state.interrupt_response and not state.idle.is_set():
            outcome.notes.append("interrupt_response is off: response.cancel")
            await conn.response.cancel()


async def _send_recorded(conn: Any, event: dict[str, Any]) -> None:
    """Verbatim where the SDK allows it (GA ``send_raw``); the beta connection only has ``send``,
    whose param transform keeps unknown keys."""
    if hasattr(conn, "send_raw"):
        await conn.send_raw(json.dumps(event))
    else:
        await conn.send(event)


CLIENT = OpenAISDKClient()
