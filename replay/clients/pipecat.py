"""Driver for pipecat's GA ``OpenAIRealtimeLLMService``, alone in a one-processor pipeline.

pipecat reacts to the server's ``input_audio_buffer.speech_started`` inside the service (truncate
at min(wall clock since the first delta, received audio), never a delete; ``response.cancel`` only
with local turn detection). ``CLIENT`` relies on that alone. In a full pipeline the service's
``ProposedUserStartedSpeakingFrame`` becomes an ``InterruptionFrame``; ``CLIENT_FRAME`` stands in
for that by queueing an ``InterruptionFrame`` when the proposal reaches the end of the pipeline.

The driver also stands in for the two processors a real pipeline has around the service: the
output transport, which plays the audio in real time and sends ``BotStoppedSpeakingFrame`` when it
is done (that is what clears the service's truncate state), and the assistant aggregator, which
sends the context back upstream to run the next turn. Recorded tool results are returned by a
catch-all function handler, as an app's tool would.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import importlib.metadata
import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ._support import PlaybackClock, recorded_turns, turn_may_start, wait_for_stop
from .base import ClientOutcome, MissingDependency, Target

if TYPE_CHECKING:
    from pipecat.frames.frames import Frame
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.services.llm_service import FunctionCallParams

INSTALL_HINT = "pip install 'rtreplay[pipecat]'"
LOG_LINES = 200
END_TIMEOUT_S = 3.0  # EndFrame drain, then cancel; the runner allows 10 s between stop and our return
CANCEL_TIMEOUT_S = 2.0
HANDOFF_TIMEOUT_S = 5.0  # for an appended message or a tool result to pass the service

# Cases run concurrently in one process: each run's loguru sink keeps only the records of its own
# context (the pipeline's tasks inherit it from the run).
_RUN_TAIL: contextvars.ContextVar[collections.deque[str] | None] = contextvars.ContextVar("pipecat_log", default=None)


def _require() -> None:
    """Fail with the install hint when pipecat is missing; the driver imports it lazily.

    pipecat logs through loguru, whose default sink is stderr: it is dropped before pipecat's
    import banner, and each run collects pipecat's records in its own sink instead.
    """
    try:
        from loguru import logger

        with contextlib.suppress(ValueError):
            logger.remove(0)
        import pipecat.services.openai.realtime.llm
    except ImportError as e:
        raise MissingDependency(INSTALL_HINT) from e
    try:
        import pipecat.pipeline.worker  # noqa: F401
    except ImportError as e:  # PipelineWorker and WorkerRunner came with pipecat 1.3
        raise MissingDependency(f"{INSTALL_HINT} (pipecat-ai >= 1.3)") from e


def _base_url(ws_url: str) -> str:
    """pipecat builds ``f"{base_url}?model={model}"``, so it must get the URL without its query."""
    parts = urlsplit(ws_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _keeps(tail: collections.deque[str]) -> Callable[[Any], bool]:
    """This run's pipecat records only."""

    def keep(record: Any) -> bool:
        return _RUN_TAIL.get() is tail and str(record["name"]).startswith("pipecat")

    return keep


