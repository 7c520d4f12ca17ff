"""Driver for openai-agents' realtime transport, ``OpenAIRealtimeWebSocketModel``.

The transport reacts to the server's ``input_audio_buffer.speech_started`` by itself (truncate at
the wall clock since the first audio delta, clamped to the received audio; ``response.cancel``
only if the server session's ``interrupt_response`` is not true). ``CLIENT`` relies on that
alone. ``CLIENT_EXPLICIT`` is an app that also calls interrupt when it sees speech_started: the
event reaches it through a queue, as ``RealtimeSession`` delivers events to app code, so the
explicit ``RealtimeModelSendInterrupt`` runs after the transport's own handling, not inside it.

The recorded turns are sent as an app would: typed text with ``RealtimeModelSendUserInput`` (the
transport sends conversation.item.create and response.create), a turn without user text as a raw
``response.create``; each later turn once the previous response is done, and none after the barge-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._support import captured_logs, recorded_turns, turn_may_start, wait_for_stop
from .base import ClientOutcome, MissingDependency, Target

if TYPE_CHECKING:
    from agents.realtime.model_events import RealtimeModelEvent
    from agents.realtime.openai_realtime import OpenAIRealtimeWebSocketModel

INSTALL_HINT = "pip install 'rtreplay[openai-agents]'"
CONNECT_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 3.0  # per step; the runner allows 10 s between stop and our return


def _require() -> None:
    """Fail with the install hint when openai-agents is missing; the driver imports it lazily."""
    try:
        import agents.realtime.openai_realtime  # noqa: F401
    except ImportError as e:
        raise MissingDependency(INSTALL_HINT) from e


class OpenAIAgentsClient:
    """openai-agents ``OpenAIRealtimeWebSocketModel`` with the default playback tracker."""

    dialects = ("ga",)  # the library speaks only the GA protocol


    def __init__(self, name: str = "openai-agents", *, explicit_interrupt: bool = False) -> None:
        self.name = name
        self.explicit_interrupt = explicit_interrupt

    def version(self) -> str | None:
        _require()  # says a missing library before any case runs, and keeps the import out of them
        return importlib.metadata.version("openai-agents")

    async def run(self, target: Target, stop: asyncio.Event) -> ClientOutcome:
        _require()
        outcome = ClientOutcome()
        with captured_logs(("openai.agents",)) as tail:
            try:
                await self._drive(target, stop, outcome)
            except Exception:
                outcome.crashed = traceback.format_exc()
        outcome.output = "\n".join(tail)
        return outcome

    async def _drive(self, target: Target, stop: asyncio.Event, outcome: ClientOutcome) -> None:
        from agents.realtime.model import RealtimeModelListener
        from agents.realtime.openai_realtime import OpenAIRealtimeWebSocketModel

        events: asyncio.Queue[RealtimeModelEvent | None] = asyncio.Queue()  # None ends the app

        class _Listener(RealtimeModelListener):
            """Hands events over without blocking the transport, like RealtimeSession's queue."""

            async def on_event(self, event: RealtimeModelEvent) -> None:
                events.put_nowait(event)

        model = OpenAIRealtimeWebSocketModel()
        model.add_listener(_Listener())
        await asyncio.wait_for(
            model.connect(
                {
                    "url": target.ws_url,  # used verbatim; OPENAI_BASE_URL is not consulted
                    "api_key": target.api_key,
                    "initial_model_settings": {"model_name": target.model},
                }
            ),
            CONNECT_TIMEOUT_S,
        )
        flags = _Flags()
        app = asyncio.create_task(self._app(model, events, flags, outcome))
        turns = asyncio.create_task(self._play_turns(model, flags, target, outcome))
        try:
            await wait_for_stop(stop, outcome, {"the connection closed before stop": flags.gone})
        finally:
            events.put_nowait(None)
            turns.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(model.close(), CLOSE_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(app, CLOSE_TIMEOUT_S)
            app.cancel()

    async def _play_turns(
        self, model: OpenAIRealtimeWebSocketModel, flags: _Flags, target: Target, outcome: ClientOutcome
    ) -> None:
        """The recorded turns up to the barge-in: typed text as an app sends it (item.create and
        response.create from the transport), or a raw response.create when the turn has no user text."""
        from agents.realtime.model_inputs import RealtimeModelSendRawMessage, RealtimeModelSendUserInput

        for index, turn in enumerate(recorded_turns(target.client_script)):
            if index and not await turn_may_start(flags.idle, flags.barge_in, outcome):
                return
            if flags.barge_in.is_set():
                return
            flags.idle.clear()
            texts = turn.user_texts
            if texts:
                request: RealtimeModelSendUserInput | RealtimeModelSendRawMessage
                request = RealtimeModelSendUserInput(user_input="\n".join(texts))
            else:
                request = RealtimeModelSendRawMessage(message={"type": "response.create"})
            try:
                await asyncio.wait_for(model.send_event(request), SEND_TIMEOUT_S)
            except Exception as e:
                outcome.notes.append(f"sending turn {index + 1} failed: {e!r}"[:500])
                return

    async def _app(
        self,
        model: OpenAIRealtimeWebSocketModel,
        events: asyncio.Queue[RealtimeModelEvent | None],
        flags: _Flags,
        outcome: ClientOutcome,
    ) -> None:
        """The app's side of the session: notes what the transport reports, interrupts if explicit."""
        from agents.realtime.model_inputs import RealtimeModelSendInterrupt

        gone = flags.gone
        while (event := await events.get()) is not None:
            if event.type == "raw_server_event":
                kind = event.data.get("type")
                if kind == "response.created":
                    flags.idle.clear()
                elif kind == "response.done":
                    flags.idle.set()
                elif kind == "input_audio_buffer.speech_started":
                    flags.barge_in.set()
                    outcome.notes.append("speech_started received")
                    if self.explicit_interrupt:
                        outcome.notes.append("app: send_event(RealtimeModelSendInterrupt())")
                        try:
                            await asyncio.wait_for(model.send_event(RealtimeModelSendInterrupt()), SEND_TIMEOUT_S)
                        except Exception as e:
                            outcome.notes.append(f"RealtimeModelSendInterrupt failed: {e!r}")
            elif event.type == "audio_interrupted":
                outcome.notes.append(f"audio_interrupted item={event.item_id}")
            elif event.type == "error":
                outcome.notes.append(f"error event: {event.error!r}"[:500])
            elif event.type == "exception":
                outcome.notes.append(f"exception event ({event.context}): {event.exception!r}"[:500])
                if "closed" in str(event.context):  # "WebSocket connection closed unexpectedly"
                    gone.set()
            elif event.type == "connection_status" and event.status == "disconnected":
                gone.set()


@dataclass
class _Flags:
    """What the app has seen, for pacing the recorded turns and noticing a dead connection."""

    idle: asyncio.Event = field(default_factory=asyncio.Event)  # no response requested or running
    barge_in: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # the transport reported the socket closed

    def __post_init__(self) -> None:
        self.idle.set()


CLIENT = OpenAIAgentsClient()
CLIENT_EXPLICIT = OpenAIAgentsClient("openai-agents-interrupt", explicit_interrupt=True)
