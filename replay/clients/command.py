"""`--cmd`: any program in any language as the client under test.

The program is started per case with the server's address in its environment (`OPENAI_BASE_URL`,
`OPENAI_API_KEY` (a dummy), `RTREPLAY_WS_URL`, `RTREPLAY_CASE`, `RTREPLAY_MODEL`,
`RTREPLAY_DIALECT`). Its stdout and stderr are read until they close, so nothing it printed is
lost, and the last `OUTPUT_TAIL` characters are kept for the reports.

Once the runner sets ``stop`` the program gets `EXIT_GRACE` seconds to exit on its own: a client
that crashes right after its last frame is then seen exiting with its own code. Only then does
rtreplay stop it (SIGTERM to its process group, SIGKILL `TERM_GRACE` seconds later), and the
outcome says so, so that our SIGTERM is never mistaken for a crash. A run that is cancelled (the
user's Ctrl-C, a CI job's SIGTERM) ends the program and its group the same way at once, and reaps
it before returning, so nothing it started outlives rtreplay.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import re
import signal

from replay.clients._support import group_ended, group_started
from replay.clients.base import ClientOutcome, Target

OUTPUT_TAIL = 64 * 1024  # characters of the program's output kept for the reports
CONNECT_TIMEOUT = 15.0  # seconds a program gets to open its WebSocket (checked once, before a sweep)
EXIT_GRACE = 2.0  # seconds the program gets to exit on its own once the case is over
TERM_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
DRAIN_TIMEOUT = 1.0  # reading what is left in the pipes once the program is gone
POLL = 0.02  # how often the exit is looked for (see _exit_code)

_ERROR_WORDS = re.compile(r"error|exception|fatal|panic|traceback|failed|not found|denied|refused|abort", re.I)
_STACK_FRAME = re.compile(r"^(at\s|File\s\"|\^+$|~+$)")  # JS / Python stack lines and caret markers
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MAX_LINE = 300


class OutputTail:
    """The last ``limit`` characters of what a stream printed, decoded as UTF-8 as it arrives.

    Trimmed only when twice the limit, so a program printing a line at a time costs linear time.
    """

    def __init__(self, limit: int = OUTPUT_TAIL) -> None:
        self.limit = limit
        self.total = 0
        self._text = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes, *, final: bool = False) -> str:
        """Decode a chunk (a character split across chunks waits for its end) and keep it."""
        text = self._decoder.decode(data, final)
        self.append(text)
        return text

    def append(self, text: str) -> None:
        self.total += len(text)
        self._text += text
        if len(self._text) > 2 * self.limit:
            self._text = self._text[-self.limit:]

    @property
    def text(self) -> str:
        return self._text[-self.limit:]

    @property
    def dropped(self) -> int:
        return self.total - len(self.text)


def last_error_line(*texts: str) -> str | None:
    """The last line that looks like an error, searching each text in turn (stderr first).

    Stack frames are skipped, so a Python traceback gives ``ValueError: boom`` and a Node.js one
    ``Error: Item "x" not found``. With no such line, the last non-empty line of the first text.
    """
    for text in texts:
        for line in reversed(text.splitlines()):
            line = _ANSI.sub("", line).strip()
            if line and not _STACK_FRAME.match(line) and _ERROR_WORDS.search(line):
                return line[:MAX_LINE]
    lines = [stripped for line in texts[0].splitlines() if (stripped := _ANSI.sub("", line).strip())] \
        if texts else []
    return lines[-1][:MAX_LINE] if lines else None


class CommandClient:
    def __init__(self, command: str, *, exit_grace: float = EXIT_GRACE, term_grace: float = TERM_GRACE) -> None:
        self.command = command
        self.name = f"cmd: {command}"
        self.exit_grace = exit_grace
        self.term_grace = term_grace

    def version(self) -> str | None:
        return None

    def environment(self, target: Target) -> dict[str, str]:
        """What the program is told about the case, on top of rtreplay's own environment."""
        return {
            **os.environ,
            "OPENAI_BASE_URL": target.http_base_url,
            "OPENAI_API_KEY": target.api_key,
            "RTREPLAY_WS_URL": target.ws_url,
            "RTREPLAY_CASE": target.case_id,
            "RTREPLAY_MODEL": target.model,
            "RTREPLAY_DIALECT": target.dialect,
        }

    async def run(self, target: Target, stop: asyncio.Event) -> ClientOutcome:
        try:
            process = await asyncio.create_subprocess_shell(
                self.command, env=self.environment(target), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            )
        except OSError as exc:
            reason = f"cannot start {self.command!r}: {exc.strerror or exc}"
            return ClientOutcome(crashed=reason, last_error_line=reason)
        group_started(process.pid)
        try:
            return await self._watch(process, stop)
        finally:
            _signal(process, signal.SIGKILL)
            group_ended(process.pid)
            # Pipes a process outside the group still holds are closed now, while the loop runs: left to
            # the garbage collector, they would be closed after the loop, with an "Event loop is closed".
            transport = getattr(process, "_transport", None)
            if transport is not None:
                transport.close()

    async def _watch(self, process: asyncio.subprocess.Process, stop: asyncio.Event) -> ClientOutcome:
        assert process.stdout is not None and process.stderr is not None
        both, out, err = OutputTail(), OutputTail(), OutputTail()
        pumps = [asyncio.create_task(_pump(process.stdout, out, both)),
                 asyncio.create_task(_pump(process.stderr, err, both))]
        exited = asyncio.create_task(_exit_code(process))
        stopper = asyncio.create_task(stop.wait())
        stopped_by_runner = False
        try:
            await asyncio.wait({exited, stopper}, return_when=asyncio.FIRST_COMPLETED)
            early = exited.done() and not stop.is_set()
            if not exited.done():
                await asyncio.wait({exited}, timeout=self.exit_grace)
            if not exited.done():
                stopped_by_runner = True
                _signal(process, signal.SIGTERM)
                await asyncio.wait({exited}, timeout=self.term_grace)
                if not exited.done():
                    _signal(process, signal.SIGKILL)
            code, exited_at = await exited
        except asyncio.CancelledError:
            await self._end_now(process, exited, pumps)
            raise
        finally:
            stopper.cancel()
            # Whatever it left behind (a background child holding the pipes) goes too.
            _signal(process, signal.SIGKILL)
            exited.cancel()
        await asyncio.wait(pumps, timeout=DRAIN_TIMEOUT)
        for pump in pumps:
            pump.cancel()
        for tail in (out, err):
            both.append(tail.feed(b"", final=True))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), DRAIN_TIMEOUT)  # reap it, and let asyncio close the pipes
        outcome = ClientOutcome(exit_code=code, output=both.text, output_dropped=both.dropped,
                                stopped_by_runner=stopped_by_runner, exited_at=exited_at,
                                last_error_line=last_error_line(err.text, out.text))
        if early:
            outcome.notes.append(f"the program exited with {code} before the window closed")
        elif stopped_by_runner:
            outcome.notes.append(f"the program was still running {self.exit_grace:g} s after the case ended: "
                                 "rtreplay stopped it")
        return outcome

    async def _end_now(self, process: asyncio.subprocess.Process, exited: asyncio.Task[tuple[int, float]],
                       pumps: list[asyncio.Task[None]]) -> None:
        """The run was cancelled: SIGTERM the group, SIGKILL it `term_grace` later, and reap the program
        while the event loop still runs (else its pipes are closed after the loop, with a traceback)."""
        _signal(process, signal.SIGTERM)
        if not exited.done():
            await asyncio.wait({exited}, timeout=self.term_grace)
        _signal(process, signal.SIGKILL)
        await asyncio.wait(pumps, timeout=DRAIN_TIMEOUT)  # the pipes' end: all the group is gone
        for pump in pumps:
            pump.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), DRAIN_TIMEOUT)


async def _pump(stream: asyncio.StreamReader, own: OutputTail, both: OutputTail) -> None:
    """Read a pipe to its end: a program's last lines are often the ones that say why it failed."""
    while data := await stream.read(65536):
        both.append(own.feed(data))


async def _exit_code(process: asyncio.subprocess.Process) -> tuple[int, float]:
    """The exit code and the loop time of the exit, as soon as the program exits.

    Not ``Process.wait()``: on Python 3.11 it also waits for both pipes to close, which a
    background child the program left behind can hold open for as long as it lives.
    """
    loop = asyncio.get_running_loop()
    while process.returncode is None:
        await asyncio.sleep(POLL)
    return process.returncode, loop.time()


def _signal(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