def _recorded_tool_outputs(script: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """call_id -> the function_call_output the recorded client sent (parsed when it is JSON)."""
    outputs: dict[str, Any] = {}
    for event in script:
        item = event.get("item") or {}
        if event.get("type") == "conversation.item.create" and item.get("type") == "function_call_output":
            try:
                outputs[str(item.get("call_id"))] = json.loads(item.get("output") or "null")
            except ValueError:
                outputs[str(item.get("call_id"))] = item.get("output")
    return outputs


@dataclass
class _Flags:
    """What reached the end of the pipeline, for pacing the recorded turns."""

    idle: asyncio.Event = field(default_factory=asyncio.Event)  # no response requested or running
    barge_in: asyncio.Event = field(default_factory=asyncio.Event)
    handed_off: asyncio.Event = field(default_factory=asyncio.Event)  # an append or a tool result passed
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # the service never connected

    def __post_init__(self) -> None:
        self.idle.set()


class _Transport:
    """The output transport's part: play the bot's audio in real time, then say the bot stopped."""

    def __init__(self, worker: PipelineWorker) -> None:
        self.worker = worker
        self.clock: PlaybackClock | None = None
        self.stopper: asyncio.Task[None] | None = None

    def on_audio(self, nbytes: int, sample_rate: int, channels: int) -> None:
        if self.clock is None:
            self.clock = PlaybackClock()
        self.clock.add(nbytes / (2 * channels) / sample_rate * 1000.0)

    def on_audio_end(self) -> None:
        """TTSStoppedFrame: no more audio for this response; stop speaking when playback runs out."""
        if self.clock is not None and self.stopper is None:
            self.stopper = asyncio.create_task(self._stop_after(self.clock))

    def on_interrupted(self) -> None:
        """Playback stops at the barge-in; the service already dropped its state in its own handler."""
        if self.stopper is not None:
            self.stopper.cancel()
        self.clock, self.stopper = None, None

    async def _stop_after(self, clock: PlaybackClock) -> None:
        from pipecat.frames.frames import BotStoppedSpeakingFrame
        from pipecat.processors.frame_processor import FrameDirection

        remaining_ms = clock.received_ms - clock.played_ms()
        await asyncio.sleep(max(remaining_ms, 0.0) / 1000.0)
        self.clock, self.stopper = None, None
        await self.worker.queue_frame(BotStoppedSpeakingFrame(), FrameDirection.UPSTREAM)


class PipecatClient:
    """pipecat ``OpenAIRealtimeLLMService`` with a stand-in output transport and assistant aggregator."""

    dialects = ("ga",)  # the library speaks only the GA protocol


    def __init__(self, name: str = "pipecat", *, interruption_frame: bool = False) -> None:
        self.name = name
        self.interruption_frame = interruption_frame

    def version(self) -> str | None:
        _require()  # says a missing library before any case runs, and keeps the import out of them
        return importlib.metadata.version("pipecat-ai")

    async def run(self, target: Target, stop: asyncio.Event) -> ClientOutcome:
        _require()
        from loguru import logger

        outcome = ClientOutcome()
        tail: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        token = _RUN_TAIL.set(tail)
        sink_id = logger.add(
            lambda message: tail.append(str(message).rstrip("\n")),
            # DEBUG, not TRACE: pipecat traces every frame it pushes, and a TRACE sink makes loguru
            # build all those records, which slows the shared event loop (and so every player clock)
            level="DEBUG",
            format="{elapsed.seconds}.{elapsed.microseconds:06d} {level} {name}: {message}",
            filter=_keeps(tail),
            colorize=False,
        )
        try:
            await self._drive(target, stop, outcome)
        except Exception:
            outcome.crashed = traceback.format_exc()
        finally:
            logger.remove(sink_id)
            _RUN_TAIL.reset(token)
        outcome.output = "\n".join(tail)
        return outcome

    async def _drive(self, target: Target, stop: asyncio.Event, outcome: ClientOutcome) -> None:
        from pipecat.frames.frames import (
            FunctionCallResultFrame,
            InterruptionFrame,
            LLMFullResponseEndFrame,
            LLMMessagesAppendFrame,
            ProposedUserStartedSpeakingFrame,
            TTSAudioRawFrame,
            TTSStoppedFrame,
        )
        from pipecat.pipeline.pipeline import Pipeline
        from pipecat.pipeline.worker import PipelineWorker
        from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
        from pipecat.workers.runner import WorkerRunner

        llm = OpenAIRealtimeLLMService(
            api_key=target.api_key,
            base_url=_base_url(target.ws_url),
            settings=OpenAIRealtimeLLMService.Settings(model=target.model),
        )
        tool_outputs = _recorded_tool_outputs(target.client_script)

        async def recorded_tool(params: FunctionCallParams) -> None:
            await params.result_callback(tool_outputs.get(params.tool_call_id))

        llm.register_function(None, recorded_tool)
        worker = PipelineWorker(Pipeline([llm]), idle_timeout_secs=None, enable_rtvi=False)
        worker.set_reached_downstream_filter(
            (
                ProposedUserStartedSpeakingFrame,
                LLMFullResponseEndFrame,
                LLMMessagesAppendFrame,
                FunctionCallResultFrame,
                TTSAudioRawFrame,
                TTSStoppedFrame,
            )
        )
        flags = _Flags()
        transport = _Transport(worker)

        async def on_downstream(_worker: PipelineWorker, frame: Frame) -> None:
            if isinstance(frame, TTSAudioRawFrame):
                transport.on_audio(len(frame.audio), frame.sample_rate, frame.num_channels)
            elif isinstance(frame, TTSStoppedFrame):
                transport.on_audio_end()
            elif isinstance(frame, LLMFullResponseEndFrame):
                flags.idle.set()  # response.done (or an interruption)
            elif isinstance(frame, LLMMessagesAppendFrame | FunctionCallResultFrame):
                flags.handed_off.set()
            elif isinstance(frame, ProposedUserStartedSpeakingFrame):
                flags.barge_in.set()
                transport.on_interrupted()
                outcome.notes.append("speech_started: ProposedUserStartedSpeakingFrame reached the sink")
                if self.interruption_frame:
                    outcome.notes.append("queueing InterruptionFrame")
                    await worker.queue_frame(InterruptionFrame())

        async def on_error(_worker: PipelineWorker, frame: Frame) -> None:
            outcome.notes.append(f"ErrorFrame: {getattr(frame, 'error', frame)}"[:500])
            if getattr(llm, "_websocket", True) is None:
                # no socket (the connect failed): nothing left to watch. Other errors end pipecat's
                # receive loop but keep the socket open, as a deaf app would, so we keep waiting.
                flags.gone.set()

        worker.add_event_handler("on_frame_reached_downstream", on_downstream)
        worker.add_event_handler("on_pipeline_error", on_error)
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        running = asyncio.create_task(runner.run())
        turns = asyncio.create_task(self._play_turns(worker, flags, target, outcome))
        try:
            await wait_for_stop(stop, outcome, {"pipeline finished before stop": running,
                                                "no connection: stopping before stop": flags.gone})
        finally:
            turns.cancel()
            transport.on_interrupted()
            await self._shutdown(worker, running)
            if running.done() and not running.cancelled() and (exc := running.exception()) is not None:
                outcome.notes.append(f"runner raised: {exc!r}")

    async def _play_turns(self, worker: PipelineWorker, flags: _Flags, target: Target, outcome: ClientOutcome) -> None:
        """The recorded turns up to the barge-in.

        The first is the initial context frame (pipecat holds its response.create for session.created
        and session.updated). A later one hands the service a user message (LLMMessagesAppendFrame) or
        waits for the tool result the service sent on its own; then the context goes upstream, as the
        assistant aggregator sends it to run the LLM.
        """
        from pipecat.frames.frames import LLMContextFrame, LLMMessagesAppendFrame
        from pipecat.processors.aggregators.llm_context import LLMContext
        from pipecat.processors.frame_processor import FrameDirection

        context: LLMContext = LLMContext()
        for index, turn in enumerate(recorded_turns(target.client_script)):
            if index and not await turn_may_start(flags.idle, flags.barge_in, outcome):
                return
            if flags.barge_in.is_set():
                return
            messages: list[Any] = [{"role": "user", "content": text} for text in turn.user_texts]
            flags.idle.clear()
            if index == 0:
                for message in messages:
                    context.add_message(message)
                await worker.queue_frame(LLMContextFrame(context))
                continue
            if messages:
                flags.handed_off.clear()
                await worker.queue_frame(LLMMessagesAppendFrame(messages=messages, run_llm=True))
            try:  # the service has sent the items once the append frame (or its tool result) passes it
                await asyncio.wait_for(flags.handed_off.wait(), HANDOFF_TIMEOUT_S)
            except TimeoutError:
                outcome.notes.append(f"turn {index + 1}: neither a user message nor a tool result reached pipecat")
                return
            for message in messages:
                context.add_message(message)
            await worker.queue_frame(LLMContextFrame(context), FrameDirection.UPSTREAM)

    async def _shutdown(self, worker: PipelineWorker, running: asyncio.Task[None]) -> None:
        """EndFrame first (the service closes its socket), then cancel if it does not drain in time."""
        from pipecat.frames.frames import EndFrame

        if not running.done():
            with contextlib.suppress(Exception):
                await worker.queue_frame(EndFrame())
            await asyncio.wait({running}, timeout=END_TIMEOUT_S)
        if not running.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.cancel(), CANCEL_TIMEOUT_S)
            await asyncio.wait({running}, timeout=CANCEL_TIMEOUT_S)
        if not running.done():
            running.cancel()
            await asyncio.wait({running}, timeout=CANCEL_TIMEOUT_S)


CLIENT = PipecatClient()
CLIENT_FRAME = PipecatClient("pipecat-interruption-frame", interruption_frame=True)
