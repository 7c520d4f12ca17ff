"""Tests that kill the mutants mutmut left alive in the pure core (docs/mutation.md).

Each test says which behaviour a surviving mutant changed without any test noticing. They drive the
public pure API: ``RuleBook``, ``Conversation`` and its state, ``judge``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from replay.engine import Conversation
from replay.protocol import IdFactory
from replay.rules import RuleBook, RuleConfigError
from replay.verdicts import ADVICE_UNHEARD, FAILED, NON_STRICT, OK, judge
from replay.wirelog import WireLog

from .conftest import Script, b64

# RuleBook: overrides, files, error frames and close reasons --------------------------------------


def test_an_unknown_rule_id_names_the_known_ones() -> None:
    with pytest.raises(RuleConfigError) as info:
        RuleBook({"T99": "x"})
    message = str(info.value)
    assert message.startswith("unknown rule id 'T99'; known: T1, T2, T3, ")


def test_an_evidenced_rule_says_only_unverified_messages_can_be_overridden() -> None:
    with pytest.raises(RuleConfigError) as info:
        RuleBook({"T2": "x"})
    assert str(info.value) == "rule T2 is evidenced (report); only unverified messages can be overridden"


def test_an_override_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(RuleConfigError) as info:
        RuleBook({"T3": 5})  # type: ignore[dict-item]
    assert str(info.value) == "the message for T3 must be a string"


def test_a_rules_file_is_read_as_utf8_and_applied(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_bytes(json.dumps({"T3": "Kein Element '{item_id}' — ✓"}, ensure_ascii=False).encode("utf-8"))
    book = RuleBook.from_file(path)
    error = book.error("T3", event_id="e1", server_event_id="event_9", item_id="x")
    assert error["error"]["message"] == "Kein Element 'x' — ✓"


@pytest.mark.parametrize(("content", "expected"), [
    (None, "cannot read: No such file or directory"),
    ("[1, 2]", "expected a JSON object of rule id -> message"),
    ('{"T99": "x"}', "unknown rule id 'T99'"),
    ("{nope", "not JSON: "),
])
def test_a_bad_rules_file_names_itself_and_the_problem(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "rules.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(RuleConfigError) as info:
        RuleBook.from_file(path)
    assert str(info.value).startswith(f"{path}: {expected}")


def test_an_error_frame_carries_the_servers_own_event_id() -> None:
    error = RuleBook().error("T10", event_id="client_1", server_event_id="event_42")
    assert error == {"type": "error", "event_id": "event_42", "error": {
        "type": "invalid_request_error", "code": "response_cancel_not_active",
        "message": "Cancellation failed: no active response found", "param": None, "event_id": "client_1"}}


@pytest.mark.parametrize(("rule", "fields", "reason"), [
    ("T17-auth", {}, "invalid_request_error"),  # no code: the type alone
    ("T17-bad-key", {"masked": "sk-...AAAA"}, "invalid_request_error.invalid_api_key"),
    ("T17-missing-model", {}, "invalid_request_error.missing_model"),
    ("T18", {"minutes": "60"}, "Your session hit the maximum duration of 60 minutes."),  # 1001 repeats the message
])
def test_close_reasons_are_type_dot_code_or_the_expiry_message(rule: str, fields: dict[str, str],
                                                              reason: str) -> None:
    assert RuleBook().close_reason(rule, **fields) == reason


# judge: reasons, actions and details (mutants that changed the words a user reads) ----------------


def log_case(*, deltas: int = 10, step_s: float = 0.1) -> tuple[Conversation, WireLog]:
    """A response whose item_a gets ``deltas`` x 100 ms of audio from t=1.0 s, logged as the server logs it."""
    engine = Conversation("ga", ids=IdFactory(3))
    log = WireLog()
    Script(engine).response_start()
    for i in range(deltas):
        event = {"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_a",
                 "output_index": 0, "content_index": 0, "delta": b64(100 * 48)}
        log.server(1.0 + i * step_s, engine.send_server(event), "model")
    return engine, log


def client(engine: Conversation, log: WireLog, t: float, event: dict[str, Any] | bytes) -> None:
    data = event if isinstance(event, bytes) else json.dumps(event)
    received = engine.receive_client(data)
    log.client(t, data, received)
    for reaction in received.reactions:
        log.server(t, engine.send_server(reaction), "engine")


def test_never_reaching_the_cut_says_so_exactly() -> None:
    engine, log = log_case()
    verdict = judge(engine.snapshot(), log.entries)
    assert verdict.reason == ("the replay never reached the cut (the client did not drive the recorded session "
                              "that far)")


def test_actions_name_every_event_after_the_cut_but_appends() -> None:
    """A retrieve is listed with its item, an event without a type as '?', anything else by its type."""
    engine, log = log_case()
    log.mark(1.5, "cut", cut=True)
    snap = engine.snapshot()
    for event in ({"type": "input_audio_buffer.append", "audio": b64(48)}, {"type": "conversation.item.retrieve",
                                                                             "item_id": "item_a"},
                  {"type": "response.cancel"}):
        client(engine, log, 1.6, event)
    log.entries.append({"t": 1.7, "dir": "client", "event": {"item_id": "item_a"}})  # logged with no type
    verdict = judge(snap, log.entries)
    assert verdict.actions == ("retrieve item_a", "response.cancel", "?")


def test_actions_and_details_are_kept_when_nothing_failed() -> None:
    engine, log = log_case()
    log.mark(1.5, "cut", cut=True)
    snap = engine.snapshot()
    client(engine, log, 1.55, {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0,
                               "audio_end_ms": 500})
    verdict = judge(snap, log.entries)
    assert verdict.verdict == OK
    assert verdict.actions == ("truncate item_a audio_end_ms=500",)
    assert verdict.details == {"produced_ms": 1000, "item_id": "item_a", "item_held": True, "response_active": True}


def test_a_failed_verdict_keeps_the_estimate() -> None:
    engine, log = log_case()
    log.mark(1.5, "cut", cut=True)
    snap = engine.snapshot()
    client(engine, log, 1.55, {"type": "conversation.item.delete", "item_id": "item_nope"})
    verdict = judge(snap, log.entries)
    assert verdict.verdict == FAILED and verdict.estimate_ms == 500


def test_every_error_is_in_the_reason_separated_by_semicolons() -> None:
    """Two refused events, a fixless rule (T5), and a binary frame ('a frame'), each with its own reason."""
    engine, log = log_case()
    log.mark(1.5, "cut", cut=True)
    snap = engine.snapshot()
    client(engine, log, 1.55, {"type": "conversation.item.retrieve", "item_id": "item_nope"})
    client(engine, log, 1.56, b"\x00")
    verdict = judge(snap, log.entries)
    assert verdict.reason == (
        "server error item_retrieve_invalid_item_id: Error retrieving item: the item with id 'item_nope' does not "
        "exist. (answer to conversation.item.retrieve at t=1.550s, rule T5); "
        "server error invalid_event: Expected a text WebSocket message; binary frames are not supported. "
        "(answer to a frame at t=1.560s, rule T17-binary)")


def test_an_error_no_client_frame_caused_names_no_rule() -> None:
    """An error the server sent on its own (the session expired) after an accepted truncate: no 'answer to'."""
    engine, log = log_case()
    log.mark(1.5, "cut", cut=True)
    snap = engine.snapshot()
    client(engine, log, 1.55, {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0,
                               "audio_end_ms": 500})
    log.server(1.6, engine.rules.error("T18", event_id=None, server_event_id="event_x", minutes="60"), "engine")
    verdict = judge(snap, log.entries)
    assert verdict.reason == "server error session_expired: Your session hit the maximum duration of 60 minutes."


def test_a_raw_recorded_frame_before_the_cut_does_not_trip_the_estimate() -> None:
    """Recorded raw frames (no parsed event) sit in the log; the estimate skips them."""
    engine, log = log_case()
    log.entries.insert(0, {"t": 0.1, "dir": "server", "origin": "recorded", "text": "not json"})
    log.mark(1.5, "cut", cut=True)
    assert judge(engine.snapshot(), log.entries).estimate_ms == 500


def test_what_else_the_client_sent_is_appended_to_the_reason() -> None:
    """Truncates and deletes of other items are listed after the reason, in order."""
    engine, log = log_case()
    log.mark(1.5, "cut", cut=True)
    snap = engine.snapshot()
    log.entries.append({"t": 1.6, "dir": "client", "event": {"type": "conversation.item.truncate",
                                                            "item_id": "item_z", "audio_end_ms": 5}})
    log.entries.append({"t": 1.7, "dir": "client", "event": {"type": "conversation.item.delete", "item_id": "item_y"}})
    verdict = judge(snap, log.entries)
    assert verdict.verdict == NON_STRICT
    assert verdict.reason == (
        "sent nothing: the server's context keeps 1000 ms of audio and its transcript, though the user heard about "
        f"500 ms; {ADVICE_UNHEARD} (it also sent: truncate item_z audio_end_ms=5, delete item_y)")


def test_a_delete_of_another_item_is_not_a_delete_of_this_one() -> None:
    engine, log = log_case()
    Script(engine).user_item("item_u")
    log.mark(1.5, "cut", cut=True)
    snap = engine.snapshot()
    client(engine, log, 1.55, {"type": "conversation.item.delete", "item_id": "item_u"})
    verdict = judge(snap, log.entries)
    assert verdict.verdict == NON_STRICT and verdict.reason.endswith("(it also sent: delete item_u)")


def test_the_raced_cancel_reason_in_full() -> None:
    engine, log = log_case()
    log.mark(1.5, "cut", cut=True)
    snap = engine.snapshot()
    for event in engine.barge_in():
        log.server(1.5, engine.send_server(event), "barge-in")
    client(engine, log, 1.55, {"type": "response.cancel"})
    client(engine, log, 1.56, {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0,
                               "audio_end_ms": 500})
    verdict = judge(snap, log.entries)
    assert verdict.reason == (
        "truncated at 500 ms of 1000 ms produced (estimate 500 ms); its response.cancel raced the server's own "
        "cancel (interrupt_response is on) and was refused with response_cancel_not_active: harmless if ignored, "
        "and unnecessary")


def test_a_cut_right_at_the_first_delta_heard_nothing() -> None:
    """0 ms heard is 0 ms, in the reason of a delete and of sending nothing."""
    engine, log = log_case(deltas=1)
    log.mark(1.0, "cut", cut=True)
    snap = engine.snapshot()
    assert judge(snap, log.entries).reason.startswith(
        "sent nothing: the server's context keeps 100 ms of audio and its transcript, though the user heard about 0 ms")
    client(engine, log, 1.05, {"type": "conversation.item.delete", "item_id": "item_a"})
    verdict = judge(snap, log.entries)
    assert (verdict.verdict, verdict.reason) == (OK, "deleted the item before any of it could be heard (estimate 0 ms)")


def test_text_and_function_call_items_say_what_they_are() -> None:
    engine = Conversation("ga", ids=IdFactory(3))
    Script(engine).response_start(part="text", modalities=["text"])
    log = WireLog()
    log.mark(1.0, "cut", cut=True)
    snap = engine.snapshot()
    assert judge(snap, log.entries).reason == \
        "sent no truncate for a text-only item (only model audio can be truncated)"
    call = replace(snap, item_type="function_call", part_types=())
    assert judge(call, log.entries).reason == \
        "sent no truncate for a function call (only model audio can be truncated)"
    log.entries.append({"t": 1.1, "dir": "client", "event": {"type": "conversation.item.delete", "item_id": "item_a"}})
    assert judge(call, log.entries).reason == "deleted the function call, which the user may already have seen"
    assert judge(snap, log.entries).reason == "deleted the text-only item, which the user may already have seen"


def test_an_unheld_item_reason() -> None:
    engine = Conversation("ga", ids=IdFactory(3))
    Script(engine).response_start(held=False)
    log = WireLog()
    log.mark(1.0, "cut", cut=True)
    assert judge(engine.snapshot(), log.entries).reason == \
        "sent nothing for an item the conversation does not hold (livekit PR #6249)"
