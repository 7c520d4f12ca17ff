"""The conformance runner: one replay server per case, one client per case, a verdict per case.

An asyncio shell: the decisions are the cut (:mod:`replay.conformance.cuts`), the user who barges in
there and watches (:mod:`replay.conformance.harness`), the server's answers (:mod:`replay.engine.conversation`)
and the verdict (:mod:`replay.conformance.verdicts`). Cases are independent, each on
its own free port, so they run concurrently. A run that is interrupted keeps the cases that finished
and cancels the others, whose clients then end what they started.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from replay import __version__
from replay.cassettes.cassette import Cassette, load
from replay.clients.base import Client, ClientOutcome, Target
from replay.conformance.cuts import Case
from replay.conformance.harness import Cut, CutHarness, CutResult
from replay.conformance.verdicts import FAILED, NON_STRICT, NOT_REACHED, Verdict, judge
from replay.net.server import LiveSession, ReplayServer, ServerOptions
from replay.text import CLIENT_TEXT_LIMIT, clip
from replay.wire.rules import RuleBook

DUMMY_KEY = "sk-rtreplay-dummy-key"
CRASH_TAIL = 4 * CLIENT_TEXT_LIMIT  # characters of an in-process client's traceback kept (its end says why)


@dataclass
class RunOptions:
    speed: float = 1.0  # recorded timing, so a player has really played what it says
    quiet: float = 0.3  # the watch window closes after this long without a client frame
    max_window: float = 5.0  # the window holds the rest of the user's turn and the response it starts
    case_timeout: float = 30.0  # connect + replay to the cut + window
    stall: float = 3.0  # nothing due and the client silent this long before the cut: NOT-REACHED
    tolerance_ms: int = 250  # truncate vs playback estimate before it is worth a note
    concurrency: int = 16
    latency_ms: float = 0.0  # the server answers client events (and the cancel tail) this late, as over a network
    rules: RuleBook = field(default_factory=RuleBook)


@dataclass
class CaseResult:
    case: Case
    client: str
    verdict: Verdict
    duration: float
    log: list[dict[str, Any]]
    outcome: ClientOutcome
    divergences: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict.verdict != FAILED


@dataclass
class RunReport:
    client: str
    client_version: str | None
    started_at: str
    duration: float
    results: list[CaseResult]
    tool_version: str = __version__
    interrupted: bool = False  # stopped before every case finished: ``results`` are the cases that did
    signal: str | None = None  # what stopped it ("SIGTERM"), when a signal did
    unfinished: list[Case] = field(default_factory=list)  # cases cancelled, or never started, when interrupted

    def counts(self) -> dict[str, int]:
        counts = {"OK": 0, "NON-STRICT": 0, "INFORMATIONAL": 0, "NOT-REACHED": 0, "FAILED": 0}
        for result in self.results:
            counts[result.verdict.verdict] += 1
        return counts

    def failed(self, *, strict: bool = False) -> list[CaseResult]:
        bad = {FAILED, NON_STRICT} if strict else {FAILED}
        return [r for r in self.results if r.verdict.verdict in bad]


class CassetteCache:
    """Cases share cassettes; each is parsed once per run."""

    def __init__(self, loaded: Iterable[tuple[Path, Cassette]] = ()) -> None:
        self._loaded: dict[Path, Cassette] = dict(loaded)  # what the caller already parsed to build the cases

    def get(self, path: Path) -> Cassette:
        if path not in self._loaded:
            self._loaded[path] = load(path)
        return self._loaded[path]


async def run_case(case: Case, client: Client, options: RunOptions, cassettes: CassetteCache) -> CaseResult:
    started = time.perf_counter()
    cassette = cassettes.get(case.cassette)
    session = cassette.sessions[case.session_index]
    users = Users(Cut(case.cut, quiet=options.quiet, max_window=options.max_window, stall=options.stall,
                      response=case.position[0] if case.position else None,
                      step=case.position[1] if case.position else None))
    server = ReplayServer(
        cassette,
        ServerOptions(speed=options.speed, session_index=case.session_index, rules=options.rules, seed=case.id,
                      play_user=True, latency_ms=options.latency_ms),
        harness=users,
    )
    async with server:
        model = session.model or "gpt-realtime"
        target = Target(
            ws_url=server.ws_url(model), http_base_url=server.http_base_url, api_key=DUMMY_KEY, model=model,
            dialect=session.dialect, case_id=case.id, cassette=str(case.cassette), session_index=case.session_index,
            client_script=tuple(f.event for f in session.frames if f.source == "client" and f.event is not None
                                and f.type != "input_audio_buffer.append"),
        )
        stop = asyncio.Event()
        client_task = asyncio.create_task(_guarded(client, target, stop))
        watcher = asyncio.create_task(users.window_closed(server))
        try:
            done, _ = await asyncio.wait({client_task, watcher}, timeout=options.case_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            timed_out = not done
            if client_task in done and watcher not in done:
                # The client ended on its own: the session it leaves may still be closing its window.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(watcher), options.quiet + 0.5)
            # The case is over: the server ends the session, and the client gets its grace to exit on its own.
            # A client that had already hung up answers for any way it exits.
            case_over = asyncio.get_running_loop().time() if server.end_sessions() else float("inf")
            stop.set()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            try:
                outcome = await asyncio.wait_for(client_task, 10.0)
            except TimeoutError:
                outcome = ClientOutcome(crashed="the client did not stop within 10 s of being asked to")
        except asyncio.CancelledError:
            # The run was interrupted: the client is cancelled too, and ends what it started before we go on.
            for task in (client_task, watcher):
                task.cancel()
            await asyncio.gather(client_task, watcher, return_exceptions=True)
            raise
    live = users.judged(server.sessions)
    log = _case_log(case, client, live, outcome)
    verdict = _verdict(case, live, users.result(live), outcome, options, timed_out, case_over)
    divergences = [d.describe() for d in live.divergences] if live is not None else []
    return CaseResult(case, client.name, verdict, time.perf_counter() - started, log, outcome, divergences)


def _verdict(case: Case, live: LiveSession | None, cut: CutResult | None, outcome: ClientOutcome,
             options: RunOptions, timed_out: bool, case_over: float) -> Verdict:
    crash = _crash(outcome, case_over)
    if live is None or cut is None:
        return Verdict(FAILED, f"no session: {crash or 'the client never connected'}")
    if cut.cut_at is None:
        if crash:
            return Verdict(FAILED, f"the client failed before the cut: {crash}")
        why = cut.stalled or ("the case timed out before the cut" if timed_out else
                              "the client closed the connection before the cut")
        return Verdict(NOT_REACHED, why)
    closed_early = not any(e.get("mark") == "window closed" for e in live.log.entries)
    verdict = judge(cut.snapshot or case.snapshot, live.log.entries, tolerance_ms=options.tolerance_ms,
                    client_closed_early=closed_early)
    if verdict.verdict != FAILED and live.failure:
        verdict = Verdict(FAILED, clip(live.failure), verdict.errors, verdict.actions, verdict.estimate_ms,
                          verdict.details)
    if verdict.verdict != FAILED and crash:
        verdict = Verdict(FAILED, f"the client failed after the barge-in: {crash} (it had sent: "
                                  f"{', '.join(verdict.actions) or 'nothing'})",
                          verdict.errors, verdict.actions, verdict.estimate_ms, verdict.details)
    return verdict


def _crash(outcome: ClientOutcome, case_over: float) -> str | None:
    """How the client failed on its own during the case, if it did: an exception, or an exit code it chose.

    A program that exits non-zero only once the server has ended the session is not blamed for it.
    """
    if outcome.crashed:
        return clip((outcome.crashed.strip().splitlines() or ["(no message)"])[-1])
    during = outcome.exited_at is None or outcome.exited_at <= case_over
    if outcome.exit_code not in (None, 0) and not outcome.stopped_by_runner and during:
        line = outcome.last_error_line
        return f"it exited with code {outcome.exit_code}" + (f": {clip(line)}" if line else "")
    return None


async def _guarded(client: Client, target: Target, stop: asyncio.Event) -> ClientOutcome:
    """A client that raises still yields an outcome: its traceback is evidence, not a crash of ours."""
    try:
        return await client.run(target, stop)
    except asyncio.CancelledError:
        raise
    except Exception:
        text = traceback.format_exc(limit=8)
        return ClientOutcome(crashed=text if len(text) <= CRASH_TAIL else
                             f"({len(text) - CRASH_TAIL} characters cut)\n{text[-CRASH_TAIL:]}")


class Users:
    """The harness of each connection of one case (a reconnecting client opens several), made as they open."""

    def __init__(self, cut: Cut) -> None:
        self.cut = cut
        self.harnesses: dict[int, CutHarness] = {}  # by session index
        self.closed: dict[int, asyncio.Event] = {}

    def __call__(self, session: LiveSession) -> CutHarness:
        closed = self.closed[session.index] = asyncio.Event()
        harness = self.harnesses[session.index] = CutHarness(self.cut, on_close=closed.set)
        return harness

    def result(self, session: LiveSession | None) -> CutResult | None:
        harness = self.harnesses.get(session.index) if session is not None else None
        return harness.result if harness is not None else None

    def _reached(self, session: LiveSession) -> bool:
        result = self.result(session)
        return result is not None and (result.cut_at is not None or result.stalled is not None)

    async def window_closed(self, server: ReplayServer) -> None:
        """Returns once a session's watch window has closed, or every connection ended short of the cut."""
        while True:
            reached = next((s for s in server.sessions if self._reached(s) or s.failure), None)
            if reached is not None:
                await self.closed[reached.index].wait()
                return
            if server.sessions and all(s.closed.is_set() for s in server.sessions):
                await asyncio.sleep(0.2)  # a reconnecting client gets a moment
                if all(s.closed.is_set() for s in server.sessions):
                    return
                continue
            await asyncio.sleep(0.01)

    def judged(self, sessions: Sequence[LiveSession]) -> LiveSession | None:
        """The connection that reached the cut, else the last."""
        return next((s for s in sessions if (r := self.result(s)) is not None and r.cut_at is not None),
                    sessions[-1] if sessions else None)


