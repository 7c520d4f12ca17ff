"""Reports of a hand-built run: terminal table, JSON, JUnit XML against the XSD, HTML, logs, baseline gate."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from rich.console import Console

from replay.clients.base import ClientOutcome
from replay.conformance import reports
from replay.conformance.cuts import Case
from replay.conformance.runner import CaseResult, RunReport
from replay.conformance.verdicts import FAILED, INFORMATIONAL, NON_STRICT, NOT_REACHED, OK, Verdict
from replay.engine.conversation import Snapshot

XSD = Path(__file__).parent / "data" / "junit-10.xsd"
ERROR_FRAME = {"type": "error", "event_id": "event_err1", "error": {
    "type": "invalid_request_error", "code": "unsupported_content_type",
    "message": "Only model output audio messages can be truncated", "param": None, "event_id": None}}
SESSION = {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}},
                                         "output": {"format": {"type": "audio/pcmu"}}}}


def snapshot(**changes: Any) -> Snapshot:
    fields: dict[str, Any] = {"response_id": "resp_1", "response_active": True, "modalities": ("audio",),
                              "item_id": "item_a", "item_type": "message", "item_held": True,
                              "part_types": ("audio",), "audio_deltas": 3, "produced_ms": 600,
                              "interrupt_response": True}
    return Snapshot(**{**fields, **changes})


def wire_log(case_id: str, after_cut: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A case log as the runner builds it: case mark, frames, the cut, the client's answer, the outcome."""
    append = {"type": "input_audio_buffer.append", "audio": {"$audio": {"bytes": 4800}}}
    return [
        {"mark": "case", "case": case_id, "title": "t", "client": "reference-fixed", "cassette": "c", "session": 0,
         "cut": "after:response.output_audio.delta#3"},
        {"t": 0.01, "dir": "server", "origin": "recorded", "event": {"type": "session.created", "session": SESSION}},
        *({"t": 0.1 + i / 100, "dir": "client", "event": append, "answered_by": "recording"} for i in range(3)),
        {"t": 0.3, "dir": "server", "origin": "recorded", "event": {
            "type": "response.output_audio.delta", "item_id": "item_a", "response_id": "resp_1",
            "delta": {"$audio": {"bytes": 800}}}},
        {"t": 0.31, "mark": "cut after:response.output_audio.delta#3: the user starts speaking", "cut": True},
        {"t": 0.32, "dir": "server", "origin": "barge-in", "event": {"type": "input_audio_buffer.speech_started",
                                                                     "audio_start_ms": 300, "item_id": "item_u"}},
        *after_cut,
        {"t": 0.7, "mark": "window closed"},
        {"mark": "client", "exit_code": None, "notes": []},
    ]


def result(case_id: str, area: str, verdict: Verdict, after_cut: list[dict[str, Any]], *,
           title: str = "interrupt mid-audio", outcome: ClientOutcome | None = None,
           divergences: list[str] | None = None) -> CaseResult:
    case = Case(case_id, title, area, "mid-audio", Path("/corpus/ga_turn.yaml"), "ga_turn", 0,
                "after:response.output_audio.delta#3", "ga", snapshot())
    log = wire_log(case_id, after_cut)
    if verdict.verdict == NOT_REACHED:  # the replay stopped short of the cut
        log = [entry for entry in log if "t" not in entry or entry["t"] < 0.3]
    return CaseResult(case, "reference-fixed", verdict, 0.42, log, outcome or ClientOutcome(), divergences or [])


LONG_TITLE = "interrupt after a function call is announced, before the conversation holds it"
NOT_REACHED_REASON = ("the replay waited 3.0 s at after:response.done#1 for the client's function_call_output and "
                      "response.create: a client that answers function calls sends them after response.done, "
                      "with the call_id call_abc123")
TRUNCATE = {"t": 0.33, "dir": "client", "answered_by": "engine",
            "event": {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0,
                      "audio_end_ms": 300}}


