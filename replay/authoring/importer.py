"""Turn a captured Realtime session into a cassette.

Two capture formats are read:

* **JSON Lines event logs**: one event per line, optionally led by a ``{"_meta": {...}}`` record (the
  format of ``shared/traces/real``). Direction comes from a ``direction`` field or from the event type;
  time from ``_t`` (seconds) when the log has it.
* **rtreplay wire logs**: what ``rtreplay check --logs DIR`` writes, one JSONL per case (entries
  with ``dir``, ``t`` and ``event``, and ``mark`` lines). Audio was logged as its size only, which a
  cassette replays as that much silence. The harness's barge-in and the engine's answers went over
  the wire, so they are kept as server frames like the rest.
* **pydantic-ai websocket cassettes**: the YAML written by pydantic-ai's
  ``tests/realtime/ws_cassettes.py`` (``version: 1``, ``interactions:`` of ``kind: message`` with
  ``direction: sent|received`` and ``data``, or ``kind: close``; newer recordings add ``at`` seconds).
  A close followed by more messages is a reconnect, so each socket becomes its own session.

Bad input raises :class:`ImportFailed` naming the file and line, never a traceback: a user points the
importer at files from the internet, and needs to know which line to look at.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

import yaml

from replay.cassettes.cassette import (
    AUDIO_FIELD,
    MAX_DEPTH,
    MAX_T,
    Cassette,
    CassetteError,
    Frame,
    Source,
    UnsafeYAML,
    WebSocketSession,
    compact_audio,
    from_data,
    parse_yaml,
)
from replay.engine.script import check_event
from replay.files import read_text
from replay.wire.protocol import CLIENT_TYPES, Dialect

__all__ = ["ImportFailed", "detect_dialect", "import_trace", "tool_version"]

SYNTH_STEP = 0.005  # seconds between frames when the capture has no timestamps
# Levels an event may nest: the cassette puts it 7 levels down, and a cassette nests at most MAX_DEPTH.
EVENT_DEPTH = MAX_DEPTH - 10
SHORT_AUDIO = 64  # decoded bytes; a real chunk is >= 20 ms (160 bytes of G.711, 960 of pcm16)

_CLIENT_TYPES = frozenset(CLIENT_TYPES["ga"]) | frozenset(CLIENT_TYPES["beta"])
_GA_ONLY_TYPES = frozenset(
    {
        "conversation.item.added",
        "conversation.item.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_text.delta",
        "response.output_text.done",
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.dtmf_event_received",
        "conversation.item.input_audio_transcription.segment",
        "session.close",
        "session.input_audio_buffer.append",
    }
)
_GA_ONLY_PREFIXES = ("mcp_list_tools.", "response.mcp_call")
_DEFAULT_MODEL: dict[Dialect, str] = {"ga": "gpt-realtime", "beta": "gpt-4o-realtime-preview"}
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


class ImportFailed(ValueError):
    """A capture that cannot be imported; the message names the file, the line and what is wrong."""


def tool_version() -> str:
    """``rtreplay <version>`` for cassette metadata, so a cassette says which importer wrote it."""
    try:
        from replay import __version__ as version
    except ImportError:  # pragma: no cover - a package without __version__
        version = "0.1.0"
    return f"rtreplay {version}"


@dataclass
class _Raw:
    """One captured frame before it becomes a cassette frame."""

    line: int
    source: Source
    event: dict[str, Any]
    t: float | None
    elided: bool = False


@dataclass
class _Socket:
    raws: list[_Raw]
    close: dict[str, Any] | None = None


# ---------------------------------------------------------------------------- entry point


def import_trace(
    path: Path | str,
    *,
    source: str | None = None,
    license: str | None = None,
    compact: bool = False,
    dialect: Dialect | None = None,
) -> Cassette:
    """Read a JSON Lines event log or a pydantic-ai websocket cassette into a cassette.

    ``source``/``license`` override what the capture says about itself; ``compact`` replaces audio
    payloads by their size and digest; ``dialect`` overrides detection from the event names.
    """
    path = Path(path)
    text = _read(path)
    if not text.strip():
        raise ImportFailed(f"{path}: empty file: expected JSON Lines events or a pydantic-ai websocket cassette")
    if text.lstrip().startswith("{") and _is_wire_log(text):
        meta, sockets = _parse_wire_log(path, text)
        fmt = "rtreplay wire log"
    elif text.lstrip().startswith("{"):
        meta, sockets = _parse_jsonl(path, text)
        fmt = "jsonl"
    else:
        meta, sockets = _parse_pydantic_yaml(path, text)
        fmt = "pydantic-ai ws cassette"
    if not any(s.raws for s in sockets):
        raise ImportFailed(f"{path}: no events found (only metadata)")
    return _build(path, fmt, meta, sockets, source=source, license=license, compact=compact, dialect=dialect)


def _read(path: Path) -> str:
    # utf-8-sig tolerates a BOM from editors on Windows
    return read_text(path, "a capture is JSON Lines or YAML", ImportFailed, encoding="utf-8-sig")


# ---------------------------------------------------------------------------- JSON Lines


def _parse_jsonl(path: Path, text: str) -> tuple[dict[str, Any], list[_Socket]]:
    meta: dict[str, Any] = {}
    raws: list[_Raw] = []
    seen_line = False
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        at = f"{path}:{number}"
        record = _json_line(line, at)
        if "_meta" in record and "type" not in record:
            if seen_line:
                raise ImportFailed(f"{at}: a _meta record is only allowed on the first line")
            if not isinstance(record["_meta"], dict):
                raise ImportFailed(f"{at}: _meta must be an object")
            meta = record["_meta"]
            seen_line = True
            continue
        seen_line = True
        raws.append(_raw_event(record, number, at))
    return meta, [_Socket(raws)]


def _json_line(line: str, at: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ImportFailed(f"{at}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise ImportFailed(f"{at}: not valid JSON: nested too deeply") from None
    except ValueError as exc:  # a number of more digits than Python converts
        raise ImportFailed(f"{at}: not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ImportFailed(f"{at}: expected a JSON object per line, got {_kind(record)}")
    return record


def _raw_event(record: dict[str, Any], number: int, at: str) -> _Raw:
    etype = record.get("type")
    if not isinstance(etype, str) or not etype:
        raise ImportFailed(f"{at}: event has no string 'type'")
    direction = record.get("direction")
    source: Source
    if direction is None:
        source = "client" if etype in _CLIENT_TYPES else "server"
    elif direction in ("client", "server"):
        source = direction
    else:
        raise ImportFailed(f"{at}: 'direction' must be 'client' or 'server', got {direction!r}")
    t = record.get("_t")
    if t is not None and not _seconds(t):
        raise ImportFailed(f"{at}: '_t' must be a number of seconds, got {_shown(t)} (from 0 to {MAX_T:.0e})")
    elided = record.get("_fields_elided") is True
    if elided:
        event: dict[str, Any] = {"type": etype}
    else:
        # Fields starting with `_` were added during conversion; they never went over the wire.
        event = {k: v for k, v in record.items() if not k.startswith("_") and k != "direction"}
    return _Raw(number, source, event, float(t) if t is not None else None, elided)


def _seconds(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= MAX_T


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


# ---------------------------------------------------------------------------- rtreplay wire logs


def _is_wire_log(text: str) -> bool:
    """A wire log's entries have no ``type`` of their own: a ``mark``, or a ``dir`` and what went that way."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        record = json.loads(first)
    except (ValueError, RecursionError):  # not JSON, too deep, a number of too many digits
        return False  # the JSON Lines reader says what is wrong with the line
    return isinstance(record, dict) and "type" not in record and ("mark" in record or "dir" in record)


