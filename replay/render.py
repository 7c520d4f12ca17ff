"""Human views of cassettes and sessions, for the terminal."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from replay.cassette import AUDIO_FIELD, Cassette, Frame
from replay.protocol import b64_decoded_len, format_bytes_per_ms

_KEY_FIELDS = ("item_id", "content_index", "audio_end_ms", "audio_start_ms", "previous_item_id")


def audio_bytes(event: dict[str, Any]) -> int | None:
    key = AUDIO_FIELD.get(event.get("type", ""))
    payload = event.get(key) if key else None
    if isinstance(payload, str):
        return b64_decoded_len(payload)
    if isinstance(payload, dict) and isinstance(payload.get("$audio"), dict):
        size = payload["$audio"].get("bytes")
        return size if isinstance(size, int) else None
    return None


def summarize(event: dict[str, Any], bytes_per_ms: int = 48) -> str:
    """The fields of an event a person scans for: ids, ms, statuses, errors, short text."""
    parts: list[str] = []
    size = audio_bytes(event)
    if size is not None:
        parts.append(f"audio {size / bytes_per_ms:.0f} ms ({size} B)")
    for key in _KEY_FIELDS:
        if event.get(key) is not None:
            parts.append(f"{key}={event[key]}")
    if isinstance(event.get("item"), dict):
        item = event["item"]
        parts.append(" ".join(str(item.get(k)) for k in ("id", "type", "role", "status") if item.get(k)))
    if isinstance(event.get("response"), dict):
        response = event["response"]
        details = response.get("status_details") or {}
        reason = f" ({details.get('reason')})" if isinstance(details, dict) and details.get("reason") else ""
        parts.append(f"{response.get('id')} {response.get('status')}{reason}")
    if isinstance(event.get("error"), dict):
        error = event["error"]
        parts.append(f"{error.get('code')}: {error.get('message')}")
    for key in ("delta", "transcript", "text"):
        value = event.get(key)
        if isinstance(value, str) and size is None:
            parts.append(repr(value if len(value) <= 40 else value[:37] + "..."))
    return "  ".join(parts)


def timeline(cassette: Cassette, session_index: int = 0) -> Table:
    sessions = cassette.sessions
    session = sessions[session_index]
    bpm = 48
    table = Table(title=f"{cassette.name} — session {session_index} ({session.dialect}, {session.model or '?'})",
                  show_lines=False, expand=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("t (s)", justify="right")
    table.add_column("dir")
    table.add_column("type", style="bold")
    table.add_column("details", overflow="fold")
    for index, frame in enumerate(session.frames):
        if frame.type in ("session.created", "session.updated") and frame.event is not None:
            session_obj = frame.event.get("session") or {}
            fmt = session_obj.get("audio", {}).get("output", {}).get("format") if session.dialect == "ga" \
                else session_obj.get("output_audio_format")
            bpm = format_bytes_per_ms(fmt)
        details = summarize(frame.event, bpm) if frame.event is not None else _raw_detail(frame)
        table.add_row(str(index), f"{frame.t:.3f}", _arrow(frame), Text(frame.type or _raw_kind(frame)),
                      Text(details),  # recorded text is data, never console markup
                      style="red" if frame.type == "error" else None)
    if session.close:
        close = session.close
        table.caption = f"closed by {close.get('by')}: {close.get('code')} {close.get('reason')}"
    return table


def _arrow(frame: Frame) -> str:
    return "[cyan]C →[/]" if frame.source == "client" else "[green]← S[/]"


def _raw_kind(frame: Frame) -> str:
    return "(binary)" if frame.binary is not None else "(text)"


def _raw_detail(frame: Frame) -> str:
    if frame.binary is not None:
        return f"{len(frame.binary)} bytes"
    text = frame.text or ""
    return repr(text if len(text) <= 60 else text[:57] + "...")
