"""The contract between the conformance runner and a client under test.

A client is anything that can talk to a Realtime server: a reference client in this package, an
external program (``--cmd``), or a driver around a real library (livekit, pipecat, ...). The runner
starts one replay server per case, hands the client a :class:`Target`, and sets ``stop`` once the
watch window after the barge-in has closed. The client must then disconnect promptly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Target:
    """Where and what a client connects to for one case."""

    ws_url: str  # ws://127.0.0.1:PORT/v1/realtime?model=MODEL
    http_base_url: str  # http://127.0.0.1:PORT/v1  (what OPENAI_BASE_URL should be)
    api_key: str
    model: str
    dialect: str  # "beta" | "ga"
    case_id: str
    cassette: str  # path of the cassette being replayed
    session_index: int  # which WebSocket interaction of the cassette is replayed
    # The recorded client events of that session (input_audio_buffer.append left out), in order.
    # A reference client replays them; a driver reads them to know what to trigger (e.g. whether
    # the recorded response was asked for with response.create or came from server VAD).
    client_script: tuple[dict[str, Any], ...] = ()


@dataclass
class ClientOutcome:
    """What the client reports about itself; the verdict comes from the wire, not from here."""

    exit_code: int | None = None
    output: str = ""  # the tail of what the client printed, stdout and stderr as they arrived
    notes: list[str] = field(default_factory=list)
    crashed: str | None = None  # a traceback or error text when the client itself blew up
    # rtreplay ended the program (SIGTERM/SIGKILL after the grace period): its exit code is then ours, not a crash.
    stopped_by_runner: bool = False
    last_error_line: str | None = None  # the last line of its output that looks like an error (stderr first)
    exited_at: float | None = None  # event-loop time the program exited (None: not a program, or not known)
    output_dropped: int = 0  # characters of output before the kept tail


class MissingDependency(RuntimeError):
    """The library a driver wraps is not installed; the message says how to install it."""


class Client(Protocol):
    name: str
    # Protocol generations the client speaks; cases recorded in another are not run for it.
    # (A class attribute; the runner reads it with a default of both.)

    def version(self) -> str | None:
        """The version of the client library under test, shown in the report header."""
        ...

    async def run(self, target: Target, stop: asyncio.Event) -> ClientOutcome:
        """Connect, drive the recorded conversation, react to the barge-in, return when ``stop`` is set."""
        ...


def dialects_of(client: Client) -> tuple[str, ...]:
    return tuple(getattr(client, "dialects", ("beta", "ga")))
