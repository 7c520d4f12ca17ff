"""Tests that kill the mutants mutmut left alive in the pure core (docs/mutation.md).

Each test says which behaviour a surviving mutant changed without any test noticing. They drive the
public pure API: ``RuleBook``, ``Conversation`` and its state, ``judge``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from replay.cassettes.cassette import Frame, WebSocketSession, load
from replay.conformance.cuts import Case, CutError, build_cases, cut_label, parse_cut, select, shard, sweep
from replay.conformance.verdicts import ADVICE_UNHEARD, FAILED, NON_STRICT, OK, judge
from replay.engine import state
from replay.engine.conversation import Conversation
from replay.engine.state import empty_usage
from replay.net.wirelog import WireLog
from replay.wire import protocol
from replay.wire.protocol import IdFactory, silence_b64
from replay.wire.rules import RuleBook, RuleConfigError

from .conftest import CASSETTES, Script, b64, send

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
    (None, "no such rules file"),
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


# cuts: case selection and CI shards ----------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_cases() -> list[Case]:
    paths = [CASSETTES / "ga_text_turn_audio_response.yaml", CASSETTES / "ga_text_only_response.yaml"]
    return build_cases([(path, load(path)) for path in paths])


def test_select_takes_case_sensitive_globs_and_everything_when_none(corpus_cases: list[Case]) -> None:
    ids = [case.id for case in corpus_cases]
    assert select(corpus_cases, []) == corpus_cases
    assert [c.id for c in select(corpus_cases, ["RT-INT-*"])] == [i for i in ids if i.startswith("RT-INT-")]
    assert [c.id for c in select(corpus_cases, ["RT-INT-1", "RT-TXT-*"])] == \
        [i for i in ids if i == "RT-INT-1" or i.startswith("RT-TXT-")]
    assert select(corpus_cases, ["rt-int-*"]) == []


def test_shards_are_round_robin_and_cover_every_case_once(corpus_cases: list[Case]) -> None:
    assert shard(corpus_cases, 1, 2) == corpus_cases[0::2]
    assert shard(corpus_cases, 2, 2) == corpus_cases[1::2]
    assert shard(corpus_cases, 1, 1) == corpus_cases
    assert shard(corpus_cases, 3, 3) == corpus_cases[2::3]


@pytest.mark.parametrize(("index", "count"), [(0, 2), (3, 2), (1, 0), (-1, 2)])
def test_a_shard_outside_1_to_n_is_refused(corpus_cases: list[Case], index: int, count: int) -> None:
    with pytest.raises(ValueError) as info:
        shard(corpus_cases, index, count)
    assert str(info.value) == f"shard {index}/{count}: K/N needs 1 <= K <= N"


def test_an_explicit_cut_outside_a_response_is_the_user_speaking_while_nothing_is_generated() -> None:
    path = CASSETTES / "ga_text_only_response.yaml"
    audio = CASSETTES / "ga_text_turn_audio_response.yaml"
    [text_case] = build_cases([(path, load(path))], cuts=["after:session.updated#1"])
    [audio_case] = build_cases([(audio, load(audio))], cuts=["after:session.created#1"])
    assert (text_case.area, text_case.scenario, text_case.title) == ("TXT", "text-done", "interrupt outside a response")
    assert (audio_case.area, audio_case.scenario, audio_case.title) == (
        "DONE", "after-done", "interrupt outside a response")
    assert (text_case.id, audio_case.id) == ("RT-TXT-1", "RT-DONE-1")
    assert text_case.snapshot.modalities == ("text",) and text_case.position is None


# state: silence, usage ----------------------------------------------------------------------------


def test_silence_is_that_many_zero_bytes_and_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    cache: dict[int, str] = {}
    monkeypatch.setattr(protocol, "_SILENCE_CACHE", cache)
    assert base64.b64decode(silence_b64(4801)) == bytes(4801)
    assert cache == {4801: silence_b64(4801)}
    assert silence_b64(0) == ""
    silence_b64(protocol.SILENCE_CACHED_BYTES + 1)  # a huge odd size is made, not kept
    assert len(cache) == 2


def test_the_silence_cache_stops_at_256_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    cache: dict[int, str] = {n: "" for n in range(1000, 1255)}
    monkeypatch.setattr(protocol, "_SILENCE_CACHE", cache)
    silence_b64(3)  # the 256th entry is kept
    silence_b64(5)  # the 257th is not
    assert 3 in cache and 5 not in cache and len(cache) == 256


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_empty_usage_is_zeroed_in_the_dialects_shape(dialect: str) -> None:
    image = {"image_tokens": 0} if dialect == "ga" else {}
    assert empty_usage(dialect) == {  # type: ignore[arg-type]
        "total_tokens": 0, "input_tokens": 0, "output_tokens": 0,
        "input_token_details": {"text_tokens": 0, "audio_tokens": 0, **image, "cached_tokens": 0,
                                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, **image}},
        "output_token_details": {"text_tokens": 0, "audio_tokens": 0}}


# state: events as recordings bring them (fields missing, ids absent, out of band) -------------------


def fresh(dialect: str = "ga", **kwargs: Any) -> Conversation:
    return Conversation(dialect, ids=IdFactory(5), **kwargs)  # type: ignore[arg-type]


def test_notes_name_what_the_server_could_not_apply() -> None:
    conv = fresh()
    conv.send_server({"type": "conversation.item.added"})  # no item
    conv.send_server({"type": "conversation.item.deleted", "item_id": "item_gone"})
    conv.send_server({"type": "response.created", "response": {"id": "resp_1"}})
    conv.send_server({"type": "response.created", "response": {"id": "resp_2"}})
    conv.send_server({"type": "response.done", "response": {"id": "resp_nope"}})
    assert conv.notes == [
        "conversation.item.added: cannot apply (KeyError: 'item')",
        "conversation.item.deleted for 'item_gone', which the server did not hold",
        "response.created resp_2 while resp_1 was still active",
        "response.done resp_nope with no such response active",
    ]
    assert conv.send_server({"other": 1}) == {"other": 1} and len(conv.notes) == 4  # no type: passed through


def test_an_item_announced_without_type_or_status_is_a_completed_message() -> None:
    conv = fresh()
    conv.send_server({"type": "conversation.item.added", "previous_item_id": None,
                      "item": {"id": "item_u", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
    item = conv.items["item_u"]
    assert (item.type, item.role, item.status, item.held) == ("message", "user", "completed", True)
    assert conv.item_object(item)["content"] == [{"type": "input_text", "text": "hi"}]


def test_a_function_call_keeps_its_name_call_id_arguments_and_output() -> None:
    conv = fresh()
    call = {"id": "item_f", "type": "function_call", "name": "f", "call_id": "c1", "arguments": "{}"}
    conv.send_server({"type": "conversation.item.added", "previous_item_id": None, "item": call})
    out = {"id": "item_o", "type": "function_call_output", "call_id": "c1", "output": "42"}
    conv.send_server({"type": "conversation.item.added", "previous_item_id": "item_f", "item": out})
    assert conv.item_object(conv.items["item_f"]) == {"id": "item_f", "type": "function_call",
                                                       "status": "completed", "name": "f", "call_id": "c1",
                                                       "arguments": "{}"}
    assert conv.item_object(conv.items["item_o"])["output"] == "42"


def user(conv: Conversation, item_id: str, previous: str | None) -> None:
    conv.send_server({"type": "conversation.item.added", "previous_item_id": previous,
                      "item": {"id": item_id, "type": "message", "role": "user", "content": []}})


def test_previous_item_id_places_the_item() -> None:
    """After a named item, at the root (null), last after the last item or an unknown one."""
    conv = fresh()
    user(conv, "a", None)  # the first item
    user(conv, "b", "a")
    user(conv, "c", "a")  # after a, before b
    user(conv, "d", None)  # root: first
    user(conv, "e", "b")  # after the last: last
    user(conv, "f", "nowhere")  # unknown: last
    assert list(conv.items) == ["d", "a", "c", "b", "e", "f"]


def test_an_item_announced_again_moves_and_stays_one() -> None:
    conv = fresh()
    user(conv, "a", None)
    user(conv, "b", "a")
    user(conv, "a", "b")  # announced again after b
    assert list(conv.items) == ["b", "a"]
    user(conv, "b", "b")  # after itself: last
    assert list(conv.items) == ["a", "b"]


def test_item_done_updates_status_or_adds_an_item_never_added() -> None:
    conv = fresh()
    Script(conv).response_start()
    conv.send_server({"type": "conversation.item.done", "item": {"id": "item_a", "status": "incomplete",
                                                                  "content": [{"type": "output_text"}]}})
    item = conv.items["item_a"]
    assert item.status == "incomplete"
    assert item.content == []  # its parts are what the stream built, not the done's content
    conv.send_server({"type": "conversation.item.done", "item": {"id": "item_a"}})
    assert item.status == "incomplete"  # no status: unchanged
    conv.send_server({"type": "conversation.item.done", "item": {"id": "item_new", "type": "message",
                                                                  "role": "user", "content": [{"type": "input_text"}]}})
    assert conv.items["item_new"].held and conv.items["item_new"].content == [{"type": "input_text"}]
    conv.send_server({"type": "conversation.item.done", "item": {"id": "item_new", "content": [{"type": "x"}]}})
    assert conv.items["item_new"].content == [{"type": "x"}]  # no parts: the done's content


def delta(conv: Conversation, nbytes: int, index: int = 0, item_id: str = "item_a") -> None:
    conv.send_server({"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": item_id,
                      "output_index": 0, "content_index": index, "delta": b64(nbytes)})


def two_parts(conv: Conversation) -> None:
    Script(conv).response_start()  # part 0: audio
    conv.send_server({"type": "response.content_part.added", "response_id": "resp_1", "item_id": "item_a",
                      "output_index": 0, "content_index": 1, "part": {"type": "output_audio"}})


def test_parts_are_addressed_by_content_index() -> None:
    conv = fresh()
    two_parts(conv)
    delta(conv, 480, index=1)
    delta(conv, 96, index=0)
    item = conv.items["item_a"]
    assert [p.type for p in item.parts] == ["audio", "audio"]
    assert [p.audio_bytes for p in item.parts] == [96, 480]
    conv.send_server({"type": "conversation.item.truncated", "item_id": "item_a", "content_index": 1,
                      "audio_end_ms": 5})
    assert [p.audio_bytes for p in item.parts] == [96, 240] and item.parts[1].truncated
    delta(conv, 480, index=1)  # after a truncate, the part's audio ends where the client cut it
    assert item.parts[1].audio_bytes == 240
    conv.send_server({"type": "conversation.item.truncated", "item_id": "item_a", "audio_end_ms": 1})
    assert item.parts[0].audio_bytes == 48  # no content_index: part 0


def test_a_part_without_a_type_is_text_and_a_compacted_delta_counts_its_bytes() -> None:
    conv = fresh()
    Script(conv).response_start(part=None)
    conv.send_server({"type": "response.content_part.added", "response_id": "resp_1", "item_id": "item_a",
                      "output_index": 0, "content_index": 0})
    assert conv.items["item_a"].parts[0].type == "text"
    conv.send_server({"type": "response.output_text.delta", "item_id": "item_a", "content_index": 0})
    conv.send_server({"type": "response.output_text.delta", "item_id": "item_a", "delta": "hi"})
    assert conv.items["item_a"].parts[0].text == "hi"
    conv2 = fresh()
    Script(conv2).response_start()
    conv2.send_server({"type": "response.output_audio.delta", "item_id": "item_a", "content_index": 0,
                       "delta": {"$audio": {"bytes": 960}}})
    conv2.send_server({"type": "response.output_audio.delta", "item_id": "item_a", "content_index": 0,
                       "delta": {"$audio": {}}})
    conv2.send_server({"type": "response.output_audio_transcript.delta", "item_id": "item_a", "content_index": 0})
    part = conv2.items["item_a"].parts[0]
    assert (part.audio_bytes, part.deltas, part.transcript) == (960, 2, "")


def test_part_done_sets_the_final_text_or_transcript_unless_truncated() -> None:
    conv = fresh()
    Script(conv).response_start()
    delta(conv, 4800)
    conv.send_server({"type": "response.content_part.done", "item_id": "item_a", "content_index": 0,
                      "part": {"type": "audio", "transcript": "all of it"}})
    part = conv.items["item_a"].parts[0]
    assert part.done and part.transcript == "all of it"
    conv2 = fresh()
    Script(conv2).response_start()
    delta(conv2, 4800)
    conv2.send_server({"type": "conversation.item.truncated", "item_id": "item_a", "content_index": 0,
                       "audio_end_ms": 10})
    conv2.send_server({"type": "response.content_part.done", "item_id": "item_a", "content_index": 0,
                       "part": {"type": "audio", "transcript": "never heard", "text": "x"}})
    assert conv2.items["item_a"].parts[0].transcript == "" and conv2.items["item_a"].parts[0].text == ""
    conv3 = fresh()
    Script(conv3).response_start(part="text", modalities=["text"])
    conv3.send_server({"type": "response.content_part.done", "item_id": "item_a", "content_index": 0,
                       "part": {"type": "text", "text": "final", "transcript": "t"}})
    assert conv3.items["item_a"].parts[0].text == "final" and conv3.items["item_a"].parts[0].transcript == ""
    conv3.send_server({"type": "response.content_part.done", "item_id": "item_a", "content_index": 0})
    assert conv3.items["item_a"].parts[0].text == "final"


def test_output_items_without_type_or_status_and_their_response() -> None:
    conv = fresh()
    conv.send_server({"type": "response.created", "response": {"id": "resp_1"}})
    conv.send_server({"type": "response.created", "response": {"id": "resp_oob", "conversation_id": None}})
    conv.send_server({"type": "response.output_item.added", "response_id": "resp_1",
                      "item": {"id": "item_a", "role": "assistant"}})
    conv.send_server({"type": "response.output_item.added", "response_id": "resp_oob", "output_index": 2,
                      "item": {"id": "item_b", "type": "function_call", "name": "f"}})
    a, b = conv.items["item_a"], conv.items["item_b"]
    assert (a.type, a.status, a.held, a.response_id, a.output_index) == ("message", "in_progress", False, "resp_1", 0)
    assert (b.response_id, b.output_index, b.extra) == ("resp_oob", 2, {"name": "f"})
    assert conv.active["resp_1"].items == ["item_a"] and conv.active["resp_oob"].items == ["item_b"]
    conv.send_server({"type": "response.output_item.added", "item": {"id": "item_c"}})  # no response id: the current
    assert conv.active["resp_1"].items == ["item_a", "item_c"]
    conv.send_server({"type": "response.output_item.done",
                      "item": {"id": "item_b", "status": "completed", "call_id": "c", "arguments": "{}"}})
    assert b.output_done and b.status == "completed" and b.extra == {"name": "f", "call_id": "c", "arguments": "{}"}
    conv.send_server({"type": "response.output_item.done", "item": {"id": "item_b"}})
    assert b.status == "completed"


def test_an_out_of_band_response_is_not_the_conversations() -> None:
    conv = fresh()
    conv.send_server({"type": "response.created", "response": {"id": "resp_1", "modalities": ["text"]}})
    conv.send_server({"type": "response.done", "response": {"id": "resp_1"}})
    conv.send_server({"type": "response.created", "response": {"id": "resp_oob", "conversation_id": None}})
    assert conv.active["resp_oob"].out_of_band and conv.default_response is None
    assert conv.last_response is not None and conv.last_response.id == "resp_1"  # the default conversation's
    assert conv.active["resp_oob"].text_only is False and conv.notes == []
    conv.send_server({"type": "response.created", "response": {"id": "resp_2", "conversation_id": "conv_1"}})
    assert conv.last_response.id == "resp_2" and not conv.active["resp_2"].out_of_band
    fresh_conv = fresh()
    fresh_conv.send_server({"type": "response.created", "response": {"id": "resp_oob", "conversation_id": None}})
    assert fresh_conv.last_response is not None and fresh_conv.last_response.id == "resp_oob"  # none before it
    reserved = fresh()
    send(reserved, {"type": "response.create", "response": {"conversation": "none"}})
    assert reserved.active and next(iter(reserved.active.values())).out_of_band
    assert reserved._requested is None and reserved._out_of_band_pending is False


def test_a_response_done_without_an_id_ends_the_current_response() -> None:
    conv = fresh()
    conv.send_server({"type": "response.created", "response": {"modalities": ["audio"]}})
    assert list(conv.active) == [""]
    conv.send_server({"type": "response.done"})
    assert conv.active == {} and conv.notes == []
    conv.send_server({"type": "response.done"})
    assert conv.notes == ["response.done None with no such response active"]
    other = fresh()
    other.send_server({"type": "response.created", "response": {"id": "resp_1"}})
    other.send_server({"type": "response.done", "response": {"id": "resp_2"}})
    assert list(other.active) == ["resp_1"]  # a named, unknown id ends nothing


def test_session_events_replace_the_session_unless_elided() -> None:
    conv = fresh()
    conv.send_server({"type": "session.created", "session": {"id": "s", "type": "realtime"}})
    assert conv.session == {"id": "s", "type": "realtime"}
    conv.send_server({"type": "session.updated", "session": {"_elided_by_util_inspect": True}})
    conv.send_server({"type": "session.updated", "session": "[Object]"})
    assert conv.session == {"id": "s", "type": "realtime"}


def test_vad_offsets_set_the_clock_speech_is_measured_on() -> None:
    conv = fresh()
    conv.send_server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 5000})
    assert conv.speech_started()["audio_start_ms"] == 5000
    conv.send_server({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 7000})
    assert conv.speech_stopped()[0]["audio_end_ms"] == 7000


def test_a_template_keeps_the_recorded_settings_not_its_identity() -> None:
    recorded = {"id": "sess_rec", "object": "realtime.session", "expires_at": 99, "client_secret": {"value": "x"},
                "model": "gpt-recorded", "instructions": "recorded", "type": "realtime",
                "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "ash"}}}
    conv = fresh(template=recorded)
    assert conv.session["id"] != "sess_rec" and conv.session["object"] == "realtime.session"
    assert conv.session["expires_at"] == 3600 and "client_secret" not in conv.session
    assert conv.session["model"] == "gpt-recorded" and conv.session["instructions"] == "recorded"
    assert conv.recorded_bytes_per_ms == 8
    named = fresh(template=recorded, model="gpt-live")
    assert named.session["model"] == "gpt-live"
    assert fresh().recorded_bytes_per_ms == 48
    beta = fresh("beta", template={**recorded, "object": "x"})
    assert beta.session["object"] == "realtime.session" and "client_secret" in beta.session


def test_produced_ms_is_whole_ms_in_quanta_and_none_for_non_audio() -> None:
    conv = fresh(audio_quantum_ms=20)
    Script(conv).response_start()
    delta(conv, 1019 * 48)
    assert conv.produced_ms(conv.items["item_a"]) == 1000
    one = fresh()
    Script(one).response_start()
    delta(one, 1)
    assert one.produced_ms(one.items["item_a"]) == 0  # audio exists: 0 ms, truncatable
    assert send(one, {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0,
                      "audio_end_ms": 0})[0]["type"] == "conversation.item.truncated"
    user(one, "item_u", "item_a")
    one.items["item_u"].parts.append(state.Part("audio", audio_bytes=480))
    assert one.produced_ms(one.items["item_u"]) is None  # a user item is never model audio


def test_snapshot_modalities_fall_back_to_audio() -> None:
    conv = fresh()
    conv.session.pop("output_modalities")
    conv.send_server({"type": "response.created", "response": {"id": "resp_1"}})
    assert conv.snapshot().modalities == ("audio",)
    conv.session["output_modalities"] = "text"  # not a list
    conv.send_server({"type": "response.created", "response": {"id": "resp_2"}})
    assert conv.snapshot().modalities == ("audio",)
    conv.session["output_modalities"] = ["text"]
    assert conv.snapshot().modalities == ("text",)


# cuts: frames a recording may hold, time cuts on the dot, case fields --------------------------------


def test_a_time_cut_includes_a_frame_at_exactly_that_instant_and_needs_one() -> None:
    session = load(CASSETTES / "ga_text_turn_audio_response.yaml").sessions[0]
    index, frame = next((i, f) for i, f in enumerate(session.frames) if f.source == "server" and f.t > 0.1)
    later = [i for i, f in enumerate(session.frames) if f.source == "server" and f.t == frame.t]
    assert parse_cut(f"at:{frame.t!r}", session) == later[-1] >= index
    first = min(f.t for f in session.frames)
    with pytest.raises(CutError) as info:
        parse_cut("at:0.0", session) if first > 0 else parse_cut("at:0.0", WebSocketSession("u", "ga", []))
    assert str(info.value) == "at:0.0: no server frame at or before 0.0 s"


def test_unparsed_and_typeless_frames_are_skipped_by_the_sweep() -> None:
    recorded = load(CASSETTES / "ga_text_turn_audio_response.yaml").sessions[0]
    frames = [recorded.frames[0], Frame(0.001, "server", text="not json"), Frame(0.002, "server", event={"x": 1}),
              *recorded.frames[1:]]
    session = WebSocketSession(recorded.uri, recorded.dialect, frames)
    assert cut_label(session, 0) == "after:session.created#1"
    assert [p[0] - 2 for p in sweep(session, all_cuts=True)] == [p[0] for p in sweep(recorded, all_cuts=True)]


def test_a_case_knows_its_cassette_session_and_dialect() -> None:
    path = CASSETTES / "beta_audio_response.yaml"
    cassette = load(path)
    [case] = build_cases([(path, cassette)], cuts=["after:response.audio.delta#2"])
    assert (case.cassette, case.cassette_name, case.session_index, case.dialect) == (
        path, cassette.name, 0, "beta")
    assert case.cut == "after:response.output_audio.delta#2"  # GA names for both dialects


# output: the response object, speech, and an empty response ---------------------------------------


def created(conv: Conversation, **params: Any) -> dict[str, Any]:
    event = {"type": "response.create", **({"response": params} if params else {})}
    [reaction] = send(conv, event)
    response = dict(reaction["response"])
    response.pop("id")
    return response


def test_the_ga_response_object_takes_the_sessions_settings_and_the_requests() -> None:
    conv = fresh()
    base = {"object": "realtime.response", "status": "in_progress", "status_details": None, "output": [],
            "conversation_id": conv.conversation_id, "output_modalities": ["audio"], "max_output_tokens": "inf",
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}},
            "usage": None, "metadata": None}
    assert created(conv) == base
    oob = fresh()
    assert created(oob, conversation="none", metadata={"k": "v"}, max_output_tokens=50,
                   audio={"output": {"voice": "ash", "format": {"type": "audio/pcmu"}}}) == {
        **base, "conversation_id": None, "max_output_tokens": 50, "metadata": {"k": "v"},
        "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "ash"}}}
    bare = fresh()
    for key in ("output_modalities", "max_output_tokens"):
        bare.session.pop(key)
    bare.session["audio"] = {}
    assert created(bare)["output_modalities"] == ["audio"] and created(fresh())["max_output_tokens"] == "inf"


def test_the_beta_response_object_takes_the_sessions_settings_and_the_requests() -> None:
    conv = fresh("beta")
    base = {"object": "realtime.response", "status": "in_progress", "status_details": None, "output": [],
            "modalities": ["audio", "text"], "voice": "alloy", "output_audio_format": "pcm16", "temperature": 0.8,
            "max_output_tokens": "inf", "usage": None, "metadata": None}
    assert created(conv) == base
    assert created(fresh("beta"), voice="ash", temperature=0.6, output_audio_format="g711_ulaw",
                   max_response_output_tokens=9, modalities=["text"]) == {
        **base, "voice": "ash", "temperature": 0.6, "output_audio_format": "g711_ulaw", "max_output_tokens": 9,
        "modalities": ["text"]}
    bare = fresh("beta")
    bare.session.pop("modalities")
    bare.session.pop("max_response_output_tokens")
    assert created(bare)["modalities"] == ["audio", "text"]
    bare2 = fresh("beta")
    bare2.session.pop("max_response_output_tokens")
    assert created(bare2)["max_output_tokens"] == "inf"
    ga = fresh()
    ga.session.pop("output_modalities")
    assert ga.response_modalities({}) == ["audio"]
    ga.session["output_modalities"] = ["text"]
    assert ga.response_modalities({}) == ["text"]


def test_an_empty_completed_response_when_the_recording_has_none_left() -> None:
    conv = fresh()
    send(conv, {"type": "response.create"})
    response = conv.default_response
    assert response is not None
    [done] = conv.finish_empty(response.id)
    assert done["type"] == "response.done"
    assert (done["response"]["id"], done["response"]["status"], done["response"]["status_details"]) == (
        response.id, "completed", None)
    assert done["response"]["usage"] == empty_usage("ga") and done["response"]["output"] == []
    assert conv.finish_empty("resp_unknown") == []


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_speech_stopped_commits_the_heard_item_and_transcribes_it_if_asked(dialect: str) -> None:
    conv = fresh(dialect)
    started = conv.speech_started("item_rec", 100)
    conv.send_server(started)
    events = conv.speech_stopped("hello", 900)
    assert [e["type"] for e in events][:2] == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed"]
    assert events[0]["item_id"] == events[1]["item_id"] == "item_rec" and events[0]["audio_end_ms"] == 900
    assert not any(e["type"].endswith("transcription.completed") for e in events)  # transcription off
    transcribed = fresh(dialect)
    if dialect == "ga":
        transcribed.session["audio"]["input"]["transcription"] = {"model": "whisper-1"}
    else:
        transcribed.session["input_audio_transcription"] = {"model": "whisper-1"}
    last = transcribed.speech_stopped("hello")[-1]
    assert {k: v for k, v in last.items() if k != "event_id"} == {
        "type": "conversation.item.input_audio_transcription.completed", "item_id": last["item_id"],
        "content_index": 0, "transcript": "hello"}
    assert last["item_id"].startswith("item_") and transcribed._speech_item is None
    assert transcribed.speech_stopped(None)[-1]["type"] != last["type"]  # no transcript: nothing to say


def test_speech_started_pads_by_300_ms_unless_told_otherwise() -> None:
    conv = fresh()
    conv.input_audio_ms = 1000.0
    conv.session["audio"]["input"]["turn_detection"]["prefix_padding_ms"] = "x"  # not an int: the default
    assert conv.speech_started()["audio_start_ms"] == 700
    conv.session["audio"]["input"]["turn_detection"].pop("prefix_padding_ms")
    assert conv.speech_started()["audio_start_ms"] == 700
    conv.input_audio_ms = 100.0
    assert conv.speech_started()["audio_start_ms"] == 0  # never before the session's start


def test_a_second_barge_in_sends_no_second_cancel() -> None:
    conv = fresh()
    Script(conv).response_start()
    Script(conv).audio(100)
    first = conv.barge_in()
    assert first[-1]["type"] == "response.done" and first[-1]["response"]["id"] == "resp_1"
    conv2 = fresh()
    Script(conv2).response_start()
    tail = conv2.barge_in()[1:]  # not applied: the response is still active, and cancelling
    assert tail and conv2.active["resp_1"].cancelling is True
    assert [e["type"] for e in conv2.barge_in()] == ["input_audio_buffer.speech_started"]


def test_the_cancel_tail_of_the_current_response_and_of_a_finished_item() -> None:
    conv = fresh()
    Script(conv).response_start()
    Script(conv).audio(100)
    conv.send_server({"type": "response.output_item.done", "response_id": "resp_1", "output_index": 0,
                      "item": {"id": "item_a", "status": "completed"}})
    tail = conv.cancel_tail("client_cancelled")  # no id: the current response
    assert [e["type"] for e in tail] == ["response.done"]
    assert tail[0]["response"]["output"] == [conv.item_object(conv.items["item_a"])]
    assert tail[0]["response"]["output"][0]["status"] == "completed"


def test_a_cut_after_a_frame_with_no_event_type_resolves_to_that_frame() -> None:
    """cut_label and parse_cut count a typeless server frame (text, binary) under the same name."""
    frames = [Frame(0.0, "server", event={"type": "session.created", "session": {}}),
              Frame(0.1, "server", text="not json"), Frame(0.2, "server", text="again")]
    session = WebSocketSession("wss://api.openai.com/v1/realtime?model=gpt-realtime", "ga", frames)
    for index in (1, 2):
        assert parse_cut(cut_label(session, index), session) == index
