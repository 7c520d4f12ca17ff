"""The pytest plugin, driven through pytester: the realtime_server fixture (also under xdist), recording
through the proxy and replaying the result, the rtreplay_case parametrization, and clear usage errors."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from replay.cassettes.cassette import Cassette, Frame, WebSocketSession, load
from replay.cassettes.corpus import bundled_dir, conformance_corpus
from replay.clients import registry
from replay.conformance.cuts import build_cases, select
from replay.net.server import ReplayServer, ServerOptions

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
# Once rtreplay is installed its pytest11 entry point loads the module as "rtreplay"; loading it a
# second time under its module name would make pytest refuse to start.
# pytest-asyncio, when present, only adds deprecation noise to the inner runs.
PLUGIN = ["-p", "rtreplay" if entry_points(group="pytest11", name="rtreplay") else "replay.pytest_plugin",
          "-p", "no:asyncio"]
SESSION = {"type": "realtime", "object": "realtime.session", "id": "sess_tiny", "model": "gpt-realtime-mini",
           "output_modalities": ["audio"]}

CONNECTS = """
import json

import pytest
from websockets.sync.client import connect


def talk(server):
    with connect(server.ws_url, additional_headers={"Authorization": "Bearer sk-test-secret-0123456789"}) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "session.created"
        ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}))
        assert json.loads(ws.recv(timeout=5))["type"] == "session.updated"
    server.wait_closed(5)
"""


def tiny_cassette(path: Path) -> Path:
    """session.created, the client's session.update, session.updated: enough to talk to."""
    frames = [
        Frame(0.0, "server", event={"type": "session.created", "event_id": "event_1", "session": SESSION}),
        Frame(0.1, "client", event={"type": "session.update",
                                    "session": {"type": "realtime", "instructions": "Be brief."}}),
        Frame(0.12, "server", event={"type": "session.updated", "event_id": "event_2",
                                     "session": {**SESSION, "instructions": "Be brief."}}),
    ]
    session = WebSocketSession("wss://api.openai.com/v1/realtime?model=gpt-realtime-mini", "ga", frames)
    return Cassette({"origin": "synthesized", "source": "tests/test_pytest_plugin.py"}, [session]).save(path)


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose subprocesses (xdist workers) import this checkout's `replay`."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    tiny_cassette(pytester.path / "cassettes" / "tiny.yaml")
    return pytester


@contextmanager
def upstream(cassette: Path) -> Iterator[int]:
    """A replay server standing in for the real API, on its own loop, for the recording proxy to forward to."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> ReplayServer:
        return await ReplayServer(load(cassette), ServerOptions(speed=0)).start()

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield server.port
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# ---------------------------------------------------------------------------- realtime_server


def test_realtime_server_replays_a_cassette_beside_the_test(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_replay=CONNECTS + """

@pytest.mark.realtime_cassette("cassettes/tiny.yaml")
def test_tiny(realtime_server):
    port = realtime_server.port
    assert realtime_server.ws_url == f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime-mini"
    assert realtime_server.http_base_url == f"http://127.0.0.1:{port}/v1"
    assert (realtime_server.model, realtime_server.mode) == ("gpt-realtime-mini", "replay")
    talk(realtime_server)
    [session] = realtime_server.sessions
    assert [e["type"] for e in session.log.client_events()] == ["session.update"]


@pytest.mark.realtime_cassette("ga_text_turn_audio_response", speed=0)
def test_bundled(realtime_server):
    from websockets.sync.client import connect

    with connect(realtime_server.ws_url, additional_headers={"Authorization": "Bearer x"}) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "session.created"
    realtime_server.wait_closed(5)
    assert realtime_server.cassette.name == "ga_text_turn_audio_response.yaml"
""")
    inner.runpytest(*PLUGIN).assert_outcomes(passed=2)


def test_realtime_server_under_xdist(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_parallel=CONNECTS + """

@pytest.mark.parametrize("n", range(6))
@pytest.mark.realtime_cassette("cassettes/tiny.yaml")
def test_each_gets_its_own_server(realtime_server, n):
    talk(realtime_server)
    assert len(realtime_server.sessions) == 1
""")
    result = inner.runpytest_subprocess(*PLUGIN, "-n", "2", timeout=120)
    result.assert_outcomes(passed=6)


def test_records_through_the_proxy_then_replays(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_record=CONNECTS + """

