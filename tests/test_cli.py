"""The command line as a user meets it: exit codes, clear errors, files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from replay.cassette import load

from .conftest import CASSETTES, TRACES

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_lint_passes_the_bundled_cassettes_and_fails_a_doctored_one(tmp_path: Path) -> None:
    code, out = run("lint", *[str(p) for p in sorted(CASSETTES.glob("*.yaml"))])
    assert code == 0, out
    cassette = load(CASSETTES / "ga_text_turn_audio_response.yaml")
    frames = cassette.sessions[0].frames
    # The recording now claims the server accepted a truncate of the user's item: T1 says it would not.
    user_item = next(f.event["item"]["id"] for f in frames if f.type == "conversation.item.added")  # type: ignore[index]
    from replay.cassette import Frame

    frames.append(Frame(frames[-1].t + 0.1, "client", {"type": "conversation.item.truncate", "item_id": user_item,
                                                        "content_index": 0, "audio_end_ms": 10}))
    frames.append(Frame(frames[-1].t + 0.1, "server", {"type": "error", "event_id": "event_x", "error": {
        "type": "invalid_request_error", "code": "made_up", "message": "Not a real message", "param": None,
        "event_id": None}}))
    bad = cassette.save(tmp_path / "doctored.yaml")
    code, out = run("lint", str(bad))
    assert code == 1
    assert "[rule] rule T1 refuses this conversation.item.truncate" in out
    assert "[unexplained-error] recorded server error the rules would not have produced: made_up" in out


@pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/traces/real is not beside the checkout")
def test_lint_finds_no_false_violation_in_the_genuine_traces(tmp_path: Path) -> None:
    for trace in sorted(TRACES.glob("*.jsonl")):
        out_path = tmp_path / f"{trace.stem}.yaml"
        code, out = run("import", str(trace), "-o", str(out_path))
        assert code == 0, out
        code, out = run("lint", str(out_path))
        assert code == 0, f"{trace.name}: {out}"


def test_bad_input_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\ninteractions: [")
    for args in (["show", str(broken)], ["lint", str(broken)], ["serve", "no_such_cassette"],
                 ["check", "--cassette", str(broken)], ["check", "--client", "no-such-client", "--case", "RT-INT-1"],
                 ["check", "--case", "RT-NOPE-*"], ["check", "--speed", "-1"],
                 ["check", "--cassette", "ga_text_turn_audio_response", "--cut", "after:nothing#1"],
                 ["check", "--baseline", str(broken), "--case", "RT-INT-1"]):
        code, out = run(*args)
        assert code == 2, (args, out)
        assert "Traceback" not in out and "error:" in out, (args, out)


def test_show_prints_a_timeline_with_audio_as_ms() -> None:
    code, out = run("show", "ga_text_turn_audio_response")
    assert code == 0
    assert "response.output_audio.delta" in out and "audio 100 ms (4800 B)" in out
    assert "origin=synthesized" in out


def test_check_exit_codes_reports_and_baseline_both_ways(tmp_path: Path) -> None:
    junit, html, report = tmp_path / "j.xml", tmp_path / "r.html", tmp_path / "r.json"
    base = ["check", "--client", "reference-naive", "--case", "RT-INT-[1-4]", "--speed", "0"]
    code, out = run(*base, "--junit-xml", str(junit), "--html", str(html), "--json", str(report),
                    "--write-baseline", str(tmp_path / "baseline.json"))
    assert code == 1, out
    data = json.loads(report.read_text())
    assert {c["id"]: c["verdict"] for c in data["cases"]} == {
        "RT-INT-1": "OK", "RT-INT-2": "FAILED", "RT-INT-3": "FAILED", "RT-INT-4": "FAILED"}
    assert junit.read_text().count("<testcase") == 4 and "<html" in html.read_text()
    # Known failures do not fail the run...
    code, out = run(*base, "--baseline", str(tmp_path / "baseline.json"))
    assert code == 0, out
    # ...and a listed case that now passes does (the baseline is stale).
    code, out = run("check", "--client", "reference-fixed", "--case", "RT-INT-[1-4]", "--speed", "0",
                    "--baseline", str(tmp_path / "baseline.json"))
    assert code == 1 and "RT-INT-2" in out


def test_check_without_a_client_demonstrates_on_the_reference_clients() -> None:
    code, out = run("check", "--case", "RT-INT-4", "--speed", "0")
    assert code == 0, out  # reference-fixed's exit code; reference-naive fails as expected
    assert "reference-naive 0.1.0: 1 case — 0 OK, 0 INFORMATIONAL, 0 NON-STRICT, 1 FAILED" in out
    assert "reference-fixed 0.1.0: 1 case — 1 OK" in out


def test_serve_prints_the_url_and_the_export_line() -> None:
    process = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", "ga_text_turn_audio_response",
                                "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=ROOT)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
    finally:
        process.terminate()
        process.wait(10)
    text = "".join(lines)
    assert "ws://127.0.0.1:" in text and "/v1/realtime?model=gpt-realtime" in text
    assert "export OPENAI_BASE_URL=http://127.0.0.1:" in text
