"""The example clients a user copies first: voice clients that stream audio and never type a turn."""

from __future__ import annotations

import base64
import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from replay.cassettes.cassette import load
from replay.clients.command import CommandClient
from replay.conformance.cuts import Case, build_cases
from replay.conformance.runner import RunOptions, RunReport, run_cases

from .conftest import CASSETTES

ROOT = Path(__file__).resolve().parents[1]
PYTHON = f"{shlex.quote(sys.executable)} {ROOT / 'examples' / 'naive_client.py'}"
# One cassette of each kind: a typed turn, a voice turn, text only, a function-call round.
KINDS = ("ga_text_turn_audio_response", "ga_server_vad_turn", "ga_text_only_response", "ga_function_call_round")


def node() -> str | None:
    """`node` with a global WebSocket (Node >= 22, or 20 with the experimental flag), if installed."""
    found = shutil.which("node")
    for flags in ("", " --experimental-websocket"):
        if found and subprocess.run([found, *flags.split(), "-e", "WebSocket"], capture_output=True).returncode == 0:
            return f"{found}{flags} {ROOT / 'examples' / 'naive_client.mjs'}"
    return None


NODE = node()
needs_node = pytest.mark.skipif(NODE is None, reason="no Node.js with a global WebSocket on this machine")


def cases(*names: str) -> list[Case]:
    paths = [CASSETTES / f"{name}.yaml" for name in names]
    return build_cases([(path, load(path)) for path in paths])


def no_audio_yet(case: Case) -> bool:
    """The assistant item exists but none of its audio does: truncating it at 0 ms is the naive bug."""
    return case.snapshot.item_id is not None and case.snapshot.produced_ms == 0


async def run(command: str, selected: list[Case]) -> RunReport:
    return await run_cases(selected, CommandClient(command), RunOptions(concurrency=8))


def check_fixed(command: str, tmp_path: Path) -> None:
    report = tmp_path / "fixed.json"
    kinds = [arg for name in KINDS for arg in ("--cassette", name)]
    result = CliRunner().invoke(app, ["check", "--cmd", f"FIXED=1 {command}", *kinds, "--concurrency", "8",
                                      "--quiet", "--json", str(report)])
    assert result.exit_code == 0, result.output
    verdicts = {case["id"]: case["verdict"] for case in json.loads(report.read_text())["cases"]}
    assert "FAILED" not in verdicts.values(), result.output
    unreached = [i for i, v in verdicts.items() if v == "NOT-REACHED" and i.startswith(("RT-INT-", "RT-DONE-"))]
    assert unreached == [], result.output


async def check_naive(command: str) -> None:
    report = await run(command, cases(*KINDS))
    failed = {r.case.id for r in report.results if r.verdict.verdict == "FAILED"}
    assert failed == {r.case.id for r in report.results if no_audio_yet(r.case)}, [
        (r.case.id, r.verdict.verdict, r.verdict.reason) for r in report.results]
    seed = next(r for r in report.results if r.case.scenario == "no-audio")
    assert seed.log[-1]["mark"] == "client" and "Only model output audio messages" in seed.log[-1]["output"]


async def test_the_examples_stream_the_microphone_and_never_type_a_turn() -> None:
    """What holds whatever the server does with the audio: 20 ms appends of pcm16, nothing typed."""
    selected = [c for c in cases("ga_text_turn_audio_response") if c.id == "RT-INT-6"]
    for command in [PYTHON, *([NODE] if NODE else [])]:
        [result] = (await run(command, selected)).results
        sent = [e["event"] for e in result.log if e.get("dir") == "client" and "event" in e]
        appends = [e for e in sent if e["type"] == "input_audio_buffer.append"]
        assert len(appends) >= 10, command
        assert {e["audio"]["$audio"]["bytes"] for e in appends} == {960}, command  # 20 ms at 48 bytes per ms
        typed = [e["type"] for e in sent if e["type"] in ("conversation.item.create", "response.create")]
        assert typed == [], command


def test_answering_a_function_call_sends_its_output_and_asks_for_a_response() -> None:
    spec = importlib.util.spec_from_file_location("naive_client", ROOT / "examples" / "naive_client.py")
    assert spec is not None and spec.loader is not None
    naive_client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(naive_client)
    call = {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"}
    assert naive_client.answer_function_calls({"status": "completed", "output": [call]}) == [
        {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_1",
                                                       "output": '{"ok": true}'}},
        {"type": "response.create"}]
    assert naive_client.answer_function_calls({"status": "cancelled", "output": [call]}) == []
    assert base64.b64decode(naive_client.SILENCE) == bytes(960)


def test_the_fixed_python_client_passes_every_case_it_reaches(tmp_path: Path) -> None:
    check_fixed(PYTHON, tmp_path)


async def test_the_naive_python_client_fails_exactly_where_no_audio_was_played() -> None:
    await check_naive(PYTHON)


@needs_node
def test_the_fixed_javascript_client_passes_every_case_it_reaches(tmp_path: Path) -> None:
    assert NODE is not None
    check_fixed(NODE, tmp_path)


@needs_node
async def test_the_naive_javascript_client_fails_exactly_where_no_audio_was_played() -> None:
    assert NODE is not None
    await check_naive(NODE)
