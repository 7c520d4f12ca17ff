"""Verdicts on both sides of every bound, through the pure `replay.conformance.verdicts.judge`.

A case's wire log is built as the server builds it (`WireLog`), from an engine fed a recorded
response, with the cut at a chosen instant; the snapshot is the engine's at the cut. Every test
names in its docstring the planted bug it guards (issue 20, docs/mutation.md).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from replay.conformance.verdicts import FAILED, INFORMATIONAL, NON_STRICT, NOT_REACHED, OK, ORDER, judge, worst
from replay.engine.conversation import Conversation, Snapshot
from replay.net.wirelog import WireLog
from replay.wire import protocol as p
from replay.wire.protocol import Dialect, IdFactory

from .conftest import Script, b64

MS = 48  # pcm16 bytes per ms


class Case:
    """One barge-in case: a response of ``deltas`` x ``delta_ms`` of audio, its first delta at t=1.0 s."""

    def __init__(self, dialect: Dialect = "ga", *, deltas: int = 10, delta_ms: int = 100, step_s: float = 0.1,
                 done: bool = False, turn: dict[str, Any] | None = None) -> None:
        self.engine = Conversation(dialect, ids=IdFactory(3))
        self.log = WireLog()
        self.script = Script(self.engine)
        if turn is not None:
            session = p.clone(self.engine.session)
            if dialect == "ga":
                session["audio"]["input"]["turn_detection"] = turn
            else:
                session["turn_detection"] = turn
            self.server(0.0, {"type": "session.updated", "session": session})
        self.script.response_start()
        for i in range(deltas):
            self.server(1.0 + i * step_s, {"type": p.AUDIO_DELTA[dialect], "response_id": "resp_1",
                                           "item_id": "item_a", "output_index": 0, "content_index": 0,
                                           "delta": b64(delta_ms * MS)})
        if done:
            self.script.done()

    def server(self, t: float, event: dict[str, Any], origin: str = "model") -> None:
        self.log.server(t, self.engine.send_server(event), origin)

    def cut(self, t: float) -> Snapshot:
        self.log.mark(t, "cut after:...: the user starts speaking", cut=True)
        return self.engine.snapshot()

    def client(self, t: float, event: dict[str, Any]) -> None:
        received = self.engine.receive_client(json.dumps(event))
        self.log.client(t, json.dumps(event), received)
        for reaction in received.reactions:
            self.server(t, reaction, "engine")

    def truncate(self, t: float, ms: int, item_id: str = "item_a") -> None:
        self.client(t, {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                        "audio_end_ms": ms})

    def delete(self, t: float, item_id: str = "item_a") -> None:
        self.client(t, {"type": "conversation.item.delete", "item_id": item_id})


# The playback estimate: wall time since the first delta, clamped to [0, produced] -------------------


def test_the_estimate_is_the_time_since_the_first_delta() -> None:
    """The estimate is the wall time from the item's first audio delta to the cut, in ms."""
    case = Case()  # 1000 ms produced by t=1.9
    snap = case.cut(1.45)
    assert judge(snap, case.log.entries).estimate_ms == 450


def test_the_estimate_is_clamped_to_the_audio_produced() -> None:
    """Planted #4 (`min(produced_ms, ...)` removed): 3 s after the first delta of 500 ms of audio, the
    client cannot have played more than the 500 ms the server sent."""
    case = Case(deltas=5)
    snap = case.cut(4.0)
    verdict = judge(snap, case.log.entries)
    assert snap.produced_ms == 500
    assert verdict.estimate_ms == 500


def test_a_truncate_at_the_end_of_all_the_audio_sent_long_ago_is_ok() -> None:
    """Planted #4, as a user sees it: truncating at all 500 ms sent (3 s of playback later) is OK; unclamped,
    the estimate would be 3000 ms and the truncate 'far' from it (INFORMATIONAL)."""
    case = Case(deltas=5)
    snap = case.cut(4.0)
    case.truncate(4.05, 500)
    verdict = judge(snap, case.log.entries)
    assert (verdict.verdict, verdict.estimate_ms) == (OK, 500), verdict.reason
    assert verdict.reason == "truncated at 500 ms of 500 ms produced (estimate 500 ms)"


def test_after_done_with_all_the_audio_heard_long_ago_nothing_is_owed() -> None:
    """Planted #4 and #5 together: well after the end of the audio, sending nothing is OK."""
    case = Case(deltas=5, done=True)
    snap = case.cut(9.0)
    verdict = judge(snap, case.log.entries)
    assert (verdict.verdict, verdict.estimate_ms) == (OK, 500)


def test_the_estimate_is_never_negative() -> None:
    """The lower clamp: a cut whose clock reads before the first delta (clock skew) is 0 ms, not negative."""
    case = Case()
    case.log.entries.append({"t": 0.5, "mark": "cut", "cut": True})
    verdict = judge(case.engine.snapshot(), case.log.entries)
    assert verdict.estimate_ms == 0


