"""From cassette to script: a recording as data about the model and the user, not a tape.

A recorded session is compiled into
- the **opening**: the recorded ``session.created`` session, a template for the live one;
- the **user's turns**: items the client typed, and voice turns (speech start/stop, committed audio
  ms, transcript) that the server heard;
- the **model's responses**, in order: each a timed list of :class:`Step` from its
  ``response.created``, with its final status and usage.

Acknowledgements of client events (``session.updated``, item acks, errors, ...) are dropped: the
engine answers the live client itself. Recorded ids are kept as hints; the engine keeps them where
they stay unique. Everything is in the neutral (GA) form (:mod:`replay.wire.dialect`). Pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from replay.cassettes.cassette import (
    AUDIO_FIELD,
    MAX_T,
    Cassette,
    CassetteError,
    WebSocketSession,
    session_audio,
)
from replay.text import visible
from replay.wire.dialect import normalize

# Step kinds, in the order a response streams them; the engine renders each into its wire event.
STEP_OF: dict[str, str] = {
    "response.output_item.added": "item",
    "conversation.item.added": "held",
    "response.content_part.added": "part",
    "response.output_audio.delta": "audio",
    "response.output_audio_transcript.delta": "transcript",
    "response.output_text.delta": "text",
    "response.function_call_arguments.delta": "arguments",
    "response.output_audio.done": "audio_done",
    "response.output_audio_transcript.done": "transcript_done",
    "response.output_text.done": "text_done",
    "response.function_call_arguments.done": "arguments_done",
    "response.content_part.done": "part_done",
    "conversation.item.done": "item_held_done",
    "response.output_item.done": "item_done",
    "response.done": "done",
}
# Recorded frames that answer a client event: the live engine answers instead.
ACKS = frozenset({
    "session.created", "session.updated", "conversation.created", "transcription_session.updated",
    "conversation.item.truncated", "conversation.item.deleted", "conversation.item.retrieved",
    "input_audio_buffer.cleared", "error", "output_audio_buffer.cleared",
})
TRANSCRIPTION_PREFIX = "conversation.item.input_audio_transcription."
DEFAULT_SPEECH_S = 0.6  # a typed turn spoken aloud lasts this long between speech start and stop


@dataclass(frozen=True)
class Step:
    offset: float  # seconds after the response's response.created
    kind: str  # a value of STEP_OF, or "raw" for a frame passed on as recorded (rate_limits.updated)
    data: dict[str, Any]
    frame: int = -1  # the recorded frame it comes from, so a cut named on the recording finds its step


@dataclass
class ModelResponse:
    index: int
    t: float  # recorded time of its response.created
    steps: list[Step]
    frame: int = -1  # the recorded frame of its response.created

    @property
    def tools(self) -> list[str]:
        """Names of the function calls it makes: a client must answer them for the next turn."""
        return [s.data.get("name") or "?" for s in self.steps
                if s.kind == "item" and s.data.get("type") == "function_call"]


@dataclass
class UserTurn:
    """What the user did between two responses: typed items, or speech the server's VAD heard."""

    index: int
    kind: Literal["typed", "voice", "tool"]
    t: float  # recorded start: the first item typed, or speech_started
    gap: float  # seconds after the previous response ended (or the session opened)
    items: list[dict[str, Any]] = field(default_factory=list)  # as the client created them
    speech_s: float = DEFAULT_SPEECH_S  # speech_started → speech_stopped
    audio_start_ms: int | None = None  # recorded VAD offsets (voice turns)
    audio_end_ms: int | None = None
    item_id: str | None = None  # the recorded user item's id (voice turns)
    transcript: str | None = None
    responds: bool = True  # the recording answered it with a response

    @property
    def text(self) -> str | None:
        """What the user said or typed, for a spoken rendering of the turn."""
        if self.transcript is not None:
            return self.transcript
        for item in self.items:
            for part in item.get("content") or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    return str(part["text"])
        return None


