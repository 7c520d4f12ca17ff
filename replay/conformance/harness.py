"""The harness: the user who barges in (the cut), watches the client (the window) and says why a case
was not reached. The server's other half: :mod:`replay.net.server` answers; this decides when to speak.

Sans-I/O. The server calls a :class:`CutHarness` through its :class:`~replay.net.server.Harness` hooks
(an event it made, a model step it played, the end of a tick, its next deadline, the connection's end)
and the harness acts only through the :class:`~replay.net.server.Floor` the server offers: what it
holds, whether anything is due, and the user starting to speak. What the verdict needs from the cut
(the engine's snapshot at it, when it happened, why it never did, whether the window closed) is
the harness's :class:`CutResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from replay.conformance.cuts import CUT_AFTER, CUT_AT
from replay.engine.conversation import Snapshot
from replay.net.server import Floor
from replay.wire.dialect import neutral_name


@dataclass
class Cut:
    """Where the user barges in, and how long the harness then watches the client.

    ``label`` is ``after:TYPE#N`` (right after the Nth server event of that type, in GA names,
    that the live session sent) or ``at:SECONDS`` (since the socket opened).
    """

    label: str
    quiet: float = 0.3  # the window closes after this long without a client frame (appends aside)...
    max_window: float = 5.0  # ...or after this long in all...
    min_window: float = 1.0  # ...but never before this long: a loaded machine's client gets time to answer
    stall: float = 3.0  # nothing due and the client silent this long before the cut: not reached
    # The cut as a place in the model's output: after step `step` (-1: after response.created) of the
    # `response`-th response the live session plays. Set from a recording, it holds whatever items the
    # client created before; the label then only names it.
    response: int | None = None
    step: int | None = None
    after_type: str | None = field(init=False, default=None)
    after_n: int = field(init=False, default=0)
    at_s: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        after, at = CUT_AFTER.match(self.label.strip()), CUT_AT.match(self.label.strip())
        if after is None and at is None:
            raise ValueError(f"{self.label}: a cut is 'after:TYPE#N' or 'at:SECONDS'")
        self.after_type = neutral_name(after["type"]) if after else None
        self.after_n = int(after["n"]) if after else 0
        self.at_s = float(at["s"]) if at else None


@dataclass
class CutResult:
    """What one connection's harness saw: what the verdict reads."""

    cut_at: float | None = None  # when the user barged in (seconds since the socket opened)
    snapshot: Snapshot | None = None  # what the server held at that moment
    stalled: str | None = None  # why the session stopped short of the cut: the step the client did not take
    window_closed: bool = False  # the watch window closed, the case stalled, or the connection ended


class CutHarness:
    """One connection's user: barge in at the cut, then watch the client until the window closes."""

    def __init__(self, cut: Cut, on_close: Callable[[], None] | None = None) -> None:
        self.cut = cut
        self.result = CutResult()
        self._on_close = on_close
        self._floor: Floor | None = None

    # -- what the server tells the user

    def opened(self, floor: Floor) -> None:
        self._floor = floor

    def sent(self, etype: str, count: int) -> None:
        """The server made its ``count``-th event of ``etype`` (GA name): the cut may be right after it."""
        cut = self.cut
        if self.result.cut_at is None and cut.response is None and cut.after_type == etype and count == cut.after_n:
            self._barge_in()

    def played(self, response: int, step: int) -> None:
        """The server played step ``step`` (-1: response.created) of its ``response``-th response."""
        cut = self.cut
        if self.result.cut_at is None and (cut.response, cut.step) == (response, step):
            self._barge_in()

    def tick(self, now: float) -> None:
        """The end of the server's tick: the time cut, the stall before the cut, the window after it."""
        floor, cut, result = self._floor, self.cut, self.result
        if floor is None or result.window_closed:
            return
        if result.cut_at is None:
            if cut.at_s is not None and now >= cut.at_s:
                self._barge_in()
            elif not floor.busy() and now - floor.heard_at() >= cut.stall:
                result.stalled = untaken_step(floor)
                floor.mark(now, f"not reached: {result.stalled}")
                self._close()
            return
        if now - result.cut_at >= cut.max_window or (
                not floor.busy() and now - result.cut_at >= cut.min_window
                and now - max(floor.heard_at(), result.cut_at) >= cut.quiet):
            floor.mark(now, "window closed")
            self._close()

    def deadline(self) -> float | None:
        """When :meth:`tick` next has something to decide (the server waits no longer than this)."""
        floor, cut, result = self._floor, self.cut, self.result
        if floor is None or result.window_closed:
            return None
        if result.cut_at is None:
            stall = floor.heard_at() + cut.stall
            return stall if cut.at_s is None else min(cut.at_s, stall)
        quiet_end = max(floor.heard_at(), result.cut_at) + cut.quiet
        return min(max(quiet_end, result.cut_at + cut.min_window), result.cut_at + cut.max_window)

    def ended(self) -> None:
        """The connection is over: whatever the window was doing, it is closed."""
        self._close()

    # -- what the user does

    def _barge_in(self) -> None:
        floor = self._floor
        assert floor is not None
        now = floor.now()
        self.result.cut_at = now
        self.result.snapshot = floor.engine.snapshot()
        floor.barge_in(now, f"cut {self.cut.label}: the user starts speaking")

    def _close(self) -> None:
        if not self.result.window_closed:
            self.result.window_closed = True
            if self._on_close is not None:
                self._on_close()


def untaken_step(floor: Floor) -> str:
    """The recorded step the client did not take, for a NOT-REACHED verdict."""
    user, script, engine = floor.user, floor.script, floor.engine
    turn = user.turn if user is not None else None
    responses = script.responses if script is not None else []
    started = floor.responses_started
    if turn is not None and turn.kind == "tool":
        previous = responses[started - 1] if started else None
        tools = ", ".join(previous.tools) if previous is not None and previous.tools else "the function"
        return (f"the client never answered the function call {tools} (a function_call_output item, then "
                "response.create), so the next recorded response never started")
    if engine.turn_detection is None:
        return ("the live session has turn detection off and the client sent no response.create, so the next "
                "recorded response never started")
    if not engine.creates_response():
        return ("the live session has create_response off and the client sent no response.create, so the "
                "next recorded response never started")
    if turn is None:
        return "the recording has no further user turn, and the client started no response"
    return f"user turn {turn.index + 1} ({turn.kind}) was never taken"