def test_no_delta_yet_is_zero_and_no_item_is_none() -> None:
    """An item with no audio delta before the cut: 0 ms heard; no output item at all: no estimate."""
    case = Case(deltas=0)
    assert judge(case.cut(1.5), case.log.entries).estimate_ms == 0
    engine = Conversation("ga", ids=IdFactory(3))
    log = WireLog()
    log.server(0.1, engine.send_server({"type": "response.created", "response": {"id": "resp_1"}}), "model")
    log.mark(0.2, "cut", cut=True)
    verdict = judge(engine.snapshot(), log.entries)
    assert verdict.estimate_ms is None
    assert (verdict.verdict, verdict.reason) == (OK, "no output item yet: nothing to truncate or delete")


def test_only_deltas_of_the_cut_item_before_the_cut_start_the_clock() -> None:
    """The clock starts at the first delta *of the item at the cut*: another item's earlier audio does not count,
    nor do deltas after the cut."""
    case = Case(deltas=3)
    case.log.entries.insert(0, {"t": 0.2, "dir": "server", "origin": "model",
                                "event": {"type": "response.output_audio.delta", "item_id": "item_other"}})
    snap = case.cut(1.25)
    case.log.server(1.3, {"type": "response.output_audio.delta", "item_id": "item_a", "delta": ""}, "model")
    assert judge(snap, case.log.entries).estimate_ms == 250


# Truncate vs estimate: the tolerance is two-sided and inclusive ------------------------------------


@pytest.mark.parametrize(("offset", "expected"), [
    (-251, INFORMATIONAL), (-250, OK), (0, OK), (250, OK), (251, INFORMATIONAL),
])
def test_truncate_vs_estimate_tolerance_on_both_sides(offset: int, expected: str) -> None:
    """Planted #7 (the tolerance made one-sided): a truncate 251 ms *before* the estimate is noticed as
    surely as one 251 ms after it; 250 ms either way is within the tolerance."""
    case = Case()  # 1000 ms produced
    snap = case.cut(1.5)  # estimate 500 ms
    case.truncate(1.55, 500 + offset)
    verdict = judge(snap, case.log.entries)
    assert verdict.estimate_ms == 500
    assert verdict.verdict == expected, verdict.reason
    if expected == INFORMATIONAL:
        assert verdict.reason == (f"truncated at {500 + offset} ms of 1000 ms produced; the playback estimate was "
                                  f"500 ms ({offset:+d} ms)")


def test_a_truncate_at_zero_long_after_the_audio_started_is_noticed() -> None:
    """Planted #7: the common bug, a client truncating at 0 after the user heard 800 ms."""
    case = Case()
    snap = case.cut(1.8)
    case.truncate(1.85, 0)
    verdict = judge(snap, case.log.entries)
    assert verdict.verdict == INFORMATIONAL and "(-800 ms)" in verdict.reason


@pytest.mark.parametrize(("tolerance", "expected"), [(99, INFORMATIONAL), (100, OK)])
def test_the_tolerance_is_the_callers(tolerance: int, expected: str) -> None:
    """`--tolerance-ms`: 100 ms under the estimate is INFORMATIONAL at 99 and OK at 100."""
    case = Case()
    snap = case.cut(1.5)
    case.truncate(1.55, 400)
    assert judge(snap, case.log.entries, tolerance_ms=tolerance).verdict == expected


def test_the_last_truncate_is_the_one_judged() -> None:
    """Several truncates of the item: the last one counts, and the reason says how many."""
    case = Case()
    snap = case.cut(1.5)
    case.truncate(1.55, 100)
    case.truncate(1.56, 90)  # accepted: 90 <= the 100 ms now held
    case.truncate(1.57, 20)
    verdict = judge(snap, case.log.entries)
    assert verdict.verdict == INFORMATIONAL
    assert verdict.reason.endswith("(-480 ms) (3 truncates)")
    case2 = Case()
    snap2 = case2.cut(1.5)
    case2.truncate(1.55, 10)
    case2.truncate(1.56, 10)
    assert judge(snap2, case2.log.entries).verdict == INFORMATIONAL
    case3 = Case()
    snap3 = case3.cut(1.5)
    case3.truncate(1.55, 900)
    case3.truncate(1.56, 500)
    verdict3 = judge(snap3, case3.log.entries)
    assert verdict3.verdict == OK and verdict3.reason.endswith("(2 truncates)")


