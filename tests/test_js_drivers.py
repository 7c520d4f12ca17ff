"""The JavaScript clients, for real: @openai/agents-realtime, @livekit/agents-plugin-openai and the openai
npm package at the versions pinned in replay/clients/node/package-lock.json (CI installs them: .ci/run),
each run over the bundled corpus by its driver, and what the drivers' setup says when something is missing.

The tests that run a driver are skipped only where `node` is not installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from replay.cassettes.corpus import conformance_corpus
from replay.clients.base import ClientOutcome, MissingDependency, Target, dialects_of
from replay.clients.node_drivers import CLIENTS, NODE_DIR, NodeClient, install_pinned, pinned_dir
from replay.clients.registry import get_client
from replay.conformance.cuts import build_cases
from replay.conformance.matrix import MATRIX_OPTIONS, cell
from replay.conformance.runner import run_cases

needs_node = pytest.mark.skipif(shutil.which("node") is None,
                                reason="node is not installed: the JavaScript drivers need Node.js >= 20")

# What each client gets on each case of the bundled corpus, written as the README's matrix writes a cell
# (`rtreplay matrix`): the verdict and what the client sent. "—": the case is not run for the client (it
# speaks GA only). Update the table when the server's judgement or a pinned version changes.
# "A | B": timing decides between two outcomes, both seen. At the first audio delta the played ms is 0
# (delete) or 1 (truncate) by a millisecond; agents-js keeps the previous response's item until the next
# delta, and truncates it when the wall clock says it is still playing; so does openai-node, whose playback
# clock may still be running the previous reply when the next response.created arrives (RT-INT-37).
FIRST_DELTA = "OK (delete) | OK (truncate)"
LK_FIRST_DELTA = "INFORMATIONAL (response.cancel, delete) | INFORMATIONAL (response.cancel, truncate)"
PREVIOUS_ITEM = "OK (nothing) | OK (truncate)"
# fmt: off
EXPECTED: dict[str, tuple[str, str, str]] = {
    # case        openai-agents-js        livekit-node                                 openai-node
    "RT-INT-1":  ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-INT-2":  ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-INT-3":  ("NON-STRICT (nothing)", "INFORMATIONAL (response.cancel, delete)",   "OK (delete)"),
    "RT-INT-4":  ("NON-STRICT (nothing)", "INFORMATIONAL (response.cancel, delete)",   "OK (delete)"),
    "RT-INT-5":  ("OK (truncate)",        LK_FIRST_DELTA,                              FIRST_DELTA),
    "RT-INT-6":  ("OK (truncate)",        "INFORMATIONAL (response.cancel, truncate)", "OK (truncate)"),
    "RT-INT-7":  ("OK (truncate)",        "INFORMATIONAL (response.cancel, truncate)", "OK (truncate)"),
    "RT-DONE-1": ("OK (truncate)",        "OK (truncate)",                             "OK (truncate)"),
    "RT-INT-8":  ("—",                    "—",                                         "OK (nothing)"),
    "RT-INT-9":  ("—",                    "—",                                         "OK (nothing)"),
    "RT-INT-10": ("—",                    "—",                                         "OK (delete)"),
    "RT-INT-11": ("—",                    "—",                                         "OK (delete)"),
    "RT-INT-12": ("—",                    "—",                                         FIRST_DELTA),
    "RT-INT-13": ("—",                    "—",                                         "OK (truncate)"),
    "RT-INT-14": ("—",                    "—",                                         "OK (truncate)"),
    "RT-DONE-2": ("—",                    "—",                                         "OK (truncate)"),
    "RT-INT-15": ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-INT-16": ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-INT-17": ("NON-STRICT (nothing)", "INFORMATIONAL (response.cancel, delete)",   "OK (delete)"),
    "RT-INT-18": ("NON-STRICT (nothing)", "INFORMATIONAL (response.cancel, delete)",   "OK (delete)"),
    "RT-INT-19": ("OK (truncate)",        LK_FIRST_DELTA,                              FIRST_DELTA),
    "RT-INT-20": ("OK (truncate)",        "INFORMATIONAL (response.cancel, truncate)", "OK (truncate)"),
    "RT-INT-21": ("OK (truncate)",        "INFORMATIONAL (response.cancel, truncate)", "OK (truncate)"),
    "RT-DONE-3": ("OK (truncate)",        "OK (truncate)",                             "OK (truncate)"),
    "RT-TXT-1":  ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-TXT-2":  ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-TXT-3":  ("NON-STRICT (nothing)", "INFORMATIONAL (response.cancel, delete)",   "OK (nothing)"),
    "RT-TXT-4":  ("OK (nothing)",         "INFORMATIONAL (response.cancel, delete)",   "OK (nothing)"),
    "RT-TXT-5":  ("OK (nothing)",         "OK (nothing)",                              "OK (nothing)"),
    "RT-INT-22": ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-FN-1":   ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-FN-2":   ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-FN-3":   ("OK (nothing)",         "OK (nothing)",                              "OK (nothing)"),
    "RT-INT-23": ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-INT-24": ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-INT-25": ("NON-STRICT (nothing)", "INFORMATIONAL (response.cancel, delete)",   "OK (delete)"),
    "RT-INT-26": ("NON-STRICT (nothing)", "INFORMATIONAL (response.cancel, delete)",   "OK (delete)"),
    "RT-INT-27": ("OK (truncate)",        LK_FIRST_DELTA,                              FIRST_DELTA),
    "RT-INT-28": ("OK (truncate)",        "INFORMATIONAL (response.cancel, truncate)", "OK (truncate)"),
    "RT-INT-29": ("OK (truncate)",        "INFORMATIONAL (response.cancel, truncate)", "OK (truncate)"),
    "RT-DONE-4": ("OK (truncate)",        "OK (truncate)",                             "OK (truncate)"),
    "RT-INT-30": ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-INT-31": ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-INT-32": ("NON-STRICT (nothing)", "INFORMATIONAL (response.cancel, delete)",   "OK (delete)"),
    "RT-INT-33": ("NON-STRICT (nothing)", "INFORMATIONAL (response.cancel, delete)",   "OK (delete)"),
    "RT-INT-34": ("OK (truncate)",        LK_FIRST_DELTA,                              FIRST_DELTA),
    "RT-INT-35": ("OK (truncate)",        "INFORMATIONAL (response.cancel, truncate)", "OK (truncate)"),
    "RT-INT-36": ("OK (truncate)",        "INFORMATIONAL (response.cancel, truncate)", "OK (truncate)"),
    "RT-DONE-5": ("OK (truncate)",        "OK (truncate)",                             "OK (truncate)"),
    "RT-INT-37": ("OK (nothing)",         "INFORMATIONAL (response.cancel)",           PREVIOUS_ITEM),
    "RT-INT-38": (PREVIOUS_ITEM,          "INFORMATIONAL (response.cancel)",           "OK (nothing)"),
    "RT-INT-39": ("NON-STRICT (nothing)", "INFORMATIONAL (response.cancel, delete)",   "OK (delete)"),
    "RT-INT-40": ("NON-STRICT (nothing)", "INFORMATIONAL (response.cancel, delete)",   "OK (delete)"),
    "RT-INT-41": ("OK (truncate)",        LK_FIRST_DELTA,                              FIRST_DELTA),
    "RT-INT-42": ("OK (truncate)",        "INFORMATIONAL (response.cancel, truncate)", "OK (truncate)"),
    "RT-INT-43": ("OK (truncate)",        "INFORMATIONAL (response.cancel, truncate)", "OK (truncate)"),
    "RT-DONE-6": ("OK (truncate)",        "OK (truncate)",                             "OK (truncate)"),
}
# fmt: on
COLUMNS = ("openai-agents-js", "livekit-node", "openai-node")
OPTIONS = MATRIX_OPTIONS  # as the README matrix runs: 4 at once, and clock skew under load is not a cell


def pinned_version(package: str) -> str:
    return str(json.loads((NODE_DIR / "package.json").read_text(encoding="utf-8"))["dependencies"][package])


@needs_node
@pytest.mark.parametrize("client", CLIENTS, ids=[c.name for c in CLIENTS])
def test_each_library_on_the_bundled_corpus(client: NodeClient) -> None:
    pinned = client.with_node_modules(install_pinned())
    cases = [c for c in build_cases(conformance_corpus()) if c.dialect in dialects_of(pinned)]
    report = asyncio.run(run_cases(cases, pinned, OPTIONS))
    assert report.client_version == pinned_version(client.packages[0])
    column = COLUMNS.index(client.name)
    expected = {case_id: cells[column] for case_id, cells in EXPECTED.items() if cells[column] != "—"}
    got = {r.case.id: cell(r) for r in report.results}
    assert set(got) == set(expected)
    differ = [f"{case_id}: expected {expected[case_id]!r}, got {got[case_id]!r}"
              for case_id in got if got[case_id] not in expected[case_id].split(" | ")]
    assert not differ, "\n".join(differ)
    crashed = [f"{r.case.id}: {r.outcome.crashed}" for r in report.results if r.outcome.crashed]
    assert not crashed, "\n".join(crashed)


@needs_node
@pytest.mark.parametrize("client", CLIENTS, ids=[c.name for c in CLIENTS])
def test_a_refused_connection_is_the_clients_error_and_ends_the_case(client: NodeClient) -> None:
    """Nothing listens on port 9: each library's own error is reported, and the case ends by itself
    (livekit-node's is an uncaught `error` event: the connect crash written up in docs/drivers.md)."""
    target = Target(ws_url="ws://127.0.0.1:9/v1/realtime?model=gpt-realtime", http_base_url="http://127.0.0.1:9/v1",
                    api_key="sk-test", model="gpt-realtime", dialect="ga", case_id="refused", cassette="-",
                    session_index=0, client_script=({"type": "response.create"},))

    async def run() -> ClientOutcome:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(30, stop.set)  # a bound for a driver that would hang
        return await client.with_node_modules(install_pinned()).run(target, stop)

    outcome = asyncio.run(run())
    assert outcome.crashed is not None and "127.0.0.1:9" in outcome.crashed
    assert "the node driver ended the case before stop" in outcome.notes


@needs_node
def test_check_names_the_library_version_it_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTREPLAY_NODE_MODULES", str(install_pinned()))
    result = CliRunner().invoke(app, ["check", "--client", "openai-node", "--case", "RT-INT-6"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"openai-node {pinned_version('openai')}" in result.output


def test_missing_node_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no node here
    with pytest.raises(MissingDependency, match=r"Node\.js >= 20 \(`node` on PATH\); none was found"):
        get_client("livekit-node").version()
    result = CliRunner().invoke(app, ["check", "--client", "openai-agents-js", "--case", "RT-INT-4"])
    assert result.exit_code == 2
    assert "Node.js >= 20" in result.output and "Traceback" not in result.output


@needs_node
def test_a_node_modules_dir_without_the_library_says_which_package(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTREPLAY_NODE_MODULES", str(tmp_path))
    with pytest.raises(MissingDependency, match=r"@openai/agents-realtime not found from"):
        get_client("openai-agents-js").version()


def fake_npm(bin_dir: Path, script: str) -> None:
    """An `npm` that runs `script` (bash) in the directory rtreplay installs in, and counts its calls."""
    bin_dir.mkdir(exist_ok=True)
    npm = bin_dir / "npm"
    npm.write_text(f"#!/bin/bash\necho called >> {bin_dir / 'calls'}\n{script}\n", encoding="utf-8")
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)


@pytest.mark.skipif(sys.platform == "win32", reason="a bash stand-in for npm")
def test_a_failed_install_leaves_nothing_half_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    fake_npm(tmp_path / "bin", "mkdir -p node_modules/openai\n"
                               "echo 'npm error code E404' >&2\n"
                               "echo 'npm error 404 Not Found - GET https://registry.example/zod - Not found' >&2\n"
                               "exit 1")
    with pytest.raises(MissingDependency, match=r"npm could not install .*: 404 Not Found - GET"):
        install_pinned()
    assert "installing the pinned JavaScript clients" in capsys.readouterr().err
    assert list(pinned_dir().parent.iterdir()) == []  # neither the install nor its work directory


@pytest.mark.skipif(sys.platform == "win32", reason="a bash stand-in for npm")
def test_an_install_is_used_once_complete_and_never_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    fake_npm(tmp_path / "bin", "test -f package-lock.json && mkdir -p node_modules/openai")
    installed = install_pinned()
    assert installed == pinned_dir() and (installed / "node_modules" / "openai").is_dir()
    assert (installed / "package-lock.json").read_bytes() == (NODE_DIR / "package-lock.json").read_bytes()
    assert install_pinned() == installed
    assert (tmp_path / "bin" / "calls").read_text().count("called") == 1
    assert [p.name for p in installed.parent.iterdir()] == [installed.name]