def _parse_wire_log(path: Path, text: str) -> tuple[dict[str, Any], list[_Socket]]:
    case: dict[str, Any] = {}
    raws: list[_Raw] = []
    cut: str | None = None
    not_events = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        at = f"{path}:{number}"
        record = _json_line(line, at)
        if "mark" in record:
            if record["mark"] == "case":
                case = record
            elif record.get("cut"):
                cut = str(record["mark"])
            continue
        direction = record.get("dir")
        if direction not in ("client", "server"):
            raise ImportFailed(f"{at}: a wire log entry is a 'mark' or has 'dir' client or server, got {direction!r}")
        event = record.get("event")
        if event is None:
            not_events += 1  # a text or binary frame that was not a JSON event: the log kept only its size
            continue
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ImportFailed(f"{at}: 'event' must be an object with a string 'type'")
        t = record.get("t")
        if not _seconds(t):
            raise ImportFailed(f"{at}: 't' must be a number of seconds, got {_shown(t)} (from 0 to {MAX_T:.0e})")
        raws.append(_Raw(number, direction, event, float(t)))
    what = f"case {case['case']} ({case.get('title')}), client {case.get('client')}" if case.get("case") else "a case"
    meta: dict[str, Any] = {"capture": f"rtreplay check wire log of {what}",
                            "notes": "audio logged as sizes, replayed as silence"
                                     + (f"; the barge-in was at: {cut}" if cut else "; the cut was never reached")
                                     + (f"; {not_events} frame(s) that were not JSON events left out"
                                        if not_events else "")}
    return meta, [_Socket(raws)]


