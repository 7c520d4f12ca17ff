"""What a Realtime server holds of one session, changed only by the server events it sends.

Sans-I/O: every event that goes out, whoever made it (the engine's answers, the model's output,
the user's voice), passes through :meth:`ConversationState.send_server` before the wire, so the
state and the wire can never disagree. The session, the items and their audio, the input buffer,
the active response; and the snapshot a verdict is judged against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from replay.wire import protocol as p
from replay.wire.dialect import session_to
from replay.wire.protocol import Dialect, IdFactory
from replay.wire.rules import RuleBook

Event = dict[str, Any]

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


WHOLE = frozenset({"format"})  # objects an update replaces whole: a G.711 format has no rate to keep


def merge_session(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: nested objects merge (audio formats excepted), anything else (null included) replaces."""
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict) and key not in WHOLE:
            merged[key] = merge_session(current, value)
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


class ConversationState:
    """The server's side of one session."""

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
            self.session = merge_session(self.session, recorded)
        self.enforce_t2 = enforce_t2  # off where the recording's audio was cut at the source
        # Bytes per ms of the recorded model audio, to render it in whatever format the live session asks for.
        self.recorded_bytes_per_ms = p.format_bytes_per_ms(
            ((template or {}).get("audio") or {}).get("output", {}).get("format"))
        self.conversation_id = self.ids("conv")
        self.items: dict[str, Item] = {}  # insertion order == conversation order
        self.active: dict[str, Response] = {}  # responses in flight: the default conversation's, and out-of-band ones
        self.last_response: Response | None = None  # the latest response of the default conversation
        self.input_buffer_bytes = 0  # appended since the last commit
        self.input_audio_ms = 0.0  # appended over the whole session (VAD's clock)
        self.assistant_audio = False  # any model audio produced (voice lock, T11)
        self.notes: list[str] = []  # server-side inconsistencies seen in the frames sent
        self._requested: str | None = None  # id reserved by an accepted response.create
        self._used_ids: set[str] = set()  # item ids ever used, so a recorded id is never reused
        self._speech_item: str | None = None  # the user item that the speech being heard becomes
        self._out_of_band_pending = False
        self._vad_ms = 0
        self._on_server: dict[str, Callable[[Event], Event]] = self._server_handlers()

    @property
    def response(self) -> Response | None:
        """The active response of the default conversation, else the latest out-of-band one."""
        default = next((r for r in reversed(self.active.values()) if not r.out_of_band), None)
        return default or next(reversed(self.active.values()), None)

    @property
    def default_response(self) -> Response | None:
        return next((r for r in reversed(self.active.values()) if not r.out_of_band), None)

    def _ev(self, etype: str, **fields: Any) -> Event:
        return {"type": etype, "event_id": self.ids("event"), **fields}

    # session.update ---------------------------------------------------------------

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
    def input_transcription(self) -> bool:
        """Whether the live session transcribes the user's audio (events after each commit)."""
        if self.dialect == "ga":
            return bool(self.session.get("audio", {}).get("input", {}).get("transcription"))
        return bool(self.session.get("input_audio_transcription"))

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        if self.dialect == "ga":
            turn = self.session.get("audio", {}).get("input", {}).get("turn_detection")
        else:
            turn = self.session.get("turn_detection")
        return turn if isinstance(turn, dict) else None

    def _last_item_id(self) -> str | None:
        """The last item the conversation holds (an output item not yet added is not in it)."""
        return next((key for key in reversed(self.items) if self.items[key].held), None)

    def produced_ms(self, item: Item, content_index: int = 0) -> int | None:
        """Audio the server holds for a part in ms, or None when the part is not truncatable audio."""
        if item.type != "message" or item.role != "assistant" or not 0 <= content_index < len(item.parts):
            return None
        part = item.parts[content_index]
        if part.type != "audio" or part.audio_bytes <= 0:
            return None
        ms = part.audio_bytes // self.output_bytes_per_ms
        return ms - ms % self.audio_quantum_ms

    def snapshot(self) -> Snapshot:
        response = self.last_response
        item = self.items.get(response.items[-1]) if response is not None and response.items else None
        raw = response.raw if response is not None else {}
        modalities = raw.get("output_modalities") or raw.get("modalities") or (
            self.session.get("output_modalities") or self.session.get("modalities") or ["audio"])
        turn = self.turn_detection
        return Snapshot(
            response_id=response.id if response is not None else None,
            response_active=response is not None and response.id in self.active,
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
        default = self.default_response
        if not out_of_band and default is not None:
            self.notes.append(f"response.created {raw.get('id')} while {default.id} was still active")
        self._requested = None
        modalities = raw.get("output_modalities") or raw.get("modalities") or ["audio"]
        response = Response(raw.get("id", ""), raw, out_of_band, text_only="audio" not in modalities)
        self.active[response.id] = response
        if not out_of_band or self.last_response is None:
            self.last_response = response
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
        response = self.active.get(event.get("response_id", "")) or self.response
        if response is not None:
            response.items.append(item.id)
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
        if not part.truncated:  # "Truncating audio will delete the server-side text transcript" (§6.3)
            part.transcript = (part.transcript or "") + event.get("delta", "")
        return event

    def _on_text_delta(self, event: Event) -> Event:
        part = self._part(event)
        part.text += event.get("delta", "")
        return event

    def _on_response_done(self, event: Event) -> Event:
        raw = event.get("response") or {}
        ended = self.active.pop(raw.get("id", ""), None)
        if ended is None and raw.get("id") is None and self.response is not None:  # a recording without ids
            ended = self.active.pop(self.response.id)
        if ended is None:
            self.notes.append(f"response.done {raw.get('id')} with no such response active")
        return event