@pytest.fixture
def report() -> RunReport:
    refused = {**TRUNCATE, "rule": "T1", "divergence": "the recording has no conversation.item.truncate here"}
    return RunReport("reference-fixed", "0.1.0", "2026-01-01T12:00:00+00:00", 1.84, [
        result("RT-INT-1", "INT", Verdict(OK, "truncated at 300 ms of 600 ms produced (estimate 300 ms)", (),
                                          ("truncate item_a audio_end_ms=300",), 300, {"produced_ms": 600}),
               [TRUNCATE], title="interrupt <b>mid-audio</b> & more"),
        result("RT-INT-2", "INT", Verdict(INFORMATIONAL, "deleted an item whose audio had played for about 300 ms",
                                          (), ("delete item_a",), 300), []),
        result("RT-INT-3", "INT", Verdict(NON_STRICT, "sent nothing: the server's context keeps ['audio']", (), (),
                                          300), []),
        result("RT-TXT-1", "TXT", Verdict(FAILED, "server error unsupported_content_type: Only model output audio "
                                          "messages can be truncated", (ERROR_FRAME,),
                                          ("truncate item_a audio_end_ms=300",), 300),
               [refused, {"t": 0.34, "dir": "server", "origin": "engine", "event": ERROR_FRAME}],
               outcome=ClientOutcome(exit_code=1, output="<script>alert(1)</script>", notes=["sent a truncate"],
                                     crashed="Traceback\n\x1b[31mValueError\x1b[0m: boom"),
               divergences=["the recording has no conversation.item.truncate here"]),
        result("RT-FN-12", "FN", Verdict(NOT_REACHED, NOT_REACHED_REASON), [], title=LONG_TITLE,
               outcome=ClientOutcome(exit_code=-15, stopped_by_runner=True, output="x" * 100 + "\nstill waiting\n",
                                     output_dropped=4000, last_error_line="warning: no response.done seen")),
    ])


# ---------------------------------------------------------------------------- terminal


def test_summary_line_shows_coverage_and_every_verdict(report: RunReport) -> None:
    assert reports.summary_line(report) == ("reference-fixed 0.1.0: 4 of 5 cases reached — 1 OK, 1 INFORMATIONAL, "
                                            "1 NON-STRICT, 1 NOT-REACHED, 1 FAILED in 1.8 s")
    assert reports.summary_line(report, note="latency 50 ms").startswith("reference-fixed 0.1.0, latency 50 ms: 4 of")


