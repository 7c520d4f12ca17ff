"""Every rule of the table, with its exact error frame, through the engine."""

from __future__ import annotations

import json

import pytest

from replay.engine.conversation import Conversation
from replay.wire.protocol import IdFactory
from replay.wire.rules import RULES, RuleBook, RuleConfigError

from .conftest import Script, b64, only_error, send

R = "invalid_request_error"


def truncate(item_id: str, ms: int, event_id: str | None = "evt_1", index: int = 0) -> dict:
    event = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": index, "audio_end_ms": ms}
    if event_id:
        event["event_id"] = event_id
    return event


# T1 in all four triggers ------------------------------------------------------------------------


def test_t1_user_item(ga: Conversation) -> None:
    Script(ga).user_item("item_u")
    error = only_error(send(ga, truncate("item_u", 0)))
    assert error == {"type": R, "code": "unsupported_content_type",
                     "message": "Only model output audio messages can be truncated", "param": None,
                     "event_id": "evt_1"}


def test_t1_text_only_assistant_item(ga: Conversation) -> None:
    script = Script(ga)
    script.response_start(part="text", modalities=["text"])
    script.send({"type": "response.output_text.delta", "response_id": "resp_1", "item_id": "item_a",
                 "output_index": 0, "content_index": 0, "delta": "Hello"})
    assert only_error(send(ga, truncate("item_a", 0)))["code"] == "unsupported_content_type"


