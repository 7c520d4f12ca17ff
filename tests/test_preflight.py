"""Before a sweep: a program that is not found, crashes at once or hangs is one clear error, in seconds."""

from __future__ import annotations

import shlex
import sys

import pytest

from replay.cassettes.cassette import load
from replay.clients.command import CommandClient
from replay.conformance.cuts import Case, build_cases
from replay.conformance.preflight import PreflightFailed, preflight

from .conftest import CASSETTES

PATH = CASSETTES / "ga_text_turn_audio_response.yaml"
CASSETTE = load(PATH)
CASE: Case = build_cases([(PATH, CASSETTE)])[0]
CONNECTS = """
import asyncio, os
from websockets.asyncio.client import connect
async def main():
    async with connect(os.environ["RTREPLAY_WS_URL"],
                       additional_headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}) as ws:
        async for _ in ws:
            pass
asyncio.run(main())
"""


def python(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


async def fails(command: str, **options: float) -> PreflightFailed:
    with pytest.raises(PreflightFailed) as info:
        await preflight(CommandClient(command), CASE, CASSETTE, **options)
    return info.value


async def test_a_program_that_connects_passes() -> None:
    await preflight(CommandClient(python(CONNECTS)), CASE, CASSETTE)


async def test_a_program_that_is_not_found() -> None:
    failure = await fails("no-such-agent-rtreplay --serve")
    assert failure.message.startswith("the program was not found (exit code 127)")
    assert "no-such-agent-rtreplay" in failure.message and "no-such-agent-rtreplay" in failure.output


async def test_a_program_that_crashes_at_once_shows_its_error() -> None:
    failure = await fails(python("import sys\nprint('loading config', flush=True)\n"
                                 "raise SystemExit('fatal: OPENAI_REALTIME_URL is not set')"))
    assert failure.message == ("the program exited with code 1 before connecting: "
                               "fatal: OPENAI_REALTIME_URL is not set")
    assert "loading config" in failure.output


async def test_a_program_that_never_connects_is_stopped_after_the_timeout() -> None:
    failure = await fails(python("import time\nprint('waiting for a microphone', flush=True)\ntime.sleep(60)"),
                          timeout=1.0)
    assert failure.message.startswith("the program did not connect within 1 s (it should open a WebSocket to "
                                      "$RTREPLAY_WS_URL, here ws://127.0.0.1:")
    assert failure.output == "waiting for a microphone\n"
