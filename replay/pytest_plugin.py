"""pytest integration: a replay server per test, record modes, and the conformance corpus as tests.

Registered through the ``pytest11`` entry point, so it loads in every pytest run of an environment
that has rtreplay installed. Importing it therefore costs nothing beyond pytest itself (the replay
machinery is imported inside the functions that use it), and nothing runs unless a test asks for
``realtime_server`` or ``rtreplay_case``.

- ``@pytest.mark.realtime_cassette(name_or_path, *, session=None, speed=0.0, strict=False)`` and the
  ``realtime_server`` fixture: a `ReplayServer` for that cassette on a free port, on its own event
  loop in a background thread, so a synchronous test can use a blocking client.
- ``--record-mode`` (pytest-recording's option and choices; shared with it when it is installed)
  and ``--realtime-upstream``: in a recording mode the fixture is a `RecordingProxy` instead.
- ``rtreplay_case``: a test taking this argument runs once per case of the conformance corpus;
  ``@pytest.mark.rtreplay_cases("RT-INT-*", cassette=...)`` narrows it. `run_conformance` runs one.

A case replays at recorded timing, so one takes as long as its recording (about 1-4 s) however
fast the client is. `run_conformance` therefore does what ``rtreplay check`` does: once two tests of
a function in a row have asked for their case with the same client object and equal options (or
the first has, with a client the registry hands out by name, which is one object for every test),
the cases of the function's next tests start too, ``RunOptions.concurrency`` (16) in flight, on a
background event loop, and each test waits for its own. A test asking with another client or other
options gets a fresh run, and its function goes back to one case at a time; a client made anew in
every test is never run ahead; ``RunOptions(concurrency=1)`` never runs ahead. Under pytest-xdist a
worker cannot know which tests it will be given, so it starts only its share of the function's
next tests (their number divided by the workers'), and a case may also run in a worker that is not
given its test: without ``-n`` the plugin already runs the cases side by side.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import Future

    from replay.clients.base import Client
    from replay.conformance.cuts import Case
    from replay.conformance.runner import CaseResult, CassetteCache, RunOptions
    from replay.net.server import LiveSession

RECORD_MODES = ("once", "new_episodes", "none", "all", "rewrite")  # pytest-recording's, in its order
DEFAULT_UPSTREAM = "wss://api.openai.com"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 20.0  # the proxy may wait up to 10 s for open upstream sessions to end

T = TypeVar("T")
_CASES = pytest.StashKey[dict[tuple[Path, ...] | None, list["Case"]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rtreplay", "rtreplay: replay recorded OpenAI Realtime sessions")
    # Two plugins adding the same option abort every pytest run, so with pytest-recording installed
    # its --record-mode (same name, dest and choices) is the one both read.
    if importlib.util.find_spec("pytest_recording") is None:
        group.addoption("--record-mode", action="store", dest="record_mode", default="none", choices=RECORD_MODES,
                        help="Realtime cassettes: 'none' replays (default); 'once' records missing cassettes; "
                             "new_episodes, all and rewrite record through a proxy to --realtime-upstream.")
    group.addoption("--realtime-upstream", action="store", dest="realtime_upstream", default=DEFAULT_UPSTREAM,
                    help=f"The Realtime API a recording proxies to (default {DEFAULT_UPSTREAM}).")


def pytest_configure(config: pytest.Config) -> None:
    _ACTIVE.append(_RunAhead())
    config.stash[_AHEAD] = _ACTIVE[-1]
    config.addinivalue_line("markers", "realtime_cassette(name_or_path, *, session=None, speed=0.0, strict=False): "
                                       "the cassette the realtime_server fixture replays (or records)")
    config.addinivalue_line("markers", "rtreplay_cases(*patterns, cassette=None): narrow the rtreplay_case "
                                       "parametrization to case ids matching a glob, or sweep other cassettes")


# ---------------------------------------------------------------------------- the server fixture


class _BackgroundLoop:
    """An asyncio loop on a daemon thread, so a synchronous test can use a blocking client against it.

    asyncio is imported where it is used: this module loads in every pytest run, most of which never
    start a server.
    """

    def __init__(self) -> None:
        import asyncio

        self.loop: asyncio.AbstractEventLoop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="rtreplay-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import asyncio

        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        import asyncio

        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(STOP_TIMEOUT)


@dataclass
class RealtimeServer:
    """What ``realtime_server`` yields: where to point the client and, when replaying, what it sent."""

    ws_url: str  # ws://127.0.0.1:PORT/v1/realtime?model=MODEL
    http_base_url: str  # http://127.0.0.1:PORT/v1 (OPENAI_BASE_URL)
    port: int
    model: str
    cassette: Path
    mode: str  # "replay", or the record mode of a recording proxy
    sessions: list[LiveSession]  # one per connection, replay only: `sessions[0].log.client_events()`
    _loop: _BackgroundLoop = field(repr=False)

    def wait_closed(self, timeout: float = 5.0) -> None:
        """Block until every connection made so far has closed, so the wire logs are complete."""
        import asyncio

        sessions = list(self.sessions)

        async def closed() -> None:
            await asyncio.gather(*(session.closed.wait() for session in sessions))

        try:
            self._loop.run(closed(), timeout)
        except TimeoutError:
            still = sum(not s.closed.is_set() for s in sessions)
            raise TimeoutError(f"{still} realtime connection(s) still open after {timeout} s") from None


@dataclass(frozen=True)
class _CassetteMark:
    name: str | Path
    session: int | None
    speed: float
    strict: bool


def _cassette_mark(name_or_path: str | Path, *, session: int | None = None, speed: float = 0.0,
                   strict: bool = False) -> _CassetteMark:
    """The marker's signature, so a misspelt argument is a clear error rather than silently ignored."""
    return _CassetteMark(name_or_path, session, speed, strict)


