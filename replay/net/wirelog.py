"""The per-session wire log: every frame both ways, the cut, and what the engine decided.

Audio payloads are logged as their size only, and any other string longer than
`CLIENT_TEXT_LIMIT` is cut (saying how much), so a log stays small enough to read and to attach to
a CI report whatever a client sends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from replay.cassettes.cassette import AUDIO_FIELD
from replay.files import write_atomic
from replay.text import clip
from replay.wire.protocol import b64_decoded_len

if TYPE_CHECKING:
    from replay.engine.conversation import Received
    from replay.engine.matching import Divergence


MAX_DEPTH = 32  # of nested objects and arrays kept in a logged event; deeper is one string saying so


def loggable(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its audio payload replaced by ``{"$audio": {"bytes": N}}`` and long strings cut.

    The same object when nothing needed changing (most frames), so logging costs no copy.
    """
    key = AUDIO_FIELD.get(event.get("type", ""))
    if key is not None and isinstance(event.get(key), str):
        event = {**event, key: {"$audio": {"bytes": b64_decoded_len(event[key])}}}
    bounded: dict[str, Any] = bounded_value(event)
    return bounded


def bounded_value(value: Any, depth: int = 0) -> Any:
    """``value`` with every string (keys too) cut at `CLIENT_TEXT_LIMIT`, the same shape otherwise."""
    if isinstance(value, str):
        return clip(value)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return f"(an object nested deeper than {MAX_DEPTH} levels: not logged)"
        items = [(clip(k) if isinstance(k, str) else k, bounded_value(v, depth + 1)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            return f"(an array nested deeper than {MAX_DEPTH} levels: not logged)"
        kept = [bounded_value(v, depth + 1) for v in value]
        return value if all(a is b for a, b in zip(kept, value, strict=True)) else kept
    return value


@dataclass
class WireLog:
    entries: list[dict[str, Any]] = field(default_factory=list)

    def server(self, t: float, event: dict[str, Any], origin: str) -> None:
        self.entries.append({"t": round(t, 4), "dir": "server", "origin": origin, "event": loggable(event)})

    def client(self, t: float, data: str | bytes, received: Received, divergence: Divergence | None = None) -> None:
        entry: dict[str, Any] = {"t": round(t, 4), "dir": "client"}
        if received.event is not None:
            entry["event"] = loggable(received.event)
        elif isinstance(data, bytes):
            entry["binary_bytes"] = len(data)
        else:
            entry["text"] = clip(data)
        if received.rule is not None:
            entry["rule"] = received.rule
        if divergence is not None:
            entry["divergence"] = clip(divergence.describe())
        self.entries.append(entry)

    def raw(self, t: float, source: str, text: str | None, binary: bytes | None) -> None:
        entry: dict[str, Any] = {"t": round(t, 4), "dir": source, "origin": "recorded"}
        if binary is not None:
            entry["binary_bytes"] = len(binary)
        else:
            entry["text"] = None if text is None else clip(text)
        self.entries.append(entry)

    def mark(self, t: float, note: str, *, cut: bool = False) -> None:
        entry: dict[str, Any] = {"t": round(t, 4), "mark": clip(note)}
        if cut:
            entry["cut"] = True
        self.entries.append(entry)

    def client_events(self) -> list[dict[str, Any]]:
        return [e["event"] for e in self.entries if e.get("dir") == "client" and "event" in e]

    def dumps(self) -> str:
        return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.entries)

    def save(self, path: str | Path) -> None:
        # A lone surrogate a client sent becomes its JSON escape (``\ud800``), not a failed write.
        write_atomic(Path(path), self.dumps(), errors="backslashreplace")