@pytest.mark.realtime_cassette("recorded/new_session")
def test_talk(realtime_server):
    talk(realtime_server)
""")
    target = inner.path / "recorded" / "new_session.yaml"
    with upstream(inner.path / "cassettes" / "tiny.yaml") as port:
        inner.runpytest(*PLUGIN, "--record-mode=once", f"--realtime-upstream=ws://127.0.0.1:{port}",
                        "-W", "error:rtreplay recording:UserWarning").assert_outcomes(passed=1)
    recorded = load(target)
    assert [(f.source, f.type) for f in recorded.sessions[0].frames] == [
        ("server", "session.created"), ("client", "session.update"), ("server", "session.updated")]
    assert "sk-test-secret" not in target.read_text(encoding="utf-8")
    # The upstream is gone: both the default mode and `once` (the file exists now) replay the recording.
    inner.runpytest(*PLUGIN).assert_outcomes(passed=1)
    inner.runpytest(*PLUGIN, "--record-mode=once").assert_outcomes(passed=1)


def test_a_recording_with_gaps_warns(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_unreachable="""
import contextlib

import pytest
from websockets.sync.client import connect

@pytest.mark.realtime_cassette("recorded/unreachable.yaml")
def test_talk(realtime_server):
    assert realtime_server.mode == "all" and realtime_server.sessions == []
    with contextlib.suppress(Exception), connect(realtime_server.ws_url, open_timeout=5,
                                                 additional_headers={"Authorization": "Bearer x"}) as ws:
        ws.recv(timeout=5)
""")
    result = inner.runpytest(*PLUGIN, "--record-mode=all", "--realtime-upstream=ws://127.0.0.1:1")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*rtreplay recording *unreachable.yaml: *upstream unreachable*"])


def test_usage_errors_are_clear(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_errors="""
import pytest

def test_no_marker(realtime_server):
    pass

@pytest.mark.realtime_cassette("cassettes/missing.yaml")
def test_missing(realtime_server):
    pass

@pytest.mark.realtime_cassette("cassettes/tiny.yaml", sesion=1)
def test_misspelt(realtime_server):
    pass

@pytest.mark.realtime_cassette("cassettes/tiny.yaml", session=3)
def test_no_such_session(realtime_server):
    pass
""")
    result = inner.runpytest(*PLUGIN)
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines([
        "*realtime_server needs a cassette*",
        "*cassettes/missing.yaml*no such cassette*--record-mode=once*",
        "*unexpected keyword argument 'sesion'*",
        "*session=3: tiny.yaml has 1 WebSocket session(s)*",
    ], consecutive=False)


def test_coexists_with_pytest_recording(inner: pytest.Pytester) -> None:
    """pytest-recording owns --record-mode when installed; both plugins load in either order."""
    inner.makepyfile(pytest_recording="""
def pytest_addoption(parser):
    parser.getgroup("recording").addoption("--record-mode", dest="record_mode", default="none",
                                           choices=["once", "new_episodes", "none", "all", "rewrite"])
""")
    inner.syspathinsert()
    inner.makepyfile(test_plain="""
def test_plain(request):
    assert request.config.getoption("record_mode") == "all"
""")
    inner.runpytest("-p", "pytest_recording", *PLUGIN, "--record-mode=all", "test_plain.py").assert_outcomes(
        passed=1)
    inner.runpytest(*PLUGIN, "-p", "pytest_recording", "--record-mode=all", "test_plain.py").assert_outcomes(
        passed=1)


# ---------------------------------------------------------------------------- rtreplay_case


def test_rtreplay_case_parametrizes_over_the_conformance_corpus(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_cases="""
import pytest

def test_every_case(rtreplay_case):
    pass

@pytest.mark.rtreplay_cases("RT-TXT-*", "RT-FN-1")
def test_some(rtreplay_case):
    pass

@pytest.mark.rtreplay_cases("RT-INT-*", cassette="ga_text_turn_audio_response")
def test_one_cassette(rtreplay_case):
    pass