def _record_target(name: str | Path, test_dir: Path) -> Path:
    """Where a recording goes: beside the test (never into the bundled cassettes), ``.yaml`` by default."""
    path = Path(name)
    if not path.suffix:
        path = path.with_suffix(".yaml")
    return path if path.is_absolute() else test_dir / path


def _locate(name: str | Path, test_dir: Path) -> Path | None:
    """An existing cassette: beside the test first, then as the CLI finds one (a path, or a bundled name)."""
    from replay.cassettes.cassette import CassetteError
    from replay.cassettes.corpus import resolve_cassette

    for candidate in (test_dir / name, _record_target(name, test_dir)):
        if candidate.is_file():
            return candidate
    try:
        return resolve_cassette(name)
    except CassetteError:
        return None


@pytest.fixture
def realtime_server(request: pytest.FixtureRequest) -> Iterator[RealtimeServer]:
    """A replay server (or, in a recording mode, a recording proxy) for the test's ``realtime_cassette``."""
    marker = request.node.get_closest_marker("realtime_cassette")
    if marker is None:
        pytest.fail("realtime_server needs a cassette: mark the test with "
                    "@pytest.mark.realtime_cassette('name_or_path.yaml')", pytrace=False)
    try:
        mark = _cassette_mark(*marker.args, **marker.kwargs)
    except TypeError as exc:
        pytest.fail(f"@pytest.mark.realtime_cassette(name_or_path, *, session=None, speed=0.0, strict=False): "
                    f"{exc}", pytrace=False)
    if mark.speed < 0:
        pytest.fail(f"realtime_cassette speed={mark.speed}: must be >= 0 (0 replays at once)", pytrace=False)
    mode = request.config.getoption("record_mode", default="none")
    test_dir = request.path.parent
    found = _locate(mark.name, test_dir)
    loop = _BackgroundLoop()
    try:
        if mode == "none" or (mode == "once" and found is not None):
            if found is None:
                pytest.fail(f"realtime_cassette {str(mark.name)!r}: no such cassette beside {request.path.name} "
                            "nor bundled; record it with --record-mode=once", pytrace=False)
            handle, close = _replay(found, mark, loop)
        else:
            handle, close = _record(_record_target(mark.name, test_dir), mode,
                                    request.config.getoption("realtime_upstream"), loop)
        try:
            yield handle
        finally:
            problems = loop.run(close(), STOP_TIMEOUT)
    finally:
        loop.stop()
    if problems:  # warned here, on the test's thread, so pytest files it under this test
        warnings.warn(f"rtreplay recording {handle.cassette}: {'; '.join(problems)}", stacklevel=1)