def _case_log(case: Case, client: Client, live: LiveSession | None, outcome: ClientOutcome) -> list[dict[str, Any]]:
    head = {"mark": "case", "case": case.id, "title": case.title, "client": client.name,
            "cassette": case.cassette_name, "session": case.session_index, "cut_label": case.cut}
    tail: dict[str, Any] = {"mark": "client", "exit_code": outcome.exit_code,
                            "notes": [clip(note) for note in outcome.notes[:50]]}
    if outcome.output:
        tail["output"] = outcome.output[-8000:]
    if outcome.crashed:
        tail["crashed"] = outcome.crashed[-CRASH_TAIL:]
    return [head, *(live.log.entries if live else []), tail]


async def run_cases(cases: Sequence[Case], client: Client, options: RunOptions | None = None,
                    progress: Callable[[CaseResult], None] | None = None,
                    cassettes: CassetteCache | None = None, interrupt: asyncio.Event | None = None) -> RunReport:
    """Every case, ``options.concurrency`` at a time; once ``interrupt`` is set, the cases still running
    are cancelled (each client ends its programs) and the report holds those that finished."""
    options = options or RunOptions()
    cassettes = cassettes or CassetteCache()
    gate = asyncio.Semaphore(max(1, options.concurrency))
    started = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    finished: dict[int, CaseResult] = {}

    async def one(index: int, case: Case) -> None:
        async with gate:
            finished[index] = await run_case(case, client, options, cassettes)
        if progress is not None:
            progress(finished[index])

    tasks = [asyncio.create_task(one(index, case)) for index, case in enumerate(cases)]
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(asyncio.wait(tasks))] if tasks else []
    if interrupt is not None:
        waiters.append(asyncio.ensure_future(interrupt.wait()))
    try:
        if waiters:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        for task in tasks:
            task.cancel()
        # Cancelled cases end their servers and clients here, in the loop, before the report is made.
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, asyncio.CancelledError)]
    if errors:
        raise errors[0]
    unfinished = [case for index, case in enumerate(cases) if index not in finished]
    return RunReport(client.name, client.version(), started_at, time.perf_counter() - started,
                     [finished[index] for index in sorted(finished)], interrupted=bool(unfinished),
                     unfinished=unfinished)


def not_started(cases: Sequence[Case], client: Client) -> RunReport:
    """The report of a run interrupted before its first case: every case unfinished."""
    return RunReport(client.name, client.version(), datetime.now(UTC).isoformat(timespec="seconds"), 0.0, [],
                     interrupted=True, unfinished=list(cases))
