"""Conformance runs end to end: real sockets, the bundled corpus, clients with known behaviour."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from replay.cassettes.cassette import load
from replay.cassettes.corpus import conformance_corpus
from replay.clients.command import CommandClient
from replay.clients.reference import FIXED, NAIVE, Player, ReferenceClient
from replay.conformance.cuts import Case, CutError, build_cases, parse_cut, select
from replay.conformance.runner import RunOptions, RunReport, run_cases

from .conftest import CASSETTES

ROOT = Path(__file__).resolve().parents[1]
FAST = RunOptions(speed=1.0, quiet=0.2)


def corpus_cases(pattern: str = "*", cassette: str = "ga_text_turn_audio_response") -> list[Case]:
    path = CASSETTES / f"{cassette}.yaml"
    return select(build_cases([(path, load(path))]), [pattern])


def by_title(report: RunReport) -> dict[str, Any]:
    return {r.case.title: r for r in report.results}


class Scripted(ReferenceClient):
    """A reference client whose reaction to the barge-in is given by the test."""

    def __init__(self, name: str, react: Any) -> None:
        super().__init__(name, fixed=True)
        self.react = react

    def on_interrupt(self, player: Player) -> list[dict[str, Any]]:
        return self.react(player)


def truncate(player: Player, ms: int) -> list[dict[str, Any]]:
    return [{"type": "conversation.item.truncate", "item_id": player.item_id, "content_index": 0,
             "audio_end_ms": ms}]


async def test_naive_fails_exactly_where_no_audio_was_played_and_fixed_passes() -> None:
    cases = corpus_cases()
    naive = by_title(await run_cases(cases, NAIVE, FAST))
    seed = naive["interrupt before the first audio delta (audio_end_ms == 0)"]
    assert seed.verdict.verdict == "FAILED"
    assert "unsupported_content_type: Only model output audio messages can be truncated" in seed.verdict.reason
    assert naive["interrupt after the output item is announced, before the conversation holds it"].verdict.verdict \
        == "FAILED"
    assert naive["interrupt mid-audio (delta 7 of 12)"].verdict.verdict == "OK"
    fixed = await run_cases(cases, FIXED, FAST)
    assert {r.verdict.verdict for r in fixed.results} == {"OK"}, [(r.case.id, r.verdict.reason)
                                                                 for r in fixed.results]
    assert by_title(fixed)["interrupt before the first audio delta (audio_end_ms == 0)"].verdict.actions == (
        f"delete {seed.case.snapshot.item_id}",)


async def test_whole_bundled_corpus_reference_fixed_passes_everywhere() -> None:
    cases = build_cases(conformance_corpus())
    assert {c.area for c in cases} == {"INT", "DONE", "TXT", "FN"}
    report = await run_cases(cases, FIXED, RunOptions(speed=1.0, concurrency=12))
    failing = [(r.case.id, r.verdict.verdict, r.verdict.reason, r.verdict.estimate_ms, r.verdict.actions)
               for r in report.results if r.verdict.verdict != "OK"]
    assert failing == []
    naive = await run_cases(select(cases, ["RT-TXT-*", "RT-FN-*"]), NAIVE, RunOptions(speed=0))
    texts = [r for r in naive.results if r.case.scenario.startswith(("text-", "function-call-"))
             and r.case.snapshot.item_id]
    assert texts and all(r.verdict.verdict == "FAILED" for r in texts)  # any truncate of a non-audio item: T1/T3


async def test_sending_nothing_with_an_unplayed_item_is_non_strict() -> None:
    silent = Scripted("silent", lambda player: [])
    results = by_title(await run_cases(corpus_cases(), silent, FAST))
    seed = results["interrupt before the first audio delta (audio_end_ms == 0)"]
    assert seed.verdict.verdict == "NON-STRICT"
    assert seed.verdict.reason.startswith("unplayed assistant item left in the server's context; a correct client "
                                          "deletes an item")
    mid = results["interrupt mid-audio (delta 7 of 12)"]
    assert mid.verdict.verdict == "NON-STRICT" and "keeps 700 ms of audio" in mid.verdict.reason
    unheld = results["interrupt after the output item is announced, before the conversation holds it"]
    assert unheld.verdict.verdict == "OK"


async def test_truncate_beyond_produced_audio_fails_with_t2() -> None:
    overshoot = Scripted("overshoot", lambda player: truncate(player, player.received_ms + 85))
    [result] = (await run_cases(corpus_cases("RT-INT-6"), overshoot, FAST)).results
    assert result.verdict.verdict == "FAILED"
    assert "invalid_value: Audio content of 700ms is already shorter than 785ms" in result.verdict.reason
    assert result.verdict.errors[0]["error"]["event_id"] is None


async def test_truncate_far_from_the_playback_estimate_is_informational() -> None:
    whole = Scripted("whole", lambda player: truncate(player, player.received_ms))
    [result] = (await run_cases(corpus_cases("RT-INT-6"), whole, FAST)).results
    assert result.verdict.verdict == "INFORMATIONAL"
    assert "truncated at 700 ms of 700 ms produced; the playback estimate was" in result.verdict.reason


async def test_cancel_after_done_fails_with_t10_and_create_while_active_with_t9() -> None:
    cancel = Scripted("cancel", lambda player: [{"type": "response.cancel"}])
    [done] = (await run_cases(corpus_cases("RT-DONE-1"), cancel, FAST)).results
    assert done.verdict.verdict == "FAILED"
    assert "response_cancel_not_active: Cancellation failed: no active response found" in done.verdict.reason
    again = Scripted("again", lambda player: [{"type": "response.create"}])
    [active] = (await run_cases(corpus_cases("RT-INT-6"), again, RunOptions(speed=1.0, quiet=0.2))).results
    # interrupt_response is on, so the barge-in already cancelled it: a new response is allowed.
    assert active.verdict.verdict != "FAILED", active.verdict.reason


async def test_t9_when_the_session_does_not_auto_cancel(tmp_path: Path) -> None:
    """With interrupt_response off the response keeps going, and a second response.create is refused."""
    cassette = load(CASSETTES / "ga_text_turn_audio_response.yaml")
    for frame in cassette.sessions[0].frames:
        event = frame.event or {}
        turn = (event.get("session") or {}).get("audio", {}).get("input", {}).get("turn_detection")
        if isinstance(turn, dict):
            turn["interrupt_response"] = False
    path = cassette.save(tmp_path / "no_interrupt.yaml")
    cases = select(build_cases([(path, load(path))]), ["RT-INT-6"])
    again = Scripted("again", lambda player: [{"type": "response.create"}])
    [result] = (await run_cases(cases, again, FAST)).results
    assert result.verdict.verdict == "FAILED"
    assert "conversation_already_has_active_response" in result.verdict.reason


async def test_a_client_that_never_connects_fails_clearly() -> None:
    command = CommandClient("exit 3")
    [result] = (await run_cases(corpus_cases("RT-INT-1"), command, RunOptions(case_timeout=5))).results
    assert result.verdict.verdict == "FAILED" and "no session" in result.verdict.reason
    assert "exited with code 3" in result.verdict.reason and result.outcome.exit_code == 3


async def test_wire_log_marks_the_cut_and_the_engine_decisions() -> None:
    [result] = (await run_cases(corpus_cases("RT-INT-4"), NAIVE, FAST)).results
    cut = next(i for i, e in enumerate(result.log) if e.get("cut"))
    after = result.log[cut + 1:]
    assert after[0]["event"]["type"] == "input_audio_buffer.speech_started"
    assert after[0]["origin"] == "barge-in"
    truncate_entry = next(e for e in after if e.get("dir") == "client")
    assert truncate_entry["rule"] == "T1"
    assert result.log[0]["case"] == "RT-INT-4"


def test_sweep_collapses_equivalent_states_and_all_cuts_does_not() -> None:
    path = CASSETTES / "ga_text_turn_audio_response.yaml"
    cassette = load(path)
    collapsed = build_cases([(path, cassette)])
    everything = build_cases([(path, cassette)], all_cuts=True)
    assert len(everything) > 2 * len(collapsed)
    assert [c.cut for c in collapsed if c.scenario == "mid-audio"] == [
        "after:response.output_audio.delta#1", "after:response.output_audio.delta#7"]
    assert len({c.id for c in everything}) == len(everything)


def test_cut_specs() -> None:
    session = load(CASSETTES / "ga_text_turn_audio_response.yaml").sessions[0]
    index = parse_cut("after:response.output_audio.delta#3", session)
    assert session.frames[index].type == "response.output_audio.delta"
    expected = max(i for i, f in enumerate(session.frames) if f.source == "server" and f.t <= 0.6)
    assert parse_cut("at:0.6", session) == parse_cut("at:0.6s", session) == expected
    with pytest.raises(CutError, match="has 12 server frame"):
        parse_cut("after:response.output_audio.delta#13", session)
    with pytest.raises(CutError, match="a cut is"):
        parse_cut("middle", session)


CRASHER = '''
import asyncio, json, os, sys
from websockets.asyncio.client import connect

async def main():
    async with connect(os.environ["RTREPLAY_WS_URL"],
                       additional_headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}) as ws:
        heard = False
        async for raw in ws:
            kind = json.loads(raw)["type"]
            heard = heard or kind == "response.output_audio.delta"
            if kind == "input_audio_buffer.speech_started" and heard:  # the user interrupts the assistant
                print('Error: Item "item_x" not found', file=sys.stderr, flush=True)
                sys.exit(1)

asyncio.run(main())
'''


async def test_a_client_that_crashes_after_the_barge_in_fails_with_its_error_line(tmp_path: Path) -> None:
    program = tmp_path / "crasher.py"
    program.write_text(CRASHER)
    command = CommandClient(f"{sys.executable} {program}")
    [result] = (await run_cases(corpus_cases("RT-INT-6"), command, FAST)).results
    assert result.verdict.verdict == "FAILED"
    assert "the client failed after the barge-in: it exited with code 1" in result.verdict.reason
    assert 'Item "item_x" not found' in result.verdict.reason


async def test_verdicts_are_the_same_run_after_run_on_the_beta_cassette() -> None:
    cases = corpus_cases(cassette="beta_audio_response")
    runs = [await run_cases(cases, NAIVE, FAST) for _ in range(3)]
    verdicts = [[(r.case.id, r.verdict.verdict, r.verdict.actions and r.verdict.actions[0].split()[0])
                 for r in run.results] for run in runs]
    assert verdicts[0] == verdicts[1] == verdicts[2]
    assert {v for _, v, _ in verdicts[0]} == {"OK", "FAILED"}
