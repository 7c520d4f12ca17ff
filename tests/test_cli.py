"""The command line as a user meets it: exit codes, clear errors, files written."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

import cli
from cli import app
from replay.cassettes.cassette import load
from replay.clients.command import CONNECT_TIMEOUT, TERM_GRACE
from replay.conformance.runner import RunOptions, RunReport
from replay.conformance.verdicts import FAILED, NOT_REACHED, OK, Verdict

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
    from replay.cassettes.cassette import Frame

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
                 ["check", "--baseline", str(broken), "--case", "RT-INT-1"],
                 ["check", "--client", "os:path", "--case", "RT-INT-1"],
                 ["check", "--client", "collections:OrderedDict", "--case", "RT-INT-1"],
                 ["check", "--latency", "fast"], ["check", "--latency", "0,-5"], ["check", "--min-coverage", "150"],
                 ["check", "--shard", "3/2"], ["check", "--shard", "half"], ["check", "--shard", "0/4"],
                 ["check", "--node-modules", str(tmp_path / "missing")],
                 ["serve", "ga_text_turn_audio_response", "--latency", "-1"]):
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
    assert ("reference-naive 0.1.0: 1 of 1 case reached — 0 OK, 0 INFORMATIONAL, 0 NON-STRICT, 0 NOT-REACHED, "
            "1 FAILED") in out
    assert "reference-fixed 0.1.0: 1 of 1 case reached — 1 OK" in out


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


def test_a_blank_cmd_is_an_error_not_the_demo() -> None:
    for blank in ("", "   "):
        code, out = run("check", "--cmd", blank, "--case", "RT-INT-1")
        assert code == 2 and "error: --cmd is empty" in out and "reference-naive" not in out, out


class GaOnly:
    """A client that speaks GA only and should never be run in these tests."""

    name = "ga-only"
    dialects = ("ga",)

    def version(self) -> str | None:
        return None

    async def run(self, target: object, stop: object) -> object:
        raise AssertionError("not to be run")


GA_ONLY = GaOnly()


def test_a_selection_that_runs_nothing_exits_2() -> None:
    code, out = run("check", "--client", "tests.test_cli:GA_ONLY", "--cassette", "beta_audio_response")
    assert code == 2 and "nothing to run for ga-only: it speaks ga only" in out, out
    code, out = run("check", "--case", "RT-INT-1", "--shard", "2/2")
    assert code == 2 and "--shard 2/2: this shard of the 1 selected case(s) is empty" in out, out


def test_two_shards_together_list_every_case_once() -> None:
    every = run("check", "--list")[1].splitlines()
    first, second = (run("check", "--list", "--shard", shard)[1].splitlines() for shard in ("1/2", "2/2"))
    assert first and second and not set(first) & set(second)
    assert sorted(first + second) == sorted(every)


def test_a_port_out_of_range_or_in_use_is_one_clear_error(tmp_path: Path) -> None:
    for args in (["serve", "ga_text_turn_audio_response", "--port", "99999"],
                 ["record", "-o", str(tmp_path / "r.yaml"), "--port", "99999"],
                 ["serve", "ga_text_turn_audio_response", "--port", "-1"]):
        code, out = run(*args)
        assert code == 2 and "Traceback" not in out and "--port" in out, (args, out)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for args in (["serve", "ga_text_turn_audio_response", "--port", port],
                     ["record", "-o", str(tmp_path / "r.yaml"), "--port", port]):
            code, out = run(*args)
            assert code == 2 and f"cannot listen on 127.0.0.1:{port}: Address already in use" in out, (args, out)
    assert not (tmp_path / "r.yaml").exists()


def test_report_paths_are_checked_before_the_run(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for option, path, message in (("--json", a_file / "no" / "r.json", "cannot create the directory"),
                                  ("--junit-xml", tmp_path, "is a directory"),
                                  ("--html", a_file / "r.html", "is not a directory"),
                                  ("--write-baseline", a_file / "b.json", "is not a directory"),
                                  ("--logs", a_file, "is not a directory")):
        code, out = run("check", "--client", "reference-fixed", "--case", "RT-INT-1", option, str(path))
        assert code == 2 and message in out, (option, out)
        assert "RT-INT-1" not in out  # nothing ran


def test_a_report_in_a_new_directory_is_written_there(tmp_path: Path) -> None:
    report = tmp_path / "reports" / "nested" / "r.xml"
    code, out = run("check", "--client", "reference-fixed", "--case", "RT-INT-1", "--junit-xml", str(report))
    assert code == 0 and report.read_text().startswith("<?xml"), out


def test_user_text_is_printed_as_given_never_as_emoji_or_markup() -> None:
    code, out = run("check", "--cassette", "ga_text_turn_audio_response", "--cut", "at:abc")
    assert code == 2 and "at:abc: a cut is" in out and "🔤" not in out, out
    code, out = run("check", "--case", ":smile:")
    assert code == 2 and "no case matches ':smile:'" in out and "😄" not in out, out
    code, out = run("check", "--case", "[bold]x[/bold]")
    assert code == 2 and "[bold]x[/bold]" in out, out


def test_quiet_prints_only_what_is_not_ok_and_the_summary() -> None:
    code, out = run("check", "--client", "reference-naive", "--case", "RT-INT-[1-5]", "--speed", "0", "--quiet")
    assert code == 1, out
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("RT-")]
    assert rows == ["RT-INT-2", "RT-INT-3", "RT-INT-4"]
    assert "reference-naive 0.1.0: 5 of 5 cases reached — 2 OK" in out
    assert "No client named" not in out


def test_a_latency_sweep_reports_each_value_and_announces_each_file(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    code, out = run("check", "--client", "reference-fixed", "--case", "RT-INT-1", "--speed", "0",
                    "--latency", "0,50", "--json", str(report), "--junit-xml", str(tmp_path / "j.xml"))
    assert code == 0, out
    assert "reference-fixed 0.1.0, latency 0 ms: 1 of 1 case reached" in out
    assert "reference-fixed 0.1.0, latency 50 ms: 1 of 1 case reached" in out
    for delay in ("0", "50"):
        written = tmp_path / f"r.latency-{delay}ms.json"
        assert f"wrote {written}" in out and f"wrote {tmp_path / f'j.latency-{delay}ms.xml'}" in out
        assert json.loads(written.read_text())["settings"] == {"latency_ms": float(delay)}


def test_node_modules_reaches_the_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI sets RTREPLAY_NODE_MODULES for its process; in-process here, so it is undone after the test
    # (left set, it would send every later JS driver on this worker to an empty directory).
    monkeypatch.setenv("RTREPLAY_NODE_MODULES", str(tmp_path))
    program = ("import asyncio, os\nfrom websockets.asyncio.client import connect\n"
               "print('modules at', os.environ['RTREPLAY_NODE_MODULES'], flush=True)\n"
               "async def main():\n"
               "    async with connect(os.environ['RTREPLAY_WS_URL'], additional_headers={'Authorization': "
               "'Bearer ' + os.environ['OPENAI_API_KEY']}) as ws:\n"
               "        async for _ in ws:\n            pass\n"
               "asyncio.run(main())\n")
    script = tmp_path / "agent.py"
    script.write_text(program)
    report = tmp_path / "r.json"
    code, out = run("check", "--cmd", f"{sys.executable} {script}", "--case", "RT-INT-1", "--node-modules",
                    str(tmp_path), "--json", str(report))
    assert code in (0, 1), out
    [case] = json.loads(report.read_text())["cases"]
    assert f"modules at {tmp_path}\n" in case["output"], out


def test_a_program_that_is_not_found_is_one_error_before_the_sweep() -> None:
    code, out = run("check", "--cmd", "no-such-agent-rtreplay", "--case", "RT-INT-*")
    assert code == 2, out
    assert "error: --cmd 'no-such-agent-rtreplay': the program was not found (exit code 127)" in out
    assert "RT-INT-1" not in out and out.count("error:") == 1


def test_a_run_that_reaches_no_case_exits_2(tmp_path: Path) -> None:
    script = tmp_path / "hangs-up.py"
    script.write_text("import asyncio, os\nfrom websockets.asyncio.client import connect\n"
                      "async def main():\n    async with connect(os.environ['RTREPLAY_WS_URL'], "
                      "additional_headers={'Authorization': 'Bearer x'}):\n        pass\nasyncio.run(main())\n")
    code, out = run("check", "--cmd", f"{sys.executable} {script}", "--case", "RT-INT-[1-2]")
    assert code == 2, out
    assert "0 of 2 cases reached" in out and "reached none of its 2 case(s)" in out and "PASS" not in out


def test_coverage_decides_the_exit_code() -> None:
    def report(*verdicts: str) -> RunReport:
        results = [SimpleNamespace(verdict=Verdict(v, "why")) for v in verdicts]
        return RunReport("agent", None, "2026-01-01", 1.0, results)  # type: ignore[arg-type]

    code, message = cli._reached_exit(report(NOT_REACHED, NOT_REACHED), None)
    assert code == 2 and message is not None and "agent reached none of its 2 case(s)" in message
    assert cli._reached_exit(report(OK, NOT_REACHED), 60)[0] == 1
    assert cli._reached_exit(report(OK, NOT_REACHED), 50) == (0, None)
    assert cli._reached_exit(report(FAILED, NOT_REACHED), None) == (0, None)  # one reached: a verdict to act on


def test_the_limits_in_help_are_the_runners() -> None:
    defaults = RunOptions()
    assert (defaults.max_window, defaults.case_timeout, defaults.stall) == (cli.WINDOW_S, cli.CASE_TIMEOUT_S,
                                                                            cli.STALL_S)
    code, out = run("check", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert code == 0
    assert f"must connect within {CONNECT_TIMEOUT:g} s" in text and f"SIGKILL {TERM_GRACE:g} s later" in text
    assert f"at most {cli.WINDOW_S:g} s" in text and f"gives up {cli.CASE_TIMEOUT_S:g} s" in text
    assert f"silent for {cli.STALL_S:g} s with nothing due is NOT-REACHED" in text
