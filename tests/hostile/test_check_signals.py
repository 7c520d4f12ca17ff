"""`rtreplay check` stopped by a signal (Ctrl-C, a CI job's cancel, a closed terminal): nothing it started
outlives it, the cases that finished reach every report marked interrupted, and no traceback is printed.

The client under test is a small program that starts a child of its own (which ignores SIGTERM) and,
for the case that should still be running, streams output forever; every pid it starts goes to a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAIVE = ROOT / "examples" / "naive_client.py"
HANGING_CASE = "RT-INT-3"  # with --concurrency 1, RT-INT-1 and RT-INT-2 have finished once it runs

CLIENT = """
import os, pathlib, runpy, signal, subprocess, sys, time
state = pathlib.Path(os.environ["HOSTILE_DIR"])
child = subprocess.Popen([sys.executable, "-c",
                          "import signal, time\\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(600)"])
with open(state / "pids", "a") as fh:
    fh.write(f"{os.getpid()} {child.pid}\\n")
if os.environ["RTREPLAY_CASE"] == os.environ["HANG"]:
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    (state / "hanging").touch()
    while True:
        print("streaming", flush=True)
        time.sleep(0.05)
runpy.run_path(os.environ["NAIVE"], run_name="__main__")
"""


def _alive(pid: int) -> bool:
    """Running (a zombie has ended: it only waits for a parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _pids(state: Path) -> list[int]:
    path = state / "pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _start_check(tmp_path: Path, *, ignore_term: bool = False, hang: str = HANGING_CASE) -> subprocess.Popen[str]:
    client = tmp_path / "client.py"
    client.write_text(CLIENT)
    env = {**os.environ, "HOSTILE_DIR": str(tmp_path), "HANG": hang, "NAIVE": str(NAIVE),
           "PYTHONPATH": str(ROOT)}
    if ignore_term:
        env["IGNORE_TERM"] = "1"
    command = [sys.executable, str(ROOT / "cli.py"), "check",
               "--cmd", f"exec {shlex.quote(sys.executable)} {shlex.quote(str(client))}",
               "--case", "RT-INT-[1-3]", "--speed", "0", "--concurrency", "1",
               "--json", str(tmp_path / "r.json"), "--junit-xml", str(tmp_path / "r.xml"),
               "--html", str(tmp_path / "r.html")]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=tmp_path)


def _wait_hanging(tmp_path: Path, check: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not (tmp_path / "hanging").exists():
        assert check.poll() is None, check.communicate()
        assert time.monotonic() < deadline, "the hanging case never started"
        time.sleep(0.05)
    time.sleep(0.3)  # it streams


def _finish(tmp_path: Path, check: subprocess.Popen[str]) -> tuple[int, str, str, list[int]]:
    try:
        out, err = check.communicate(timeout=60)
    finally:
        if check.poll() is None:
            os.killpg(check.pid, signal.SIGKILL)
            check.communicate()
    pids = _pids(tmp_path)
    deadline = time.monotonic() + 10  # a SIGKILL takes a moment to land
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if _alive(p)]
    for pid in left:  # never leave them to the next test
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return check.returncode, out, err, left


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_a_signal_ends_every_program_and_writes_the_finished_cases(tmp_path: Path, sig: signal.Signals,
                                                                   code: int) -> None:
    check = _start_check(tmp_path)
    _wait_hanging(tmp_path, check)
    check.send_signal(sig)
    returncode, out, err, left = _finish(tmp_path, check)

    assert left == [], f"still running after check ended: {left}\n{err}"
    assert len(_pids(tmp_path)) >= 6  # preflight, two cases and the hanging one: each a program and its child
    assert returncode == code, (out, err)
    assert "Traceback" not in err and "Event loop is closed" not in err, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] is True and report["signal"] == sig.name
    assert [c["id"] for c in report["cases"]] == ["RT-INT-1", "RT-INT-2"]
    assert [c["id"] for c in report["unfinished"]] == [HANGING_CASE]
    suite = ET.parse(tmp_path / "r.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "1" and suite.get("tests") == "3"
    errors = [t.get("name", "") for t in suite.iter("testcase") if t.find("error") is not None]
    assert len(errors) == 1 and errors[0].startswith(HANGING_CASE)
    page = (tmp_path / "r.html").read_text()
    assert f'class="interrupted">interrupted by {sig.name}' in page and "RT-INT-2" in page
    assert f"stopped by {sig.name}" in err


def test_a_second_signal_while_stopping_ends_it_at_once_without_orphans(tmp_path: Path) -> None:
    check = _start_check(tmp_path, ignore_term=True)  # the hanging program makes the first stop wait its grace
    _wait_hanging(tmp_path, check)
    check.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    check.send_signal(signal.SIGINT)
    returncode, out, err, left = _finish(tmp_path, check)

    assert left == [], f"still running after check ended: {left}\n{err}"
    assert returncode == 130, (out, err)  # the second signal's: a clean stop of the first would be 143
    assert "SIGINT while stopping: stopped at once" in err and "Traceback" not in err, err


def test_a_signal_during_the_preflight_ends_the_program_and_reports_every_case_unfinished(tmp_path: Path) -> None:
    check = _start_check(tmp_path, hang="RT-INT-1")  # the preflight starts the first case's program: it never connects
    _wait_hanging(tmp_path, check)
    check.send_signal(signal.SIGTERM)
    returncode, out, err, left = _finish(tmp_path, check)

    assert left == [], f"still running after check ended: {left}\n{err}"
    assert returncode == 143 and "Traceback" not in err, (out, err)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] is True and report["cases"] == []
    assert [c["id"] for c in report["unfinished"]] == ["RT-INT-1", "RT-INT-2", "RT-INT-3"]
    suite = ET.parse(tmp_path / "r.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "3"