def _replay(path: Path, mark: _CassetteMark,
            loop: _BackgroundLoop) -> tuple[RealtimeServer, Callable[[], Coroutine[Any, Any, list[str]]]]:
    """A replay server for the cassette, and how to stop it (a replay reports no problems)."""
    from replay.cassettes.cassette import CassetteError, load
    from replay.net.server import ReplayServer, ServerOptions

    try:
        cassette = load(path)
    except CassetteError as exc:
        pytest.fail(str(exc), pytrace=False)
    if mark.session is not None and not 0 <= mark.session < len(cassette.sessions):
        pytest.fail(f"realtime_cassette session={mark.session}: {path.name} has {len(cassette.sessions)} "
                    "WebSocket session(s)", pytrace=False)
    options = ServerOptions(speed=mark.speed, strict=mark.strict, session_index=mark.session)

    async def start() -> ReplayServer:
        return await ReplayServer(cassette, options, host="127.0.0.1", port=0).start()

    server = loop.run(start(), START_TIMEOUT)

    async def close() -> list[str]:
        await server.close()
        return []

    chosen = cassette.sessions[mark.session or 0] if cassette.sessions else None
    model = (chosen.model if chosen else None) or server.model
    handle = RealtimeServer(server.ws_url(model), server.http_base_url, server.port, model, path, "replay",
                            server.sessions, loop)
    return handle, close


def _record(target: Path, mode: str, upstream: str,
            loop: _BackgroundLoop) -> tuple[RealtimeServer, Callable[[], Coroutine[Any, Any, list[str]]]]:
    """A recording proxy writing ``target``, and how to stop it: closing writes the cassette and lists gaps."""
    from replay.net.recorder import RecordingProxy

    try:
        proxy = RecordingProxy(target, upstream=upstream, host="127.0.0.1", port=0, record_mode=mode)
        loop.run(proxy.start(), START_TIMEOUT)
    except ValueError as exc:  # RecorderError: a record mode that forbids this file, an unusable path
        pytest.fail(str(exc), pytrace=False)

    async def close() -> list[str]:
        return (await proxy.close()).problems

    model = "gpt-realtime"
    handle = RealtimeServer(proxy.ws_url(model), proxy.http_base_url, proxy.port, model, target, mode, [], loop)
    return handle, close


# ---------------------------------------------------------------------------- conformance as tests


def _corpus(config: pytest.Config, cassettes: tuple[Path, ...] | None) -> list[Case]:
    """Cases of the default conformance corpus (or of the given cassettes), built once per session."""
    from replay.cassettes.cassette import load
    from replay.cassettes.corpus import conformance_corpus
    from replay.conformance.cuts import build_cases

    cache = config.stash.setdefault(_CASES, {})
    if cassettes not in cache:
        loaded = [(path, load(path)) for path in cassettes] if cassettes is not None else conformance_corpus()
        cache[cassettes] = build_cases(loaded)
    return cache[cassettes]


def _case_cassettes(names: str | Path | Sequence[str | Path] | None, test_dir: Path) -> tuple[Path, ...] | None:
    """The cassettes ``rtreplay_cases(cassette=...)`` names; None means the default corpus."""
    from replay.cassettes.cassette import CassetteError

    if names is None:
        return None
    paths = []
    for name in [names] if isinstance(names, str | Path) else names:
        if (path := _locate(name, test_dir)) is None:
            raise CassetteError(f"rtreplay_cases cassette={str(name)!r}: no such cassette beside the test nor bundled")
        paths.append(path)
    return tuple(paths)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rtreplay_case" not in metafunc.fixturenames:
        return
    from replay.cassettes.cassette import CassetteError
    from replay.conformance.cuts import select

    marker = metafunc.definition.get_closest_marker("rtreplay_cases")
    patterns: Sequence[str] = marker.args if marker else ()
    options = dict(marker.kwargs) if marker else {}
    names = options.pop("cassette", None)
    if options:
        pytest.fail(f"@pytest.mark.rtreplay_cases(*patterns, cassette=None): unknown argument(s) "
                    f"{', '.join(sorted(options))}", pytrace=False)
    try:
        cases = select(_corpus(metafunc.config, _case_cassettes(names, metafunc.definition.path.parent)), patterns)
    except CassetteError as exc:
        pytest.fail(str(exc), pytrace=False)
    metafunc.parametrize("rtreplay_case", cases, ids=[case.id for case in cases])


