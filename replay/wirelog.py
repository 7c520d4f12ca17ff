"""The per-session wire log: every frame both ways, the cut, and what the engine decided.

Audio payloads are logged as their size only, so a log stays small enough to read and to attach
to a CI report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from replay.cassette import AUDIO_FIELD
from replay.files import write_atomic
from replay.protocol import b64_decoded_len

if TYPE_CHECKING:
    from replay.engine import Received
    from replay.matching import Divergence


def loggable(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its audio payload replaced by ``{"$audio": {"bytes": N}}``."""
    key = AUDIO_FIELD.get(event.get("type", ""))
    if key is not None and isinstance(event.get(key), str):
        return {**event, key: {"$audio": {"bytes": b64_decoded_len(event[key])}}}
    return event


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
            entry["text"] = data if len(data) <= 2000 else data[:2000] + "..."
        if received.rule is not None:
            entry["rule"] = received.rule
        if divergence is not None:
            entry["divergence"] = divergence.describe()
        self.entries.append(entry)

    def raw(self, t: float, source: str, text: str | None, binary: bytes | None) -> None:
        entry: dict[str, Any] = {"t": round(t, 4), "dir": source, "origin": "recorded"}
        if binary is not None:
            entry["binary_bytes"] = len(binary)
        else:
            entry["text"] = text
        self.entries.append(entry)

    def mark(self, t: float, note: str, *, cut: bool = False) -> None:
        entry: dict[str, Any] = {"t": round(t, 4), "mark": note}
        if cut:
            entry["cut"] = True
        self.entries.append(entry)

    def client_events(self) -> list[dict[str, Any]]:
        return [e["event"] for e in self.entries if e.get("dir") == "client" and "event" in e]

    def dumps(self) -> str:
        return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.entries)

    def save(self, path: str | Path) -> None:
        write_atomic(Path(path), self.dumps())