@dataclass
class Script:
    dialect: str
    model: str | None
    session: dict[str, Any] | None  # the recorded session.created session, neutral
    turns: list[UserTurn]
    responses: list[ModelResponse]
    audio_cut_at_source: bool = False
    notes: list[str] = field(default_factory=list)
    client_events: list[dict[str, Any]] = field(default_factory=list)  # as recorded, for strict replay

    def position(self, frame: int) -> tuple[int, int] | None:
        """(response, step) of a recorded frame: step -1 is the response's response.created."""
        for response in self.responses:
            if response.frame == frame:
                return response.index, -1
            for index, step in enumerate(response.steps):
                if step.frame == frame:
                    return response.index, index
        return None



def compile_session(session: WebSocketSession, *, audio_cut_at_source: bool = False,
                    where: str = "session") -> Script:
    """The script of one recorded session (see module doc); `CassetteError` for a frame it cannot use."""
    check_session(session, where)
    frames = [(f.t, f.source, normalize(f.event, session.dialect) if f.event is not None and f.source == "server"
               else f.event) for f in session.frames]
    opening = next((e["session"] for _, src, e in frames if src == "server" and e is not None
                    and e.get("type") == "session.created" and isinstance(e.get("session"), dict)), None)
    responses: list[ModelResponse] = []
    turns: list[UserTurn] = []
    open_responses: dict[str, ModelResponse] = {}
    last_end = frames[0][0] if frames else 0.0
    pending: UserTurn | None = None  # the turn being built, until a response answers it
    speech_at: float | None = None
    notes: list[str] = []

    def start_turn(kind: Literal["typed", "voice", "tool"], t: float) -> UserTurn:
        nonlocal pending
        if pending is None or pending.kind != kind:
            pending = UserTurn(len(turns), kind, t, max(0.0, t - last_end), responds=False)
            turns.append(pending)
        return pending

    for frame, (t, source, event) in enumerate(frames):
        if event is None:
            continue
        etype = event.get("type", "")
        if source == "client":
            if etype == "conversation.item.create" and isinstance(event.get("item"), dict):
                item = event["item"]
                kind: Literal["typed", "tool"] = "tool" if item.get("type") == "function_call_output" else "typed"
                start_turn(kind, t).items.append(item)
            continue
        rid = _response_id(event)
        if etype == "response.created":
            response = ModelResponse(len(responses), t, [], frame)
            responses.append(response)
            open_responses[rid or ""] = response
            if pending is not None:
                pending.responds = True
                pending = None
            else:
                turns.append(UserTurn(len(turns), "typed", t, max(0.0, t - last_end), responds=True))
            continue
        owner = open_responses.get(rid or "") if rid is not None else None
        if owner is None and etype in ("conversation.item.added", "conversation.item.done"):
            owner = _owner(open_responses, event)
        if owner is not None and etype in STEP_OF:
            response = owner
            response.steps.append(Step(round(t - response.t, 6), STEP_OF[etype], _step_data(etype, event), frame))
            if etype == "response.done":
                open_responses.pop(rid or "", None)
                last_end = t
            continue
        if etype == "rate_limits.updated" and responses:
            last = responses[-1]
            last.steps.append(Step(round(t - last.t, 6), "raw", event, frame))
            continue
        if etype == "input_audio_buffer.speech_started":
            speech_at = t
            turn = start_turn("voice", t)
            turn.audio_start_ms = event.get("audio_start_ms")
            turn.item_id = event.get("item_id")
        elif etype == "input_audio_buffer.speech_stopped" and pending is not None and pending.kind == "voice":
            pending.audio_end_ms = event.get("audio_end_ms")
            pending.speech_s = max(0.0, t - (speech_at if speech_at is not None else t))
        elif etype.startswith(TRANSCRIPTION_PREFIX):
            speaker = next((u for u in reversed(turns) if u.item_id == event.get("item_id")), None)
            if speaker is not None and etype.endswith(".completed") and isinstance(event.get("transcript"), str):
                speaker.transcript = event["transcript"]
        elif etype in ACKS or etype in ("input_audio_buffer.committed", "conversation.item.added",
                                        "conversation.item.done", "conversation.item.created"):
            continue
        else:
            notes.append(f"{etype} at {t:.3f}s belongs to no response or turn: not replayed")
    client_events = [e for _, source, e in frames if source == "client" and e is not None]
    return Script(session.dialect, session.model, opening, turns, responses, audio_cut_at_source, notes,
                  client_events)