def run_conformance(case: Case, client: Client | str, options: RunOptions | None = None) -> CaseResult:
    """Run one case against a client, blocking (for a synchronous test); await `run_case` in an async one.

    Inside a pytest run the cases of the following tests of the same function are started ahead
    (see the module's docstring); outside one, or with ``options.concurrency <= 1``, only this case runs.
    """
    import asyncio

    from replay.clients.registry import get_client
    from replay.conformance.runner import CassetteCache, RunOptions, run_case

    chosen = get_client(client) if isinstance(client, str) else client
    chosen_options = options or RunOptions()
    ahead = _ACTIVE[-1] if _ACTIVE else None
    if ahead is not None and chosen_options.concurrency > 1:
        result = ahead.result(case, chosen, chosen_options)
        if result is not None:
            return result
    return asyncio.run(run_case(case, chosen, chosen_options, CassetteCache()))


# ---------------------------------------------------------------------------- running cases ahead


class _Started:
    """A case started ahead of its test, and what it was started with."""

    __slots__ = ("case", "client", "future", "options")

    def __init__(self, case: Case, client: Client, options: RunOptions, future: Future[CaseResult]) -> None:
        self.case = case
        self.client = client
        self.options = options
        self.future = future

    def serves(self, case: Case, client: Client, options: RunOptions) -> bool:
        return self.case is case and self.asked_with(client, options)

    def asked_with(self, client: Client, options: RunOptions) -> bool:
        return self.client is client and _same_options(self.options, options)


def _same_options(a: RunOptions, b: RunOptions) -> bool:
    """Field by field; a RuleBook compares by its rules (each RunOptions() makes a new one)."""
    from replay.wire.rules import RuleBook

    def same(x: Any, y: Any) -> bool:
        return x.rules == y.rules if isinstance(x, RuleBook) and isinstance(y, RuleBook) else bool(x == y)

    return type(a) is type(b) and all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))


