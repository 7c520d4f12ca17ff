"""The players: the model's recorded responses and the user's recorded turns, on a clock passed in.

Pure, like the engine: the server asks what is due at ``now`` and hands it to the engine, which
renders it from the live conversation. Neither player sends a frame or reads a clock.

- :class:`ResponsePlayer` streams one recorded response's steps at their recorded offsets x speed
  from the moment the live conversation started the response; a cancel stops it at once.
- :class:`User` decides when the user speaks. In ``serve`` a recorded voice turn is heard once the
  client has appended audio up to the turn's recorded offsets. On the recorded timeline (``check``,
  or ``serve --play-user``) each turn is spoken after its recorded gap from the previous response,
  typed turns included, unless the client stood for the turn itself by typing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from replay.engine.script import DEFAULT_SPEECH_S, ModelResponse, Script, Step, UserTurn

TYPED_GRACE_S = 1.5  # a client that types its turns gets this long before the user says them aloud


class ResponsePlayer:
    def __init__(self, response: ModelResponse, start: float, speed: float) -> None:
        self.response = response
        self.start = start
        self.speed = speed
        self._next = 0
        self.stopped = False

    def due(self, now: float) -> list[tuple[int, Step]]:
        """The steps due at ``now``, with their index in the response."""
        steps = self.response.steps
        out: list[tuple[int, Step]] = []
        while not self.stopped and self._next < len(steps) \
                and self.start + steps[self._next].offset * self.speed <= now:
            out.append((self._next, steps[self._next]))
            self._next += 1
        return out

    def next_deadline(self) -> float | None:
        if self.finished:
            return None
        return self.start + self.response.steps[self._next].offset * self.speed

    @property
    def finished(self) -> bool:
        return self.stopped or self._next >= len(self.response.steps)

    def stop(self) -> None:
        self.stopped = True


@dataclass(frozen=True)
class Speech:
    """One thing the user does now: start speaking, or stop (the server then commits the turn)."""

    kind: Literal["started", "stopped"]
    turn: UserTurn | None  # None: speech the recording has no turn for (a barge-in past the last turn)


class User:
    def __init__(self, script: Script, *, timeline: bool, speed: float = 1.0,
                 typed_grace: float = TYPED_GRACE_S) -> None:
        self.script = script
        self.timeline = timeline
        self.speed = speed
        self.typed_grace = typed_grace
        self.next = 0  # index of the next turn nobody has taken
        self.previous_end = 0.0  # when the last response ended (or the session opened)
        self.taken_since_end = False
        self.streams_audio = False
        self.speaking: UserTurn | None = None
        self.stop_at: float | None = None

    @property
    def turn(self) -> UserTurn | None:
        turns = self.script.turns
        return turns[self.next] if self.next < len(turns) else None

    # -- what the live conversation tells the user

    def opened(self, now: float) -> None:
        self.previous_end = now

    def response_ended(self, now: float) -> None:
        self.previous_end = now
        self.taken_since_end = False

    def client_typed(self, kind: Literal["message", "tool", "response"]) -> None:
        """The client created a user item, a function_call_output or a response: it stands for a turn."""
        if self.speaking is not None or self.taken_since_end:
            return
        turn = self.turn
        if turn is None or ((turn.kind == "tool") != (kind == "tool") and kind != "response"):
            return
        self.next += 1
        self.taken_since_end = True

    def appended(self) -> None:
        self.streams_audio = True

    # -- what the user does

    def due_at(self, input_ms: float, listening: bool) -> float | None:
        """When the next turn starts on the timeline (None: not on the timeline, or nothing to say)."""
        turn = self.turn
        if self.speaking is not None:
            return self.stop_at
        if turn is None or turn.kind == "tool" or self.taken_since_end or not self.timeline:
            return None
        gap = turn.gap * self.speed
        if turn.kind != "voice" and not self.streams_audio:  # wall-clock time to type it, whatever the speed
            gap = max(gap, self.typed_grace)
        return self.previous_end + gap

    def poll(self, now: float, *, input_ms: float, listening: bool, response_active: bool) -> list[Speech]:
        """What the user does at ``now``: ``listening`` is the live session's turn detection."""
        if self.speaking is not None:
            if self.stop_at is not None and now >= self.stop_at:
                return [self._stop()]
            if not self.timeline and self.speaking.audio_end_ms is not None and input_ms >= self.speaking.audio_end_ms:
                return [self._stop()]
            return []
        turn = self.turn
        if turn is None or turn.kind == "tool" or self.taken_since_end or response_active:
            return []
        if self.timeline:
            due = self.due_at(input_ms, listening)
            if due is None or now < due:
                return []
            self.stop_at = now + turn.speech_s * self.speed
        else:
            if not listening or turn.kind != "voice" or turn.audio_start_ms is None \
                    or input_ms < turn.audio_start_ms:
                return []
            self.stop_at = None
        self.speaking = turn
        self.next += 1
        return [Speech("started", turn)]

    def interrupt(self, now: float) -> Speech:
        """The user barges in now, saying the next turn (or something the recording has no turn for)."""
        turn = self.turn if self.turn is not None and self.turn.kind != "tool" else None
        if turn is not None:
            self.next += 1
        self.speaking = turn
        self.stop_at = now + (turn.speech_s if turn is not None else DEFAULT_SPEECH_S) * self.speed
        return Speech("started", turn)

    def _stop(self) -> Speech:
        turn = self.speaking
        self.speaking = None
        self.stop_at = None
        self.taken_since_end = True
        return Speech("stopped", turn)

    @property
    def busy(self) -> bool:
        return self.speaking is not None
