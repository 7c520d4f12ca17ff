"""Human views of cassettes and sessions, for the terminal.

Everything a cassette says is data, never console markup: each string goes into a `rich.text.Text`
through `replay.text.visible`/`shown`, so a recorded ``[link=...]`` stays those characters and an
ESC shows as ``\\x1b`` instead of repainting the screen.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from replay.cassettes.cassette import AUDIO_FIELD, Cassette, Frame, WebSocketSession
from replay.engine.script import script_of
from replay.text import shown
from replay.wire.protocol import b64_decoded_len, format_bytes_per_ms

_KEY_FIELDS = ("item_id", "content_index", "audio_end_ms", "audio_start_ms", "previous_item_id")
DETAIL_LIMIT = 300  # characters of a frame's details in the timeline


def audio_bytes(event: dict[str, Any]) -> int | None:
    key = AUDIO_FIELD.get(event.get("type", ""))
    payload = event.get(key) if key else None
    if isinstance(payload, str):
        return b64_decoded_len(payload)
    if isinstance(payload, dict) and isinstance(payload.get("$audio"), dict):
        size = payload["$audio"].get("bytes")
        return size if type(size) is int else None
    return None


def summarize(event: dict[str, Any], bytes_per_ms: int = 48) -> str:
    """The fields of an event a person scans for: ids, ms, statuses, errors, short text (not yet made visible)."""
    parts: list[str] = []
    size = audio_bytes(event)
    if size is not None:
        parts.append(f"audio {size / bytes_per_ms:.0f} ms ({size} B)")
    for key in _KEY_FIELDS:
        if event.get(key) is not None:
            parts.append(f"{key}={_short(event[key])}")
    if isinstance(event.get("item"), dict):
        item = event["item"]
        parts.append(" ".join(_short(item.get(k)) for k in ("id", "type", "role", "status") if item.get(k)))
    if isinstance(event.get("response"), dict):
        response = event["response"]
        details = response.get("status_details") or {}
        reason = f" ({_short(details.get('reason'))})" if isinstance(details, dict) and details.get("reason") else ""
        parts.append(f"{_short(response.get('id'))} {_short(response.get('status'))}{reason}")
    if isinstance(event.get("error"), dict):
        error = event["error"]
        parts.append(f"{_short(error.get('code'))}: {_short(error.get('message'), 200)}")
    for key in ("delta", "transcript", "text"):
        value = event.get(key)
        if isinstance(value, str) and size is None:
            parts.append(repr(value if len(value) <= 40 else value[:37] + "..."))
    return "  ".join(parts)


def _short(value: Any, limit: int = 80) -> str:
    """A recorded value in a line: its text, cut (a string as it is, anything else as Python shows it)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _output_format(session: WebSocketSession, event: dict[str, Any]) -> Any:
    """The output audio format a session.created/updated sets, wherever its dialect says it."""
    settings = event.get("session")
    if not isinstance(settings, dict):
        return None
    if session.dialect != "ga":
        return settings.get("output_audio_format")
    audio = settings.get("audio")
    output = audio.get("output") if isinstance(audio, dict) else None
    return output.get("format") if isinstance(output, dict) else None


def timeline(cassette: Cassette, session_index: int = 0) -> Table:
    sessions = cassette.sessions
    session = sessions[session_index]
    bpm = 48
    title = f"{cassette.name} — session {session_index} ({session.dialect}, {session.model or '?'})"
    table = Table(title=Text(shown(title)), show_lines=False, expand=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("t (s)", justify="right")
    table.add_column("dir")
    table.add_column("type", style="bold")
    table.add_column("details", overflow="fold")
    for index, frame in enumerate(session.frames):
        if frame.type in ("session.created", "session.updated") and frame.event is not None:
            bpm = format_bytes_per_ms(_output_format(session, frame.event))
        details = summarize(frame.event, bpm) if frame.event is not None else _raw_detail(frame)
        table.add_row(str(index), f"{frame.t:.3f}", _arrow(frame), Text(shown(frame.type or _raw_kind(frame), 120)),
                      Text(shown(details, DETAIL_LIMIT)),  # recorded text is data, never console markup
                      style="red" if frame.type == "error" else None)
    if session.close:
        close = session.close
        table.caption = Text(shown(f"closed by {close.get('by')}: {close.get('code')} {close.get('reason')}", 200))
    return table


def header(cassette: Cassette) -> Text:
    """The cassette's name and what its metadata says about where it comes from."""
    meta = cassette.metadata
    line = Text(shown(cassette.name, 200), style="bold")
    for key in ("origin", "source", "license", "complete"):
        value = meta.get(key)
        if key == "license" and value is None:
            value = "unknown"
        line.append(f"  {key}=" + shown(_short(value, 200) if not isinstance(value, bool) else str(value)))
    return line


def http_lines(cassette: Cassette) -> list[str]:
    """One line per recorded HTTP interaction, made visible (the loader checked method, URI and status)."""
    lines = []
    for interaction in cassette.http_interactions:
        request, response = interaction["request"], interaction["response"]
        lines.append(shown(f"HTTP {request['method']} {request['uri']} → {response['status']['code']}", 400))
    return lines


def show(cassette: Cassette, console: Console, session: int | None = None) -> None:
    """What `rtreplay show` prints: the header, each session's timeline (or one), the HTTP calls.

    Each session is compiled first, so a frame replay could not use is the one error `show` gives too.
    """
    indexes = [session] if session is not None else list(range(len(cassette.sessions)))
    for index in indexes:
        if not 0 <= index < len(cassette.sessions):
            raise ValueError(f"--session {index}: the cassette has {len(cassette.sessions)} WebSocket session(s)")
        script_of(cassette, index)
    console.print(header(cassette), soft_wrap=True)
    for index in indexes:
        console.print(timeline(cassette, index))
    for line in http_lines(cassette):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _arrow(frame: Frame) -> str:
    return "[cyan]C →[/]" if frame.source == "client" else "[green]← S[/]"


def _raw_kind(frame: Frame) -> str:
    return "(binary)" if frame.binary is not None else "(text)"


def _raw_detail(frame: Frame) -> str:
    if frame.binary is not None:
        return f"{len(frame.binary)} bytes"
    text = frame.text or ""
    return repr(text if len(text) <= 60 else text[:57] + "...")
