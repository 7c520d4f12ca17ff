"""Driver for livekit-agents' OpenAI ``RealtimeSession`` (livekit-plugins-openai), headless.

There is no room and no ``AgentSession``: the driver plays the part of ``AgentActivity``. On the
session's ``input_speech_started`` it calls ``interrupt()`` right away (as
``AgentActivity.interrupt`` does) and then ``truncate()`` for the assistant message being played,
taken from the session's message stream, with ``audio_end_ms`` read from the driver's simulated
playback clock at the moment of the barge-in. At 0 ms played, livekit 1.8.9 (PR #6158) sends
``conversation.item.delete`` unconditionally; ``CLIENT_PR6249`` applies the guard of the still-open
PR #6249 (delete only items the session's remote chat context holds) to this driver's calls,
without patching the library.

The clock is fed from ``openai_server_event_received`` (synchronous, in wire order), not from the
message's audio stream: that stream is read by tasks that lag a burst of frames, so audio sent just
before ``speech_started`` would be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import time
import traceback
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from replay.wire.protocol import b64_decoded_len

from ._support import PlaybackClock, captured_logs, recorded_turns, turn_may_start, wait_for_stop
from .base import ClientOutcome, MissingDependency, Target

if TYPE_CHECKING:
    from livekit.agents import llm
    from livekit.agents.llm._realtime.openai import RealtimeSession

INSTALL_HINT = "pip install 'rtreplay[livekit]'"
CLOSE_TIMEOUT_S = 2.0  # per step; the runner allows 10 s between stop and our return
MODALITIES_TIMEOUT_S = 2.0  # content_part.added (or the cancel tail) settles them
MESSAGE_TIMEOUT_S = 1.0  # for the message stream to hand over a message already announced on the wire
PCM_BYTES_PER_MS = 48.0  # livekit's OpenAI engine only speaks pcm16 at 24 kHz

Modality = Literal["text", "audio"]


def _require() -> None:
    """Fail with the install hint when livekit is missing; the driver imports it lazily."""
    try:
        import aiohttp  # noqa: F401
        import livekit.plugins.openai.realtime  # noqa: F401
    except ImportError as e:
        raise MissingDependency(INSTALL_HINT) from e


@dataclass
class _Output:
    """One assistant message as the agent's audio output sees it."""

    clock: PlaybackClock = field(default_factory=PlaybackClock)
    done: bool = False  # response.output_item.done: no more audio will come
    msg: llm.MessageGeneration | None = None  # delivered by the session's message stream
    text: str = ""


