"""Reports built from what a client or an in-process driver put in a result stay bounded whatever its size,
the wire log cuts long strings at any depth without changing its shape, and an interrupted run's JUnit
report is valid JUnit."""

from __future__ import annotations

import io
import json
from pathlib import Path

import xmlschema
from rich.console import Console

from replay.clients.base import ClientOutcome
from replay.conformance import reports
from replay.conformance.cuts import Case
from replay.conformance.runner import CaseResult, RunReport
from replay.conformance.verdicts import FAILED, Verdict
from replay.engine.conversation import Snapshot
from replay.net.wirelog import WireLog, loggable

XSD = Path(__file__).resolve().parents[1] / "data" / "junit-10.xsd"
HUGE = "x" * 10_000_000


def _case(case_id: str) -> Case:
    snapshot = Snapshot(response_id="resp_1", response_active=True, modalities=("audio",), item_id="item_a",
                        item_type="message", item_held=True, part_types=("audio",), audio_deltas=3, produced_ms=600,
                        interrupt_response=True)
    return Case(case_id, "interrupt mid-audio", "INT", "mid-audio", Path("/corpus/ga_turn.yaml"), "ga_turn", 0,
                "after:response.output_audio.delta#3", "ga", snapshot)


def test_loggable_cuts_long_strings_at_any_depth_and_keeps_the_shape() -> None:
    event = {"type": "conversation.item.create", "item": {"content": [{"type": "input_text", "text": HUGE}],
                                                          HUGE: "a key"}}
    logged = loggable(event)
    text = logged["item"]["content"][0]["text"]
    assert len(text) < 2100 and text.endswith("(9998000 more characters)")
    assert logged["type"] == "conversation.item.create" and isinstance(logged["item"]["content"], list)
    assert len(json.dumps(logged)) < 5000
    assert event["item"]["content"][0]["text"] is HUGE  # the engine's event is left as it came

    small = {"type": "response.create", "response": {"instructions": "short"}}
    assert loggable(small) is small  # nothing to cut: no copy

    deep: dict[str, object] = {"type": "session.update"}
    node = deep
    for _ in range(500):
        node["session"] = {}
        node = node["session"]  # type: ignore[assignment]
    WireLog([{"t": 0, "dir": "client", "event": loggable(deep)}]).dumps()  # no RecursionError


def test_what_a_driver_put_in_a_result_is_cut_in_every_report(tmp_path: Path) -> None:
    error = {"type": "error", "error": {"code": "item_truncate_invalid_item_id", "message": f"no item {HUGE}"}}
    outcome = ClientOutcome(exit_code=1, output=HUGE, notes=[HUGE] * 3, crashed=f"Traceback\nValueError: {HUGE}",
                            last_error_line=HUGE)
    verdict = Verdict(FAILED, f"the server failed the session: {HUGE}", (error,) * 3, (f"truncate {HUGE}",) * 3,
                      300, {"item_id": HUGE})
    result = CaseResult(_case("RT-INT-1"), "driver", verdict, 0.5, [{"mark": "case", "case": "RT-INT-1"}], outcome,
                        [HUGE] * 3)
    run = RunReport("driver", None, "2026-01-01T12:00:00+00:00", 1.0, [result])

    reports.write_json(run, tmp_path / "r.json")
    reports.write_junit(run, tmp_path / "r.xml")
    reports.write_html(run, tmp_path / "r.html")
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    assert all(size < 1_000_000 for size in sizes.values()), sizes  # today: 100 MB and more each
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(reports.ConsoleReport(run))
    assert len(console.export_text()) < 10_000


def test_an_interrupted_runs_reports_say_so_and_its_junit_is_valid(tmp_path: Path) -> None:
    finished = CaseResult(_case("RT-INT-1"), "driver", Verdict(FAILED, "server error x"), 0.5, [], ClientOutcome())
    run = RunReport("driver", None, "2026-01-01T12:00:00+00:00", 1.0, [finished], interrupted=True,
                    signal="SIGTERM", unfinished=[_case("RT-INT-2"), _case("RT-INT-3")])

    reports.write_junit(run, tmp_path / "r.xml")
    xmlschema.XMLSchema(XSD).validate(tmp_path / "r.xml")
    data = reports.to_json(run)
    assert data["interrupted"] is True and data["signal"] == "SIGTERM"
    assert [c["id"] for c in data["unfinished"]] == ["RT-INT-2", "RT-INT-3"]
    page = reports.render_html(run)
    assert "interrupted by SIGTERM: 1 of 3 case(s) finished; not finished: RT-INT-2, RT-INT-3" in page
    assert reports.summary_line(run).endswith("(interrupted by SIGTERM: 2 case(s) not finished)")
