"""`--cmd`: any program in any language as the client under test.

The program is started per case with the server's address in its environment
(`OPENAI_BASE_URL`, `OPENAI_API_KEY` (a dummy), `RTREPLAY_WS_URL`, `RTREPLAY_CASE`) and stopped once
the watch window has closed: SIGTERM, then SIGKILL after a grace period. Its exit code and output
go into the case's wire log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from replay.clients.base import ClientOutcome, Target

MAX_OUTPUT = 64 * 1024


class CommandClient:
    def __init__(self, command: str, *, grace: float = 2.0) -> None:
        self.command = command
        self.name = f"cmd: {command}"
        self.grace = grace

    def version(self) -> str | None:
        return None

    async def run(self, target: Target, stop: asyncio.Event) -> ClientOutcome:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": target.http_base_url,
            "OPENAI_API_KEY": target.api_key,
            "RTREPLAY_WS_URL": target.ws_url,
            "RTREPLAY_CASE": target.case_id,
            "RTREPLAY_MODEL": target.model,
            "RTREPLAY_DIALECT": target.dialect,
        }
        try:
            process = await asyncio.create_subprocess_shell(
                self.command, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )
        except OSError as exc:
            return ClientOutcome(crashed=f"cannot start {self.command!r}: {exc.strerror or exc}")
        assert process.stdout is not None
        output = asyncio.create_task(process.stdout.read(MAX_OUTPUT))
        exited = asyncio.create_task(process.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({exited, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not exited.done():
            self._signal(process, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(exited), self.grace)
            except TimeoutError:
                self._signal(process, signal.SIGKILL)
        code = await exited
        text = b""
        with contextlib.suppress(Exception):
            text = await asyncio.wait_for(output, 1.0)
        outcome = ClientOutcome(exit_code=code, output=text.decode("utf-8", "replace"))
        if exited.done() and not stop.is_set():
            outcome.notes.append(f"the program exited with {code} before the window closed")
        return outcome

    @staticmethod
    def _signal(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