def _response_id(event: dict[str, Any]) -> str | None:
    rid = event.get("response_id")
    if isinstance(rid, str):
        return rid
    response = event.get("response")
    if isinstance(response, dict) and isinstance(response.get("id"), str):
        return str(response["id"])
    return None


def _owner(open_responses: dict[str, ModelResponse], event: dict[str, Any]) -> ModelResponse | None:
    """The response whose output item a conversation.item.added/done is about."""
    item_id = (event.get("item") or {}).get("id")
    for response in open_responses.values():
        if any(s.kind == "item" and s.data.get("id") == item_id for s in response.steps):
            return response
    return None


def _step_data(etype: str, event: dict[str, Any]) -> dict[str, Any]:
    """What a step needs from its recorded frame; ids and positions come from the live conversation."""
    if etype == "response.output_item.added":
        item = event.get("item") or {}
        return {k: item[k] for k in ("id", "type", "role", "name", "call_id") if k in item}
    if etype == "response.content_part.added":
        part = event.get("part") or {}
        return {"type": "audio" if part.get("type") in ("audio", "output_audio") else "text"}
    if etype in ("response.output_audio.delta", "response.output_audio_transcript.delta",
                 "response.output_text.delta", "response.function_call_arguments.delta"):
        return {"delta": event.get("delta")}
    if etype == "response.function_call_arguments.done":
        return {"arguments": event.get("arguments")}
    if etype == "response.done":  # how the model's response ended: completed, incomplete, failed
        raw = event.get("response") or {}
        return {"status": raw.get("status") or "completed", "status_details": raw.get("status_details"),
                "usage": raw.get("usage")}
    return {}


def script_of(cassette: Cassette, index: int) -> Script:
    """The script of a cassette's session, compiled once per loaded cassette."""
    cache: dict[int, Script] = cassette.__dict__.setdefault("_scripts", {})
    if index not in cache:
        session = cassette.sessions[index]
        cut = bool(cassette.metadata.get("audio_truncated_at_source"))
        cache[index] = compile_session(session, audio_cut_at_source=cut, where=session_path(cassette, index))
    return cache[index]


def session_path(cassette: Cassette, index: int) -> str:
    """Where a session sits in its file, as the loader names it: ``FILE: interactions[N].response.websocket``."""
    session = cassette.sessions[index]
    position = next(n for n, i in enumerate(cassette.interactions) if i is session)
    return f"{cassette.path or cassette.name}: interactions[{position}].response.websocket"


# ---------------------------------------------------------------------------- checking

# What the compiler, the engine and the views read of a recorded frame, by field: each must be what
# the protocol says it is (or absent, or null), or the cassette is refused with the frame's path.
Check = Callable[[Any], bool]


def _text(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _index(value: Any) -> bool:
    return value is None or (type(value) is int and 0 <= value <= 1_000_000)


MAX_MS = 24 * 3_600_000  # an offset in a session's audio, in ms: a day (a session lasts at most an hour)


def _ms(value: Any) -> bool:
    return value is None or (type(value) is int and 0 <= value <= MAX_MS)


def _mapping(value: Any) -> bool:
    return value is None or isinstance(value, dict)


def _block(value: Any) -> bool:
    """A settings block the engine reads into (``session.audio``): a mapping when present, never null."""
    return isinstance(value, dict)


def _texts(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _format(value: Any) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, dict) and _text(value.get("type")))


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _tokens(value: Any) -> bool:
    return value is None or value == "inf" or (type(value) is int and value >= 0)


