"""The conversation engine: what a Realtime server knows, and how it answers a client event.

Sans-I/O in the manner of h11: no sockets, no clock, no tasks. Feed it every client frame it
receives (:meth:`Conversation.receive_client`) and every server event that goes out
(:meth:`Conversation.send_server`). State changes only through server events, recorded or
synthesized, so a replayed recording and the engine's own answers can never disagree about what
the server holds. A client event is validated against the rule table (:mod:`replay.rules`) in the
precedence of the reference's §11; the answer comes back as events the caller may send.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from replay import protocol as p
from replay.dialect import event_name, session_to
from replay.protocol import Dialect, IdFactory
from replay.rules import RuleBook

if TYPE_CHECKING:
    from replay.script import Step

Event = dict[str, Any]

_SILENCE_CACHE: dict[int, str] = {}


def silence_b64(nbytes: int) -> str:
    """Base64 of ``nbytes`` zero bytes (pcm16 and G.711 silence alike for our purposes)."""
    cached = _SILENCE_CACHE.get(nbytes)
    if cached is None:
        cached = base64.b64encode(bytes(nbytes)).decode("ascii")
        if len(_SILENCE_CACHE) < 256:
            _SILENCE_CACHE[nbytes] = cached
    return cached


@dataclass
class Part:
    """One content part of a model-output item, as the response stream built it."""

    type: str  # "audio" | "text" (content_part.added part.type)
    audio_bytes: int = 0
    transcript: str | None = ""
    text: str = ""
    done: bool = False
    truncated: bool = False
    deltas: int = 0


@dataclass
class Item:
    id: str
    type: str
    role: str | None
    status: str
    content: list[dict[str, Any]]  # as last announced by the server (no audio bytes)
    held: bool  # the conversation holds it: conversation.item.added/created was sent
    response_id: str | None = None
    output_index: int = 0
    parts: list[Part] = field(default_factory=list)
    output_done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # name/call_id/arguments/output

    @property
    def audio_bytes(self) -> int:
        return sum(part.audio_bytes for part in self.parts if part.type == "audio")


@dataclass
class Response:
    id: str
    raw: dict[str, Any]
    out_of_band: bool
    items: list[str] = field(default_factory=list)
    text_only: bool = False  # the live request asked for text: recorded audio is rendered as its transcript
    cancelling: bool = False  # a cancel was accepted; its tail is on the way
    recorded_items: dict[str, str] = field(default_factory=dict)  # recorded item id -> live item id


@dataclass(frozen=True)
class Snapshot:
    """What the server holds of the latest response at one instant: the input of a verdict."""

    response_id: str | None
    response_active: bool
    modalities: tuple[str, ...]
    item_id: str | None  # the latest output item of that response
    item_type: str | None
    item_held: bool
    part_types: tuple[str, ...]
    audio_deltas: int
    produced_ms: int
    interrupt_response: bool

    @property
    def audio(self) -> bool:
        """Whether the item is (or will be) audio: its parts say so, else the response's modalities."""
        if self.part_types:
            return "audio" in self.part_types
        return self.item_type in (None, "message") and "audio" in self.modalities


@dataclass
class Received:
    """What the engine made of one client frame."""

    event: Event | None  # the parsed event, None when the frame was not a JSON object
    reactions: list[Event]  # what the server answers when no recording answers for it
    rule: str | None = None  # the rule that refused it, if any

    @property
    def type(self) -> str | None:
        t = self.event.get("type") if self.event is not None else None
        return t if isinstance(t, str) else None


class Refusal(Exception):
    """Raised inside validation to stop at the first rule that fires (§11 precedence)."""

    def __init__(self, rule: str, **fields: Any) -> None:
        super().__init__(rule)
        self.rule = rule
        self.fields = fields


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _require(obj: dict[str, Any], key: str, path: str) -> Any:
    if key not in obj or obj[key] is None:
        raise Refusal("V-missing", param=path)
    return obj[key]


def _check_type(value: Any, kind: type | tuple[type, ...], path: str, expected: str) -> None:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise Refusal("V-type", param=path, expected=expected, got=_json_type(value))


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: nested objects merge, anything else (null included) replaces."""
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


_EMPTY_USAGE_DETAILS = {"text_tokens": 0, "audio_tokens": 0}


def empty_usage(dialect: Dialect) -> dict[str, Any]:
    """Zeroed usage in the dialect's shape; some clients crash on `usage: null` (pipecat beta)."""
    image = {"image_tokens": 0} if dialect == "ga" else {}
    return {
        "total_tokens": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "input_token_details": {
            **_EMPTY_USAGE_DETAILS, **image, "cached_tokens": 0,
            "cached_tokens_details": {**_EMPTY_USAGE_DETAILS, **image},
        },
        "output_token_details": dict(_EMPTY_USAGE_DETAILS),
    }


