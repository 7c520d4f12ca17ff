"""The README's tour runs as printed, on a fresh clone.

Each line of the tour's ``sh`` block runs in bash, after the block's first line (``. .venv/bin/activate``),
from the root of a fresh copy of this checkout: its tracked files, as a clone has them, with ``.venv``
linking to the venv running the tests and PYTHONPATH on the copy, so the code under test is this
checkout's. Its exit code must be the README's: N on a line marked ``# expected: ... exit N``, else 0.

Bounded: a line that sweeps the whole corpus (a ``check`` without ``--case``, ``matrix``) takes ~50 s at
recorded timing on 2 cores (``--latency 0,50,200`` three times that), so it runs as printed only with
RTREPLAY_TOUR_FULL=1; by default it runs with ``--case 'RT-INT-16' --case 'RT-INT-25'`` appended (two
cases: a barge-in before the conversation holds the item, which the naive lines and livekit FAIL, and one in
the response after a function call, which a client without tools never reaches). The other lines run in
order in one copy (``import`` reads the wire log the line before writes). ``serve`` runs until it prints
its export line, then gets SIGTERM and must exit 0. Not run: ``record`` (it needs OPENAI_API_KEY and the
real API); the Node line and ``--client livekit`` are skipped, saying why, where Node 20 or the dev
extras are missing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FULL = os.environ.get("RTREPLAY_TOUR_FULL") == "1"
SUBSET = " --case 'RT-INT-16' --case 'RT-INT-25'"


def tour() -> tuple[str, list[str]]:
    """The tour block's first line (the activation) and its commands, as printed."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## A tour\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    first, *commands = [line for line in block.splitlines() if line.strip()]
    return first, commands


ACTIVATE, COMMANDS = tour()


def command_of(line: str) -> str:
    return re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


def expected_exit(line: str) -> int:
    marked = re.search(r"#\s*expected:.*\bexit (\d+)", line)
    return int(marked[1]) if marked else 0


def heavy(line: str) -> bool:
    command = command_of(line)
    return (" check " in f" {command} " and "--case" not in command and "--list" not in command) or \
        " matrix " in f" {command} "


def why_not_here(line: str) -> str | None:
    command = command_of(line)
    if command.startswith("rtreplay record"):
        return "record proxies the real API: it needs OPENAI_API_KEY and the network"
    if "node " in command or "-js" in command or "-node" in command:
        node = shutil.which("node")
        if node is None or subprocess.run([node, "--experimental-websocket", "-e", "WebSocket"],
                                          capture_output=True).returncode != 0:
            return "no Node.js 20+ with a WebSocket here"
    if "--client livekit" in command and importlib.util.find_spec("livekit.plugins.openai") is None:
        return "livekit-plugins-openai is not installed (the dev extras)"
    return None


def fresh_clone(where: Path) -> Path:
    """The checkout's tracked files (a clone's), and .venv pointing at the venv these tests run in."""
    copy = where / "rtreplay"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    venv = Path(sys.executable).parent.parent  # not resolved: a venv's python is a link out of it
    if not (venv / "bin" / "activate").is_file():
        pytest.skip(f"the tests do not run in a venv ({sys.executable}): the tour activates one")
    (copy / ".venv").symlink_to(venv)
    return copy


def shell(copy: Path, command: str) -> list[str]:
    return ["bash", "-c", f"{ACTIVATE}\n{command}"]


def environment(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FIXED", "RTREPLAY_NODE_MODULES")}
    env["PYTHONPATH"] = str(copy)
    return env


def run_line(copy: Path, line: str) -> None:
    command = command_of(line) + ("" if FULL or not heavy(line) else SUBSET)
    result = subprocess.run(shell(copy, command), cwd=copy, env=environment(copy), capture_output=True, text=True,
                            timeout=900 if FULL else 300)
    assert result.returncode == expected_exit(line), (command, result.returncode, result.stdout[-3000:],
                                                      result.stderr[-3000:])
    assert "Traceback" not in result.stderr and "license None" not in result.stdout, (command, result.stderr)


def serve_line(copy: Path, line: str) -> None:
    port = int(re.search(r"--port (\d+)", line)[1])  # type: ignore[index]
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            pytest.skip(f"port {port} is in use on this machine")
    # exec: the signal goes to rtreplay itself, as Ctrl-C would, not to the shell around it
    process = subprocess.Popen(shell(copy, "exec " + command_of(line)), cwd=copy, env=environment(copy),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        seen = []
        for out in process.stdout:
            seen.append(out)
            if f"export OPENAI_BASE_URL=http://127.0.0.1:{port}/v1" in out:
                break
        else:
            pytest.fail("serve stopped before it served: " + "".join(seen))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, "".join(seen) + process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


HEAVY = [line for line in COMMANDS if heavy(line)]
LIGHT = [line for line in COMMANDS if not heavy(line)]


def test_the_tour_is_what_this_test_runs() -> None:
    """Every line is a command of ours, and the marked lines say an exit code."""
    assert ACTIVATE == ". .venv/bin/activate"
    assert len(COMMANDS) >= 15 and all(re.match(r"(FIXED=1 )?rtreplay ", line) for line in COMMANDS), COMMANDS
    assert all(expected_exit(line) for line in COMMANDS if "# expected:" in line)
    assert not any("my_agent" in line or "trace.jsonl" in line for line in COMMANDS)


@pytest.mark.parametrize("line", HEAVY, ids=[command_of(line)[:70] for line in HEAVY])
def test_a_sweep_of_the_tour(line: str, tmp_path: Path) -> None:
    if reason := why_not_here(line):
        pytest.skip(reason)
    run_line(fresh_clone(tmp_path), line)


def test_the_other_lines_of_the_tour_in_order(tmp_path: Path) -> None:
    copy = fresh_clone(tmp_path)
    skipped = []
    for line in LIGHT:
        if reason := why_not_here(line):
            skipped.append(f"{command_of(line)}: {reason}")
        elif command_of(line).startswith("rtreplay serve"):
            serve_line(copy, line)
        else:
            run_line(copy, line)
    assert skipped == ["rtreplay record -o cassettes/recorded.yaml: record proxies the real API: it needs "
                       "OPENAI_API_KEY and the network"], skipped