def render(renderable: object, width: int) -> list[str]:
    console = Console(record=True, width=width, color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


def test_console_report_colors_verdicts_and_names_the_versions(report: RunReport) -> None:
    console = Console(record=True, width=200, color_system="truecolor", force_terminal=True)
    console.print(reports.ConsoleReport(report))
    lines = console.export_text(clear=False).splitlines()
    assert lines[0] == "reference-fixed 0.1.0 — rtreplay 0.1.0"
    assert any("keeps ['audio']" in line for line in lines)  # brackets in a reason are text, not rich markup
    styled = console.export_html(inline_styles=True)
    for verdict, color in (("FAILED", "#800000"), ("NOT-REACHED", "#800080"), ("OK", "#008000")):
        assert re.search(f'color: {color}[^>]*>{verdict}', styled), verdict


def test_console_report_stays_readable_at_80_columns(report: RunReport) -> None:
    lines = render(reports.ConsoleReport(report), 80)
    assert all(len(line) <= 80 for line in lines)
    rows = {line.split()[0]: line for line in lines if line.startswith("RT-")}
    assert list(rows) == ["RT-INT-1", "RT-INT-2", "RT-INT-3", "RT-TXT-1", "RT-FN-12"]  # no id split
    assert rows["RT-FN-12"].split()[1] == "NOT-REACHED" and rows["RT-FN-12"].endswith("…")  # title shortened
    assert rows["RT-INT-1"].split()[1] == "OK"
    # One line per case, the reason of each case that is not OK on at most two lines below it.
    assert len(lines) <= 1 + 5 + 2 * 4 + 1
    reason = lines[lines.index(rows["RT-FN-12"]) + 1:][:2]
    assert reason[0].startswith("          the replay waited 3.0 s") and reason[1].endswith(" …")
    words = set(NOT_REACHED_REASON.split())
    assert all(word in words for line in reason for word in line.split() if word != "…")  # no word split
    assert lines[-1].startswith("(reasons shortened to fit")


def test_quiet_shows_only_what_is_not_ok_one_line_of_reason_each(report: RunReport) -> None:
    lines = render(reports.ConsoleReport(report, quiet=True), 80)
    cases = [line.split()[0] for line in lines if line.startswith("RT-")]
    assert cases == ["RT-INT-2", "RT-INT-3", "RT-TXT-1", "RT-FN-12"]
    assert len(lines) == 1 + 4 * 2 + 1  # header, a row and a reason line each, the note


def test_user_text_is_never_markup_or_emoji(report: RunReport) -> None:
    odd = result("RT-INT-9", "INT", Verdict(FAILED, "[bold]x[/bold] :smile: at:abc:"), [], title=":smile: [red]t")
    lines = render(reports.ConsoleReport(RunReport("c", None, "2026", 1.0, [odd])), 80)
    assert ":smile: [red]t" in lines[1] and lines[2].strip() == "[bold]x[/bold] :smile: at:abc:"


# ---------------------------------------------------------------------------- JUnit


def junit(report: RunReport, tmp_path: Path, *, strict: bool) -> ET.Element:
    path = tmp_path / f"junit-{strict}.xml"
    reports.write_junit(report, path, strict=strict)
    xmlschema.XMLSchema(XSD).validate(path)
    return ET.parse(path).getroot()


def test_junit_validates_and_reports_a_failure_with_its_error_frame(report: RunReport, tmp_path: Path) -> None:
    root = junit(report, tmp_path, strict=False)
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "rtreplay reference-fixed"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "1", "1")
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["client_version"] == "0.1.0" and properties["rtreplay_version"] == "0.1.0"
    cases = {c.get("name", "").split()[0]: c for c in suite.iter("testcase")}
    assert list(cases) == ["RT-INT-1", "RT-INT-2", "RT-INT-3", "RT-TXT-1", "RT-FN-12"]
    failed = cases["RT-TXT-1"]
    assert failed.get("classname") == "rtreplay.reference-fixed.TXT" and failed.get("time") == "0.420"
    failure = failed.find("failure")
    assert failure is not None and failure.get("type") == "unsupported_content_type"
    assert failure.get("message") == report.results[3].verdict.reason
    assert failure.text is not None
    assert "Only model output audio messages can be truncated" in failure.text
    assert '"event_id": "event_err1"' in failure.text  # the frame itself, as JSON
    assert "the recording has no conversation.item.truncate here" in failure.text
    assert "- truncate item_a audio_end_ms=300" in failure.text
    err = failed.find("system-err")
    assert err is not None and err.text is not None and "\\x1b[31mValueError" in err.text  # XML cannot hold ESC
    for passing in ("RT-INT-1", "RT-INT-2", "RT-INT-3", "RT-FN-12"):
        assert cases[passing].find("failure") is None
    skipped = cases["RT-FN-12"].find("skipped")
    assert skipped is not None and skipped.get("message") == f"NOT-REACHED: {NOT_REACHED_REASON}"
    assert "client: still running after the case: stopped by rtreplay (exit code -15)" in (skipped.text or "")
    assert cases["RT-INT-1"].find("skipped") is None
    out = cases["RT-INT-3"].find("system-out")
    assert out is not None and out.text is not None and out.text.startswith("NON-STRICT: sent nothing")
    informational = cases["RT-INT-2"].find("system-out")
    assert informational is not None and "INFORMATIONAL: deleted an item" in (informational.text or "")


def test_junit_strict_makes_non_strict_a_failure(report: RunReport, tmp_path: Path) -> None:
    root = junit(report, tmp_path, strict=True)
    suite = root.find("testsuite")
    assert suite is not None and suite.get("failures") == "2"
    failures = {c.get("name", "").split()[0]: c.find("failure") for c in root.iter("testcase")}
    non_strict = failures["RT-INT-3"]
    assert non_strict is not None and non_strict.get("type") == NON_STRICT
    assert failures["RT-INT-2"] is None  # INFORMATIONAL never fails