@dataclass
class _State:
    outputs: dict[str, _Output] = field(default_factory=dict)
    current: str | None = None  # the assistant message being played
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # no response requested or running
    barge_in: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def output(self, item_id: str) -> _Output:
        return self.outputs.setdefault(item_id, _Output())

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class LivekitClient:
    """livekit RealtimeSession, barge-in handled the way livekit's AgentActivity handles it."""

    dialects = ("ga",)  # the library speaks only the GA protocol


    def __init__(self, name: str = "livekit", *, pr6249_guard: bool = False) -> None:
        self.name = name
        self.pr6249_guard = pr6249_guard

    def version(self) -> str | None:
        _require()  # says a missing library before any case runs, and keeps the import out of them
        agents = importlib.metadata.version("livekit-agents")
        try:
            plugin = importlib.metadata.version("livekit-plugins-openai")
        except importlib.metadata.PackageNotFoundError:
            plugin = None
        # the protocol engine ships in livekit-agents; the plugin is a thin subclass
        return agents if plugin in (None, agents) else f"{agents} (livekit-plugins-openai {plugin})"

    async def run(self, target: Target, stop: asyncio.Event) -> ClientOutcome:
        _require()
        outcome = ClientOutcome()
        with captured_logs(("livekit",)) as tail:
            try:
                await self._drive(target, stop, outcome)
            except Exception:
                outcome.crashed = traceback.format_exc()
        outcome.output = "\n".join(tail)
        return outcome

    async def _drive(self, target: Target, stop: asyncio.Event, outcome: ClientOutcome) -> None:
        import aiohttp
        from livekit.agents.types import APIConnectOptions
        from livekit.plugins.openai.realtime import RealtimeModel

        state = _State()
        http = aiohttp.ClientSession()
        model = RealtimeModel(
            api_key=target.api_key,
            base_url=target.http_base_url,
            model=target.model,
            http_session=http,
            # one connection per case: a reconnection would open a second session on the replay server
            conn_options=APIConnectOptions(max_retry=0),
        )
        session: RealtimeSession = model.session()

        def on_server_event(event: dict[str, Any]) -> None:
            # emitted before the session handles the event: the clock and the pacing see wire order
            kind = event.get("type")
            if kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "message":
                state.current = str(event["item"].get("id"))
                state.output(state.current)
            elif kind == "response.output_audio.delta":
                state.output(str(event.get("item_id"))).clock.add(
                    b64_decoded_len(event.get("delta") or "") / PCM_BYTES_PER_MS
                )
            elif kind == "response.output_item.done":
                state.output(str((event.get("item") or {}).get("id"))).done = True
            elif kind == "response.created":
                state.idle.clear()
            elif kind == "response.done":
                state.idle.set()

        def on_generation_created(gen: llm.GenerationCreatedEvent) -> None:
            state.spawn(self._read_messages(gen, state))

        def on_speech_started(_: llm.InputSpeechStartedEvent) -> None:
            # AgentActivity.interrupt(): rt_session.interrupt() synchronously, before playout stops
            cut_at = time.monotonic()
            state.barge_in.set()
            active = session.has_active_generation
            session.interrupt()
            outcome.notes.append(f"input_speech_started: interrupt() (active generation: {active})")
            if state.current is None:
                outcome.notes.append("no assistant message yet: nothing to truncate")
                return
            state.spawn(self._truncate(session, state, state.current, cut_at, outcome))

        def on_error(ev: Any) -> None:
            outcome.notes.append(f"library error event: {getattr(ev, 'error', ev)!r}"[:500])

        session.on("openai_server_event_received", on_server_event)
        session.on("generation_created", on_generation_created)
        session.on("input_speech_started", on_speech_started)
        session.on("error", on_error)
        try:
            state.spawn(self._play_turns(session, state, target, outcome))
            # with max_retry=0 the session's main task ends when its connection is gone for good
            main_task: asyncio.Task[None] = session._main_atask
            await wait_for_stop(stop, outcome, {"the session's connection ended before stop": main_task})
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.aclose(), CLOSE_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(model.aclose(), CLOSE_TIMEOUT_S)
            for task in list(state.tasks):
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(http.close(), CLOSE_TIMEOUT_S)

    async def _play_turns(
        self, session: RealtimeSession, state: _State, target: Target, outcome: ClientOutcome
    ) -> None:
        """One generate_reply() per recorded response.create, each after the previous response, up to
        the barge-in. The recorded user items are not sent: update_chat_ctx() waits for an ack that
        echoes livekit's own item id, which a replay of another client's session does not give."""
        for index, _turn in enumerate(recorded_turns(target.client_script)):
            if index and not await turn_may_start(state.idle, state.barge_in, outcome):
                return
            if state.barge_in.is_set():
                return
            state.idle.clear()
            reply = session.generate_reply()
            reply.add_done_callback(lambda f: _note_reply(f, outcome))

    async def _read_messages(self, gen: llm.GenerationCreatedEvent, state: _State) -> None:
        """Take each message from the generation, as AgentActivity does, and drain its streams."""

        async def drain_audio(msg: llm.MessageGeneration) -> None:
            async for _ in msg.audio_stream:
                pass

        async def read_text(out: _Output, msg: llm.MessageGeneration) -> None:
            async for delta in msg.text_stream:
                out.text += str(delta)

        async for msg in gen.message_stream:
            out = state.output(msg.message_id)
            out.msg = msg
            state.spawn(drain_audio(msg))
            state.spawn(read_text(out, msg))

    async def _truncate(
        self, session: RealtimeSession, state: _State, item_id: str, cut_at: float, outcome: ClientOutcome
    ) -> None:
        """The tail of AgentActivity._realtime_generation: truncate the partially played message."""
        out = state.output(item_id)
        played = out.clock.played_ms(cut_at)
        if out.done and out.clock.first_at is not None and played >= out.clock.received_ms:
            # playout finished before the barge-in: the message counts as played, it is not truncated
            outcome.notes.append(f"{item_id}: playout already complete ({played} ms), no truncate")
            return
        deadline = time.monotonic() + MESSAGE_TIMEOUT_S
        while (msg := out.msg) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)  # the message stream task has not caught up with the burst yet
        if msg is None:
            outcome.notes.append(f"{item_id}: never came out of the message stream, nothing to truncate")
            return
        try:
            modalities: list[Modality] = await asyncio.wait_for(asyncio.shield(msg.modalities), MODALITIES_TIMEOUT_S)
        except TimeoutError:
            modalities = ["audio", "text"]
            outcome.notes.append(f"{item_id}: modalities unresolved, assuming {modalities}")
        outcome.notes.append(
            f"truncate(message_id={msg.message_id}, modalities={modalities}, audio_end_ms={played}) "
            f"[received {out.clock.received_ms:.0f} ms]"
        )
        if (
            self.pr6249_guard
            and "audio" in modalities
            and played <= 0
            and session._remote_chat_ctx.get(msg.message_id) is None
        ):
            outcome.notes.append("PR #6249 guard: item not in the remote chat context, nothing sent")
            return
        session.truncate(
            message_id=msg.message_id, modalities=modalities, audio_end_ms=played, audio_transcript=out.text
        )


def _note_reply(fut: asyncio.Future[Any], outcome: ClientOutcome) -> None:
    """Retrieve generate_reply()'s result so a timeout is reported, not left unobserved."""
    if fut.cancelled():
        outcome.notes.append("generate_reply() cancelled")
    elif (exc := fut.exception()) is not None:
        outcome.notes.append(f"generate_reply() failed: {exc!r}")


CLIENT = LivekitClient()
CLIENT_PR6249 = LivekitClient("livekit-pr6249", pr6249_guard=True)
