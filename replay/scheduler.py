"""The replay scheduler: which recorded server frames are due, and when.

Pure, like the engine: the caller passes ``now`` in and sends what comes out. A recorded server
frame is released once the client frame that preceded it in the recording (its *gate*) has been
matched, at its recorded offset from that gate times ``speed`` (``speed == 0``: at once).
``input_audio_buffer.append`` is no gate: audio is streamed, not answered, so frames that follow
appends in the recording (server VAD) play on time after the previous gate.

Matching compares the client's event with the recorded one, ignoring volatile paths (event ids,
ids the client invents, audio bytes). A mismatch yields a positioned diff. ``strict`` fails the
session on it; lenient mode records it and lets the engine answer, dropping the recorded
acknowledgements that belonged to the recorded version of the event.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from replay.cassette import Frame

DEFAULT_IGNORE: tuple[str, ...] = (
    "event_id",
    "item.id",
    "previous_item_id",
    "response.metadata",
    "audio",
    "item.content[*].audio",
)
UNGATED: frozenset[str] = frozenset({"input_audio_buffer.append", "session.input_audio_buffer.append"})

_ITEM_ACKS = frozenset({"conversation.item.created", "conversation.item.added", "conversation.item.done"})
# Server frames that answer a client event directly. When the client's event differs from the
# recorded one, these recorded answers are wrong for it, so the engine answers instead.
ACKS: dict[str, frozenset[str]] = {
    "session.update": frozenset({"session.updated"}),
    "transcription_session.update": frozenset({"transcription_session.updated"}),
    "conversation.item.create": _ITEM_ACKS,
    "input_audio_buffer.commit": _ITEM_ACKS | {"input_audio_buffer.committed"},
    "input_audio_buffer.clear": frozenset({"input_audio_buffer.cleared"}),
    "conversation.item.truncate": frozenset({"conversation.item.truncated"}),
    "conversation.item.delete": frozenset({"conversation.item.deleted"}),
    "conversation.item.retrieve": frozenset({"conversation.item.retrieved"}),
}

_INDEX = re.compile(r"\[\d+\]")


def _answered_item(event: dict[str, Any]) -> Any:
    """The item a server event is about: `item.id`, or `item_id` (committed, truncated, ...)."""
    item = event.get("item")
    return item.get("id") if isinstance(item, dict) else event.get("item_id")


@dataclass(frozen=True)
class Divergence:
    """Where the client parted from the recording."""

    client_index: int  # the client's Nth frame (0-based)
    kind: Literal["diff", "unscripted", "skipped"]
    recorded_index: int | None = None  # the recorded frame it was held against
    recorded_type: str | None = None
    diff: tuple[tuple[str, Any, Any], ...] = ()

    def describe(self) -> str:
        head = f"client frame #{self.client_index}"
        if self.kind == "unscripted":
            return f"{head}: not in the recording"
        if self.kind == "skipped":
            return f"{head}: recorded frame #{self.recorded_index} ({self.recorded_type}) was never sent"
        shown = "; ".join(f"{path}: recorded {_short(a)}, got {_short(b)}" for path, a, b in self.diff[:5])
        more = f" (+{len(self.diff) - 5} more)" if len(self.diff) > 5 else ""
        return f"{head} vs recorded frame #{self.recorded_index} ({self.recorded_type}): {shown}{more}"


def _short(value: Any) -> str:
    text = "<absent>" if value is _ABSENT else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()


def diff_events(recorded: Any, got: Any, ignore: Iterable[str] = DEFAULT_IGNORE) -> list[tuple[str, Any, Any]]:
    """Positioned differences between two events; list indexes match ``[*]`` in ``ignore``."""
    ignored = frozenset(ignore)
    out: list[tuple[str, Any, Any]] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if path and _INDEX.sub("[*]", path) in ignored:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in dict.fromkeys([*a, *b]):
                walk(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{path}.{key}" if path else str(key))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{path}[{i}]")
        elif a != b or type(a) is not type(b):
            out.append((path, a, b))

    walk(recorded, got, "")
    return out


@dataclass
class Decision:
    """What to do with one client frame."""

    scripted: bool  # the recording answers it; do not send the engine's reactions
    divergence: Divergence | None = None
    fail: bool = False  # strict mode: end the session


@dataclass
class _Segment:
    gate: int | None  # index of the gating client frame; None for the frames before any gate
    frames: list[int] = field(default_factory=list)


class ReplayScheduler:
    def __init__(
        self,
        frames: Sequence[Frame],
        *,
        speed: float = 1.0,
        strict: bool = False,
        ignore: Iterable[str] = DEFAULT_IGNORE,
        ungated: frozenset[str] = UNGATED,
        stop_after: int | None = None,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.frames = frames
        self.speed = speed
        self.strict = strict
        self.ignore = tuple(ignore)
        self.stop_after = stop_after
        self.segments: list[_Segment] = [_Segment(None)]
        for index, frame in enumerate(frames):
            if frame.source == "server":
                self.segments[-1].frames.append(index)
            elif frame.type not in ungated:
                self.segments.append(_Segment(index))
        self.divergences: list[Divergence] = []
        self.cut_reached = False
        self._next = 1  # the next segment whose gate is awaited
        self._queue: deque[tuple[float, int]] = deque()
        self._dropped: set[int] = set()
        self._claimed: set[int] = set()  # recorded answers already attributed to a client frame
        self._clients_seen = 0
        self._started = False

    # -- inputs

    def start(self, now: float) -> None:
        """The socket is open: frames recorded before any client frame start their clock now."""
        if not self._started:
            self._started = True
            self._open(self.segments[0], now, 0.0)

    def receive(self, event: dict[str, Any] | None, now: float) -> Decision:
        index = self._clients_seen
        self._clients_seen += 1
        etype = event.get("type") if event is not None else None
        if self.cut_reached or event is None or etype in UNGATED:
            return Decision(scripted=False)
        target = self._find_gate(etype)
        if target is None:
            return self._diverged(Divergence(index, "unscripted"), scripted=False)
        for skipped in range(self._next, target):
            gate = self.segments[skipped].gate
            assert gate is not None
            frame = self.frames[gate]
            self._record(Divergence(index, "skipped", gate, frame.type))
            self._drop_acks(gate)
        segment = self.segments[target]
        self._next = target + 1
        assert segment.gate is not None
        recorded = self.frames[segment.gate]
        diff = diff_events(recorded.event, event, self.ignore)
        divergence = Divergence(index, "diff", segment.gate, recorded.type, tuple(diff)) if diff else None
        acked = etype in ACKS
        # An item the client names itself must come back under its own id: the engine answers.
        own_id = etype == "conversation.item.create" and isinstance(event.get("item"), dict) \
            and "id" in event["item"] and event["item"]["id"] != (recorded.event or {}).get("item", {}).get("id")
        if acked and (divergence is not None or own_id):
            self._drop_acks(segment.gate)
        self._open(segment, now, recorded.t)
        if divergence is None:
            return Decision(scripted=not own_id)
        # A differing event whose answer is an acknowledgement gets the engine's answer; any other
        # (e.g. response.create with other metadata) still gets the recorded model output.
        return self._diverged(divergence, scripted=not acked)

    def _find_gate(self, etype: str | None) -> int | None:
        if self._next >= len(self.segments):
            return None
        if self.strict:
            return self._next
        for candidate in range(self._next, len(self.segments)):
            gate = self.segments[candidate].gate
            if gate is not None and self.frames[gate].type == etype:
                return candidate
        return None

    def _diverged(self, divergence: Divergence, *, scripted: bool) -> Decision:
        self._record(divergence)
        return Decision(scripted=scripted and not self.strict, divergence=divergence, fail=self.strict)

    def _record(self, divergence: Divergence) -> None:
        self.divergences.append(divergence)

    def _drop_acks(self, gate: int) -> None:
        """Withhold the recorded answers to one recorded client frame, wherever the recording put them.

        Answers can come after later client frames (a client sends item.create and response.create
        back to back), so they are found by what they answer, not by position.
        """
        self._dropped.update(self._acks_of(gate))

    def _acks_of(self, gate: int) -> list[int]:
        event = self.frames[gate].event or {}
        etype = event.get("type", "")
        if etype not in ACKS:
            return []
        found: list[int] = []
        if etype in ("conversation.item.create", "input_audio_buffer.commit"):
            if etype == "input_audio_buffer.commit":
                committed = self._first(gate, lambda e: e.get("type") == "input_audio_buffer.committed")
                found += [committed] if committed is not None else []
                item_id = (self.frames[committed].event or {}).get("item_id") if committed is not None else None
                same = (lambda e: _answered_item(e) == item_id) if item_id else (lambda e: False)
            else:
                item = event.get("item") or {}
                same = (lambda e: _answered_item(e) == item["id"]) if "id" in item else (
                    lambda e: (e.get("item") or {}).get("type") == item.get("type")
                    and (e.get("item") or {}).get("role") == item.get("role"))
            added = self._first(gate, lambda e: e.get("type") in ("conversation.item.added",
                                                                   "conversation.item.created") and same(e))
            if added is not None:
                answered = _answered_item(self.frames[added].event or {})
                done = self._first(added, lambda e: e.get("type") == "conversation.item.done"
                                   and _answered_item(e) == answered)
                found += [added] + ([done] if done is not None else [])
        else:
            target = event.get("item_id")
            answer = self._first(gate, lambda e: e.get("type") in ACKS[etype]
                                 and (target is None or _answered_item(e) == target))
            found += [answer] if answer is not None else []
        if isinstance(event.get("event_id"), str):
            error = self._first(gate, lambda e: e.get("type") == "error"
                                and (e.get("error") or {}).get("event_id") == event["event_id"])
            found += [error] if error is not None else []
        self._claimed.update(found)
        return found

    def _first(self, after: int, matches: Callable[[dict[str, Any]], bool]) -> int | None:
        """The first unclaimed recorded server frame after ``after`` that ``matches``."""
        for index in range(after + 1, len(self.frames)):
            frame = self.frames[index]
            if frame.source == "server" and frame.event is not None and index not in self._claimed \
                    and matches(frame.event):
                return index
        return None

    def _open(self, segment: _Segment, now: float, anchor_t: float) -> None:
        last = self._queue[-1][0] if self._queue else now
        for index in segment.frames:
            at = max(now + (self.frames[index].t - anchor_t) * self.speed, last)
            self._queue.append((at, index))
            last = at

    # -- outputs

    def due(self, now: float) -> list[tuple[int, Frame]]:
        """Frames to send now, in order; stops for good after the cut frame."""
        out: list[tuple[int, Frame]] = []
        queue = self._queue
        while queue and not self.cut_reached and queue[0][0] <= now:
            _, index = queue.popleft()
            if index in self._dropped:
                continue
            out.append((index, self.frames[index]))
            if index == self.stop_after:
                self.cut_reached = True
        return out

    def next_deadline(self) -> float | None:
        if self.cut_reached or not self._queue:
            return None
        return self._queue[0][0]

    @property
    def exhausted(self) -> bool:
        """Nothing more will ever be released (all gates opened and the queue drained, or the cut)."""
        return self.cut_reached or (not self._queue and self._next >= len(self.segments))

    @property
    def pending_gate(self) -> Frame | None:
        """The recorded client frame the replay is waiting for, if any."""
        if self._next < len(self.segments):
            gate = self.segments[self._next].gate
            return self.frames[gate] if gate is not None else None
        return None