def test_a_truncate_of_another_item_is_not_the_truncate_owed() -> None:
    """A truncate of some other item leaves the cut item untruncated (NON-STRICT), and the reason says what was sent."""
    case = Case()
    case.script.user_item("item_u")
    snap = case.cut(1.5)
    case.truncate(1.55, 400, item_id="item_u")  # refused with T1: a user item
    verdict = judge(snap, case.log.entries)
    assert verdict.verdict == FAILED  # the T1 error makes it FAILED, whatever else
    assert "unsupported_content_type" in verdict.reason


# Delete vs estimate -----------------------------------------------------------------------------


@pytest.mark.parametrize(("cut_s", "expected"), [(1.25, OK), (1.251, INFORMATIONAL)])
def test_delete_is_ok_only_while_nothing_could_be_heard(cut_s: float, expected: str) -> None:
    """A delete is OK up to the tolerance (250 ms heard), INFORMATIONAL past it."""
    case = Case()
    snap = case.cut(cut_s)
    case.delete(cut_s + 0.01)
    verdict = judge(snap, case.log.entries)
    assert verdict.verdict == expected, verdict.reason
    heard = round((cut_s - 1.0) * 1000)
    assert verdict.reason == (f"deleted the item before any of it could be heard (estimate {heard} ms)"
                              if expected == OK else f"deleted an item whose audio had played for about {heard} ms")


# Sending nothing: NON-STRICT unless everything was heard after response.done ----------------------


@pytest.mark.parametrize(("cut_s", "expected"), [(1.999, NON_STRICT), (2.0, OK), (2.5, OK)])
def test_after_done_sending_nothing_is_ok_only_once_everything_was_heard(cut_s: float, expected: str) -> None:
    """Planted #5 (the "everything was heard" condition dropped): after response.done with 1000 ms produced,
    sending nothing at 999 ms heard is NON-STRICT; at 1000 ms it is OK."""
    case = Case(done=True)
    snap = case.cut(cut_s)
    assert not snap.response_active
    verdict = judge(snap, case.log.entries)
    assert verdict.verdict == expected, verdict.reason
    if expected == OK:
        assert verdict.reason == "playback had finished: nothing to truncate"
    else:
        assert verdict.reason.startswith("sent nothing: the server's context keeps 1000 ms of audio and its "
                                         "transcript, though the user heard about 999 ms")


def test_after_done_with_little_heard_sending_nothing_is_non_strict() -> None:
    """Planted #5: a short response done at once, the user barging in 300 ms into 1000 ms of audio."""
    case = Case(step_s=0.0, done=True)
    snap = case.cut(1.3)
    assert judge(snap, case.log.entries).verdict == NON_STRICT


def test_while_active_sending_nothing_is_non_strict_even_with_everything_heard() -> None:
    """The response still runs (more may come): all produced audio heard is not an excuse."""
    case = Case()
    snap = case.cut(5.0)
    verdict = judge(snap, case.log.entries)
    assert snap.response_active and verdict.estimate_ms == 1000
    assert verdict.verdict == NON_STRICT


def test_an_unplayed_item_is_deleted_or_non_strict() -> None:
    """0 ms produced: delete is OK; nothing left behind is NON-STRICT."""
    case = Case(deltas=0)
    snap = case.cut(1.5)
    assert judge(snap, case.log.entries).verdict == NON_STRICT
    case.delete(1.6)
    verdict = judge(snap, case.log.entries)
    assert (verdict.verdict, verdict.reason) == (OK, "deleted the unplayed assistant item (livekit PR #6249)")


def test_an_item_not_yet_held_owes_nothing() -> None:
    """Before conversation.item.added the client can do nothing right but nothing."""
    engine = Conversation("ga", ids=IdFactory(3))
    Script(engine).response_start(held=False)
    log = WireLog()
    log.mark(1.0, "cut", cut=True)
    verdict = judge(engine.snapshot(), log.entries)
    assert verdict.verdict == OK and "does not hold" in verdict.reason


def test_text_only_items_are_never_owed_a_truncate() -> None:
    """A text item: nothing is OK; a delete is INFORMATIONAL (the user may have read it)."""
    engine = Conversation("ga", ids=IdFactory(3))
    Script(engine).response_start(part="text", modalities=["text"])
    log = WireLog()
    log.mark(1.0, "cut", cut=True)
    snap = engine.snapshot()
    assert judge(snap, log.entries).verdict == OK
    log.entries.append({"t": 1.1, "dir": "client", "event": {"type": "conversation.item.delete", "item_id": "item_a"}})
    assert judge(snap, log.entries).verdict == INFORMATIONAL


# Errors, raced cancels and interrupt_response ----------------------------------------------------


def test_no_cut_is_failed() -> None:
    """A replay that never reached the cut is FAILED with its reason."""
    case = Case()
    verdict = judge(case.engine.snapshot(), case.log.entries)
    assert verdict.verdict == FAILED and "never reached the cut" in verdict.reason


