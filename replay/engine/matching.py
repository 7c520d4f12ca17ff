"""Strict replay: the client's frames held against the recorded client's, for regression tests.

``serve --strict`` is for exact replays of one's own recordings: each client event is compared
with the recorded one at the same position, ignoring volatile paths (event ids, ids the client
invents, audio bytes); the first difference ends the session with a positioned diff. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from replay.text import visible

UNCOMPARED = frozenset({"input_audio_buffer.append", "session.input_audio_buffer.append"})
DEFAULT_IGNORE: tuple[str, ...] = (
    "event_id",
    "item.id",
    "previous_item_id",
    "response.metadata",
    "audio",
    "item.content[*].audio",
)
_INDEX = re.compile(r"\[\d+\]")


@dataclass(frozen=True)
class Divergence:
    """Where the client parted from the recording."""

    client_index: int  # the client's Nth frame (0-based)
    kind: Literal["diff", "unscripted"]
    recorded_index: int | None = None  # the recorded frame it was held against
    recorded_type: str | None = None
    diff: tuple[tuple[str, Any, Any], ...] = ()

    def describe(self) -> str:
        head = f"client frame #{self.client_index}"
        if self.kind == "unscripted":
            return f"{head}: not in the recording"
        shown = "; ".join(f"{_path(path)}: recorded {_short(a)}, got {_short(b)}" for path, a, b in self.diff[:5])
        more = f" (+{len(self.diff) - 5} more)" if len(self.diff) > 5 else ""
        return f"{head} vs recorded frame #{self.recorded_index} ({self.recorded_type}): {shown}{more}"


def _path(path: str) -> str:
    """A path holds the client's keys: shown visible, and cut as a value is."""
    return visible(path if len(path) <= 120 else path[:117] + "...")


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



class StrictMatcher:
    """Holds each client event against the recorded client event at the same position."""

    def __init__(self, recorded: Sequence[dict[str, Any]], ignore: Iterable[str] = DEFAULT_IGNORE) -> None:
        self.recorded = list(recorded)
        self.ignore = tuple(ignore)
        self.seen = 0

    def check(self, event: dict[str, Any] | None) -> Divergence | None:
        """The divergence of this client event (appends are not compared: audio is streamed), if any."""
        if event is not None and event.get("type") in UNCOMPARED:
            return None
        index = self.seen
        self.seen += 1
        if index >= len(self.recorded):
            return Divergence(index, "unscripted")
        recorded = self.recorded[index]
        diff = diff_events(recorded, event if event is not None else {}, self.ignore)
        return Divergence(index, "diff", index, recorded.get("type"), tuple(diff)) if diff else None
