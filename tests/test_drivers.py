"""The real libraries, as installed, through their own interrupt paths (issue: check the real clients).

These run livekit-agents, openai-agents, pipecat and the openai SDK for real against the replay
server; CI installs them all (the `dev` extra), so nothing here is skipped for a missing library.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import app
from replay.cassettes.cassette import load
from replay.clients.base import MissingDependency
from replay.clients.registry import get_client
from replay.conformance.cuts import build_cases, select
from replay.conformance.matrix import END, MATRIX_OPTIONS, START
from replay.conformance.runner import RunReport, run_cases

from .conftest import CASSETTES

ROOT = Path(__file__).resolve().parents[1]
SEED, UNHELD, MID, DONE = "RT-INT-4", "RT-INT-2", "RT-INT-6", "RT-DONE-1"
OPTIONS = MATRIX_OPTIONS  # as the README matrix runs: 4 at once, and clock skew under load is not a cell


def cases(*ids: str) -> list[Any]:
    path = CASSETTES / "ga_text_turn_audio_response.yaml"
    return select(build_cases([(path, load(path))]), list(ids))


async def run(client: str, *ids: str) -> dict[str, Any]:
    report: RunReport = await run_cases(cases(*ids), get_client(client), OPTIONS)
    assert report.client_version  # the library's version goes into the report header
    for result in report.results:
        assert result.outcome.crashed is None, result.outcome.crashed
    return {r.case.id: r for r in report.results}


def sent(result: Any) -> list[str]:
    """What the client did to the conversation after the barge-in (retrieves and appends aside)."""
    return [a.split()[0] for a in result.verdict.actions
            if a.split()[0] in ("truncate", "delete", "response.cancel", "response.create")]


async def test_livekit_as_installed_deletes_at_zero_ms_whether_or_not_the_server_holds_the_item() -> None:
    """livekit 1.8.9 carries PR #6158: at audio_end_ms == 0 it deletes, unconditionally."""
    results = await run("livekit", SEED, UNHELD, MID)
    seed = results[SEED]
    # INFORMATIONAL, not OK: its response.cancel races the server's own cancel (interrupt_response is on).
    assert (seed.verdict.verdict, sent(seed)) == ("INFORMATIONAL", ["response.cancel", "delete"])
    assert "deleted the unplayed assistant item" in seed.verdict.reason
    unheld = results[UNHELD]
    assert (unheld.verdict.verdict, sent(unheld)) == ("FAILED", ["response.cancel", "delete"])
    assert "item_delete_invalid_item_id" in unheld.verdict.reason
    assert (results[MID].verdict.verdict, sent(results[MID])) == ("INFORMATIONAL", ["response.cancel", "truncate"])


async def test_livekit_with_the_pr6249_guard_passes_both() -> None:
    results = await run("livekit-pr6249", SEED, UNHELD)
    assert (results[SEED].verdict.verdict, sent(results[SEED])) == ("INFORMATIONAL", ["response.cancel", "delete"])
    assert (results[UNHELD].verdict.verdict, sent(results[UNHELD])) == ("INFORMATIONAL", ["response.cancel"])


@pytest.mark.parametrize("client", ["openai-agents", "pipecat"])
async def test_vad_driven_libraries_leave_the_unplayed_item_and_truncate_mid_audio(client: str) -> None:
    results = await run(client, SEED, MID, DONE)
    assert (results[SEED].verdict.verdict, sent(results[SEED])) == ("NON-STRICT", [])
    for case_id in (MID, DONE):
        assert (results[case_id].verdict.verdict, sent(results[case_id])) == ("OK", ["truncate"])


async def test_openai_sdk_reference_transport_passes_the_audio_response() -> None:
    results = await run("openai", "RT-INT-[1-7]", DONE)
    assert {r.verdict.verdict for r in results.values()} == {"OK"}, {k: r.verdict.reason for k, r in results.items()}


async def test_explicit_interrupt_variants_run() -> None:
    for client in ("openai-agents-interrupt", "pipecat-interruption-frame"):
        results = await run(client, MID)
        assert (results[MID].verdict.verdict, sent(results[MID])) == ("OK", ["truncate"])


def test_check_client_from_the_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    report = tmp_path / "livekit.json"
    result = runner.invoke(app, ["check", "--client", "livekit", "--case", UNHELD, "--json", str(report)])
    assert result.exit_code == 1, result.output
    [case] = json.loads(report.read_text())["cases"]
    assert case["verdict"] == "FAILED" and case["errors"][0]["error"]["code"] == "item_delete_invalid_item_id"
    result = runner.invoke(app, ["check", "--client", "openai", "--case", SEED], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output


def test_gaonly_drivers_skip_beta_cases() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["check", "--client", "pipecat", "--cassette", "beta_audio_response",
                                 "--case", "RT-INT-1"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "speaks ga only" in result.output  # a selection that runs nothing


def test_a_missing_library_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pipecat", None)
    with pytest.raises(MissingDependency, match=r"pip install 'rtreplay\[pipecat\]'"):
        get_client("pipecat").version()
    result = CliRunner().invoke(app, ["check", "--client", "pipecat", "--case", SEED])
    assert result.exit_code == 2 and "rtreplay[pipecat]" in result.output


def readme_row(case_id: str) -> dict[str, str]:
    """The README's generated table, one row, as {column: cell}."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index(START):text.index(END)]
    lines = [line for line in block.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].startswith(case_id + " "):
            return {re.sub(r" [\d.]+$", "", column): cell for column, cell in zip(header, cells, strict=True)}
    raise AssertionError(f"{case_id} is not in the README's table")


def test_the_readme_table_says_what_these_tests_assert() -> None:
    seed, unheld = readme_row(SEED), readme_row(UNHELD)
    assert seed["reference-naive"] == "**FAILED** unsupported_content_type"
    assert seed["reference-fixed"].startswith("OK (delete")
    assert unheld["livekit"] == "**FAILED** item_delete_invalid_item_id"
    assert "delete" in seed["livekit"] and "FAILED" not in seed["livekit"]
    assert "FAILED" not in unheld["livekit-pr6249"] and "delete" not in unheld["livekit-pr6249"]
    for client in ("openai-agents", "pipecat"):
        assert seed[client] == "NON-STRICT (nothing)"
        assert readme_row(MID)[client].startswith("OK (truncate")