def test_t1_function_call(ga: Conversation) -> None:
    script = Script(ga)
    script.send({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    call = {"id": "item_fc", "type": "function_call", "status": "in_progress", "name": "f", "call_id": "call_1",
            "arguments": ""}
    script.send({"type": "response.output_item.added", "response_id": "resp_1", "output_index": 0, "item": call})
    script.send({"type": "conversation.item.added", "previous_item_id": None, "item": call})
    assert only_error(send(ga, truncate("item_fc", 0)))["message"] == \
        "Only model output audio messages can be truncated"


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_t1_seed_case_audio_item_before_first_delta(dialect: str) -> None:
    """The bug livekit #6157 reported: truncate at 0 after content_part.added, before any delta."""
    engine = Conversation(dialect, ids=IdFactory(2))  # type: ignore[arg-type]
    Script(engine).response_start(part="audio")
    error = only_error(send(engine, truncate("item_a", 0)))
    assert (error["code"], error["message"]) == ("unsupported_content_type",
                                                 "Only model output audio messages can be truncated")


def test_truncate_allowed_once_audio_exists_even_while_streaming(ga: Conversation) -> None:
    script = Script(ga)
    script.response_start()
    script.audio(100)
    reactions = send(ga, truncate("item_a", 40))
    assert [r["type"] for r in reactions] == ["conversation.item.truncated"]
    assert reactions[0]["audio_end_ms"] == 40 and reactions[0]["item_id"] == "item_a"


# T2 ---------------------------------------------------------------------------------------------


def test_t2_uses_produced_ms_and_null_event_id(ga: Conversation) -> None:
    script = Script(ga)
    script.response_start()
    script.audio(2000)
    script.audio(450)
    error = only_error(send(ga, truncate("item_a", 2535, event_id="client_evt")))
    assert error == {"type": R, "code": "invalid_value",
                     "message": "Audio content of 2450ms is already shorter than 2535ms", "param": None,
                     "event_id": None}


def test_t2_bound_is_inclusive(ga: Conversation) -> None:
    script = Script(ga)
    script.response_start()
    script.audio(300)
    assert send(ga, truncate("item_a", 300))[0]["type"] == "conversation.item.truncated"


def test_truncation_drops_transcript_and_shortens_audio(ga: Conversation) -> None:
    script = Script(ga)
    script.response_start()
    script.send({"type": "response.output_audio_transcript.delta", "response_id": "resp_1", "item_id": "item_a",
                 "output_index": 0, "content_index": 0, "delta": "never heard"})
    script.audio(500)
    send(ga, truncate("item_a", 200))
    retrieved = send(ga, {"type": "conversation.item.retrieve", "item_id": "item_a"})[0]
    content = retrieved["item"]["content"][0]
    assert content["transcript"] == "" and len(content["audio"]) == len(b64(200 * 48))
    assert only_error(send(ga, truncate("item_a", 201)))["message"] == \
        "Audio content of 200ms is already shorter than 201ms"


# T3-T6 ------------------------------------------------------------------------------------------


def test_t3_unknown_item(ga: Conversation) -> None:
    error = only_error(send(ga, truncate("item_nope", 10)))
    assert error == {"type": R, "code": "item_truncate_invalid_item_id",
                     "message": "Error truncating item: the item with id 'item_nope' does not exist.",
                     "param": None, "event_id": "evt_1"}


def test_t4_delete_unknown_and_second_delete(ga: Conversation) -> None:
    Script(ga).user_item("item_u")
    deleted = send(ga, {"type": "conversation.item.delete", "item_id": "item_u"})
    assert [(r["type"], r["item_id"]) for r in deleted] == [("conversation.item.deleted", "item_u")]
    error = only_error(send(ga, {"type": "conversation.item.delete", "item_id": "item_u"}))
    assert error == {"type": R, "code": "item_delete_invalid_item_id",
                     "message": "Error deleting item: the item with id 'item_u' does not exist.", "param": None,
                     "event_id": None}


def test_t5_retrieve_unknown(ga: Conversation) -> None:
    error = only_error(send(ga, {"type": "conversation.item.retrieve", "item_id": "gone", "event_id": "e5"}))
    assert (error["code"], error["message"], error["event_id"]) == (
        "item_retrieve_invalid_item_id", "Error retrieving item: the item with id 'gone' does not exist.", "e5")


def test_t6_unknown_previous_item(ga: Conversation) -> None:
    error = only_error(send(ga, {"type": "conversation.item.create", "previous_item_id": "item_x",
                                 "item": {"type": "message", "role": "user",
                                          "content": [{"type": "input_text", "text": "hi"}]}}))
    assert (error["code"], error["message"]) == (
        "item_create_invalid_previous_item_id", "Error adding item: the previous item with id 'item_x' does not exist.")


# T8 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ms", "shown"), [(0, "0.00"), (50, "50.00")])
def test_t8_commit_under_100ms(ga: Conversation, ms: int, shown: str) -> None:
    if ms:
        send(ga, {"type": "input_audio_buffer.append", "audio": b64(ms * 48)})
    error = only_error(send(ga, {"type": "input_audio_buffer.commit", "event_id": "commit_10"}))
    assert error == {"type": R, "code": "input_audio_buffer_commit_empty",
                     "message": "Error committing input audio buffer: buffer too small. Expected at least 100ms "
                                f"of audio, but buffer only has {shown}ms of audio.",
                     "param": None, "event_id": "commit_10"}


def test_t8_counts_since_last_commit(ga: Conversation) -> None:
    send(ga, {"type": "input_audio_buffer.append", "audio": b64(150 * 48)})
    assert [r["type"] for r in send(ga, {"type": "input_audio_buffer.commit"})] == [
        "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    assert only_error(send(ga, {"type": "input_audio_buffer.commit"}))["code"] == "input_audio_buffer_commit_empty"


# T9, T10 ----------------------------------------------------------------------------------------


def test_t9_response_create_while_active(ga: Conversation) -> None:
    Script(ga).response_start("resp_ACTIVE")
    error = only_error(send(ga, {"type": "response.create", "event_id": "rc"}))
    assert error == {"type": R, "code": "conversation_already_has_active_response",
                     "message": "Conversation already has an active response in progress: resp_ACTIVE. Wait until "
                                "the response is finished before creating a new one.",
                     "param": None, "event_id": "rc"}
    assert send(ga, {"type": "response.create", "response": {"conversation": "none"}})[0]["type"] == \
        "response.created"


def test_t10_cancel_with_nothing_active(ga: Conversation) -> None:
    error = only_error(send(ga, {"type": "response.cancel"}))
    assert (error["code"], error["message"]) == ("response_cancel_not_active",
                                                 "Cancellation failed: no active response found")


def test_cancel_tail_closes_open_parts(ga: Conversation) -> None:
    script = Script(ga)
    script.response_start()
    script.audio(120)
    reactions = send(ga, {"type": "response.cancel"})
    assert [r["type"] for r in reactions] == [
        "response.output_audio.done", "response.output_audio_transcript.done", "response.content_part.done",
        "conversation.item.done", "response.output_item.done", "response.done"]
    done = reactions[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["usage"]["total_tokens"] == 0
    assert reactions[4]["item"]["status"] == "incomplete"
    assert only_error(send(ga, {"type": "response.cancel"}))["code"] == "response_cancel_not_active"


# T11-T15 ----------------------------------------------------------------------------------------


def test_t11_voice_lock(ga: Conversation) -> None:
    script = Script(ga)
    script.response_start()
    script.audio(10)
    script.done()
    same = {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": "alloy"}}}}
    assert send(ga, same)[0]["type"] == "session.updated"
    other = {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": "marin"}}}}
    error = only_error(send(ga, other))
    assert (error["code"], error["message"]) == ("cannot_update_voice",
                                                 "Cannot update a conversation's voice if assistant audio is present.")
    assert ga.session["audio"]["output"]["voice"] == "alloy"  # the whole update was discarded


def test_t12_unknown_parameter(ga: Conversation) -> None:
    error = only_error(send(ga, {"type": "session.update", "session": {"type": "realtime", "bogus_field": 1}}))
    assert error == {"type": R, "code": "unknown_parameter", "message": "Unknown parameter: 'session.bogus_field'.",
                     "param": "session.bogus_field", "event_id": None}
    nested = {"type": "session.update", "event_id": "u1",
              "session": {"type": "realtime", "audio": {"input": {"transcription": None, "enabled": True}}}}
    assert only_error(send(ga, nested))["param"] == "session.audio.input.enabled"


def test_t12_beta_shape_on_ga(ga: Conversation) -> None:
    error = only_error(send(ga, {"type": "session.update",
                                 "session": {"type": "realtime", "input_audio_format": "pcm16"}}))
    assert error["message"] == "Unknown parameter: 'session.input_audio_format'."


def test_t13_bad_enum_beta(beta: Conversation) -> None:
    error = only_error(send(beta, {"type": "session.update", "session": {"input_audio_format": "g711-ulaw"}}))
    assert error == {"type": R, "code": "invalid_value",
                     "message": "Invalid value: 'g711-ulaw'. Supported values are: 'pcm16', 'g711_ulaw', and "
                                "'g711_alaw'.", "param": "session.input_audio_format", "event_id": None}


def test_t13c_ga_assistant_text_content_is_the_captured_error(ga: Conversation) -> None:
    error = only_error(send(ga, {"type": "conversation.item.create", "item": {
        "type": "message", "role": "assistant", "content": [{"type": "text", "text": "Nice to meet you"}]}}))
    assert error == {"type": R, "code": "invalid_value", "message": "Invalid value: 'text'. Value must be "
                     "'output_text'.", "param": "item.content[0].type", "event_id": None}


def test_t14_ga_session_type_required(ga: Conversation) -> None:
    error = only_error(send(ga, {"type": "session.update", "event_id": "s1", "session": {"instructions": "x"}}))
    assert error == {"type": R, "code": "missing_required_parameter",
                     "message": "Missing required parameter: 'session.type'.", "param": "session.type",
                     "event_id": "s1"}


def test_t15_rate_below_24000(ga: Conversation) -> None:
    error = only_error(send(ga, {"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}}))
    assert error["code"] == "integer_below_min_value"
    assert "Expected a value >= 24000" in error["message"]
    assert error["param"] == "session.audio.input.format.rate"


# Frame-level errors (T17) -----------------------------------------------------------------------


def test_unknown_type_lists_the_ga_supported_values_verbatim(ga: Conversation) -> None:
    error = only_error(send(ga, {"type": "nope"}))
    assert error["message"] == (
        "Invalid value: 'nope'. Supported values are: 'session.update', 'session.close', "
        "'input_audio_buffer.append', 'session.input_audio_buffer.append', 'input_audio_buffer.commit', "
        "'input_audio_buffer.clear', 'conversation.item.create', 'conversation.item.truncate', "
        "'conversation.item.delete', 'conversation.item.retrieve', 'response.create', and 'response.cancel'.")
    assert (error["code"], error["param"]) == ("invalid_value", "type")


def test_transcription_session_update_is_unknown_on_ga(ga: Conversation) -> None:
    assert only_error(send(ga, {"type": "transcription_session.update", "session": {}}))["param"] == "type"


def test_invalid_json_binary_and_missing_type(ga: Conversation) -> None:
    error = only_error(ga.receive_client("{nope").reactions)
    assert error["code"] == "invalid_json"
    assert error["message"].startswith("Invalid event: failed to parse JSON value. ")
    error = only_error(ga.receive_client(b"\x00\x01").reactions)
    assert error == {"type": R, "code": "invalid_event",
                     "message": "Expected a text WebSocket message; binary frames are not supported.",
                     "param": None, "event_id": None}
    error = only_error(ga.receive_client(json.dumps({"event_id": "x1"})).reactions)
    assert (error["code"], error["message"], error["event_id"]) == ("invalid_event", "The 'type' field is missing.",
                                                                    "x1")


def test_wrong_field_types_are_refused_not_crashed(ga: Conversation) -> None:
    error = only_error(send(ga, {"type": "conversation.item.truncate", "item_id": "a", "content_index": 0,
                                 "audio_end_ms": "12"}))
    assert error["code"] == "invalid_type" and error["param"] == "audio_end_ms"
    error = only_error(send(ga, {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                                                "content": "hi"}}))
    assert error["param"] == "item.content"
    assert only_error(send(ga, {"type": "session.update", "session": []}))["code"] == "invalid_type"


def test_precedence_schema_before_semantics(ga: Conversation) -> None:
    """A truncate that is both malformed and aimed at an unknown item reports the schema problem (§11)."""
    error = only_error(send(ga, {"type": "conversation.item.truncate", "item_id": "unknown", "content_index": 0}))
    assert (error["code"], error["param"]) == ("missing_required_parameter", "audio_end_ms")


# The table itself -------------------------------------------------------------------------------


def test_every_rule_has_evidence_and_a_source() -> None:
    for rule in RULES:
        assert rule.evidence in ("capture", "report", "spec", "inferred", "unverified"), rule.id
        assert rule.source and rule.when, rule.id


def test_unverified_messages_are_overridable_verified_ones_are_not(tmp_path) -> None:
    book = RuleBook({"T3": "No item '{item_id}'."})
    engine = Conversation("ga", rules=book)
    assert only_error(send(engine, truncate("x", 1)))["message"] == "No item 'x'."
    with pytest.raises(RuleConfigError, match="T1 is evidenced"):
        RuleBook({"T1": "nope"})
    bad = tmp_path / "rules.json"
    bad.write_text("{not json")
    with pytest.raises(RuleConfigError, match=r"rules\.json: not JSON"):
        RuleBook.from_file(bad)
