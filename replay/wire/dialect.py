"""One neutral form, two dialects: how a GA frame is said in beta, and back.

The neutral form is GA. Recorded frames of either generation are read into it (:func:`normalize`),
and every frame the engine renders is rendered in the connected client's dialect, chosen from the
handshake. Each row of each table names its source in the protocol reference
(``realtime-protocol.md``), so a disagreement is settled there. The same table is in
``docs/dialects.md``.
"""

from __future__ import annotations

from typing import Any

from replay.wire.protocol import Dialect, clone

# Server event names: (GA, beta, reference). A beta of None: the event has no beta form.
EVENTS: tuple[tuple[str, str | None, str], ...] = (
    ("response.output_audio.delta", "response.audio.delta", "§2 Audio deltas"),
    ("response.output_audio.done", "response.audio.done", "§2 Audio deltas"),
    ("response.output_audio_transcript.delta", "response.audio_transcript.delta", "§2 Transcript deltas"),
    ("response.output_audio_transcript.done", "response.audio_transcript.done", "§2 Transcript deltas"),
    ("response.output_text.delta", "response.text.delta", "§2 Text deltas"),
    ("response.output_text.done", "response.text.done", "§2 Text deltas"),
    ("conversation.item.added", "conversation.item.created", "§2 Item lifecycle, §8.2"),
    ("conversation.item.done", None, "§2 Item lifecycle: beta has no item.done"),
    ("input_audio_buffer.timeout_triggered", None, "§2 New GA-only server events"),
)
# Events only the beta server sent: (name, reference). GA never receives them.
BETA_ONLY: tuple[tuple[str, str], ...] = (
    ("conversation.created", "§1.3, §10.5: beta only"),
    ("transcription_session.updated", "§2 Transcription-only sessions"),
)
# Content types of an assistant item's parts: (GA, beta, reference). Part objects in
# response.content_part.* say `audio`/`text` in both (§2 content_part.added).
CONTENT_TYPES: tuple[tuple[str, str, str], ...] = (
    ("output_audio", "audio", "§2 Item content types"),
    ("output_text", "text", "§2 Item content types"),
)
# Audio formats: (GA type, beta name, reference).
FORMATS: tuple[tuple[str, str, str], ...] = (
    ("audio/pcm", "pcm16", "§2 Audio format, §7"),
    ("audio/pcmu", "g711_ulaw", "§2 Audio format, §7"),
    ("audio/pcma", "g711_alaw", "§2 Audio format, §7"),
)
# Session fields: (GA path, beta key, reference). Fields of the same name in both are copied as they are.
SESSION_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("output_modalities", "modalities", "§2 Modalities"),
    ("audio.output.voice", "voice", "§2 session.update body"),
    ("audio.output.format", "output_audio_format", "§2 session.update body, Audio format"),
    ("audio.output.speed", "speed", "§2 session.update body"),
    ("audio.input.format", "input_audio_format", "§2 session.update body, Audio format"),
    ("audio.input.transcription", "input_audio_transcription", "§2 session.update body"),
    ("audio.input.noise_reduction", "input_audio_noise_reduction", "§2 session.update body"),
    ("audio.input.turn_detection", "turn_detection", "§2 session.update body"),
    ("max_output_tokens", "max_response_output_tokens", "§2 session.update body"),
)
SHARED_SESSION_KEYS = ("object", "id", "model", "instructions", "tools", "tool_choice", "tracing", "truncation",
                       "prompt", "include", "expires_at")

TO_BETA = {ga: beta for ga, beta, _ in EVENTS}
TO_GA = {beta: ga for ga, beta, _ in EVENTS if beta is not None}
_CONTENT_TO_BETA = {ga: beta for ga, beta, _ in CONTENT_TYPES}
_CONTENT_TO_GA = {beta: ga for ga, beta, _ in CONTENT_TYPES}
_FORMAT_TO_BETA = {ga: beta for ga, beta, _ in FORMATS}
_FORMAT_TO_GA = {beta: ga for ga, beta, _ in FORMATS}
GA_NAMES = frozenset(ga for ga, _, _ in EVENTS)
BETA_NAMES = frozenset(beta for _, beta, _ in EVENTS if beta is not None) | {name for name, _ in BETA_ONLY}


def event_name(neutral: str, dialect: Dialect) -> str | None:
    """The name a dialect gives a neutral event; None when the dialect has no such event."""
    if dialect == "ga":
        return neutral
    return TO_BETA.get(neutral, neutral)