# ---------------------------------------------------------------------------- pydantic-ai YAML


def _parse_pydantic_yaml(path: Path, text: str) -> tuple[dict[str, Any], list[_Socket]]:
    expected = "expected JSON Lines (one JSON object per line) or a pydantic-ai websocket cassette (YAML)"
    try:
        root, data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ImportFailed(f"{path}:{line}: {expected}; not valid YAML either") from None
    except UnsafeYAML as exc:
        raise ImportFailed(f"{path}: refused: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("interactions"), list):
        raise ImportFailed(f"{path}:1: {expected}")
    assert isinstance(root, yaml.MappingNode)
    seq = next(v for k, v in root.value if k.value == "interactions")
    lines = [node.start_mark.line + 1 for node in seq.value] if isinstance(seq, yaml.SequenceNode) else []
    interactions: list[Any] = data["interactions"]
    if interactions and isinstance(interactions[0], dict) and "request" in interactions[0]:
        raise ImportFailed(f"{path}: already a vcrpy cassette (interactions have 'request'); replay it directly")
    sockets = [_Socket([])]
    for index, item in enumerate(interactions):
        number = lines[index] if index < len(lines) else 1
        at = f"{path}:{number}"
        if not isinstance(item, dict):
            raise ImportFailed(f"{at}: interactions[{index}] must be a mapping")
        t = item.get("at")
        if t is not None and not _seconds(t):
            raise ImportFailed(f"{at}: interactions[{index}].at must be a number of seconds, got {_shown(t)} "
                               f"(from 0 to {MAX_T:.0e})")
        kind = item.get("kind", "message")
        if kind == "close":
            code = item.get("code")
            if not isinstance(code, int) or isinstance(code, bool):
                raise ImportFailed(f"{at}: interactions[{index}] is a close without an integer 'code'")
            # The recorder cannot tell who closed; `ok` says whether the close was clean.
            sockets[-1].close = {"code": code, "reason": str(item.get("reason") or ""), "by": None,
                                 "ok": bool(item.get("ok", code == 1000))}
            sockets.append(_Socket([]))
            continue
        if kind != "message":
            raise ImportFailed(f"{at}: interactions[{index}].kind must be 'message' or 'close', got {kind!r}")
        direction = item.get("direction")
        if direction not in ("sent", "received"):
            raise ImportFailed(f"{at}: interactions[{index}].direction must be 'sent' or 'received', "
                               f"got {direction!r}")
        event = item.get("data")
        if not isinstance(event, dict):
            raise ImportFailed(f"{at}: interactions[{index}].data must be a mapping (one JSON frame)")
        if not isinstance(event.get("type"), str):
            raise ImportFailed(f"{at}: interactions[{index}].data has no string 'type' "
                               "(not an OpenAI Realtime frame: another provider's cassette?)")
        source: Source = "client" if direction == "sent" else "server"
        sockets[-1].raws.append(_Raw(number, source, event, float(t) if t is not None else None))
    if not sockets[-1].raws and len(sockets) > 1:
        sockets.pop()  # the trailing close ended the last socket
    return {}, sockets


# ---------------------------------------------------------------------------- building


def detect_dialect(events: list[dict[str, Any]]) -> Dialect:
    """GA when any GA-only event name or GA-shaped session/response appears, else beta."""
    for event in events:
        etype = event.get("type", "")
        if etype in _GA_ONLY_TYPES or etype.startswith(_GA_ONLY_PREFIXES):
            return "ga"
        session = event.get("session")
        if etype in ("session.created", "session.updated", "session.update") and isinstance(session, dict) \
                and "type" in session:
            return "ga"
        response = event.get("response")
        if isinstance(response, dict) and "output_modalities" in response:
            return "ga"
    return "beta"


def _model(meta: dict[str, Any], events: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """The model id, and a note when the capture only describes the model in words."""
    note = None
    meta_model = meta.get("model")
    if isinstance(meta_model, str) and _MODEL_ID.match(meta_model):
        return meta_model, None
    if isinstance(meta_model, str) and meta_model:
        note = meta_model
    for wanted in ("session.created", "session.updated"):
        for event in events:
            session = event.get("session")
            if event.get("type") == wanted and isinstance(session, dict) and isinstance(session.get("model"), str):
                return session["model"], note
    return None, note


def _recorded_at(meta: dict[str, Any], events: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """When the session was recorded, if the capture says or the session's expiry implies it."""
    for key in ("recorded_at", "captured_at", "date"):
        value = meta.get(key)
        if isinstance(value, str) and value:
            return value, None
    for event in events:
        session = event.get("session")
        if event.get("type") == "session.created" and isinstance(session, dict):
            expires = session.get("expires_at")
            if isinstance(expires, int) and not isinstance(expires, bool) and expires > 3600:
                at = datetime.fromtimestamp(expires - 3600, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                return at, "session.created expires_at - 3600 s (sessions last 60 minutes)"
    return None, None


def _audio_sizes(events: list[dict[str, Any]]) -> list[int]:
    sizes = []
    for event in events:
        key = AUDIO_FIELD.get(event.get("type", ""))
        payload = event.get(key) if key else None
        if isinstance(payload, str):
            try:
                sizes.append(len(base64.b64decode(payload)))
            except (binascii.Error, ValueError):
                continue
    return sizes


def _compact(raw: _Raw, path: Path) -> dict[str, Any]:
    """Compact one event's audio, refusing payloads that are not base64 (they would become 0 bytes)."""
    key = AUDIO_FIELD.get(raw.event.get("type", ""))
    payload = raw.event.get(key) if key else None
    try:
        if isinstance(payload, str):
            base64.b64decode(payload, validate=True)
        return compact_audio(raw.event)
    except (binascii.Error, ValueError):
        raise ImportFailed(f"{path}:{raw.line}: {raw.event.get('type')}: audio payload is not base64") from None


def _source_text(meta: dict[str, Any], path: Path) -> str:
    repo, where, commit = meta.get("source_repo"), meta.get("path"), meta.get("commit")
    if isinstance(repo, str) and repo:
        text = repo + (f"/{where}" if isinstance(where, str) and where else "")
        return text + (f"@{commit}" if isinstance(commit, str) and commit else "")
    return path.name


def _build(
    path: Path,
    fmt: str,
    meta: dict[str, Any],
    sockets: list[_Socket],
    *,
    source: str | None,
    license: str | None,
    compact: bool,
    dialect: Dialect | None,
) -> Cassette:
    events = [raw.event for s in sockets for raw in s.raws]
    chosen: Dialect = dialect or detect_dialect(events)
    model, model_note = _model(meta, events)
    recorded_at, recorded_note = _recorded_at(meta, events)
    uri_model = model or _DEFAULT_MODEL[chosen]
    where = str(meta.get("path", "")) + " " + str(meta.get("source_repo", "")) + " " + path.name
    if "azure" in where.lower():
        uri = f"wss://example-resource.openai.azure.com/openai/v1/realtime?model={uri_model}"
    else:
        uri = f"wss://api.openai.com/v1/realtime?model={uri_model}"
    headers = {"OpenAI-Beta": ["realtime=v1"]} if chosen == "beta" else {}

    all_raws = [raw for s in sockets for raw in s.raws]
    stamped = sum(1 for raw in all_raws if raw.t is not None)
    timing = "recorded" if stamped == len(all_raws) else "synthesized" if stamped == 0 else "partly synthesized"
    sessions: list[WebSocketSession] = []
    clamped = 0
    for socket in sockets:
        frames: list[Frame] = []
        # The first socket keeps the capture's clock (seconds since the recording started); a
        # reconnect's socket starts its own clock at its first frame.
        first = next((raw.t for raw in socket.raws if raw.t is not None), 0.0)
        origin = min(first, 0.0) if not sessions else first
        last = 0.0
        for raw in socket.raws:
            if raw.t is None:
                t = last + SYNTH_STEP if frames else 0.0
            else:
                t = raw.t - origin
                if t < last:  # log order wins over a clock that went backwards
                    clamped += 1
                    t = last
            t = round(t, 6)
            _check(raw, path)
            event = _compact(raw, path) if compact else raw.event
            frames.append(Frame(t, raw.source, event=event))
            last = t
        close = dict(socket.close) if socket.close is not None else None
        sessions.append(WebSocketSession(uri=uri, dialect=chosen, frames=frames, request_headers=dict(headers),
                                         close=close))

    sizes = _audio_sizes(events)
    capture = meta.get("capture")
    truncated = (len(sizes) >= 2 and len(set(sizes)) == 1 and sizes[0] <= SHORT_AUDIO) or (
        isinstance(capture, str) and "truncat" in capture.lower() and bool(sizes)
    )
    metadata: dict[str, Any] = {
        "origin": "imported",
        "source": source or _source_text(meta, path),
        "license": license or meta.get("license"),
        "model": model,
        "recorded_at": recorded_at,
        "tool": tool_version(),
        "complete": True,
        "frames": sum(len(s.frames) for s in sessions),
        "dialect": chosen,
        "format": fmt,
        "timing": timing,
    }
    if recorded_note:
        metadata["recorded_at_note"] = recorded_note
    if model_note:
        metadata["model_note"] = f"{model_note} (the URI's model {uri_model!r} is a stand-in)" if model is None \
            else model_note
    for key, target in (("source_repo", "source_repo"), ("path", "source_path"), ("commit", "source_commit"),
                        ("transport", "transport"), ("capture", "capture"), ("notes", "notes")):
        if meta.get(key) is not None:
            metadata[target] = meta[key]
    if clamped:
        metadata["timing_clamped_frames"] = clamped
    if truncated:
        metadata["audio_truncated_at_source"] = True
        if sizes and len(set(sizes)) == 1:
            metadata["audio_payload_bytes"] = sizes[0]
    if compact and sizes:
        metadata["audio_compacted"] = True
    if any(raw.elided for raw in all_raws):
        metadata["client_frames_elided"] = True
    if len(sessions) > 1:
        metadata["sessions"] = len(sessions)
    if _nesting(metadata) > EVENT_DEPTH:
        raise ImportFailed(f"{path}: the capture's metadata is nested more than {EVENT_DEPTH} levels deep")
    cassette = Cassette(metadata, list(sessions))
    try:  # what the loader and replay would refuse is refused now, not when the cassette is first used
        from_data(cassette.to_data(), path)
    except CassetteError as exc:
        raise ImportFailed(f"the cassette made of it would not load: {exc}") from None
    return cassette


def _check(raw: _Raw, path: Path) -> None:
    """An event replay can use: nested within bounds, every field it reads of the right type."""
    at = f"{path}:{raw.line}: {raw.event.get('type')}"
    if _nesting(raw.event) > EVENT_DEPTH:
        raise ImportFailed(f"{at}: the event is nested more than {EVENT_DEPTH} levels deep")
    try:
        check_event(raw.event, at)
    except CassetteError as exc:
        raise ImportFailed(str(exc)) from None


def _nesting(value: Any) -> int:
    """Levels of lists and mappings in a JSON value (iterative: however deep it is)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack += [(child, level + 1) for child in children]
    return deepest
