"""Before a sweep of a `--cmd` program: does it connect at all?

A program that is not found, crashes at once or never connects would fail every case the same way,
and a hang would cost the case timeout once per case. One server on the first case's cassette and
one start of the program, with a case's environment, tell it in seconds: one configuration error
with the program's own output, instead of a table of identical failures.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from replay.cassettes.cassette import Cassette
from replay.clients.base import ClientOutcome, Target
from replay.clients.command import CONNECT_TIMEOUT, CommandClient
from replay.conformance.cuts import Case
from replay.conformance.runner import DUMMY_KEY
from replay.net.server import ReplayServer, ServerOptions


@dataclass
class PreflightFailed(Exception):
    """The program cannot be checked at all; ``output`` is the tail of what it printed."""

    message: str
    output: str

    def __str__(self) -> str:
        return self.message


def target_for(case: Case, cassette: Cassette, server: ReplayServer) -> Target:
    """The target a case's run would give the client, so the program starts as it will in the sweep."""
    session = cassette.sessions[case.session_index]
    model = session.model or "gpt-realtime"
    return Target(ws_url=server.ws_url(model), http_base_url=server.http_base_url, api_key=DUMMY_KEY, model=model,
                  dialect=session.dialect, case_id=case.id, cassette=str(case.cassette),
                  session_index=case.session_index)


async def preflight(client: CommandClient, case: Case, cassette: Cassette, *,
                    timeout: float = CONNECT_TIMEOUT) -> None:
    """Start the program once and wait for its WebSocket; raise `PreflightFailed` saying why it never came."""
    stop = asyncio.Event()
    run: asyncio.Task[ClientOutcome] | None = None
    try:
        async with ReplayServer(cassette, ServerOptions(session_index=case.session_index, seed=case.id)) as server:
            target = target_for(case, cassette, server)
            run = asyncio.create_task(client.run(target, stop))
            connected = asyncio.create_task(server.session_started.wait())
            await asyncio.wait({run, connected}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            connected.cancel()
            ok = server.session_started.is_set()
            hung = not ok and not run.done()
        # The server is closed: a program that exits when its socket does is not kept waiting.
        stop.set()
        outcome = await run
    finally:
        stop.set()
        if run is not None and not run.done():
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
    if not ok:
        raise PreflightFailed(_why(outcome, hung, target.ws_url, timeout), outcome.output)


def _why(outcome: ClientOutcome, hung: bool, ws_url: str, timeout: float) -> str:
    line = f": {outcome.last_error_line}" if outcome.last_error_line else ""
    if outcome.crashed:
        return outcome.crashed
    if hung:
        return (f"the program did not connect within {timeout:g} s (it should open a WebSocket to "
                f"$RTREPLAY_WS_URL, here {ws_url})")
    if outcome.exit_code == 127:
        return f"the program was not found (exit code 127){line}"
    if outcome.exit_code == 126:
        return f"the program cannot be executed (exit code 126){line}"
    return f"the program exited with code {outcome.exit_code} before connecting{line}"
