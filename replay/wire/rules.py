"""The server's validation rules: one table, one row per rule.

Each row says when the real server refuses a client event, the exact `error` frame it answers
with, and how well that is evidenced (reference §6.2). The engine decides *whether* a rule fires;
this table alone decides *what the wire says*. Messages marked unverified can be replaced from a
configuration file (``--rules FILE``), because the real text is only guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from replay.files import read_text
from replay.text import clip

Evidence = Literal["capture", "report", "spec", "inferred", "unverified"]
EventIdPolicy = Literal["echo", "null"]


@dataclass(frozen=True)
class Rule:
    id: str
    when: str
    type: str
    code: str | None
    message: str  # str.format template
    param: str | None  # str.format template, or None for an explicit null
    event_id: EventIdPolicy
    evidence: Evidence
    source: str
    close: int | None = None  # the server closes the socket with this code right after the error
    fix: str = ""  # what a correct client does instead, for verdict reasons

    @property
    def verified(self) -> bool:
        return self.evidence in ("capture", "report", "spec")


_R = "invalid_request_error"

RULES: tuple[Rule, ...] = (
    Rule("T1", "truncate of an item that is not model-output audio with >=1 audio byte produced "
         "(user item, text-only assistant item, function_call, or assistant audio before its first delta)",
         _R, "unsupported_content_type", "Only model output audio messages can be truncated", None, "echo",
         "report", "livekit/agents #6157, #6158, #6249, #1016, #1050",
         fix="with 0 ms played, delete the item if the server holds it, or send nothing (livekit/agents PR #6249); "
             "never truncate text or function-call items"),
    Rule("T2", "truncate with audio_end_ms greater than the audio the server produced for that part",
         _R, "invalid_value", "Audio content of {produced_ms}ms is already shorter than {audio_end_ms}ms", None,
         "null", "report", "pipecat #2106, #925, #3677; twilio-samples #45; ReviewStage/luke #564",
         fix="clamp audio_end_ms to the audio received for that item, minus what was already truncated"),
    Rule("T3", "truncate of an item id the server does not hold",
         _R, "item_truncate_invalid_item_id", "Error truncating item: the item with id '{item_id}' does not exist.",
         None, "echo", "unverified", "code handled by many clients; message follows T4/T5",
         fix="truncate only an item the server announced with conversation.item.added (or .created in beta) and has "
             "not deleted"),
    Rule("T4", "delete of an item id the server does not hold (including a second delete)",
         _R, "item_delete_invalid_item_id", "Error deleting item: the item with id '{item_id}' does not exist.",
         None, "echo", "report", "speaches conformance test run against OpenAI",
         fix="delete only an item the server holds: not before its conversation.item.added, and once only (wait for "
             "conversation.item.deleted)"),
    Rule("T5", "retrieve of an item id the server does not hold",
         _R, "item_retrieve_invalid_item_id", "Error retrieving item: the item with id '{item_id}' does not exist.",
         None, "echo", "report", "speaches conformance test run against OpenAI"),
    Rule("T6", "item create with a previous_item_id the server does not hold",
         _R, "item_create_invalid_previous_item_id",
         "Error adding item: the previous item with id '{previous_item_id}' does not exist.", None, "echo",
         "unverified", "speaches mimics the message; the code is probable",
         fix="name as previous_item_id only an item the server announced"),
    Rule("T8", "input_audio_buffer.commit with less than 100 ms appended since the last commit",
         _R, "input_audio_buffer_commit_empty",
         "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
         "but buffer only has {buffered_ms:.2f}ms of audio.", None, "echo",
         "capture", "nijimaku capture notes (0 ms and 50 ms, event_id echoed); livekit; betalgo/openai #674",
         fix="commit only with 100 ms or more appended since the last commit"),
    Rule("T9", "response.create while a response is writing to the default conversation",
         _R, "conversation_already_has_active_response",
         "Conversation already has an active response in progress: {response_id}. "
         "Wait until the response is finished before creating a new one.", None, "echo",
         "report", "client test fixture and run log; many clients match the code",
         fix="after a cancel, wait for the cancelled response's response.done before response.create"),
    Rule("T10", "response.cancel with no active response (finished, or already auto-cancelled by VAD)",
         _R, "response_cancel_not_active", "Cancellation failed: no active response found", None, "echo",
         "capture", "lm15 capture note; mapluisch/OpenAI-Realtime-API-for-Unity #5; hashintel/hash #9399",
         fix="cancel only between response.created and response.done; with interrupt_response on, the server "
             "cancels by itself at speech_started"),
    Rule("T11", "session.update changing the voice after assistant audio exists",
         _R, "cannot_update_voice", "Cannot update a conversation's voice if assistant audio is present.", None,
         "echo", "report", "many clients; the whole update is rejected"),
    Rule("T12", "session.update with a parameter the session does not have",
         _R, "unknown_parameter", "Unknown parameter: '{param}'.", "{param}", "echo",
         "capture", "2026 capture (session.bogus_field); openai-realtime-api-beta #9"),
    Rule("T13", "an enum field with a value outside its supported set",
         _R, "invalid_value", "Invalid value: '{value}'. Supported values are: {supported}.", "{param}", "echo",
         "report", "dongri/openai-api-rs #135; 2026 capture (transcription delay)"),
    Rule("T13c", "GA assistant item created with content type 'text' instead of 'output_text'",
         _R, "invalid_value", "Invalid value: '{value}'. Value must be '{expected}'.", "{param}", "echo",
         "capture", "pydantic-ai test_message_history_seeding cassette @90bb890"),
    Rule("T14", "GA session.update without session.type",
         _R, "missing_required_parameter", "Missing required parameter: 'session.type'.", "session.type", "echo",
         "report", "TanStack/ai #586"),
    Rule("T15", "GA audio format rate below 24000",
         _R, "integer_below_min_value",
         "Invalid '{param}': integer below minimum value. Expected a value >= 24000, but got {value} instead.",
         "{param}", "echo", "capture", "2026 capture (message contains 'Expected a value >= 24000')"),
    Rule("T17-json", "a text frame that is not JSON",
         _R, "invalid_json", "Invalid event: failed to parse JSON value. {detail}", None, "null",
         "capture", "2026 capture (the tail of the message was elided)"),
    Rule("T17-binary", "a binary WebSocket frame",
         _R, "invalid_event", "Expected a text WebSocket message; binary frames are not supported.", None, "null",
         "capture", "2026 capture"),
    Rule("T17-missing-type", "a JSON event without a string 'type'",
         _R, "invalid_event", "The 'type' field is missing.", None, "echo",
         "spec", "openapi.yaml error example"),
    Rule("T17-unknown-type", "a 'type' the dialect does not accept",
         _R, "invalid_value", "Invalid value: '{value}'. Supported values are: {supported}.", "type", "echo",
         "capture", "2026 capture (GA list); beta list from issue reports"),
    Rule("T17-auth", "the upgrade carried no API key (Authorization, api-key, or the insecure-key subprotocol)",
         _R, None, "Missing bearer or basic authentication in header", None, "null",
         "capture", "2026-09-18 handshake probe", close=3000),
    Rule("T17-bad-key", "a key other than the one the server was told to accept (--api-key)",
         _R, "invalid_api_key", "Incorrect API key provided: {masked}. You can find your API key at "
         "https://platform.openai.com/account/api-keys.", None, "null",
         "capture", "2026-09-18 handshake probe", close=3000),
    Rule("T17-missing-model", "the upgrade named no model (nor an Azure deployment or a transcription intent)",
         _R, "missing_model", "You must provide a model parameter, for example "
         "wss://api.openai.com/v1/realtime?model=gpt-realtime-1.5", None, "null",
         "capture", "2026-09-18 handshake probe", close=4000),
    Rule("T17-beta-disabled", "the beta header or subprotocol on OpenAI's paths (the beta was retired on 2026-05-12)",
         _R, "beta_api_shape_disabled",
         "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.", None, "null",
         "report", "pickle-com/glass#220; infinitocloud/asterisk_to_openai_rt_community#4; jsboige/CoursIA#13149 "
         "(the whole frame); close 4000 from the 2026-09-18 probe", close=4000),
    Rule("T17-invalid-model", "the upgrade named a model the realtime endpoint does not serve",
         _R, "invalid_model", 'Model "{model}" is not supported in realtime mode.', None, "null",
         "capture", "2026-09-18 handshake probe (the message starts so; the tail is inferred)", close=4000),
    Rule("T18", "the session reached its maximum duration (60 minutes on the real API)",
         _R, "session_expired", "Your session hit the maximum duration of {minutes} minutes.", None, "null",
         "report", "several clients quote the string; one log shows the 1001 close", close=1001),
    Rule("S1", "the server trips over its own state (here: a recording whose objects are malformed)",
         "server_error", None, "The server had an error while processing your request. Sorry about that!", None,
         "echo", "unverified", "message prefix quoted by client code; the rest is the API's usual wording"),
    Rule("V-missing", "a required parameter is absent",
         _R, "missing_required_parameter", "Missing required parameter: '{param}'.", "{param}", "echo",
         "report", "'item.type' seen in beta-era reports"),
    Rule("V-type", "a parameter has the wrong JSON type",
         _R, "invalid_type", "Invalid type for '{param}': expected {expected}, but got {got} instead.", "{param}",
         "echo", "unverified", "general OpenAI API wording; 'Invalid type for 'item.content': expected an array "
         "of objects' reported"),
    Rule("V-min", "an integer parameter below its minimum",
         _R, "integer_below_min_value",
         "Invalid '{param}': integer below minimum value. Expected a value >= {minimum}, but got {value} instead.",
         "{param}", "echo", "unverified", "general OpenAI API wording, as T15"),
)


class RuleConfigError(ValueError):
    """A rules override file that cannot be applied; the message names the file and the problem."""


class RuleBook:
    """The rule table in force for a server, with configured message overrides applied."""

    def __init__(self, overrides: dict[str, str] | None = None) -> None:
        self.rules: dict[str, Rule] = {rule.id: rule for rule in RULES}
        for rule_id, message in (overrides or {}).items():
            rule = self.rules.get(rule_id)
            if rule is None:
                raise RuleConfigError(f"unknown rule id {rule_id!r}; known: {', '.join(self.rules)}")
            if rule.verified:
                raise RuleConfigError(f"rule {rule_id} is evidenced ({rule.evidence}); only unverified messages "
                                      "can be overridden")
            if not isinstance(message, str):
                raise RuleConfigError(f"the message for {rule_id} must be a string")
            self.rules[rule_id] = replace(rule, message=message)

    @classmethod
    def from_file(cls, path: str | Path) -> RuleBook:
        """Overrides as a JSON object ``{"T3": "message template", ...}``."""
        try:
            data = json.loads(read_text(Path(path), "a rules file is JSON", RuleConfigError))
        except json.JSONDecodeError as exc:
            raise RuleConfigError(f"{path}: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RuleConfigError(f"{path}: expected a JSON object of rule id -> message")
        try:
            return cls(data)
        except RuleConfigError as exc:
            raise RuleConfigError(f"{path}: {exc}") from None

    def close_reason(self, rule_id: str, **fields: Any) -> str:
        """`<type>.<code>` (or `<type>`) as the real server writes it; an expiry repeats its message."""
        rule = self.rules[rule_id]
        if rule.close == 1001:
            return rule.message.format(**fields)
        return f"{rule.type}.{rule.code}" if rule.code else rule.type

    def error(self, rule_id: str, *, event_id: str | None, server_event_id: str, **fields: Any) -> dict[str, Any]:
        """The `error` server event for a rule, all five inner keys present (reference §6.1).

        A client's string quoted in it (an item id, a parameter name) is cut to CLIENT_TEXT_LIMIT: a 10 MB id
        gets an error of a readable size, and so do the logs and verdict reasons that quote it.
        """
        rule = self.rules[rule_id]
        fields = {key: clip(value) if isinstance(value, str) else value for key, value in fields.items()}
        return {
            "type": "error",
            "event_id": server_event_id,
            "error": {
                "type": rule.type,
                "code": rule.code,
                "message": rule.message.format(**fields),
                "param": rule.param.format(**fields) if rule.param is not None else None,
                "event_id": event_id if rule.event_id == "echo" else None,
            },
        }