def _list(value: Any) -> bool:
    return value is None or isinstance(value, list)


def _mappings(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(v, dict) for v in value))


def _text_or_mapping(value: Any) -> bool:
    return value is None or isinstance(value, str | dict)


_EXPECTED: dict[Check, str] = {
    _text: "a string", _index: "a whole number from 0 to 1000000",
    _ms: f"a whole number of ms from 0 to {MAX_MS}", _mapping: "a mapping", _block: "a mapping",
    _texts: "a list of strings",
    _format: "an audio format (a string, or a mapping with a string 'type')", _number: "a number",
    _tokens: "a whole number of tokens or 'inf'", _list: "a list", _mappings: "a list of mappings",
    _text_or_mapping: "a string or a mapping",
}
_EVENT: dict[str, Check] = {
    "event_id": _text, "response_id": _text, "item_id": _text, "previous_item_id": _text, "call_id": _text,
    "name": _text, "transcript": _text, "text": _text, "arguments": _text, "content_index": _index,
    "output_index": _index, "audio_start_ms": _ms, "audio_end_ms": _ms, "item": _mapping, "part": _mapping,
    "response": _mapping, "session": _mapping, "error": _mapping,
}
_ITEM: dict[str, Check] = {
    "id": _text, "type": _text, "role": _text, "status": _text, "name": _text, "call_id": _text,
    "arguments": _text, "output": _text, "object": _text, "content": _list,
}
_PART: dict[str, Check] = {"type": _text, "text": _text, "transcript": _text}
_RESPONSE: dict[str, Check] = {
    "id": _text, "status": _text, "object": _text, "conversation_id": _text, "status_details": _mapping,
    "usage": _mapping, "metadata": _mapping, "output_modalities": _texts, "modalities": _texts,
    "output": _list,
}
_SESSION: dict[str, Check] = {
    "audio": _block, "type": _text, "model": _text, "instructions": _text, "output_modalities": _texts,
    "modalities": _texts, "input_audio_format": _format, "output_audio_format": _format, "turn_detection": _mapping,
    "input_audio_transcription": _mapping, "input_audio_noise_reduction": _mapping,
    "tools": _mappings, "tool_choice": _text_or_mapping, "voice": _text_or_mapping,
    "temperature": _number, "speed": _number, "max_output_tokens": _tokens, "max_response_output_tokens": _tokens,
}
_AUDIO: dict[str, Check] = {"input": _block, "output": _block}
_AUDIO_SIDE: dict[str, Check] = {"format": _format, "turn_detection": _mapping, "transcription": _mapping,
                                 "noise_reduction": _mapping, "voice": _text_or_mapping, "speed": _number}
_TEXT_DELTAS = frozenset({"response.output_audio_transcript.delta", "response.output_text.delta",
                          "response.function_call_arguments.delta", "response.audio_transcript.delta",
                          "response.text.delta"})