def neutral_name(name: str) -> str:
    return TO_GA.get(name, name)


def format_to(fmt: Any, dialect: Dialect) -> Any:
    """A beta format string or a GA format object, in the dialect asked for."""
    if dialect == "beta":
        kind = fmt.get("type") if isinstance(fmt, dict) else fmt
        return _FORMAT_TO_BETA.get(kind, kind) if isinstance(kind, str) else fmt
    if isinstance(fmt, str):
        kind = _FORMAT_TO_GA.get(fmt, fmt)
        return {"type": kind, "rate": 24000} if kind == "audio/pcm" else {"type": kind}
    return fmt


def content_type(ptype: Any, dialect: Dialect) -> Any:
    table = _CONTENT_TO_BETA if dialect == "beta" else _CONTENT_TO_GA
    return table.get(ptype, ptype)


def session_to_ga(session: dict[str, Any]) -> dict[str, Any]:
    """A beta session object in the GA shape (§2)."""
    if "audio" in session or "type" in session:
        return clone(session)
    out: dict[str, Any] = {"type": "realtime"}
    for key in SHARED_SESSION_KEYS:
        if key in session:
            out[key] = clone(session[key])
    for path, beta, _ in SESSION_FIELDS:
        if beta not in session:
            continue
        value = clone(session[beta])
        if beta == "modalities":
            value = ["audio"] if isinstance(value, list) and "audio" in value else ["text"]
        elif beta.endswith("audio_format"):
            value = format_to(value, "ga")
        _put(out, path, value)
    return out


def session_to(session: dict[str, Any], dialect: Dialect) -> dict[str, Any]:
    """A GA session object in the dialect asked for (§2); beta keeps what has a beta name."""
    if dialect == "ga":
        return clone(session)
    out: dict[str, Any] = {}
    for key in SHARED_SESSION_KEYS:
        if key in session:
            out[key] = clone(session[key])
    for path, beta, _ in SESSION_FIELDS:
        found, value = _get(session, path)
        if not found:
            continue
        value = clone(value)
        if beta == "modalities":
            value = ["audio", "text"] if isinstance(value, list) and "audio" in value else ["text"]
        elif beta.endswith("audio_format"):
            value = format_to(value, "beta")
        out[beta] = value
    return out


def _get(obj: dict[str, Any], path: str) -> tuple[bool, Any]:
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return False, None
        obj = obj[key]
    return True, obj


def _put(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        obj = obj.setdefault(key, {})
    obj[last] = value


def normalize(event: dict[str, Any], dialect: Dialect) -> dict[str, Any]:
    """A recorded server event in the neutral (GA) form: its name, and its items' content types."""
    if dialect == "ga":
        return event
    out = dict(event)
    out["type"] = neutral_name(str(event.get("type")))
    item = out.get("item")
    if isinstance(item, dict) and isinstance(item.get("content"), list):
        item = dict(item)
        item.pop("object", None)
        if item.get("role") == "assistant":
            item["content"] = [{**c, "type": content_type(c.get("type"), "ga")} if isinstance(c, dict) else c
                               for c in item["content"]]
        out["item"] = item
    if isinstance(out.get("session"), dict):
        out["session"] = session_to_ga(out["session"])
    return out


def mapping_table() -> str:
    """The tables above as Markdown, for the docs (kept in step by a test)."""
    rows = ["| what | GA (neutral) | beta | reference |", "|---|---|---|---|"]
    rows += [f"| event | `{ga}` | {f'`{beta}`' if beta else '—'} | {ref} |" for ga, beta, ref in EVENTS]
    rows += [f"| event | — | `{name}` | {ref} |" for name, ref in BETA_ONLY]
    rows += [f"| assistant content type | `{ga}` | `{beta}` | {ref} |" for ga, beta, ref in CONTENT_TYPES]
    rows += [f"| audio format | `{{\"type\": \"{ga}\"}}` | `{beta}` | {ref} |" for ga, beta, ref in FORMATS]
    rows += [f"| session field | `{ga}` | `{beta}` | {ref} |" for ga, beta, ref in SESSION_FIELDS]
    rows.append("| item acknowledgement | `conversation.item.added` + `conversation.item.done` | "
                "`conversation.item.created` | §2 Item lifecycle, §3 |")
    return "\n".join(rows)
