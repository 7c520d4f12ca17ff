"""`--cmd` programs: their whole output is kept (up to a bounded tail), and their fate is told apart from ours."""

from __future__ import annotations

import asyncio
import shlex
import sys
from pathlib import Path

from replay.clients.base import ClientOutcome, Target
from replay.clients.command import OUTPUT_TAIL, CommandClient, OutputTail, last_error_line

TARGET = Target(ws_url="ws://127.0.0.1:9/v1/realtime?model=gpt-realtime", http_base_url="http://127.0.0.1:9/v1",
                api_key="sk-dummy", model="gpt-realtime", dialect="ga", case_id="RT-INT-1", cassette="c.yaml",
                session_index=0)


def python(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


async def run(command: str, *, stop_now: bool = False, **grace: float) -> ClientOutcome:
    stop = asyncio.Event()
    if stop_now:
        stop.set()
    return await CommandClient(command, **grace).run(TARGET, stop)


async def test_a_two_line_program_is_kept_whole_with_its_exit_code() -> None:
    outcome = await run(python("import sys\nprint('first line', flush=True)\nimport time; time.sleep(0.2)\n"
                               "print('second line')\nsys.exit(4)"))
    assert outcome.output == "first line\nsecond line\n"
    assert outcome.exit_code == 4 and not outcome.stopped_by_runner and outcome.exited_at is not None
    assert outcome.output_dropped == 0


async def test_a_megabyte_of_output_keeps_its_last_lines_up_to_the_bound() -> None:
    lines = "".join(f"line {n:07d} of the output\n" for n in range(40_000))  # 1.04 MB
    code = "import sys\nfor n in range(40_000): sys.stdout.write(f'line {n:07d} of the output\\n')"
    outcome = await run(python(code))
    assert len(lines) > 1_000_000
    assert outcome.output == lines[-OUTPUT_TAIL:]
    assert outcome.output_dropped == len(lines) - OUTPUT_TAIL
    assert outcome.output.endswith("line 0039999 of the output\n")


async def test_stdout_and_stderr_both_kept_and_the_error_line_taken_from_stderr() -> None:
    code = ("import sys\nprint('warning: retrying after an error in the mic', flush=True)\n"
            "print('Traceback (most recent call last):\\n  File \"x.py\", line 1\\n"
            "KeyError: \\'item_a\\' not found', file=sys.stderr, flush=True)\nprint('bye')\nsys.exit(1)")
    outcome = await run(python(code))
    assert "warning: retrying" in outcome.output and "KeyError" in outcome.output and "bye" in outcome.output
    assert outcome.last_error_line == "KeyError: 'item_a' not found"
    assert outcome.exit_code == 1 and not outcome.stopped_by_runner


async def test_a_program_still_running_after_the_grace_is_stopped_by_rtreplay_not_crashed() -> None:
    outcome = await run(python("import time\nprint('listening', flush=True)\ntime.sleep(60)"), stop_now=True,
                        exit_grace=0.3, term_grace=5)
    assert outcome.stopped_by_runner and outcome.exit_code == -15
    assert outcome.output == "listening\n"
    assert any("rtreplay stopped it" in note for note in outcome.notes)


async def test_a_program_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (f"import pathlib, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"pathlib.Path({str(ready)!r}).touch()\ntime.sleep(60)")
    stop = asyncio.Event()
    task = asyncio.create_task(CommandClient(f"exec {python(code)}", exit_grace=0.2, term_grace=0.3).run(TARGET, stop))
    while not ready.exists():  # its handler is installed before the case ends
        await asyncio.sleep(0.02)
    stop.set()
    outcome = await task
    assert outcome.stopped_by_runner and outcome.exit_code == -9


async def test_a_program_exiting_within_the_grace_keeps_its_own_exit_code() -> None:
    code = "import sys, time\ntime.sleep(0.3)\nprint('Error: Item \"item_a\" not found', file=sys.stderr)\nsys.exit(1)"
    outcome = await run(python(code), stop_now=True, exit_grace=30)
    assert not outcome.stopped_by_runner and outcome.exit_code == 1
    assert outcome.last_error_line == 'Error: Item "item_a" not found'


async def test_a_background_child_holding_the_pipes_does_not_hold_the_case() -> None:
    outcome = await asyncio.wait_for(run("sleep 60 & echo started"), 30)
    assert outcome.exit_code == 0 and not outcome.stopped_by_runner
    assert outcome.output == "started\n"


async def test_the_program_gets_the_case_in_its_environment() -> None:
    outcome = await run(python("import os\nprint(os.environ['RTREPLAY_WS_URL'], os.environ['RTREPLAY_CASE'])"))
    assert outcome.output == f"{TARGET.ws_url} RT-INT-1\n"


async def test_a_program_that_is_not_found_says_so() -> None:
    outcome = await run("no-such-program-rtreplay --flag")
    assert outcome.exit_code == 127
    assert outcome.last_error_line is not None and "not found" in outcome.last_error_line


def test_the_error_line_skips_stack_frames() -> None:
    node = ("file:///app/agent.mjs:12\n    throw new Error(`Item \"${id}\" not found`);\n    ^\n\n"
            "Error: Item \"item_a\" not found\n    at WebSocket.onmessage (file:///app/agent.mjs:12:11)\n"
            "    at handleError (node:internal/x:1:1)\n\nNode.js v22.3.0\n")
    assert last_error_line(node) == 'Error: Item "item_a" not found'
    assert last_error_line("", "usage: agent [--port]\n") is None
    assert last_error_line("something odd\n\n") == "something odd"
    assert last_error_line("\x1b[31mFatal: boom\x1b[0m\n") == "Fatal: boom"


def test_a_character_split_across_reads_is_decoded_once_whole() -> None:
    tail = OutputTail(limit=8)
    data = "héllo wörld".encode()
    for byte in data:
        tail.feed(bytes([byte]))
    tail.feed(b"", final=True)
    assert tail.text == "llo wörld"[-8:] and tail.dropped == len("héllo wörld") - 8
