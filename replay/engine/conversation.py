"""The conversation engine: how a Realtime server answers a client event.

Sans-I/O in the manner of h11: no sockets, no clock, no tasks. Feed it every client frame it
receives (:meth:`Conversation.receive_client`) and every server event that goes out
(:meth:`~replay.engine.state.ConversationState.send_server`). A client event is validated against the
rule table (:mod:`replay.wire.rules`) in the precedence of the reference's §11; the answer comes back as
events the caller may send. The state lives in :mod:`replay.engine.state`, what the server says on its own
(model output, the user's voice, the cancel tail) in :mod:`replay.engine.output`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from replay.engine.output import ModelOutput
from replay.engine.state import Event, Item, Part, Response, Snapshot, empty_usage, merge_session
from replay.text import clip
from replay.wire import protocol as p
from replay.wire.protocol import silence_b64

__all__ = ["Conversation", "Event", "Item", "Part", "Received", "Refusal", "Response", "Snapshot", "empty_usage",
           "silence_b64"]


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


class Conversation(ModelOutput):
    """One Realtime session as the server sees it, and the rules that guard it."""

    @functools.cached_property
    def _on_client(self) -> dict[str, Callable[[Event], list[Event]]]:
        return self._client_handlers()

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
            self.notes.append(f"{etype}: server error while answering ({type(exc).__name__}: {clip(str(exc), 200)})")
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

    def _session_update(self, event: Event) -> list[Event]:
        update = _require(event, "session", "session")
        _check_type(update, dict, "session", "an object")
        if self.dialect == "ga":
            self._validate_ga_session(update)
        else:
            self._validate_beta_session(update)
        merged = merge_session(self.session, p.clone(update))  # never alias the client's own event
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
            default = self.default_response
            active = default.id if default is not None else self._requested
            if active:
                raise Refusal("T9", response_id=active)
        response_id = self.ids("resp")
        self._requested = None if out_of_band else response_id
        self._out_of_band_pending = out_of_band
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
        if params.get("instructions") is not None:
            _check_type(params["instructions"], str, "response.instructions", "a string")

    def _response_cancel(self, event: Event) -> list[Event]:
        wanted = event.get("response_id")
        if wanted is not None:
            _check_type(wanted, str, "response_id", "a string")
        response = self.active.get(wanted) if wanted else self.response
        if response is None:
            raise Refusal("T10")
        if response.cancelling:
            return []  # the first cancel's tail is on its way; the server says nothing twice
        response.cancelling = True
        return self.cancel_tail("client_cancelled", response.id)