# ---------------------------------------------------------------------------- HTML


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.depth: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("details", "table", "tbody", "tr", "pre"):
            self.depth[tag] = self.depth.get(tag, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.depth:
            self.depth[tag] -= 1


def test_html_is_one_self_contained_escaped_page(report: RunReport, tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    reports.write_html(report, path)
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    page = path.read_text(encoding="utf-8")
    assert "src=" not in page and 'href="http' not in page and "<link" not in page and "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the client's output, escaped
    assert "interrupt &lt;b&gt;mid-audio&lt;/b&gt; &amp; more" in page
    for case_id in ("RT-INT-1", "RT-INT-2", "RT-INT-3", "RT-TXT-1"):
        assert f'id="case-{case_id}"' in page and f'href="#case-{case_id}"' in page
    assert page.count('<tr class="cut">') == 4
    assert '<tr class="client after-cut">' in page  # the truncate after the cut
    assert '<tr class="server after-cut error">' in page
    assert "refused: rule T1" in page
    assert "0.100–0.120" in page and "×3 frames: audio 300 ms (14400 B)" in page  # one row, pcm16 in: 48 B/ms
    assert "audio 100 ms (800 B)" in page  # the output is pcmu: 8 B/ms
    assert re.search(r'class="badge v-FAILED">1 FAILED', page)
    assert '<span class="badge v-NOT-REACHED">1 NOT-REACHED</span>' in page and ".v-NOT-REACHED{" in page
    assert '<tr class="not-reached"><td><a href="#case-RT-FN-12">' in page
    assert "4 of 5 cases reached" in page
    assert "still running after the case: stopped by rtreplay (exit code -15)" in page
    assert "exited on its own with code 1" in page
    assert "<code>warning: no response.done seen</code>" in page
    assert "(4000 earlier characters not kept)\n" + "x" * 100 + "\nstill waiting" in page
    tags = _Tags()
    tags.feed(page)
    assert set(tags.depth.values()) == {0}


# ---------------------------------------------------------------------------- JSON and logs


def test_json_round_trips_and_logs_are_opt_in(report: RunReport, tmp_path: Path) -> None:
    path = tmp_path / "out" / "report.json"
    reports.write_json(report, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == reports.to_json(report)
    assert data["counts"] == {"OK": 1, "NON-STRICT": 1, "INFORMATIONAL": 1, "NOT-REACHED": 1, "FAILED": 1}
    assert (data["reached"], data["selected"], data["settings"]) == (4, 5, {})
    assert (data["client"], data["client_version"], data["tool_version"]) == ("reference-fixed", "0.1.0", "0.1.0")
    failed = data["cases"][3]
    assert failed["id"] == "RT-TXT-1" and failed["errors"] == [ERROR_FRAME]
    assert (failed["area"], failed["scenario"], failed["cassette"], failed["session"]) == ("TXT", "mid-audio",
                                                                                          "ga_turn", 0)
    assert failed["exit_code"] == 1 and failed["notes"] == ["sent a truncate"] and "boom" in failed["crashed"]
    assert failed["divergences"] == ["the recording has no conversation.item.truncate here"]
    assert failed["output"] == "<script>alert(1)</script>" and failed["stopped_by_runner"] is False
    unreached = data["cases"][4]
    assert (unreached["verdict"], unreached["stopped_by_runner"], unreached["last_error_line"]) == (
        "NOT-REACHED", True, "warning: no response.done seen")
    assert unreached["output"].endswith("still waiting\n") and unreached["output_dropped"] == 4000
    assert reports.to_json(report, settings={"latency_ms": 50.0})["settings"] == {"latency_ms": 50.0}
    assert "wire_log" not in failed
    with_logs = reports.to_json(report, include_logs=True)
    assert with_logs["cases"][0]["wire_log"] == report.results[0].log
    assert json.loads(json.dumps(with_logs)) == with_logs


def test_write_logs_one_jsonl_per_case(report: RunReport, tmp_path: Path) -> None:
    written = reports.write_logs(report, tmp_path / "logs")
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["RT-FN-12.jsonl", "RT-INT-1.jsonl",
                                                                     "RT-INT-2.jsonl", "RT-INT-3.jsonl",
                                                                     "RT-TXT-1.jsonl"]
    for path, case_result in zip(written, report.results, strict=True):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == case_result.log


# ---------------------------------------------------------------------------- baseline and gate


def test_gate_without_baseline(report: RunReport) -> None:
    lenient = reports.gate(report)
    assert (lenient.exit_code, lenient.new_failures, lenient.known_failures) == (1, ["RT-TXT-1"], [])
    assert lenient.message.startswith("FAIL") and "RT-TXT-1" in lenient.message and "NON-STRICT" in lenient.message
    strict = reports.gate(report, strict=True)
    assert strict.new_failures == ["RT-INT-3", "RT-TXT-1"]


def test_a_listed_failure_does_not_fail_the_run(report: RunReport) -> None:
    gate = reports.gate(report, baseline={"RT-TXT-1", "RT-FN-9"})  # RT-FN-9 is not in this run: ignored
    assert (gate.exit_code, gate.new_failures, gate.known_failures, gate.stale) == (0, [], ["RT-TXT-1"], [])
    assert gate.message.startswith("PASS") and "known" in gate.message


def test_a_new_failure_fails_the_run(report: RunReport) -> None:
    gate = reports.gate(report, strict=True, baseline={"RT-TXT-1"})
    assert (gate.exit_code, gate.new_failures, gate.known_failures) == (1, ["RT-INT-3"], ["RT-TXT-1"])


def test_a_stale_baseline_fails_the_run(report: RunReport) -> None:
    gate = reports.gate(report, baseline={"RT-TXT-1", "RT-INT-1"})
    assert (gate.exit_code, gate.new_failures, gate.stale) == (1, [], ["RT-INT-1"])
    assert "stale" in gate.message and "RT-INT-1" in gate.message


def test_a_passing_run_passes(report: RunReport) -> None:
    passing = RunReport(report.client, report.client_version, report.started_at, 1.0, report.results[:2])
    gate = reports.gate(passing, strict=True, baseline=set())
    assert (gate.exit_code, gate.new_failures, gate.stale) == (0, [], [])


def test_baseline_round_trip(report: RunReport, tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    reports.write_baseline(report, path)
    assert json.loads(path.read_text())["client"] == "reference-fixed"
    assert reports.load_baseline(path) == {"RT-TXT-1"}
    reports.write_baseline(report, path, strict=True)
    assert reports.load_baseline(path) == {"RT-INT-3", "RT-TXT-1"}
    assert reports.gate(report, strict=True, baseline=reports.load_baseline(path)).exit_code == 0


def test_plain_text_baseline(tmp_path: Path) -> None:
    path = tmp_path / "known-failures.txt"
    path.write_text("# known failures of our client\nRT-INT-3\n\n  RT-TXT-1   # upstream bug\n", encoding="utf-8")
    assert reports.load_baseline(path) == {"RT-INT-3", "RT-TXT-1"}


@pytest.mark.parametrize(("content", "expected"), [
    ('{"client": "x", "failing": ["RT-INT-1",', "not valid JSON"),
    ('{"client": "x"}', '"failing" list'),
    ('["RT-INT-1"]', '"failing" list'),
    ('{"failing": ["RT-INT-1", 3]}', "not a case id"),
    ("RT-INT-1\nRT INT 2\n", "line 2"),
    (b"\xff\xfe\x00binary", "not a text file"),
    (None, "no such baseline file"),
])
def test_invalid_baseline_names_the_file(tmp_path: Path, content: str | bytes | None, expected: str) -> None:
    path = tmp_path / "broken-baseline.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(expected)) as info:
        reports.load_baseline(path)
    assert "broken-baseline.json" in str(info.value)