def _fields(obj: dict[str, Any], checks: dict[str, Check], at: str) -> None:
    for key, check in checks.items():
        if key in obj and not check(obj[key]):
            null = " (or null)" if check(None) else ""
            raise CassetteError(f"{at}.{key}: must be {_EXPECTED[check]}{null}, got {_shown(obj[key])}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def check_session(session: WebSocketSession, where: str = "session") -> None:
    """Every field of every frame that replay, `check` and `show` read is of the type the protocol says.

    The loader checked the frames themselves (times, sources, events with a string type, audio sizes);
    this checks what is inside the events, so no recorded value reaches the engine, the players or the
    wire in a shape they cannot take: a cassette is refused here with the frame's path instead.
    """
    last = 0.0
    audio = 0
    for index, frame in enumerate(session.frames):
        at = f"{where}.frames[{index}]"
        t = frame.t
        if type(t) is not float or not last <= t <= MAX_T or frame.source not in ("client", "server") \
                or not isinstance(frame.text, str | None) or not isinstance(frame.binary, bytes | None):
            raise CassetteError(f"{at}: not a frame the loader makes (t, from, text or binary)")
        last = t
        event = frame.event
        if event is None:
            if frame.text is None and frame.binary is None:
                raise CassetteError(f"{at}: needs one of 'event', 'text' or 'binary'")
            continue
        if not isinstance(event, dict):
            raise CassetteError(f"{at}.event: must be a mapping with a string 'type'")
        check_event(event, f"{at}.event")
        audio = session_audio(audio, event, f"{at}.event")


MAX_TYPE = 200  # characters of an event's type; the protocol's longest is under 60


def check_event(event: dict[str, Any], at: str) -> None:
    """One recorded event (a mapping with a string ``type``), as `check_session` checks each; ``at`` names it."""
    etype = event.get("type")
    if not isinstance(etype, str):
        raise CassetteError(f"{at}: must be a mapping with a string 'type'")
    if len(etype) > MAX_TYPE or visible(etype) != etype:  # it names cuts and cases on every console and report
        raise CassetteError(f"{at}.type: must be an event name (at most {MAX_TYPE} characters, no control "
                            f"characters), got {_shown(etype)}")
    _fields(event, _EVENT, at)
    if etype in _TEXT_DELTAS and not _text(event.get("delta")):
        raise CassetteError(f"{at}.delta: must be a string (or null), got {_shown(event['delta'])}")
    item = event.get("item")
    if item is not None:
        _fields(item, _ITEM, f"{at}.item")
        for n, part in enumerate(item.get("content") or []):
            if not isinstance(part, dict):
                raise CassetteError(f"{at}.item.content[{n}]: must be a mapping, got {_shown(part)}")
            _fields(part, _PART, f"{at}.item.content[{n}]")
    if event.get("part") is not None:
        _fields(event["part"], _PART, f"{at}.part")
    if event.get("response") is not None:
        _fields(event["response"], _RESPONSE, f"{at}.response")
    if event.get("session") is not None:
        _check_session_object(event["session"], f"{at}.session")
    _check_json(event, at, etype)


def _check_session_object(session: dict[str, Any], at: str) -> None:
    _fields(session, _SESSION, at)
    audio = session.get("audio", {})
    _fields(audio, _AUDIO, f"{at}.audio")
    for side in ("input", "output"):
        if side in audio:
            _fields(audio[side], _AUDIO_SIDE, f"{at}.audio.{side}")


def _check_json(event: dict[str, Any], at: str, etype: str) -> None:
    """What is sent on is JSON: no YAML timestamps, sets or binary; an audio payload is checked by the loader."""
    key = AUDIO_FIELD.get(etype)
    payload = event.get(key) if key is not None else None
    try:
        json.dumps({k: v for k, v in event.items() if k != key} if isinstance(payload, str) else event)
    except (TypeError, ValueError):
        raise CassetteError(f"{at}: {_not_json(event) or 'is not JSON data'}") from None


def _not_json(value: Any, path: str = "") -> str | None:
    """Where in the value the first thing JSON cannot hold is."""
    if isinstance(value, dict):
        for key, child in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"{path or 'the event'}: a key JSON cannot hold ({type(key).__name__})"
            found = _not_json(child, f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    if isinstance(value, list):
        return next((found for n, child in enumerate(value) if (found := _not_json(child, f"{path}[{n}]"))), None)
    if value is None or isinstance(value, str | int | float | bool):
        return None
    return f"{path}: {type(value).__name__} is not JSON data (a YAML tag such as !!binary, !!set or a timestamp?)"