class _RunAhead:
    """This process's rtreplay_case tests in run order, the current one, and the cases started ahead.

    Only the test thread touches it; the cases themselves run on one background loop.
    """

    def __init__(self) -> None:
        self.groups: dict[str, list[pytest.Item]] = {}  # one list per test function (and other parameters)
        self.group_of: dict[str, str] = {}
        self.current: pytest.Item | None = None
        self.started: dict[str, _Started] = {}
        self.done: set[str] = set()
        self.one_at_a_time: set[str] = set()  # groups whose tests did not all ask for the same run
        self.asked: dict[str, _Started] = {}  # each group's last run: two alike in a row start the next ones
        self.workers = 1  # pytest-xdist's worker count when this process is one of its workers
        self._loop: _BackgroundLoop | None = None
        self._cassettes: CassetteCache | None = None
        self._gates: dict[int, asyncio.Semaphore] = {}  # by concurrency: cases started ahead, so many at once

    def collected(self, items: Sequence[pytest.Item]) -> None:
        self.groups.clear()
        self.group_of.clear()
        for item in items:
            callspec = getattr(item, "callspec", None)
            if callspec is None or "rtreplay_case" not in callspec.params:
                continue
            others = sorted((name, id(value)) for name, value in callspec.params.items() if name != "rtreplay_case")
            group = f"{item.nodeid.split('[', 1)[0]} {others}"
            self.groups.setdefault(group, []).append(item)
            self.group_of[item.nodeid] = group

    def result(self, case: Case, client: Client, options: RunOptions) -> CaseResult | None:
        """The current test's case run with this client and options, started ahead of it if it was;
        None when this is not the current test's case (the caller runs it alone)."""
        item = self.current
        callspec = getattr(item, "callspec", None)
        if item is None or callspec is None or callspec.params.get("rtreplay_case") is not case:
            return None
        group = self.group_of.get(item.nodeid)
        if group is None:
            return None
        run = self.started.pop(item.nodeid, None)
        if run is not None and not run.serves(case, client, options):
            self.one_at_a_time.add(group)  # the tests want different runs: guessing ahead would only waste
            for other in [i.nodeid for i in self.groups[group] if i.nodeid in self.started]:
                self.started.pop(other).future.cancel()
            run.future.cancel()
            run = None
        if run is None:
            run = self._start(case, client, options)
        self.done.add(item.nodeid)
        previous, self.asked[group] = self.asked.get(group), run
        alike = previous.asked_with(client, options) if previous is not None else _registered(client)
        if group not in self.one_at_a_time and alike:
            self._fill(group, item, client, options)
        return run.future.result()

    def _fill(self, group: str, item: pytest.Item, client: Client, options: RunOptions) -> None:
        """Start the group's next tests' cases, ``options.concurrency`` in flight, as ``rtreplay check`` does.

        Under pytest-xdist a worker does not know which tests it will be given (xdist hands them out
        in order, a few at a time), so it starts only its share: the group's tests divided by the
        number of workers. A case another worker is given may also run here, but no more than that.
        """
        items = self.groups[group]
        at = next(i for i, other in enumerate(items) if other is item)
        share = -(-len(items) // self.workers) - 1  # ceiling division, less the test asking now
        upcoming = items[at + 1: at + 1 + share]
        for other in upcoming:
            if other.nodeid not in self.started and other.nodeid not in self.done:
                self.started[other.nodeid] = self._start(_case_param(other), client, options, gated=True)

    def _start(self, case: Case, client: Client, options: RunOptions, *, gated: bool = False) -> _Started:
        """Run a case on the background loop; a case started ahead waits for one of the group's slots."""
        import asyncio

        from replay.conformance.runner import CassetteCache, run_case

        if self._loop is None:
            self._loop = _BackgroundLoop()
            self._cassettes = CassetteCache()
        cassettes = self._cassettes
        assert cassettes is not None
        gate = self._gates.get(options.concurrency) if gated else None
        if gated and gate is None:
            gate = self._gates[options.concurrency] = asyncio.Semaphore(options.concurrency)

        async def run() -> CaseResult:
            if gate is None:
                return await run_case(case, client, options, cassettes)
            async with gate:
                return await run_case(case, client, options, cassettes)

        return _Started(case, client, options, asyncio.run_coroutine_threadsafe(run(), self._loop.loop))

    def close(self) -> None:
        """Cases started for tests that never ran (``-x``, Ctrl-C) are cancelled with the loop."""
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        self.started.clear()
        self.asked.clear()
        self._gates.clear()


def _registered(client: Client) -> bool:
    """A client the registry hands out by name: one object for every test that names it."""
    from replay.clients.registry import get_client, names

    name = getattr(client, "name", None)
    try:
        return name in names() and get_client(name) is client
    except Exception:  # a driver whose library is missing or broken is not the one passed in
        return False


def _case_param(item: pytest.Item) -> Case:
    case: Case = item.callspec.params["rtreplay_case"]  # type: ignore[attr-defined]
    return case


_ACTIVE: list[_RunAhead] = []  # a stack: pytester runs pytest inside pytest
_AHEAD = pytest.StashKey[_RunAhead]()


def pytest_collection_finish(session: pytest.Session) -> None:
    ahead = session.config.stash[_AHEAD]
    workerinput = getattr(session.config, "workerinput", None)
    ahead.workers = max(1, int(workerinput.get("workercount", 1))) if isinstance(workerinput, dict) else 1
    ahead.collected(session.items)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.config.stash[_AHEAD].current = item


def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[_AHEAD].close()


def pytest_unconfigure(config: pytest.Config) -> None:
    ahead = config.stash.get(_AHEAD, None)
    if ahead is not None:
        ahead.close()
        if ahead in _ACTIVE:
            _ACTIVE.remove(ahead)
