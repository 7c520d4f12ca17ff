"""Synthesized cassettes: Realtime sessions built from the protocol facts, reproducible byte for byte.

A recording shows one server on one day; these show the documented shape (reference §5 objects, §8
event orders, §7 audio arithmetic, §9 ids and timing) with nothing private in them, so the project can
ship and regenerate them (``python scripts/make_cassettes.py``). Everything that varies in a real
session comes from a seed: ids from :class:`IdFactory`, ``obfuscation`` padding from a seeded RNG, and
the clock is fixed, so two runs write identical files.

Where a genuine capture shows a quirk the reference does not spell out, the capture wins and the
code says which (see ``_done_previous`` and the beta ``rate_limits.updated`` placement).
"""

from __future__ import annotations

import copy
import hashlib
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from replay.authoring.importer import tool_version
from replay.cassettes.cassette import Cassette, Frame, Source, WebSocketSession, expand_audio
from replay.engine.conversation import Conversation
from replay.wire.protocol import (
    ASSISTANT_AUDIO,
    ASSISTANT_TEXT,
    AUDIO_DELTA,
    AUDIO_DONE,
    DEFAULT_INSTRUCTIONS,
    ITEM_ADDED,
    TEXT_DELTA,
    TEXT_DONE,
    TRANSCRIPT_DELTA,
    TRANSCRIPT_DONE,
    Dialect,
    IdFactory,
    default_session,
)