class Conversation:
    """Server-side state of one Realtime session, and the rules that guard it."""

    def __init__(
        self,
        dialect: Dialect,
        *,
        rules: RuleBook | None = None,
        ids: IdFactory | None = None,
        model: str | None = None,
        audio_quantum_ms: int = 1,
        created_at: int = 0,
        template: dict[str, Any] | None = None,
        enforce_t2: bool = True,
    ) -> None:
        self.dialect: Dialect = dialect
        self.rules = rules or RuleBook()
        self.ids = ids or IdFactory()
        self.audio_quantum_ms = max(1, audio_quantum_ms)
        self.session: dict[str, Any] = p.default_session(
            dialect, session_id=self.ids("sess"), model=model, created_at=created_at
        )
        if template is not None:  # the recorded session's settings, in this client's dialect
            recorded = session_to(template, dialect)
            for key in ("id", "object", "expires_at", "client_secret"):
                recorded.pop(key, None)
            if model:
                recorded.pop("model", None)
            self.session = _merge(self.session, recorded)
        self.enforce_t2 = enforce_t2  # off where the recording's audio was cut at the source
        self.conversation_id = self.ids("conv")
        self.items: dict[str, Item] = {}  # insertion order == conversation order
        self.response: Response | None = None
        self.last_response: Response | None = None
        self.input_buffer_bytes = 0  # appended since the last commit
        self.input_audio_ms = 0.0  # appended over the whole session (VAD's clock)
        self.assistant_audio = False  # any model audio produced (voice lock, T11)
        self.notes: list[str] = []  # server-side inconsistencies seen in the frames sent
        self._requested: str | None = None  # id reserved by an accepted response.create
        self._params: dict[str, Any] = {}  # the options of that response.create
        self._used_ids: set[str] = set()  # item ids ever used, so a recorded id is never reused
        self._speech_item: str | None = None  # the user item that the speech being heard becomes
        self._out_of_band_pending = False
        self._vad_ms = 0
        self._on_server: dict[str, Callable[[Event], Event]] = self._server_handlers()
        self._on_client: dict[str, Callable[[Event], list[Event]]] = self._client_handlers()

    def session_created(self) -> list[Event]:
        """The first frames of every session: the live session (beta adds conversation.created, §1.3)."""
        events = [self._ev("session.created", session=copy.deepcopy(self.session))]
        if self.dialect == "beta":
            events.append(self._ev("conversation.created",
                                   conversation={"id": self.conversation_id, "object": "realtime.conversation"}))
        return events

    # ------------------------------------------------------------------ client side

    def receive_client(self, data: str | bytes) -> Received:
        """Validate one client frame; return the server's answer (not yet applied to state)."""
        if isinstance(data, bytes | bytearray):
            return self._refuse(None, "T17-binary")
        try:
            event = json.loads(data)
        except (json.JSONDecodeError, RecursionError) as exc:
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "nesting too deep"
            return self._refuse(None, "T17-json", detail=f"{detail} at line 1 column {getattr(exc, 'colno', 1)}")
        if not isinstance(event, dict):
            return self._refuse(None, "T17-missing-type")
        return self.receive_event(event)

    def receive_event(self, event: Event) -> Received:
        """As :meth:`receive_client`, for an event that is already parsed."""
        event_id = event.get("event_id")
        echo = event_id if isinstance(event_id, str) else None
        etype = event.get("type")
        if not isinstance(etype, str):
            return self._refuse(event, "T17-missing-type", echo)
        handler = self._on_client.get(etype)
        if handler is None:
            return self._refuse(event, "T17-unknown-type", echo, value=etype,
                                supported=p.oxford_list(p.CLIENT_TYPES[self.dialect]))
        try:
            if event_id is not None and not isinstance(event_id, str):
                raise Refusal("V-type", param="event_id", expected="a string", got=_json_type(event_id))
            return Received(event, handler(event))
        except Refusal as refusal:
            return self._refuse(event, refusal.rule, echo, **refusal.fields)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
            # State the recording left malformed: answer as the real server does when it trips.
            self.notes.append(f"{etype}: server error while answering ({type(exc).__name__}: {exc})")
            return self._refuse(event, "S1", echo)

    def _refuse(self, event: Event | None, rule: str, echo: str | None = None, **fields: Any) -> Received:
        error = self.rules.error(rule, event_id=echo, server_event_id=self.ids("event"), **fields)
        return Received(event, [error], rule)

    def _client_handlers(self) -> dict[str, Callable[[Event], list[Event]]]:
        handlers: dict[str, Callable[[Event], list[Event]]] = {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.truncate": self._truncate,
            "conversation.item.delete": self._delete,
            "conversation.item.retrieve": self._retrieve,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }
        if self.dialect == "ga":
            handlers["session.close"] = lambda event: []
            handlers["session.input_audio_buffer.append"] = lambda event: []
        else:
            handlers["transcription_session.update"] = self._transcription_session_update
            handlers["output_audio_buffer.clear"] = self._output_audio_buffer_clear
        return handlers

    def _ev(self, etype: str, **fields: Any) -> Event:
        return {"type": etype, "event_id": self.ids("event"), **fields}

    # session.update ---------------------------------------------------------------

    def _session_update(self, event: Event) -> list[Event]:
        update = _require(event, "session", "session")
        _check_type(update, dict, "session", "an object")
        if self.dialect == "ga":
            self._validate_ga_session(update)
        else:
            self._validate_beta_session(update)
        merged = _merge(self.session, copy.deepcopy(update))  # never alias the client's own event
        if self.dialect == "ga":
            transcription = merged.get("audio", {}).get("input", {}).get("transcription")
            if isinstance(transcription, dict):
                transcription.setdefault("language", None)
                transcription.setdefault("prompt", None)
        return [self._ev("session.updated", session=merged)]

    def _validate_ga_session(self, update: dict[str, Any]) -> None:
        if "type" not in update:
            raise Refusal("T14")
        if update["type"] not in ("realtime", "transcription"):
            raise Refusal("T13", value=update["type"], param="session.type",
                          supported=p.oxford_list(["realtime", "transcription"]))
        self._unknown(update, p.SESSION_KEYS["ga"], "session")
        audio = update.get("audio")
        if audio is not None:
            _check_type(audio, dict, "session.audio", "an object")
            self._unknown(audio, frozenset({"input", "output"}), "session.audio")
            for side, keys in (("input", p.GA_AUDIO_INPUT_KEYS), ("output", p.GA_AUDIO_OUTPUT_KEYS)):
                block = audio.get(side)
                if block is None:
                    continue
                _check_type(block, dict, f"session.audio.{side}", "an object")
                self._unknown(block, keys, f"session.audio.{side}")
                fmt = block.get("format")
                if fmt is not None:
                    self._ga_format(fmt, f"session.audio.{side}.format")
            turn = (audio.get("input") or {}).get("turn_detection")
            self._turn_detection(turn, "session.audio.input.turn_detection")
            voice = (audio.get("output") or {}).get("voice")
            current = self.session.get("audio", {}).get("output", {}).get("voice")
            self._voice_lock(voice, current)
        modalities = update.get("output_modalities")
        if modalities is not None:
            _check_type(modalities, list, "session.output_modalities", "an array of strings")
            for i, modality in enumerate(modalities):
                if modality not in ("audio", "text"):
                    raise Refusal("T13", value=modality, param=f"session.output_modalities[{i}]",
                                  supported=p.oxford_list(["text", "audio"]))

    def _validate_beta_session(self, update: dict[str, Any]) -> None:
        self._unknown(update, p.SESSION_KEYS["beta"], "session")
        for key in ("input_audio_format", "output_audio_format"):
            value = update.get(key)
            if value is not None and value not in p.BETA_AUDIO_FORMATS:
                raise Refusal("T13", value=value, param=f"session.{key}",
                              supported=p.oxford_list(p.BETA_AUDIO_FORMATS))
        self._turn_detection(update.get("turn_detection"), "session.turn_detection")
        self._voice_lock(update.get("voice"), self.session.get("voice"))

    def _unknown(self, obj: dict[str, Any], known: frozenset[str], path: str) -> None:
        for key in obj:
            if key not in known:
                raise Refusal("T12", param=f"{path}.{key}")

    def _ga_format(self, fmt: Any, path: str) -> None:
        _check_type(fmt, dict, path, "an object")
        self._unknown(fmt, frozenset({"type", "rate"}), path)
        if fmt.get("type") not in p.GA_AUDIO_FORMATS:
            raise Refusal("T13", value=fmt.get("type"), param=f"{path}.type",
                          supported=p.oxford_list(p.GA_AUDIO_FORMATS))
        rate = fmt.get("rate")
        if rate is not None:
            _check_type(rate, int, f"{path}.rate", "an integer")
            if rate < 24000:
                raise Refusal("T15", param=f"{path}.rate", value=rate)

    def _turn_detection(self, turn: Any, path: str) -> None:
        if turn is None:
            return
        _check_type(turn, dict, path, "an object")
        self._unknown(turn, p.TURN_DETECTION_KEYS, path)
        kind = turn.get("type")
        if kind is not None and kind not in p.TURN_DETECTION_TYPES:
            raise Refusal("T13", value=kind, param=f"{path}.type", supported=p.oxford_list(p.TURN_DETECTION_TYPES))

    def _voice_lock(self, voice: Any, current: Any) -> None:
        if voice is not None and voice != current and self.assistant_audio:
            raise Refusal("T11")

    def _transcription_session_update(self, event: Event) -> list[Event]:
        update = _require(event, "session", "session")
        _check_type(update, dict, "session", "an object")
        return [self._ev("transcription_session.updated", session=update)]

    def _output_audio_buffer_clear(self, event: Event) -> list[Event]:
        return [self._ev("output_audio_buffer.cleared", response_id=self.response.id if self.response else None)]

    # input audio buffer --------------------------------------------------------------

    @property
    def input_bytes_per_ms(self) -> int:
        if self.dialect == "ga":
            return p.format_bytes_per_ms(self.session.get("audio", {}).get("input", {}).get("format"))
        return p.format_bytes_per_ms(self.session.get("input_audio_format"))

    @property
    def output_bytes_per_ms(self) -> int:
        if self.dialect == "ga":
            return p.format_bytes_per_ms(self.session.get("audio", {}).get("output", {}).get("format"))
        return p.format_bytes_per_ms(self.session.get("output_audio_format"))

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        if self.dialect == "ga":
            turn = self.session.get("audio", {}).get("input", {}).get("turn_detection")
        else:
            turn = self.session.get("turn_detection")
        return turn if isinstance(turn, dict) else None

    def _append(self, event: Event) -> list[Event]:
        audio = _require(event, "audio", "audio")
        if isinstance(audio, dict) and "$audio" in audio:  # a compacted payload from a cassette
            size = int(audio["$audio"].get("bytes", 0))
        else:
            _check_type(audio, str, "audio", "a string")
            size = p.b64_decoded_len(audio)
        # The buffer belongs to the client: appends change it with no server event to carry it.
        self.input_buffer_bytes += size
        self.input_audio_ms += size / self.input_bytes_per_ms
        return []

    def _commit(self, event: Event) -> list[Event]:
        buffered_ms = self.input_buffer_bytes / self.input_bytes_per_ms
        if buffered_ms < 100:
            raise Refusal("T8", buffered_ms=buffered_ms)
        item_id = self.ids("item")
        previous = self._last_item_id()
        item = {"id": item_id, "type": "message", "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": None}]}
        return [self._ev("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id),
                *self._item_announcements(previous, item)]

    def _clear(self, event: Event) -> list[Event]:
        return [self._ev("input_audio_buffer.cleared")]

    # conversation items ----------------------------------------------------------------

    def _last_item_id(self) -> str | None:
        """The last item the conversation holds (an output item not yet added is not in it)."""
        return next((key for key in reversed(self.items) if self.items[key].held), None)

    def _item_announcements(self, previous: str | None, item: dict[str, Any]) -> list[Event]:
        if self.dialect == "beta":
            return [self._ev("conversation.item.created", previous_item_id=previous,
                             item={**item, "object": "realtime.item"})]
        return [self._ev("conversation.item.added", previous_item_id=previous, item=item),
                self._ev("conversation.item.done", previous_item_id=previous, item=item)]

    def _item_create(self, event: Event) -> list[Event]:
        item = _require(event, "item", "item")
        _check_type(item, dict, "item", "an object")
        itype = _require(item, "type", "item.type")
        if itype not in ("message", "function_call", "function_call_output"):
            raise Refusal("T13", value=itype, param="item.type",
                          supported=p.oxford_list(["message", "function_call", "function_call_output"]))
        out: dict[str, Any] = {"id": None, "type": itype, "status": "completed"}
        if itype == "message":
            role = _require(item, "role", "item.role")
            if role not in ("user", "assistant", "system"):
                raise Refusal("T13", value=role, param="item.role",
                              supported=p.oxford_list(["user", "assistant", "system"]))
            content = _require(item, "content", "item.content")
            _check_type(content, list, "item.content", "an array of objects")
            out["role"] = role
            out["content"] = [self._content_part(role, part, f"item.content[{i}]") for i, part in enumerate(content)]
        elif itype == "function_call":
            for key in ("name", "call_id", "arguments"):
                _check_type(_require(item, key, f"item.{key}"), str, f"item.{key}", "a string")
                out[key] = item[key]
        else:
            for key in ("call_id", "output"):
                _check_type(_require(item, key, f"item.{key}"), str, f"item.{key}", "a string")
                out[key] = item[key]
        previous = event.get("previous_item_id")
        if previous in (None, ""):
            previous = self._last_item_id()
        elif previous == "root":
            previous = None
        elif not isinstance(previous, str):
            raise Refusal("V-type", param="previous_item_id", expected="a string", got=_json_type(previous))
        elif previous not in self.items:
            raise Refusal("T6", previous_item_id=previous)
        item_id = item.get("id")
        if item_id is not None:
            _check_type(item_id, str, "item.id", "a string")
        else:
            item_id = self.ids("item")
        if item_id in self.items:  # T7: accepted; the duplicate points at itself
            previous = item_id
        out["id"] = item_id
        return self._item_announcements(previous, out)

    def _content_part(self, role: str, part: Any, path: str) -> dict[str, Any]:
        _check_type(part, dict, path, "an object")
        ptype = _require(part, "type", f"{path}.type")
        if role == "assistant":
            expected = p.ASSISTANT_TEXT[self.dialect]
            if ptype != expected and self.dialect == "ga":
                raise Refusal("T13c", value=ptype, expected=expected, param=f"{path}.type")
            if ptype not in ("text", "output_text"):
                raise Refusal("T13", value=ptype, param=f"{path}.type", supported=p.oxford_list([expected]))
            return {"type": ptype, "text": part.get("text", "")}
        allowed = ("input_text", "input_audio", "input_image")
        if ptype not in allowed:
            raise Refusal("T13", value=ptype, param=f"{path}.type", supported=p.oxford_list(list(allowed)))
        if ptype == "input_audio":
            return {"type": "input_audio", "transcript": part.get("transcript")}
        return dict(part)

    def _held(self, event: Event, rule: str) -> Item:
        item_id = _require(event, "item_id", "item_id")
        _check_type(item_id, str, "item_id", "a string")
        item = self.items.get(item_id)
        if item is None or not item.held:
            raise Refusal(rule, item_id=item_id)
        return item

    def _truncate(self, event: Event) -> list[Event]:
        item_id = _require(event, "item_id", "item_id")
        _check_type(item_id, str, "item_id", "a string")
        content_index = _require(event, "content_index", "content_index")
        _check_type(content_index, int, "content_index", "an integer")
        audio_end_ms = _require(event, "audio_end_ms", "audio_end_ms")
        _check_type(audio_end_ms, int, "audio_end_ms", "an integer")
        if audio_end_ms < 0:
            raise Refusal("V-min", param="audio_end_ms", minimum=0, value=audio_end_ms)
        item = self._held(event, "T3")
        produced = self.produced_ms(item, content_index)
        if produced is None:
            raise Refusal("T1")
        if audio_end_ms > produced and self.enforce_t2:
            raise Refusal("T2", produced_ms=produced, audio_end_ms=audio_end_ms)
        return [self._ev("conversation.item.truncated", item_id=item_id, content_index=content_index,
                         audio_end_ms=audio_end_ms)]

    def produced_ms(self, item: Item, content_index: int = 0) -> int | None:
        """Audio the server holds for a part in ms, or None when the part is not truncatable audio."""
        if item.type != "message" or item.role != "assistant" or not 0 <= content_index < len(item.parts):
            return None
        part = item.parts[content_index]
        if part.type != "audio" or part.audio_bytes <= 0:
            return None
        ms = part.audio_bytes // self.output_bytes_per_ms
        return ms - ms % self.audio_quantum_ms

    def _delete(self, event: Event) -> list[Event]:
        item = self._held(event, "T4")
        return [self._ev("conversation.item.deleted", item_id=item.id)]

    def _retrieve(self, event: Event) -> list[Event]:
        item = self._held(event, "T5")
        obj = self.item_object(item)
        for part, content in zip(item.parts, obj.get("content", []), strict=False):
            if part.type == "audio":
                content["audio"] = silence_b64(part.audio_bytes)
        return [self._ev("conversation.item.retrieved", item=obj)]

    # responses -------------------------------------------------------------------------

    def _response_create(self, event: Event) -> list[Event]:
        params = event.get("response")
        if params is not None:
            _check_type(params, dict, "response", "an object")
        params = params or {}
        self._validate_response(params)
        out_of_band = params.get("conversation") == "none"
        if not out_of_band:
            active = self.response.id if self.response and not self.response.out_of_band else self._requested
            if active:
                raise Refusal("T9", response_id=active)
        response_id = self.ids("resp")
        self._requested = None if out_of_band else response_id
        self._out_of_band_pending = out_of_band
        self._params = params
        created = self._response_object(response_id, "in_progress", None, [], None, params)
        return [self._ev("response.created", response=created)]

    def _validate_response(self, params: dict[str, Any]) -> None:
        conversation = params.get("conversation")
        if conversation is not None and conversation not in ("auto", "none"):
            raise Refusal("T13", value=conversation, param="response.conversation",
                          supported=p.oxford_list(["auto", "none"]))
        key = "output_modalities" if self.dialect == "ga" else "modalities"
        modalities = params.get(key)
        if modalities is not None:
            _check_type(modalities, list, f"response.{key}", "an array of strings")
            for i, modality in enumerate(modalities):
                if modality not in ("audio", "text"):
                    raise Refusal("T13", value=modality, param=f"response.{key}[{i}]",
                                  supported=p.oxford_list(["text", "audio"]))
        for name in ("instructions",):
            if params.get(name) is not None:
                _check_type(params[name], str, f"response.{name}", "a string")

    def response_modalities(self, params: dict[str, Any]) -> list[str]:
        """What a response outputs: the request's modalities, else the live session's."""
        if self.dialect == "ga":
            value = params.get("output_modalities") or self.session.get("output_modalities") or ["audio"]
        else:
            value = params.get("modalities") or self.session.get("modalities") or ["audio", "text"]
        return list(value)

    def _response_object(self, response_id: str, status: str, details: Any, output: list[Any], usage: Any,
                         params: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = {"object": "realtime.response", "id": response_id, "status": status,
                               "status_details": details, "output": output}
        audio_out = self.session.get("audio", {}).get("output", {}) if self.dialect == "ga" else {}
        requested = (params.get("audio") or {}).get("output") or {} if self.dialect == "ga" else {}
        if self.dialect == "ga":
            obj["conversation_id"] = None if params.get("conversation") == "none" else self.conversation_id
            obj["output_modalities"] = self.response_modalities(params)
            obj["max_output_tokens"] = params.get("max_output_tokens", self.session.get("max_output_tokens", "inf"))
            obj["audio"] = {"output": {"format": requested.get("format", audio_out.get("format")),
                                       "voice": requested.get("voice", audio_out.get("voice"))}}
        else:
            obj["modalities"] = self.response_modalities(params)
            obj["voice"] = params.get("voice", self.session.get("voice"))
            obj["output_audio_format"] = params.get("output_audio_format", self.session.get("output_audio_format"))
            obj["temperature"] = params.get("temperature", self.session.get("temperature"))
            obj["max_output_tokens"] = params.get("max_response_output_tokens",
                                                  self.session.get("max_response_output_tokens", "inf"))
        obj["usage"] = usage
        obj["metadata"] = params.get("metadata")
        return obj

    def _response_cancel(self, event: Event) -> list[Event]:
        wanted = event.get("response_id")
        if wanted is not None:
            _check_type(wanted, str, "response_id", "a string")
        if self.response is None or (wanted and wanted != self.response.id):
            raise Refusal("T10")
        if self.response.cancelling:
            return []  # the first cancel's tail is on its way; the server says nothing twice
        self.response.cancelling = True
        return self.cancel_tail("client_cancelled")

    # --------------------------------------------------------------- model output (steps)

    def render_step(self, step: Step) -> list[Event]:
        """The wire events of one recorded model-output step, under the live response's ids.

        Not applied: the caller sends each through :meth:`send_server`, in order, before the next.
        """
        kind, data = step.kind, step.data
        if kind == "raw":  # session-level frames the response brought (rate_limits.updated)
            return [{**data, "event_id": self.ids("event")}]
        response = self.response
        if response is None:
            return []
        if kind == "done":
            return [self._response_done(response, step)]
        if kind == "item":
            return [self._output_item_added(response, data)]
        item = self._current_item(response)
        if item is None:
            return []
        at = {"response_id": response.id, "item_id": item.id, "output_index": item.output_index}
        part_at = {**at, "content_index": max(0, len(item.parts) - 1)}
        audio_part = bool(item.parts) and item.parts[-1].type == "audio"
        text = response.text_only
        if kind == "held":
            if response.out_of_band:
                return []
            name = event_name("conversation.item.added", self.dialect)
            return [self._ev(str(name), previous_item_id=self._last_item_id(), item=self.item_object(item))]
        if kind == "item_held_done":
            if response.out_of_band or self.dialect == "beta":
                return []
            obj = self.item_object(item, status="completed")
            return [self._ev("conversation.item.done", previous_item_id=self._previous_of(item.id), item=obj)]
        if kind == "item_done":
            return [self._ev("response.output_item.done", response_id=response.id, output_index=item.output_index,
                             item=self.item_object(item, status="completed"))]
        if kind == "part":
            ptype = "text" if text else data.get("type", "text")
            added = {"type": "audio", "transcript": ""} if ptype == "audio" else {"type": "text", "text": ""}
            return [self._ev("response.content_part.added", **at, content_index=len(item.parts), part=added)]
        if kind == "audio":
            if text or not audio_part:
                return []
            delta = data.get("delta")
            if isinstance(delta, dict):  # compacted in the cassette: that many bytes of silence
                delta = silence_b64(int(delta.get("$audio", {}).get("bytes", 0)))
            return [self._ev(p.AUDIO_DELTA[self.dialect], **part_at, delta=delta or "")]
        if kind in ("transcript", "text"):
            delta = data.get("delta") or ""
            if audio_part:
                return [self._ev(p.TRANSCRIPT_DELTA[self.dialect], **part_at, delta=delta)]
            return [self._ev(p.TEXT_DELTA[self.dialect], **part_at, delta=delta)]
        if kind == "audio_done":
            return [self._ev(p.AUDIO_DONE[self.dialect], **part_at)] if audio_part else []
        if kind in ("transcript_done", "text_done"):
            if not item.parts:
                return []
            part = item.parts[-1]
            if audio_part:
                return [self._ev(p.TRANSCRIPT_DONE[self.dialect], **part_at, transcript=part.transcript or "")]
            return [self._ev(p.TEXT_DONE[self.dialect], **part_at, text=part.text)]
        if kind == "part_done":
            if not item.parts:
                return []
            part = item.parts[-1]
            final = {"type": "audio", "transcript": part.transcript or ""} if part.type == "audio" else \
                {"type": "text", "text": part.text}
            return [self._ev("response.content_part.done", **part_at, part=final)]
        if kind == "arguments":
            item.extra["arguments"] = item.extra.get("arguments", "") + str(data.get("delta") or "")
            return [self._ev("response.function_call_arguments.delta", **at, call_id=item.extra.get("call_id"),
                             delta=data.get("delta") or "")]
        if kind == "arguments_done":
            arguments = data.get("arguments")
            if isinstance(arguments, str):
                item.extra["arguments"] = arguments
            return [self._ev("response.function_call_arguments.done", **at, call_id=item.extra.get("call_id"),
                             name=item.extra.get("name"), arguments=item.extra.get("arguments", ""))]
        return []

    def _current_item(self, response: Response) -> Item | None:
        return self.items.get(response.items[-1]) if response.items else None

    def _output_item_added(self, response: Response, data: dict[str, Any]) -> Event:
        recorded = data.get("id")
        item_id = recorded if isinstance(recorded, str) and recorded not in self.items \
            and recorded not in self._used_ids else self.ids("item")
        self._used_ids.add(item_id)
        if isinstance(recorded, str):
            response.recorded_items[recorded] = item_id
        obj: dict[str, Any] = {"id": item_id, "type": data.get("type", "message"), "status": "in_progress"}
        if obj["type"] == "message":
            obj.update(role=data.get("role", "assistant"), content=[])
        else:
            obj.update(name=data.get("name"), call_id=data.get("call_id"), arguments="")
        if self.dialect == "beta":
            obj["object"] = "realtime.item"
        return self._ev("response.output_item.added", response_id=response.id, output_index=len(response.items),
                        item=obj)

    def _response_done(self, response: Response, step: Step | None) -> Event:
        data = step.data if step is not None else {}
        status = data.get("status", "completed")
        final = dict(response.raw)
        outputs = [self.item_object(self.items[i]) for i in response.items if i in self.items]
        final.update(status=status, status_details=data.get("status_details"), output=outputs,
                     usage=data.get("usage") or empty_usage(self.dialect))
        return self._ev("response.done", response=final)

    def finish_empty(self) -> list[Event]:
        """No recorded response is left to play: the honest answer is an empty, completed response."""
        return [self._response_done(self.response, None)] if self.response is not None else []

    def cancel_tail(self, reason: str) -> list[Event]:
        """The `.done` frames that close an active response, ending in `response.done` cancelled."""
        response = self.response
        if response is None:
            return []
        events: list[Event] = []
        outputs: list[dict[str, Any]] = []
        rid = response.id
        for item_id in response.items:
            item = self.items.get(item_id)
            if item is None:
                continue
            if not item.output_done:
                where = {"response_id": rid, "item_id": item.id, "output_index": item.output_index}
                for index, part in enumerate(item.parts):
                    if part.done:
                        continue
                    at = {**where, "content_index": index}
                    if part.type == "audio":
                        events.append(self._ev(p.AUDIO_DONE[self.dialect], **at))
                        events.append(self._ev(p.TRANSCRIPT_DONE[self.dialect], **at, transcript=part.transcript or ""))
                        events.append(self._ev("response.content_part.done", **at,
                                               part={"type": "audio", "transcript": part.transcript or ""}))
                    else:
                        events.append(self._ev(p.TEXT_DONE[self.dialect], **at, text=part.text))
                        events.append(self._ev("response.content_part.done", **at,
                                               part={"type": "text", "text": part.text}))
                obj = self.item_object(item, status="incomplete")
                if item.held and self.dialect == "ga":
                    events.append(self._ev("conversation.item.done", previous_item_id=self._previous_of(item.id),
                                           item=obj))
                events.append(self._ev("response.output_item.done", response_id=rid,
                                       output_index=item.output_index, item=obj))
                outputs.append(obj)
            else:
                outputs.append(self.item_object(item))
        final = dict(response.raw)
        final.update(status="cancelled", status_details={"type": "cancelled", "reason": reason},
                     output=outputs, usage=empty_usage(self.dialect))
        events.append(self._ev("response.done", response=final))
        return events

    # ------------------------------------------------------------------ the user's voice

    def speech_started(self, item_id: str | None = None, audio_start_ms: int | None = None) -> Event:
        """`speech_started` for speech the server hears now (reference §7: backdated by the padding)."""
        turn = self.turn_detection or {}
        padding = turn.get("prefix_padding_ms", 300)
        if audio_start_ms is None:
            audio_start_ms = max(int(self.input_audio_ms) - (padding if isinstance(padding, int) else 300),
                                 self._vad_ms, 0)
        self._speech_item = item_id if item_id and item_id not in self.items else self.ids("item")
        return self._ev("input_audio_buffer.speech_started", audio_start_ms=audio_start_ms,
                        item_id=self._speech_item)

    def interrupts(self) -> bool:
        """Whether speech now auto-cancels the active response (`interrupt_response`, reference §8.3)."""
        turn = self.turn_detection
        interrupt = turn.get("interrupt_response", True) if turn is not None else False
        return bool(interrupt) and self.response is not None and not self.response.out_of_band \
            and not self.response.cancelling

    def speech_stopped(self, transcript: str | None = None, audio_end_ms: int | None = None) -> list[Event]:
        """The end of the user's speech: stopped, committed, and the user's item (reference §8.2)."""
        item_id = self._speech_item or self.ids("item")
        self._speech_item = None
        end = audio_end_ms if audio_end_ms is not None else max(int(self.input_audio_ms), self._vad_ms)
        previous = self._last_item_id()
        item = {"id": item_id, "type": "message", "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": transcript}]}
        return [self._ev("input_audio_buffer.speech_stopped", audio_end_ms=end, item_id=item_id),
                self._ev("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id),
                *self._item_announcements(previous, item)]

    def creates_response(self) -> bool:
        """Whether a committed voice turn starts a response: the live session's `create_response`."""
        turn = self.turn_detection
        return turn is not None and bool(turn.get("create_response", True))

    def auto_response(self) -> list[Event]:
        """`response.created` for a response the server starts on its own after a voice turn."""
        if self.response is not None and not self.response.out_of_band:
            return []
        self._params = {}
        self._out_of_band_pending = False
        return [self._ev("response.created", response=self._response_object(self.ids("resp"), "in_progress", None,
                                                                           [], None, {}))]

    def barge_in(self) -> list[Event]:
        """What the server sends when the user starts speaking now (reference §8.3)."""
        events = [self.speech_started()]
        if self.interrupts():
            assert self.response is not None
            self.response.cancelling = True
            events += self.cancel_tail("turn_detected")
        return events

    def snapshot(self) -> Snapshot:
        response = self.last_response
        item = self.items.get(response.items[-1]) if response is not None and response.items else None
        raw = response.raw if response is not None else {}
        modalities = raw.get("output_modalities") or raw.get("modalities") or (
            self.session.get("output_modalities") or self.session.get("modalities") or ["audio"])
        turn = self.turn_detection
        return Snapshot(
            response_id=response.id if response is not None else None,
            response_active=response is not None and response is self.response,
            modalities=tuple(modalities) if isinstance(modalities, list) else ("audio",),
            item_id=item.id if item is not None else None,
            item_type=item.type if item is not None else None,
            item_held=item is not None and item.held,
            part_types=tuple(part.type for part in item.parts) if item is not None else (),
            audio_deltas=item.parts[0].deltas if item is not None and item.parts else 0,
            produced_ms=(self.produced_ms(item) or 0) if item is not None else 0,
            interrupt_response=bool(turn is not None and turn.get("interrupt_response", True)),
        )

    def item_object(self, item: Item, status: str | None = None) -> dict[str, Any]:
        obj: dict[str, Any] = {"id": item.id, "type": item.type, "status": status or item.status}
        if item.type == "message":
            obj["role"] = item.role
            if item.parts:
                content = []
                for part in item.parts:
                    if part.type == "audio":
                        content.append({"type": p.ASSISTANT_AUDIO[self.dialect], "transcript": part.transcript})
                    else:
                        content.append({"type": p.ASSISTANT_TEXT[self.dialect], "text": part.text})
                obj["content"] = content
            else:
                obj["content"] = [dict(c) for c in item.content]
        else:
            obj.update(item.extra)
        if self.dialect == "beta":
            obj["object"] = "realtime.item"
        return obj

    def _previous_of(self, item_id: str) -> str | None:
        previous = None
        for key in self.items:
            if key == item_id:
                return previous
            previous = key
        return None

    # ------------------------------------------------------------------ server side

    def send_server(self, event: Event) -> Event:
        """Apply a server event to the state; return it, with `response.metadata` echoed if asked."""
        handler = self._on_server.get(event.get("type", ""))
        if handler is None:
            return event
        try:
            return handler(event)
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
            self.notes.append(f"{event.get('type')}: cannot apply ({type(exc).__name__}: {exc})")
            return event

    def _server_handlers(self) -> dict[str, Callable[[Event], Event]]:
        handlers: dict[str, Callable[[Event], Event]] = {
            "session.created": self._on_session,
            "session.updated": self._on_session,
            "conversation.item.created": self._on_item_added,
            "conversation.item.added": self._on_item_added,
            "conversation.item.done": self._on_item_done,
            "conversation.item.truncated": self._on_truncated,
            "conversation.item.deleted": self._on_deleted,
            "input_audio_buffer.committed": self._on_committed,
            "input_audio_buffer.cleared": self._on_cleared,
            "input_audio_buffer.speech_started": self._on_vad,
            "input_audio_buffer.speech_stopped": self._on_vad,
            "response.created": self._on_response_created,
            "response.output_item.added": self._on_output_item_added,
            "response.output_item.done": self._on_output_item_done,
            "response.content_part.added": self._on_part_added,
            "response.content_part.done": self._on_part_done,
            "response.done": self._on_response_done,
        }
        for name in p.AUDIO_DELTA_TYPES:
            handlers[name] = self._on_audio_delta
        for name in p.TRANSCRIPT_DELTA_TYPES:
            handlers[name] = self._on_transcript_delta
        for name in p.TEXT_DELTA_TYPES:
            handlers[name] = self._on_text_delta
        return handlers

    def _on_session(self, event: Event) -> Event:
        session = event.get("session")
        if isinstance(session, dict) and "_elided_by_util_inspect" not in session:
            self.session = session
        return event

    def _on_item_added(self, event: Event) -> Event:
        obj = event["item"]
        item_id = obj["id"]
        item = self.items.get(item_id)
        if item is None:
            item = Item(item_id, obj.get("type", "message"), obj.get("role"), obj.get("status", "completed"),
                        list(obj.get("content") or []), held=True)
            item.extra = {k: obj[k] for k in ("name", "call_id", "arguments", "output") if k in obj}
        else:
            item.held = True
            self.items.pop(item_id)
        previous = event.get("previous_item_id")
        if previous is None and self.items:
            self._insert_after(None, item)  # `root`: the item goes first
        elif isinstance(previous, str) and previous != item_id and previous != self._last_item_id() \
                and previous in self.items:
            self._insert_after(previous, item)
        else:
            self.items[item_id] = item
        return event

    def _insert_after(self, previous: str | None, item: Item) -> None:
        rebuilt: dict[str, Item] = {item.id: item} if previous is None else {}
        for key, value in self.items.items():
            rebuilt[key] = value
            if key == previous:
                rebuilt[item.id] = item
        self.items = rebuilt

    def _on_item_done(self, event: Event) -> Event:
        obj = event["item"]
        item = self.items.get(obj["id"])
        if item is None:
            return self._on_item_added(event)
        item.status = obj.get("status", item.status)
        if not item.parts:
            item.content = list(obj.get("content") or [])
        return event

    def _on_truncated(self, event: Event) -> Event:
        item = self.items[event["item_id"]]
        part = item.parts[event.get("content_index", 0)] if item.parts else None
        if part is not None:
            part.audio_bytes = event["audio_end_ms"] * self.output_bytes_per_ms
            part.transcript = ""  # "Truncating audio will delete the server-side text transcript"
            part.truncated = True
        return event

    def _on_deleted(self, event: Event) -> Event:
        if self.items.pop(event["item_id"], None) is None:
            self.notes.append(f"conversation.item.deleted for {event['item_id']!r}, which the server did not hold")
        return event

    def _on_committed(self, event: Event) -> Event:
        self.input_buffer_bytes = 0
        return event

    def _on_cleared(self, event: Event) -> Event:
        self.input_buffer_bytes = 0
        return event

    def _on_vad(self, event: Event) -> Event:
        for key in ("audio_start_ms", "audio_end_ms"):
            value = event.get(key)
            if isinstance(value, int):
                self._vad_ms = max(self._vad_ms, value)
        return event

    def _on_response_created(self, event: Event) -> Event:
        raw = event["response"]
        out_of_band = self._out_of_band_pending or raw.get("conversation_id", "x") is None
        self._out_of_band_pending = False
        if not out_of_band and self.response is not None and not self.response.out_of_band:
            self.notes.append(f"response.created {raw.get('id')} while {self.response.id} was still active")
        self._requested = None
        modalities = raw.get("output_modalities") or raw.get("modalities") or ["audio"]
        self.response = self.last_response = Response(raw.get("id", ""), raw, out_of_band,
                                                      text_only="audio" not in modalities)
        return event

    def _on_output_item_added(self, event: Event) -> Event:
        obj = event["item"]
        item = self.items.get(obj["id"])
        if item is None:
            item = Item(obj["id"], obj.get("type", "message"), obj.get("role"), obj.get("status", "in_progress"),
                        list(obj.get("content") or []), held=False)
            item.extra = {k: obj[k] for k in ("name", "call_id", "arguments") if k in obj}
            self.items[item.id] = item
        item.response_id = event.get("response_id")
        item.output_index = event.get("output_index", 0)
        if self.response is not None:
            self.response.items.append(item.id)
        return event

    def _on_output_item_done(self, event: Event) -> Event:
        obj = event["item"]
        item = self.items.get(obj["id"])
        if item is not None:
            item.output_done = True
            item.status = obj.get("status", item.status)
            item.extra.update({k: obj[k] for k in ("name", "call_id", "arguments") if k in obj})
        return event

    def _on_part_added(self, event: Event) -> Event:
        item = self.items[event["item_id"]]
        ptype = event.get("part", {}).get("type", "text")
        item.parts.append(Part("audio" if ptype in ("audio", "output_audio") else "text"))
        return event

    def _part(self, event: Event) -> Part:
        return self.items[event["item_id"]].parts[event.get("content_index", 0)]

    def _on_part_done(self, event: Event) -> Event:
        part = self._part(event)
        part.done = True
        final = event.get("part") or {}
        if part.type == "audio" and not part.truncated and isinstance(final.get("transcript"), str):
            part.transcript = final["transcript"]
        elif part.type == "text" and isinstance(final.get("text"), str):
            part.text = final["text"]
        return event

    def _on_audio_delta(self, event: Event) -> Event:
        delta = event["delta"]
        part = self._part(event)
        if part.truncated:  # the item's audio ends where the client truncated it
            pass
        elif isinstance(delta, str):
            part.audio_bytes += p.b64_decoded_len(delta)
        elif isinstance(delta, dict) and isinstance(delta.get("$audio"), dict):  # compacted, straight from a cassette
            part.audio_bytes += int(delta["$audio"].get("bytes", 0))
        part.deltas += 1
        self.assistant_audio = True
        return event

    def _on_transcript_delta(self, event: Event) -> Event:
        part = self._part(event)
        part.transcript = (part.transcript or "") + event.get("delta", "")
        return event

    def _on_text_delta(self, event: Event) -> Event:
        part = self._part(event)
        part.text += event.get("delta", "")
        return event

    def _on_response_done(self, event: Event) -> Event:
        raw = event.get("response") or {}
        if self.response is None:
            self.notes.append(f"response.done {raw.get('id')} with no response active")
        elif raw.get("id") not in (None, self.response.id):
            self.notes.append(f"response.done {raw.get('id')} while {self.response.id} was active")
        self.response = None
        return event
