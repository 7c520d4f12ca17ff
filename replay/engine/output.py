"""What the server says on its own: the model's output, the cancel tail, and the user's voice.

The recording supplies *what* the model said (:class:`replay.engine.script.Step`); this renders each step
as the wire event the live conversation calls for, under live ids and in the client's dialect.
Nothing here is applied to the state: the caller sends each event through ``send_server``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from replay.engine.state import ConversationState, Event, Item, Response, empty_usage
from replay.wire import protocol as p
from replay.wire.dialect import event_name
from replay.wire.protocol import silence_b64

if TYPE_CHECKING:
    from replay.engine.script import Step


class ModelOutput(ConversationState):
    """Responses and speech, rendered from the live conversation."""

    def session_created(self) -> list[Event]:
        """The first frames of every session: the live session (beta adds conversation.created, §1.3)."""
        events = [self._ev("session.created", session=p.clone(self.session))]
        if self.dialect == "beta":
            events.append(self._ev("conversation.created",
                                   conversation={"id": self.conversation_id, "object": "realtime.conversation"}))
        return events

    def _item_announcements(self, previous: str | None, item: dict[str, Any]) -> list[Event]:
        if self.dialect == "beta":
            return [self._ev("conversation.item.created", previous_item_id=previous,
                             item={**item, "object": "realtime.item"})]
        return [self._ev("conversation.item.added", previous_item_id=previous, item=item),
                self._ev("conversation.item.done", previous_item_id=previous, item=item)]

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

    def render_step(self, step: Step, response_id: str | None = None) -> list[Event]:
        """The wire events of one recorded model-output step, under the live response's ids.

        Not applied: the caller sends each through :meth:`send_server`, in order, before the next.
        """
        kind, data = step.kind, step.data
        if kind == "raw":  # session-level frames the response brought (rate_limits.updated)
            return [{**data, "event_id": self.ids("event")}]
        response = self.active.get(response_id) if response_id is not None else self.response
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
            live, recorded = self.output_bytes_per_ms, self.recorded_bytes_per_ms
            if isinstance(delta, dict) or live != recorded:
                # Compacted in the cassette, or another format live: the same ms, as silence of the live format.
                size = int(delta.get("$audio", {}).get("bytes", 0)) if isinstance(delta, dict) else \
                    p.b64_decoded_len(delta or "")
                delta = silence_b64(size * live // recorded)
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

    def finish_empty(self, response_id: str) -> list[Event]:
        """No recorded response is left to play: the honest answer is an empty, completed response."""
        response = self.active.get(response_id)
        return [self._response_done(response, None)] if response is not None else []

    def cancel_tail(self, reason: str, response_id: str | None = None) -> list[Event]:
        """The `.done` frames that close an active response, ending in `response.done` cancelled."""
        response = self.active.get(response_id) if response_id is not None else self.response
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
        default = self.default_response
        return bool(interrupt) and default is not None and not default.cancelling

    def speech_stopped(self, transcript: str | None = None, audio_end_ms: int | None = None) -> list[Event]:
        """The end of the user's speech: stopped, committed, and the user's item (reference §8.2)."""
        item_id = self._speech_item or self.ids("item")
        self._speech_item = None
        end = audio_end_ms if audio_end_ms is not None else max(int(self.input_audio_ms), self._vad_ms)
        previous = self._last_item_id()
        # The item carries no transcript (§5.3): it comes after, if the session transcribes (§8.2).
        item = {"id": item_id, "type": "message", "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": None}]}
        events = [self._ev("input_audio_buffer.speech_stopped", audio_end_ms=end, item_id=item_id),
                  self._ev("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id),
                  *self._item_announcements(previous, item)]
        if self.input_transcription and transcript is not None:
            events.append(self._ev("conversation.item.input_audio_transcription.completed", item_id=item_id,
                                   content_index=0, transcript=transcript))
        return events

    def creates_response(self) -> bool:
        """Whether a committed voice turn starts a response: the live session's `create_response`."""
        turn = self.turn_detection
        return turn is not None and bool(turn.get("create_response", True))

    def auto_response(self) -> list[Event]:
        """`response.created` for a response the server starts on its own after a voice turn."""
        if self.default_response is not None:
            return []
        self._out_of_band_pending = False
        return [self._ev("response.created", response=self._response_object(self.ids("resp"), "in_progress", None,
                                                                           [], None, {}))]

    def barge_in(self) -> list[Event]:
        """What the server sends when the user starts speaking now (reference §8.3)."""
        events = [self.speech_started()]
        default = self.default_response
        if self.interrupts() and default is not None:
            default.cancelling = True
            events += self.cancel_tail("turn_detected", default.id)
        return events