def test_a_server_error_is_failed_with_the_rule_and_the_fix() -> None:
    """T2 after the cut: FAILED, naming the rule and what a correct client does."""
    case = Case(deltas=3)
    snap = case.cut(1.5)
    case.truncate(1.55, 900)  # 300 ms produced
    verdict = judge(snap, case.log.entries)
    assert verdict.verdict == FAILED
    assert verdict.reason.startswith("server error invalid_value: Audio content of 300ms is already shorter than "
                                     "900ms (answer to conversation.item.truncate at t=1.550s, rule T2)")
    assert "a correct client: clamp audio_end_ms" in verdict.reason
    assert verdict.errors[0]["error"]["code"] == "invalid_value"


def test_errors_the_recording_holds_are_not_the_clients() -> None:
    """An error frame of origin 'recorded' does not fail the live client."""
    case = Case()
    snap = case.cut(1.5)
    case.log.entries.append({"t": 1.6, "dir": "server", "origin": "recorded",
                             "event": {"type": "error", "error": {"code": "x", "message": "y"}}})
    case.truncate(1.6, 500)
    assert judge(snap, case.log.entries).verdict == OK


def cancel_race(turn: dict[str, Any] | None) -> tuple[Case, Snapshot]:
    case = Case(turn=turn)
    snap = case.cut(1.5)
    for event in case.engine.barge_in():  # the server's own cancel at speech_started
        case.server(1.5, event, "barge-in")
    case.client(1.55, {"type": "response.cancel"})  # refused: T10
    case.truncate(1.56, 500)
    return case, snap


def test_a_cancel_racing_the_servers_own_cancel_is_informational() -> None:
    """With interrupt_response on, the client's response.cancel races the server's and is refused: harmless."""
    case, snap = cancel_race({"type": "server_vad", "interrupt_response": True})
    verdict = judge(snap, case.log.entries)
    assert verdict.verdict == INFORMATIONAL and "raced the server's own cancel" in verdict.reason
    assert verdict.errors[0]["error"]["code"] == "response_cancel_not_active"


def test_the_race_is_excused_when_interrupt_response_is_omitted() -> None:
    """Planted #8 (`interrupt_response` defaulting to false when omitted): the session omits the field, the
    API's default (true) applies, the server cancelled by itself, so the refused cancel is a race, not a FAILED."""
    case, snap = cancel_race({"type": "server_vad"})
    assert snap.interrupt_response is True
    assert judge(snap, case.log.entries).verdict == INFORMATIONAL


def test_no_race_without_interrupt_response() -> None:
    """interrupt_response false: a refused cancel is the client's bug (FAILED)."""
    case = Case(turn={"type": "server_vad", "interrupt_response": False})
    snap = case.cut(1.5)
    case.engine.active.clear()  # the response finished on its own before the client's cancel
    case.client(1.55, {"type": "response.cancel"})
    assert judge(snap, case.log.entries).verdict == FAILED
    raced = judge(replace(snap, interrupt_response=True), case.log.entries)
    assert raced.verdict == NON_STRICT and "raced the server's own cancel" in raced.reason  # no truncate: NON-STRICT
    inactive = replace(snap, interrupt_response=True, response_active=False)
    assert judge(inactive, case.log.entries).verdict == FAILED


def test_a_cancel_refused_before_the_cut_is_no_race() -> None:
    """Only an answer after the cut can have raced the barge-in."""
    case = Case(turn={"type": "server_vad"})
    case.engine.active.clear()
    case.client(1.2, {"type": "response.cancel"})  # refused before the user spoke
    snap = replace(case.cut(1.5), response_active=True)
    assert judge(snap, case.log.entries).verdict == FAILED


def test_closing_early_is_said_and_actions_are_listed() -> None:
    """The reason tells that the client closed during the window; appends are not listed as actions."""
    case = Case()
    snap = case.cut(1.5)
    case.client(1.51, {"type": "input_audio_buffer.append", "audio": b64(480)})
    case.truncate(1.55, 500)
    case.delete(1.56, "item_x")
    verdict = judge(snap, case.log.entries, client_closed_early=True)
    assert verdict.actions == ("truncate item_a audio_end_ms=500", "delete item_x")
    assert verdict.reason.endswith("; the client closed the connection during the window")
    assert verdict.details == {"produced_ms": 1000, "item_id": "item_a", "item_held": True, "response_active": True}


def test_worst_orders_the_verdicts() -> None:
    """FAILED beats NOT-REACHED beats NON-STRICT beats INFORMATIONAL beats OK; nothing is OK."""
    assert ORDER == (OK, INFORMATIONAL, NON_STRICT, NOT_REACHED, FAILED)
    assert worst([OK, NON_STRICT, INFORMATIONAL]) == NON_STRICT
    assert worst([FAILED, NOT_REACHED]) == FAILED
    assert worst([]) == OK
