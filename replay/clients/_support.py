"""What the clients share: recorded turns and their pacing, a simulated playback clock, per-run
capture of library logs, and the process groups of the programs they started. Needs no client library.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import os
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .base import ClientOutcome

# Process groups (each its leader's pid) of the programs and node workers this process started and has not
# yet ended: what a second Ctrl-C kills on its way out, so that even an exit at once leaves no orphan.
_GROUPS: set[int] = set()


def group_started(pid: int) -> None:
    _GROUPS.add(pid)


def group_ended(pid: int) -> None:
    """The group was killed and its leader reaped: its id may be reused from now on."""
    _GROUPS.discard(pid)


def kill_started_groups() -> None:
    """SIGKILL every group still registered; safe to call from a signal handler."""
    for pid in list(_GROUPS):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


LOG_LINES = 200
RESPONSE_IDLE_TIMEOUT_S = 30.0  # a recorded response.create waits for the previous response.done
# A later turn starts this long after the previous response.done. The replay server barges in right
# after the cut frame, so a cut at response.done is seen before the next turn would go out.
TURN_GAP_S = 0.5


# Library logs go to the tail of the driver run they were emitted in. Cases run concurrently in one
# process, so the handler is shared and routes by context (tasks inherit it from the run), and the
# loggers' level and propagate are restored only when the last run using them ends.
_LOG_TAIL: contextvars.ContextVar[collections.deque[str] | None] = contextvars.ContextVar(
    "rtreplay_log_tail", default=None
)
_LOGGER_USERS: dict[str, tuple[int, int, bool]] = {}  # logger name -> (runs, saved level, saved propagate)


class _TailHandler(logging.Handler):
    """Appends each record to the current run's tail; records outside a run are dropped."""

    def emit(self, record: logging.LogRecord) -> None:
        tail = _LOG_TAIL.get()
        if tail is not None:
            with contextlib.suppress(Exception):
                tail.append(self.format(record))


_TAIL_HANDLER = _TailHandler()
_TAIL_HANDLER.setFormatter(logging.Formatter("%(relativeCreated)8.0fms %(levelname)s %(name)s: %(message)s"))


@contextlib.contextmanager
def captured_logs(names: tuple[str, ...], level: int = logging.DEBUG) -> Iterator[collections.deque[str]]:
    """Collect the named loggers' records for this run (bounded), and keep them off the runner's console."""
    tail: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
    token = _LOG_TAIL.set(tail)
    for name in names:
        lg = logging.getLogger(name)
        runs, saved_level, saved_propagate = _LOGGER_USERS.get(name, (0, lg.level, lg.propagate))
        if runs == 0:
            lg.addHandler(_TAIL_HANDLER)
            lg.setLevel(level)
            lg.propagate = False
        _LOGGER_USERS[name] = (runs + 1, saved_level, saved_propagate)
    try:
        yield tail
    finally:
        for name in names:
            lg = logging.getLogger(name)
            runs, saved_level, saved_propagate = _LOGGER_USERS.pop(name)
            if runs > 1:
                _LOGGER_USERS[name] = (runs - 1, saved_level, saved_propagate)
            else:
                lg.removeHandler(_TAIL_HANDLER)
                lg.setLevel(saved_level)
                lg.propagate = saved_propagate
        _LOG_TAIL.reset(token)


@dataclass(frozen=True)
class Turn:
    """One recorded request for a response: the items created before it, then response.create."""

    items: tuple[dict[str, Any], ...]
    response: dict[str, Any]

    @property
    def user_texts(self) -> list[str]:
        """The text of the user messages among the items, which is what a library's app would type."""
        texts = []
        for event in self.items:
            item = event.get("item") or {}
            if item.get("type", "message") == "message" and item.get("role") == "user":
                parts = [p for p in item.get("content") or [] if p.get("type") in ("input_text", "text")]
                if text := " ".join(str(p.get("text", "")) for p in parts):
                    texts.append(text)
        return texts


def recorded_turns(script: tuple[dict[str, Any], ...]) -> list[Turn]:
    """The script's response.create events with the item.create events that led to each."""
    turns: list[Turn] = []
    items: list[dict[str, Any]] = []
    for event in script:
        if event.get("type") == "conversation.item.create":
            items.append(event)
        elif event.get("type") == "response.create":
            turns.append(Turn(tuple(items), event))
            items = []
    return turns


async def turn_may_start(idle: asyncio.Event, barge_in: asyncio.Event, outcome: ClientOutcome) -> bool:
    """Before a later turn: the previous response is done and no barge-in came within TURN_GAP_S."""
    try:
        await asyncio.wait_for(idle.wait(), RESPONSE_IDLE_TIMEOUT_S)
    except TimeoutError:
        outcome.notes.append("the previous response never finished; starting the next turn anyway")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(barge_in.wait(), TURN_GAP_S)
    return not barge_in.is_set()


class PlaybackClock:
    """A simulated real-time player: starts at the first audio received, never plays ahead of it."""

    def __init__(self) -> None:
        self.first_at: float | None = None
        self.received_ms = 0.0

    def add(self, ms: float) -> None:
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.received_ms += ms

    def played_ms(self, at: float | None = None) -> int:
        """min(received, elapsed since the first audio) at ``at`` (default: now), in whole ms."""
        if self.first_at is None:
            return 0
        elapsed_ms = ((time.monotonic() if at is None else at) - self.first_at) * 1000.0
        return int(min(self.received_ms, elapsed_ms))


STOP_TIMEOUT_S = 600.0  # the runner sets ``stop``; this only keeps a lost runner from hanging a driver


async def wait_for_stop(stop: asyncio.Event, outcome: ClientOutcome,
                        ends: Mapping[str, asyncio.Task[Any] | asyncio.Event]) -> None:
    """Until the runner sets ``stop`` — or the client's side ends first, which the outcome notes.

    ``ends`` maps a note to what ending looks like: a task that finishes (never cancelled here) or
    an event that is set.
    """
    stopper = asyncio.create_task(stop.wait())
    waiters = {note: asyncio.create_task(end.wait()) if isinstance(end, asyncio.Event) else end
               for note, end in ends.items()}
    done, _ = await asyncio.wait({stopper, *waiters.values()}, timeout=STOP_TIMEOUT_S,
                                 return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    for note, waiter in waiters.items():
        if isinstance(ends[note], asyncio.Event):
            waiter.cancel()
    ended = [note for note, waiter in waiters.items() if waiter in done]
    if ended and not stop.is_set():
        outcome.notes.append(ended[0])
    elif not done:
        outcome.notes.append(f"stop was not set within {STOP_TIMEOUT_S:.0f}s")