SOURCE = "scripts/make_cassettes.py from realtime-protocol.md §5/§8"
CREATED_AT = 1767268800  # 2026-01-01T12:00:00Z: fixed, so regenerated files are identical
RECORDED_AT = datetime.fromtimestamp(CREATED_AT, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
GA_MODEL = "gpt-realtime"
BETA_MODEL = "gpt-4o-realtime-preview-2024-12-17"
CHUNK_MS = 100  # one audio delta / one microphone append
PCM16_BYTES_PER_MS = 48

# Latencies (ms), from the capture quoted in reference §8.2 and §8.1.
SESSION_CREATED_MS = 4  # first frame, 3-6 ms after the 101
SESSION_UPDATED_MS = 250
ITEM_ACK_MS = 90
RESPONSE_CREATED_MS = 280  # after response.create
FIRST_DELTA_MS = 476  # after response.create
AUDIO_PACE_MS = 40  # wall time per 100 ms chunk: audio is produced ~2.5x faster than real time
RATE_LIMITS_MS = 40  # after response.done

_PCM = {"type": "audio/pcm", "rate": 24000}
_TOKEN = re.compile(r" ?[A-Za-z0-9']+| ?[^\sA-Za-z0-9']")
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def compacted_silence(nbytes: int) -> dict[str, Any]:
    """The cassette form of ``nbytes`` of audio: replay sends exactly that many zero bytes."""
    return {"$audio": {"bytes": nbytes, "sha256": hashlib.sha256(bytes(nbytes)).hexdigest()}}


def tokens(text: str) -> list[str]:
    """Split text the way the server streams it: words with their leading space, punctuation alone."""
    return _TOKEN.findall(text)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`session.updated` carries the whole effective session: nested objects merge, the rest replaces."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _beta_session(session_id: str, model: str) -> dict[str, Any]:
    """A beta session in the key order a genuine 2025 capture of this model shows."""
    return {
        "id": session_id,
        "object": "realtime.session",
        "expires_at": CREATED_AT + 3600,
        "input_audio_noise_reduction": None,
        "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                           "silence_duration_ms": 200, "create_response": True, "interrupt_response": True},
        "input_audio_format": "pcm16",
        "input_audio_transcription": None,
        "client_secret": None,
        "include": None,
        "model": model,
        "modalities": ["audio", "text"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "voice": "alloy",
        "output_audio_format": "pcm16",
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "speed": 1.0,
        "tools": [],
    }


@dataclass
class _Response:
    id: str
    raw: dict[str, Any]
    output: list[dict[str, Any]] = field(default_factory=list)
    output_text_tokens: int = 0
    output_audio_ms: int = 0


class SessionScript:
    """Writes one session frame by frame, keeping the conversation the server would hold."""

    def __init__(self, dialect: Dialect, *, seed: str, model: str) -> None:
        self.dialect: Dialect = dialect
        self.model = model
        self.ids = IdFactory(seed)
        self.rng = random.Random(f"{seed}/obfuscation")
        self.now = 0  # ms; the cursor server answers are timed from
        self._frames: list[tuple[int, int, Frame]] = []
        self.items: list[str] = []  # conversation order
        self.session: dict[str, Any] = {}
        self.conversation_id = self.ids("conv")
        self.tokens_used = 0
        self.input_ms = 0  # microphone audio appended so far (VAD's clock)
        self.audio_ms = 0  # model audio produced so far

    # -- frames

    def emit(self, at_ms: int, source: Source, event: dict[str, Any], *, advance: bool = True) -> dict[str, Any]:
        """Place a frame at `at_ms`; `advance=False` for streams (the microphone) that run beside the cursor."""
        self._frames.append((at_ms, len(self._frames), Frame(at_ms / 1000, source, event=event)))
        if advance:
            self.now = max(self.now, at_ms)
        return event

    def server(self, etype: str, *, after: int = 1, at: int | None = None, **fields: Any) -> dict[str, Any]:
        when = max(at, self.now) if at is not None else self.now + after
        return self.emit(when, "server", {"type": etype, "event_id": self.ids("event"), **fields})

    def client(self, event: dict[str, Any], *, after: int = 1, at: int | None = None) -> dict[str, Any]:
        return self.emit(at if at is not None else self.now + after, "client", event)

    @property
    def frames(self) -> list[Frame]:
        return [frame for _, _, frame in sorted(self._frames, key=lambda x: (x[0], x[1]))]

    def _obfuscation(self) -> str:
        return "".join(self.rng.choices(_BASE62, k=self.rng.randint(10, 16)))

    def _extras(self) -> dict[str, Any]:
        """GA text, transcript and argument deltas carry an `obfuscation` pad (reference §2, §9)."""
        return {"obfuscation": self._obfuscation()} if self.dialect == "ga" else {}

    # -- connection and session

    def connect(self) -> None:
        session_id = self.ids("sess")
        if self.dialect == "ga":
            self.session = default_session("ga", session_id=session_id, model=self.model, created_at=CREATED_AT)
        else:
            self.session = _beta_session(session_id, self.model)
        self.server("session.created", at=SESSION_CREATED_MS, session=copy.deepcopy(self.session))
        if self.dialect == "beta":
            self.server("conversation.created",
                        conversation={"id": self.conversation_id, "object": "realtime.conversation"})

    def update_session(self, update: dict[str, Any], *, after: int = 60) -> None:
        self.client({"type": "session.update", "session": update}, after=after)
        self.session = _merge(self.session, update)
        self.server("session.updated", after=SESSION_UPDATED_MS, session=copy.deepcopy(self.session))

    # -- items

    def _item(self, body: dict[str, Any]) -> dict[str, Any]:
        item = {"id": body.pop("id")}
        if self.dialect == "beta":
            item["object"] = "realtime.item"
        item.update(body)
        return item

    def _announce(self, item: dict[str, Any], *, done: bool = True) -> str | None:
        """conversation.item.added (+ .done) in GA, conversation.item.created in beta."""
        previous = self.items[-1] if self.items else None
        self.server(ITEM_ADDED[self.dialect], previous_item_id=previous, item=item)
        if done and self.dialect == "ga":
            self.server("conversation.item.done", previous_item_id=previous, item=item)
        self.items.append(item["id"])
        return previous

    def _done_previous(self, previous: str | None) -> str | None:
        """previous_item_id on a *model* item's conversation.item.done.

        Every genuine GA capture we have (four sessions, pydantic-ai) sends null here when the item
        follows the conversation's first item, and the real previous id otherwise.
        """
        return None if previous is not None and self.items and previous == self.items[0] else previous

    def user_text(self, text: str, *, after: int = 300) -> dict[str, Any]:
        content = [{"type": "input_text", "text": text}]
        return self.client({"type": "conversation.item.create",
                            "item": {"type": "message", "role": "user", "content": content}}, after=after)

    def function_output(self, call_id: str, output: str, *, after: int = 150) -> dict[str, Any]:
        return self.client({"type": "conversation.item.create",
                            "item": {"type": "function_call_output", "call_id": call_id, "output": output}},
                           after=after)

    def ack_user_text(self, text: str, *, at: int) -> None:
        item = self._item({"id": self.ids("item"), "type": "message", "status": "completed", "role": "user",
                           "content": [{"type": "input_text", "text": text}]})
        self.now = max(self.now, at - 1)
        self._announce(item)

    def ack_function_output(self, call_id: str, output: str, *, at: int) -> None:
        item = self._item({"id": self.ids("item"), "type": "function_call_output", "call_id": call_id,
                           "output": output})
        self.now = max(self.now, at - 1)
        self._announce(item)

    # -- responses

    def response_create(self, *, after: int = 2) -> int:
        self.client({"type": "response.create"}, after=after)
        return self.now

    def _response_object(self, response_id: str, status: str, output: list[dict[str, Any]],
                         usage: dict[str, Any] | None) -> dict[str, Any]:
        obj: dict[str, Any] = {"object": "realtime.response", "id": response_id, "status": status,
                               "status_details": None, "output": copy.deepcopy(output),
                               "conversation_id": self.conversation_id}
        if self.dialect == "ga":
            obj["output_modalities"] = list(self.session.get("output_modalities", ["audio"]))
            obj["max_output_tokens"] = self.session.get("max_output_tokens", "inf")
            out = self.session.get("audio", {}).get("output", {})
            obj["audio"] = {"output": {"format": out.get("format", _PCM), "voice": out.get("voice", "alloy")}}
        else:
            obj["modalities"] = list(self.session.get("modalities", ["audio", "text"]))
            obj["voice"] = self.session.get("voice", "alloy")
            obj["output_audio_format"] = self.session.get("output_audio_format", "pcm16")
            obj["temperature"] = self.session.get("temperature", 0.8)
            obj["max_output_tokens"] = self.session.get("max_response_output_tokens", "inf")
        obj["usage"] = usage
        obj["metadata"] = None
        return obj

    def _rate_limits(self) -> list[dict[str, Any]]:
        tokens_entry = {"name": "tokens", "limit": 15000000, "remaining": 15000000 - 632 - self.tokens_used,
                        "reset_seconds": 0.002}
        if self.dialect == "ga":  # GA captures show only the tokens entry (reference §9)
            return [tokens_entry]
        return [{"name": "requests", "limit": 20000, "remaining": 19999, "reset_seconds": 0.003}, tokens_entry]

    def _usage(self, response: _Response) -> dict[str, Any]:
        input_text = len(tokens(str(self.session.get("instructions", "")))) + 8 * len(self.items)
        input_audio = self.input_ms // 50
        output_audio = response.output_audio_ms // 50
        image = {"image_tokens": 0} if self.dialect == "ga" else {}
        input_tokens = input_text + input_audio
        output_tokens = response.output_text_tokens + output_audio
        self.tokens_used += input_tokens + output_tokens
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {"text_tokens": input_text, "audio_tokens": input_audio, **image,
                                    "cached_tokens": 0,
                                    "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, **image}},
            "output_token_details": {"text_tokens": response.output_text_tokens, "audio_tokens": output_audio},
        }

    def _start_response(self, at: int) -> _Response:
        response_id = self.ids("resp")
        raw = self._response_object(response_id, "in_progress", [], None)
        self.server("response.created", at=at, response=raw)
        if self.dialect == "beta":
            # A genuine beta capture of this model (May 2025) has rate_limits.updated right after
            # response.created; GA captures have it after response.done.
            self.server("rate_limits.updated", after=1, rate_limits=self._rate_limits())
        return _Response(response_id, raw)

    def _finish_response(self, response: _Response) -> None:
        usage = self._usage(response)
        final = self._response_object(response.id, "completed", response.output, usage)
        self.server("response.done", after=1, response=final)
        if self.dialect == "ga":
            self.server("rate_limits.updated", after=RATE_LIMITS_MS, rate_limits=self._rate_limits())

    def _message_item(self, response: _Response, output_index: int) -> tuple[dict[str, Any], str | None]:
        item = self._item({"id": self.ids("item"), "type": "message", "status": "in_progress", "role": "assistant",
                           "content": []})
        self.server("response.output_item.added", after=5, response_id=response.id, output_index=output_index,
                    item=copy.deepcopy(item))
        previous = self._announce(copy.deepcopy(item), done=False)
        return item, previous

    def _close_message(self, response: _Response, item: dict[str, Any], previous: str | None,
                       content: dict[str, Any], output_index: int) -> None:
        item["status"] = "completed"
        item["content"] = [content]
        if self.dialect == "ga":
            self.server("conversation.item.done", previous_item_id=self._done_previous(previous),
                        item=copy.deepcopy(item))
        self.server("response.output_item.done", response_id=response.id, output_index=output_index,
                    item=copy.deepcopy(item))
        response.output.append(copy.deepcopy(item))

    def respond_audio(self, transcript: str, *, chunks: int, at: int, created_ms: int = RESPONSE_CREATED_MS,
                      first_delta_ms: int = FIRST_DELTA_MS) -> str:
        """An audio response (reference §8.2) to a request made `at` (ms). Returns the assistant item id."""
        response = self._start_response(at + created_ms)
        item, previous = self._message_item(response, 0)
        where = {"response_id": response.id, "item_id": item["id"], "output_index": 0, "content_index": 0}
        self.server("response.content_part.added", **where, part={"type": "audio", "transcript": ""})
        words = tokens(transcript)
        # The transcript runs ahead of the audio: all words are out by about half way through it.
        lead = max(1, chunks // 2)
        schedule = [min(lead - 1, i * lead // max(1, len(words))) for i in range(len(words))]
        t = at + first_delta_ms
        self.now = max(self.now, t - 1)
        nbytes = CHUNK_MS * PCM16_BYTES_PER_MS
        for chunk in range(chunks):
            for word, slot in zip(words, schedule, strict=True):
                if slot == chunk:
                    self.server(TRANSCRIPT_DELTA[self.dialect], **where, delta=word, **self._extras())
            self.server(AUDIO_DELTA[self.dialect], at=max(self.now + 1, t), **where, delta=compacted_silence(nbytes))
            t += AUDIO_PACE_MS
        self.audio_ms += chunks * CHUNK_MS
        response.output_audio_ms = chunks * CHUNK_MS
        response.output_text_tokens = len(words)
        self.server(AUDIO_DONE[self.dialect], after=20, **where)
        self.server(TRANSCRIPT_DONE[self.dialect], **where, transcript=transcript)
        self.server("response.content_part.done", **where, part={"type": "audio", "transcript": transcript})
        self._close_message(response, item, previous,
                            {"type": ASSISTANT_AUDIO[self.dialect], "transcript": transcript}, 0)
        self._finish_response(response)
        return str(item["id"])

    def respond_text(self, text: str, *, at: int) -> str:
        """A text response (GA `output_modalities: ["text"]`): item done before output_item done."""
        response = self._start_response(at + RESPONSE_CREATED_MS)
        item, previous = self._message_item(response, 0)
        where = {"response_id": response.id, "item_id": item["id"], "output_index": 0, "content_index": 0}
        self.server("response.content_part.added", **where, part={"type": "text", "text": ""})
        words = tokens(text)
        self.now = max(self.now, at + FIRST_DELTA_MS - 1)
        for word in words:
            self.server(TEXT_DELTA[self.dialect], after=12, **where, delta=word, **self._extras())
        response.output_text_tokens = len(words)
        self.server(TEXT_DONE[self.dialect], after=8, **where, text=text)
        self.server("response.content_part.done", **where, part={"type": "text", "text": text})
        self._close_message(response, item, previous, {"type": ASSISTANT_TEXT[self.dialect], "text": text}, 0)
        self._finish_response(response)
        return str(item["id"])

    def respond_function_call(self, name: str, arguments: str, *, at: int) -> str:
        """A function call (reference §8.2): the model then waits for a function_call_output. Returns call_id."""
        response = self._start_response(at + RESPONSE_CREATED_MS)
        call_id = "call_" + self.ids("call")[5:21]
        item = self._item({"id": self.ids("item"), "type": "function_call", "status": "in_progress", "name": name,
                           "call_id": call_id, "arguments": ""})
        self.server("response.output_item.added", after=5, response_id=response.id, output_index=0,
                    item=copy.deepcopy(item))
        previous = self._announce(copy.deepcopy(item), done=False)
        where = {"response_id": response.id, "item_id": item["id"], "output_index": 0, "call_id": call_id}
        self.now = max(self.now, at + FIRST_DELTA_MS - 1)
        pieces = re.findall(r'[{}]|"[^"]*"|[^{}"]+', arguments)
        for piece in pieces:
            self.server("response.function_call_arguments.delta", after=10, **where, delta=piece, **self._extras())
        self.server("response.function_call_arguments.done", after=5, **where, name=name, arguments=arguments)
        item["status"] = "completed"
        item["arguments"] = arguments
        if self.dialect == "ga":
            self.server("conversation.item.done", previous_item_id=self._done_previous(previous),
                        item=copy.deepcopy(item))
        self.server("response.output_item.done", response_id=response.id, output_index=0, item=copy.deepcopy(item))
        response.output.append(copy.deepcopy(item))
        response.output_text_tokens = len(pieces)
        self._finish_response(response)
        return call_id

    # -- microphone and server VAD

    def append_audio(self, *, start: int, count: int) -> None:
        """`count` microphone appends of 100 ms, sent in real time from `start` (ms)."""
        nbytes = CHUNK_MS * PCM16_BYTES_PER_MS
        for k in range(count):
            self.emit(start + (k + 1) * CHUNK_MS, "client",
                      {"type": "input_audio_buffer.append", "audio": compacted_silence(nbytes)}, advance=False)
        self.input_ms += count * CHUNK_MS

    def vad_turn(self, *, mic_start: int, speech_from_ms: int, speech_to_ms: int) -> int:
        """Server VAD on the microphone stream: started, stopped, committed, user item (reference §8.2).

        Times `*_ms` are positions in the input audio; the events go out once the append carrying
        that audio has arrived. Returns the wall time (ms) of the commit, when the response starts.
        """
        turn = self.session["audio"]["input"]["turn_detection"]
        padding, silence = int(turn["prefix_padding_ms"]), int(turn["silence_duration_ms"])
        item_id = self.ids("item")

        def arrival(audio_ms: int) -> int:  # the append holding this audio lands, plus detection time
            return mic_start + (audio_ms // CHUNK_MS + 1) * CHUNK_MS + 30

        self.server("input_audio_buffer.speech_started", at=arrival(speech_from_ms),
                    audio_start_ms=max(0, speech_from_ms - padding), item_id=item_id)
        end = speech_to_ms + silence  # audio_end_ms includes the silence that ended the turn
        self.server("input_audio_buffer.speech_stopped", at=arrival(end), audio_end_ms=end, item_id=item_id)
        previous = self.items[-1] if self.items else None
        self.server("input_audio_buffer.committed", after=3, previous_item_id=previous, item_id=item_id)
        item = self._item({"id": item_id, "type": "message", "status": "completed", "role": "user",
                           "content": [{"type": "input_audio", "transcript": None}]})
        self._announce(item)
        return self.now

    def close(self) -> dict[str, Any]:
        """The client hangs up normally once the turn is over."""
        return {"code": 1000, "reason": "", "by": "client"}


# ---------------------------------------------------------------------------- the cassettes


def _ga_update(**overrides: Any) -> dict[str, Any]:
    update: dict[str, Any] = {
        "type": "realtime",
        "instructions": "You are a friendly voice assistant. Answer in one or two short sentences.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": dict(_PCM),
                      "turn_detection": {"type": "server_vad", "create_response": True, "interrupt_response": True}},
            "output": {"format": dict(_PCM), "voice": "alloy"},
        },
    }
    update.update(overrides)
    return update


def _finish(script: SessionScript, name: str, description: str, close: dict[str, Any]) -> Cassette:
    frames = script.frames
    headers = {"OpenAI-Beta": ["realtime=v1"]} if script.dialect == "beta" else {}
    session = WebSocketSession(uri=f"wss://api.openai.com/v1/realtime?model={script.model}", dialect=script.dialect,
                               frames=frames, request_headers=headers, close=close)
    client_ms = script.input_ms
    metadata: dict[str, Any] = {
        "origin": "synthesized",
        "source": SOURCE,
        "license": "MIT",
        "model": script.model,
        "recorded_at": RECORDED_AT,
        "tool": tool_version(),
        "complete": True,
        "frames": len(frames),
        "dialect": script.dialect,
        "description": description,
        "timing": "synthesized (latencies of reference §8.1/§8.2; audio ~2.5x faster than real time)",
        "audio_compacted": True,
        "output_audio_ms": script.audio_ms,
    }
    if client_ms:
        metadata["input_audio_ms"] = client_ms
    return Cassette(metadata, [session])


def ga_text_turn_audio_response() -> Cassette:
    s = SessionScript("ga", seed="ga_text_turn_audio_response", model=GA_MODEL)
    s.connect()
    s.update_session(_ga_update())
    text = "Hi! Can you hear me?"
    s.user_text(text)
    start = s.response_create()
    s.ack_user_text(text, at=start + ITEM_ACK_MS)
    s.respond_audio("Yes, I can hear you clearly. How can I help?", chunks=12, at=start)
    return _finish(s, "ga_text_turn_audio_response",
                   "GA text-in/audio-out turn: one response of 12 x 100 ms audio with transcript deltas, "
                   "in the exact §8.2 event order", s.close())


def ga_server_vad_turn() -> Cassette:
    s = SessionScript("ga", seed="ga_server_vad_turn", model=GA_MODEL)
    s.connect()
    update = _ga_update()
    update["audio"]["input"]["turn_detection"] = {
        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 200,
        "create_response": True, "interrupt_response": True,
    }
    s.update_session(update)
    mic_start = s.now + 20
    s.append_audio(start=mic_start, count=50)  # 5 s of microphone audio, streamed throughout
    committed = s.vad_turn(mic_start=mic_start, speech_from_ms=1100, speech_to_ms=2600)
    s.respond_audio("Sure, I'm listening. What would you like to know?", chunks=10, at=committed, created_ms=20,
                    first_delta_ms=220)
    return _finish(s, "ga_server_vad_turn",
                   "GA server-VAD turn: 50 microphone appends of 100 ms, speech_started/stopped, committed, "
                   "user item, then an automatic audio response of 10 x 100 ms", s.close())


def beta_audio_response() -> Cassette:
    s = SessionScript("beta", seed="beta_audio_response", model=BETA_MODEL)
    s.connect()
    s.update_session({"modalities": ["audio", "text"],
                      "instructions": "You are a friendly voice assistant. Answer in one or two short sentences.",
                      "voice": "alloy", "input_audio_format": "pcm16", "output_audio_format": "pcm16"})
    text = "Tell me a fun fact."
    s.user_text(text)
    start = s.response_create()
    s.ack_user_text(text, at=start + ITEM_ACK_MS)
    s.respond_audio("Octopuses have three hearts and blue blood.", chunks=10, at=start)
    return _finish(s, "beta_audio_response",
                   "Beta (realtime=v1) text-in/audio-out turn: conversation.created, flat session.update, "
                   "conversation.item.created, response.audio.delta x 10 (100 ms each)", s.close())


def ga_text_only_response() -> Cassette:
    s = SessionScript("ga", seed="ga_text_only_response", model=GA_MODEL)
    s.connect()
    s.update_session(_ga_update(output_modalities=["text"]))
    text = "What is the capital of France?"
    s.user_text(text)
    start = s.response_create()
    s.ack_user_text(text, at=start + ITEM_ACK_MS)
    s.respond_text("The capital of France is Paris.", at=start)
    return _finish(s, "ga_text_only_response",
                   "GA text-only response (output_modalities [\"text\"]): output_text deltas, "
                   "conversation.item.done before response.output_item.done; no audio to truncate", s.close())


def ga_function_call_round() -> Cassette:
    s = SessionScript("ga", seed="ga_function_call_round", model=GA_MODEL)
    s.connect()
    tool = {"type": "function", "name": "get_weather", "description": "Look up the current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                           "additionalProperties": False}}
    s.update_session(_ga_update(tools=[tool], tool_choice="auto"))
    text = "What's the weather in Paris?"
    s.user_text(text)
    start = s.response_create()
    s.ack_user_text(text, at=start + ITEM_ACK_MS)
    call_id = s.respond_function_call("get_weather", '{"city":"Paris"}', at=start)
    output = '{"temperature_c":18,"conditions":"sunny"}'
    s.function_output(call_id, output)
    start = s.response_create()
    s.ack_function_output(call_id, output, at=start + ITEM_ACK_MS)
    s.respond_audio("It's sunny in Paris right now, about eighteen degrees.", chunks=10, at=start)
    return _finish(s, "ga_function_call_round",
                   "GA function call round: function_call item with argument deltas, the client's "
                   "function_call_output + response.create, then a 10 x 100 ms audio answer", s.close())


def ga_two_responses_audio() -> Cassette:
    s = SessionScript("ga", seed="ga_two_responses_audio", model=GA_MODEL)
    s.connect()
    s.update_session(_ga_update())
    for text, answer, chunks in (("Hello there!", "Hello! Nice to hear from you.", 8),
                                 ("Can you count to three?", "Of course: one, two, three.", 10)):
        s.user_text(text, after=600)
        start = s.response_create()
        s.ack_user_text(text, at=start + ITEM_ACK_MS)
        s.respond_audio(answer, chunks=chunks, at=start)
    return _finish(s, "ga_two_responses_audio",
                   "GA session with two consecutive text-in/audio-out turns (8 and 10 x 100 ms audio), so a "
                   "barge-in can cut the second response while the first is history", s.close())


CASSETTES: dict[str, Callable[[], Cassette]] = {
    "ga_text_turn_audio_response": ga_text_turn_audio_response,
    "ga_server_vad_turn": ga_server_vad_turn,
    "beta_audio_response": beta_audio_response,
    "ga_text_only_response": ga_text_only_response,
    "ga_function_call_round": ga_function_call_round,
    "ga_two_responses_audio": ga_two_responses_audio,
}


def build_all() -> dict[str, Cassette]:
    """Every synthesized cassette by file stem."""
    return {name: make() for name, make in CASSETTES.items()}


# ---------------------------------------------------------------------------- checking


@dataclass
class EngineCheck:
    """What the conversation engine made of a session fed through it frame by frame."""

    fired: list[tuple[int, str, str, str | None]]  # (frame index, event type, rule, error code)
    notes: list[str]
    recorded_errors: list[tuple[int, str | None]]  # (frame index, error.code) of recorded `error` frames

    @property
    def clean(self) -> bool:
        return not self.fired and not self.notes


def check_with_engine(session: WebSocketSession) -> EngineCheck:
    """Feed every frame through the engine as the server would (compacted audio expanded)."""
    engine = Conversation(session.dialect, model=session.model, created_at=CREATED_AT)
    fired: list[tuple[int, str, str, str | None]] = []
    errors: list[tuple[int, str | None]] = []
    for index, frame in enumerate(session.frames):
        if frame.event is None:
            continue
        if frame.source == "client":
            received = engine.receive_event(frame.event)
            if received.rule is not None:
                code = received.reactions[0]["error"]["code"] if received.reactions else None
                fired.append((index, frame.type or "", received.rule, code))
        else:
            if frame.type == "error":
                error = frame.event.get("error")
                errors.append((index, error.get("code") if isinstance(error, dict) else None))
            engine.send_server(expand_audio(frame.event))
    return EngineCheck(fired, list(engine.notes), errors)