""")
    result = inner.runpytest(*PLUGIN, "--collect-only", "-q")
    corpus = build_cases(conformance_corpus())
    single = build_cases([(bundled_dir() / "ga_text_turn_audio_response.yaml",
                           load(bundled_dir() / "ga_text_turn_audio_response.yaml"))])
    expected = [f"test_cases.py::test_every_case[{c.id}]" for c in corpus]
    expected += [f"test_cases.py::test_some[{c.id}]" for c in select(corpus, ["RT-TXT-*", "RT-FN-1"])]
    expected += [f"test_cases.py::test_one_cassette[{c.id}]" for c in select(single, ["RT-INT-*"])]
    assert [line for line in result.outlines if line.startswith("test_cases.py::")] == expected
    assert {load(c.cassette).metadata["origin"] for c in corpus} == {"synthesized"}


def test_run_conformance_in_a_parametrized_test(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_conformance="""
import pytest

from replay.clients.registry import get_client
from replay.pytest_plugin import run_conformance

@pytest.mark.rtreplay_cases("RT-TXT-1", "RT-INT-2")
def test_my_client(rtreplay_case):
    result = run_conformance(rtreplay_case, get_client("reference-fixed"))
    assert result.verdict.verdict != "FAILED", result.verdict.reason
    assert result.case is rtreplay_case and result.log[0]["case"] == rtreplay_case.id
""")
    inner.runpytest(*PLUGIN, "-v").assert_outcomes(passed=2)


def test_run_conformance_runs_the_next_cases_ahead_only_for_the_same_client(inner: pytest.Pytester,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A client the registry hands out by name is one object for every test: it runs ahead from the first.
    monkeypatch.setitem(registry.BUILTIN, "counting-registered", "test_ahead:REGISTERED")
    inner.makepyfile(test_ahead="""
import pytest

from replay.clients.reference import FIXED
from replay.pytest_plugin import run_conformance
from replay.conformance.runner import RunOptions

THREE = pytest.mark.rtreplay_cases("RT-INT-1", "RT-INT-2", "RT-INT-3")


class Counting:
    def __init__(self, name="counting"):
        self.name = name
        self.running = self.most = 0
        self.ran = []

    def version(self):
        return None

    async def run(self, target, stop):
        self.running += 1
        self.most = max(self.most, self.running)
        self.ran.append(target.case_id)
        try:
            return await FIXED.run(target, stop)
        finally:
            self.running -= 1


SHARED, SERIAL, REGISTERED = Counting(), Counting(), Counting("counting-registered")


@THREE
def test_shared_client(rtreplay_case):
    result = run_conformance(rtreplay_case, SHARED, RunOptions(speed=0))
    assert result.case is rtreplay_case and result.verdict.verdict == "OK"


@THREE
def test_registered_client(rtreplay_case):
    assert run_conformance(rtreplay_case, "counting-registered", RunOptions(speed=0)).verdict.verdict == "OK"


@THREE
def test_one_at_a_time(rtreplay_case):
    assert run_conformance(rtreplay_case, SERIAL, RunOptions(speed=0, concurrency=1)).verdict.verdict == "OK"


@THREE
def test_a_client_of_its_own(rtreplay_case):
    mine = Counting()
    result = run_conformance(rtreplay_case, mine, RunOptions(speed=0))
    assert mine.ran == [rtreplay_case.id] and result.case is rtreplay_case


def test_what_ran():
    cases = ["RT-INT-1", "RT-INT-2", "RT-INT-3"]
    assert SHARED.most == 2 and sorted(SHARED.ran) == cases  # the first alone, then the other two together
    assert REGISTERED.most == 3 and sorted(REGISTERED.ran) == cases
    assert SERIAL.most == 1 and SERIAL.ran == cases
""")
    inner.runpytest(*PLUGIN, "-p", "no:randomly").assert_outcomes(passed=13)


def test_run_conformance_under_xdist_gives_every_test_its_own_case(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_xdist_cases="""
import pytest

from replay.pytest_plugin import run_conformance
from replay.conformance.runner import RunOptions

@pytest.mark.rtreplay_cases("RT-INT-1", "RT-INT-2", "RT-INT-3", "RT-INT-4", "RT-TXT-1", "RT-TXT-2")
def test_each(rtreplay_case):
    result = run_conformance(rtreplay_case, "reference-fixed", RunOptions(speed=0))
    assert result.case is rtreplay_case and result.log[0]["case"] == rtreplay_case.id
    assert result.verdict.verdict == "OK", result.verdict.reason
""")
    inner.runpytest_subprocess(*PLUGIN, "-n", "2", timeout=120).assert_outcomes(passed=6)
