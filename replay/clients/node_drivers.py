"""Drivers for the JavaScript Realtime clients: ``openai-agents-js``, ``livekit-node``, ``openai-node``.

Each driver runs as a worker, ``node <driver>.mjs --serve BASE`` (in ``replay/clients/node/``): it
loads the library once, then plays cases one at a time. A case is the Target as one JSON line on
stdin; the script drives the library's own session code against the replay server and reports on
stdout (the protocol is described in ``node/common.mjs``). ``stop`` is passed on as a ``stop`` line;
a worker still busy after a grace period is killed. Idle workers are reused case after case, because
loading a library costs a CPU second or more (see ``_Pool``).

Which copy of the library is checked: the directory named by the ``node_modules`` keyword or the
``RTREPLAY_NODE_MODULES`` variable; otherwise the one Node resolves from the current directory (the
user's own project); otherwise the versions pinned in ``node/package-lock.json``, installed once with
``npm ci`` into a per-user cache. ``version()`` settles this before any case runs and reports the
library's version as resolved; a missing or old ``node``, or a failed install, is a
``MissingDependency``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._support import LOG_LINES, group_ended, group_started, wait_for_stop
from .base import ClientOutcome, MissingDependency, Target

NODE_DIR = Path(__file__).with_name("node")
NODE_MODULES_ENV = "RTREPLAY_NODE_MODULES"
MIN_NODE_MAJOR = 20
NODE_HINT = f"the JavaScript clients need Node.js >= {MIN_NODE_MAJOR} (`node` on PATH)"
# Node 20 resolves a bare specifier from another directory (import.meta.resolve's parent) only with this.
NODE_FLAGS = ("--experimental-import-meta-resolve",)
MARK = "@rtreplay "  # the drivers' own stdout lines; the rest is the library's output
LOCK_FILES = ("package.json", "package-lock.json")
STOP_GRACE_S = 3.0  # after the stop line; the runner allows 10 s between stop and our return
PROBE_TIMEOUT_S = 60.0
INSTALL_TIMEOUT_S = 900.0
STALE_INSTALL_S = 3600.0  # an unfinished install directory older than this is left from a killed run
LINE_LIMIT = 1 << 20
LINE_CHARS = 2000  # per output line kept in the log tail


def cache_root() -> Path:
    """Where pinned installs live: ``$XDG_CACHE_HOME/rtreplay/node`` (default ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rtreplay" / "node"


def pinned_dir() -> Path:
    """The pinned install's directory, named by the lock file's hash: a new pin is a new install."""
    digest = hashlib.sha256()
    for name in LOCK_FILES:
        digest.update((NODE_DIR / name).read_bytes())
    return cache_root() / digest.hexdigest()[:16]


def _pins() -> str:
    dependencies = json.loads((NODE_DIR / "package.json").read_text(encoding="utf-8"))["dependencies"]
    return ", ".join(f"{name} {dependencies[name]}" for name in (p for c in CLIENTS for p in c.packages[:1]))


def _npm_error(output: str, returncode: int) -> str:
    """The line of npm's output that says what went wrong (npm prints code, syscall, errno lines first)."""
    said = [line.strip().removeprefix("npm error").strip() for line in output.splitlines()
            if line.startswith("npm error")]
    plain = [line for line in said if line and not re.match(r"(code|syscall|errno|path|at |A complete log)\b", line)]
    return (plain or said or [f"exit code {returncode}"])[0]


def install_pinned() -> Path:
    """The pinned packages, installed with ``npm ci`` on first use.

    npm works in a temporary directory that is renamed into place when complete, so an install that
    was killed is never used (and is swept on a later install)."""
    final = pinned_dir()
    if final.is_dir():
        return final
    npm = shutil.which("npm")
    if npm is None:
        raise MissingDependency(f"npm is needed to install the pinned JavaScript clients into {final}; "
                                "install npm, or point --node-modules at a project that has them")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(final.parent)
        work = final.parent / f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
    except OSError as exc:
        raise MissingDependency(f"cannot create {final.parent} for the pinned JavaScript clients: {exc}") from None
    try:
        for name in LOCK_FILES:
            shutil.copyfile(NODE_DIR / name, work / name)
        print(f"rtreplay: installing the pinned JavaScript clients ({_pins()}) into {final}, once …",
              file=sys.stderr, flush=True)
        try:
            result = subprocess.run(
                [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=work, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise MissingDependency(f"npm ci did not finish within {INSTALL_TIMEOUT_S:.0f} s") from None
        if result.returncode != 0:
            reason = _npm_error(result.stderr + "\n" + result.stdout, result.returncode)
            raise MissingDependency(f"npm could not install the pinned JavaScript clients: {reason}")
        try:
            work.rename(final)
        except OSError:
            if not final.is_dir():  # else another process finished the same install first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _sweep_stale(root: Path) -> None:
    """Remove unfinished install directories that a killed run left behind."""
    for leftover in root.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - leftover.stat().st_mtime > STALE_INSTALL_S:
                shutil.rmtree(leftover, ignore_errors=True)


def find_node() -> str:
    """The ``node`` on PATH, checked to be recent enough."""
    node = shutil.which("node")
    if node is None:
        raise MissingDependency(f"{NODE_HINT}; none was found")
    try:
        shown = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                               stdin=subprocess.DEVNULL).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MissingDependency(f"{NODE_HINT}; {node} does not run: {exc}") from None
    match = re.match(r"v(\d+)\.", shown)
    if match is None or int(match.group(1)) < MIN_NODE_MAJOR:
        raise MissingDependency(f"{NODE_HINT}; {node} is {shown or 'of an unknown version'}")
    return node


@dataclass(frozen=True)
class NodeSetup:
    """What one client runs with: which node, where module resolution starts, the library's version."""

    node: str
    base: Path
    version: str


LOADING_AT_ONCE = max(1, (os.cpu_count() or 2) // 2)
LOAD_TIMEOUT_S = 60.0
HANDOVER_TRIES = 3  # a case goes to another worker when the one it was given ended before taking it

# Resolved once per (driver, explicit directory, current directory, node): version() runs before the
# cases, and the runner's 16 concurrent cases must not each probe or install.
_SETUPS: dict[tuple[str, str, str, str], NodeSetup] = {}
_SETUP_LOCK = threading.Lock()


@dataclass(frozen=True)
class NodeClient:
    """A JavaScript library driven by ``node/<script>``; ``packages[0]`` is the library whose version is reported."""

    name: str
    script: str
    packages: tuple[str, ...]
    dialects: tuple[str, ...] = ("ga",)
    node_modules: Path | None = None  # the directory to resolve the library from; None: see the module doc
    env: tuple[tuple[str, str], ...] = ()  # extra environment for the driver (the library's log switches)

    def with_node_modules(self, node_modules: Path | str | None) -> NodeClient:
        """The same client, checking the library installed in (or under) ``node_modules``."""
        return replace(self, node_modules=None if node_modules is None else Path(node_modules))

    def version(self) -> str | None:
        """The library's version as resolved for this run; says what is missing before any case runs."""
        return self.setup().version

    def setup(self) -> NodeSetup:
        """Find node and the library (installing the pinned one if need be); raises MissingDependency."""
        node = find_node()
        explicit = self.node_modules or os.environ.get(NODE_MODULES_ENV) or ""
        key = (self.script, str(explicit), os.getcwd(), node)
        with _SETUP_LOCK:
            if key not in _SETUPS:
                _SETUPS[key] = self._resolve(node, Path(explicit).expanduser() if explicit else None)
            return _SETUPS[key]

    def _resolve(self, node: str, explicit: Path | None) -> NodeSetup:
        if explicit is not None:
            if not explicit.is_dir():
                raise MissingDependency(f"{NODE_MODULES_ENV} / --node-modules: {explicit} is not a directory")
            base = explicit.resolve()
            hint = "install it there with npm, or leave --node-modules out to use the pinned version"
            return NodeSetup(node, base, self._version_at(node, base, hint))
        base = Path.cwd()
        versions = self._probe(node, base)
        if all(versions.get(p) for p in self.packages):
            return NodeSetup(node, base, self._version_text(versions))
        base = install_pinned()
        return NodeSetup(node, base, self._version_at(node, base, f"delete {base} to reinstall it"))

    def _version_at(self, node: str, base: Path, hint: str) -> str:
        versions = self._probe(node, base)
        missing = [p for p in self.packages if not versions.get(p)]
        if missing:
            raise MissingDependency(f"{', '.join(missing)} not found from {base}; {hint}")
        return self._version_text(versions)

    def _version_text(self, versions: dict[str, str | None]) -> str:
        """The library's version, and a companion package's when it differs (livekit's agents framework)."""
        main = str(versions[self.packages[0]])
        others = [f"{p} {versions[p]}" for p in self.packages[1:] if versions.get(p) != main]
        return f"{main} ({', '.join(others)})" if others else main

    def _probe(self, node: str, base: Path) -> dict[str, str | None]:
        """The packages' versions as Node resolves them from ``base`` (null when absent)."""
        command = [node, *NODE_FLAGS, str(NODE_DIR / self.script), "--version", str(base)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                                    stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MissingDependency(f"{NODE_HINT}; `{' '.join(command)}` failed: {exc}") from None
        for line in result.stdout.splitlines():
            if line.startswith(MARK):
                versions: dict[str, str | None] = json.loads(line[len(MARK):]).get("versions", {})
                return versions
        lines = result.stderr.strip().splitlines()
        last = lines[-1] if lines else f"exit code {result.returncode}"
        said = next((line for line in lines if "Error" in line), last)
        raise MissingDependency(f"{NODE_HINT}; {self.script} could not look up its packages: {said}")

    async def run(self, target: Target, stop: asyncio.Event) -> ClientOutcome:
        outcome = ClientOutcome()
        try:
            setup = await asyncio.to_thread(self.setup)
        except MissingDependency as exc:
            outcome.crashed = str(exc)
            return outcome
        pool = _Pool.of(setup, self)
        pool.runs += 1
        worker: _Worker | None = None
        case = _Case(outcome)
        try:
            for _ in range(HANDOVER_TRIES):
                worker = await pool.take(stop, case)
                if worker is None:
                    break
                reusable = await worker.play(case, target, stop)
                await pool.give_back(worker, reusable)
                worker = None
                if case.started:
                    break
                # the worker ended before it took the case (an earlier case's library crashed it): another one
                case = _Case(outcome, case.tail)
                outcome.crashed, outcome.exit_code = None, None
                outcome.notes[:] = ["the first node worker given this case had ended; it went to another"]
        except BaseException:
            if worker is not None:  # cancelled (Ctrl-C) during the case: never leave a driver behind
                worker.kill()
                with contextlib.suppress(BaseException):
                    await asyncio.shield(worker.close())
            raise
        finally:
            pool.runs -= 1
            if pool.runs == 0:  # the last case of a run closes the idle drivers while the loop still runs
                await pool.close_idle()
        outcome.output = "\n".join(case.tail)
        return outcome


@dataclass
class _Case:
    """Where one case's reports and output go while a driver plays it."""

    outcome: ClientOutcome
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_LINES))
    done: asyncio.Event = field(default_factory=asyncio.Event)
    started: bool = False  # the driver took the case
    reusable: bool = False  # the driver said it can take another case


class _Worker:
    """One ``node <script> --serve BASE`` process: loads the library once, then plays cases one at a time."""

    def __init__(self, process: asyncio.subprocess.Process, script: str) -> None:
        assert process.stdout is not None and process.stderr is not None
        self.process = process
        self.script = script
        self.ready = asyncio.Event()
        self.case: _Case | None = None
        self.startup = _Case(ClientOutcome())  # what the driver said before its first case
        self.readers = {asyncio.create_task(self._read(process.stdout, own=True)),
                        asyncio.create_task(self._read(process.stderr, own=False))}

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and not all(r.done() for r in self.readers)

    async def _read(self, stream: asyncio.StreamReader, *, own: bool) -> None:
        """The driver's reports (stdout, MARK) go to the case playing; the rest into its output."""
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than LINE_LIMIT; it was dropped
                continue
            case = self.case or self.startup
            if not raw:
                self.ready.set()
                case.done.set()
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            message = _report(line) if own else None
            if message is None:
                case.tail.append(line[:LINE_CHARS])
            elif "ready" in message:
                self.ready.set()
            elif "started" in message:
                case.started = True
            elif "note" in message:
                case.outcome.notes.append(str(message["note"]))
            elif "late" in message:
                case.tail.append(f"[from an earlier case on this node worker] {message['late']}"[:LINE_CHARS])
            elif "crashed" in message:
                case.outcome.crashed = str(message["crashed"])
            elif "done" in message:
                case.reusable = message.get("reusable") is True
                case.done.set()

    async def play(self, case: _Case, target: Target, stop: asyncio.Event) -> bool:
        """Hand the case over, pass ``stop`` on, and kill the driver if it outlives the grace period.

        Returns whether the driver can take another case."""
        assert self.process.stdin is not None
        self.case = case
        try:
            if not self._write(_payload(target)):
                case.done.set()
            waiter = asyncio.create_task(case.done.wait())
            await wait_for_stop(stop, case.outcome, {"the node driver ended the case before stop": waiter})
            if not case.done.is_set():
                self._write(b"stop\n")
                try:
                    await asyncio.wait_for(case.done.wait(), STOP_GRACE_S)
                except TimeoutError:
                    case.outcome.notes.append(f"the node driver was still running {STOP_GRACE_S:.0f} s after stop: "
                                              "killed")
                    self.kill()
                    return False
            waiter.cancel()
        finally:
            self.case = None
        if not self.alive and case.outcome.crashed is None:
            await asyncio.wait({asyncio.ensure_future(self.process.wait())}, timeout=1.0)
            case.outcome.exit_code = self.process.returncode
            case.outcome.crashed = f"{self.script} exited with code {self.process.returncode}: " + (
                case.tail[-1] if case.tail else "no output")
        return self.alive and case.reusable

    def _write(self, data: bytes) -> bool:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
        except (ConnectionError, RuntimeError):
            return False
        return True

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    async def close(self) -> None:
        """End of stdin ends the worker; one that does not end within the grace period is killed.

        Also for a worker that has ended: its transport is finished only once stdin is closed too,
        and one left open would be collected after its event loop closed."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_GRACE_S)
        except TimeoutError:
            self.kill()
            await self.process.wait()
        self.kill()  # anything the library started in the worker's group goes with it
        group_ended(self.process.pid)
        await asyncio.wait(self.readers, timeout=1.0)


class _Pool:
    """The idle drivers of one client setup in one event loop.

    Loading a library costs a CPU second or more (livekit's about 2.5 s), and a run has dozens of cases:
    drivers are reused case after case, and new ones load one at a time (LOADING_AT_ONCE per core pair)
    so that cases already playing keep their real-time clocks."""

    def __init__(self, setup: NodeSetup, client: NodeClient, gate: asyncio.Semaphore) -> None:
        self.setup, self.client, self.gate = setup, client, gate
        self.idle: list[_Worker] = []
        self.freed = asyncio.Event()
        self.runs = 0

    @classmethod
    def of(cls, setup: NodeSetup, client: NodeClient) -> _Pool:
        loop = asyncio.get_running_loop()
        gate = _GATES.setdefault(loop, asyncio.Semaphore(LOADING_AT_ONCE))
        pools = _POOLS.setdefault(loop, {})
        key = (client.script, str(setup.base), setup.node)
        if key not in pools:
            pools[key] = _Pool(setup, client, gate)
        return pools[key]

    async def take(self, stop: asyncio.Event, case: _Case) -> _Worker | None:
        """An idle driver, or a new one once it is this case's turn to load; None if stopped first."""
        while True:
            ended = [w for w in self.idle if not w.alive]
            self.idle = [w for w in self.idle if w.alive]
            await asyncio.gather(*(w.close() for w in ended), return_exceptions=True)
            if self.idle:
                return self.idle.pop()
            if stop.is_set():
                case.outcome.notes.append("stopped before a node driver was free")
                return None
            freed = self.freed
            turn = asyncio.ensure_future(self.gate.acquire())
            others = {asyncio.ensure_future(freed.wait()), asyncio.ensure_future(stop.wait())}
            await asyncio.wait({turn, *others}, return_when=asyncio.FIRST_COMPLETED)
            for task in others:
                task.cancel()
            if not turn.done():
                turn.cancel()
                continue
            try:
                if self.idle or stop.is_set():  # freed up, or stopped, at the same moment
                    continue
                return await self._start(case)
            finally:
                self.gate.release()

    async def _start(self, case: _Case) -> _Worker | None:
        env = {**os.environ, **dict(self.client.env)}
        command = [self.setup.node, *NODE_FLAGS, str(NODE_DIR / self.client.script), "--serve", str(self.setup.base)]
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=LINE_LIMIT, env=env,
            )
        except OSError as exc:
            case.outcome.crashed = f"cannot start {self.setup.node}: {exc.strerror or exc}"
            return None
        group_started(process.pid)
        worker = _Worker(process, self.client.script)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.ready.wait(), LOAD_TIMEOUT_S)
        except BaseException:  # cancelled (Ctrl-C) while the library loads: the worker goes too
            worker.kill()
            with contextlib.suppress(BaseException):
                await asyncio.shield(worker.close())
            raise
        if worker.alive and worker.ready.is_set():
            return worker
        worker.kill()
        await worker.close()
        case.outcome.crashed = worker.startup.outcome.crashed or (
            f"{self.client.script} did not load its library within {LOAD_TIMEOUT_S:.0f} s"
            if worker.alive else f"{self.client.script} ended while loading: "
            + (worker.startup.tail[-1] if worker.startup.tail else "no output"))
        return None

    async def give_back(self, worker: _Worker, reusable: bool) -> None:
        if reusable:
            self.idle.append(worker)
            self.freed.set()
            self.freed = asyncio.Event()
            return
        worker.kill()
        await worker.close()

    async def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        await asyncio.gather(*(w.close() for w in idle), return_exceptions=True)


_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str, str], _Pool]] = (
    weakref.WeakKeyDictionary())
_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _report(line: str) -> dict[str, Any] | None:
    """A driver's own report line, parsed; None for the library's output."""
    if not line.startswith(MARK):
        return None
    try:
        message = json.loads(line[len(MARK):])
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _payload(target: Target) -> bytes:
    fields: dict[str, Any] = {
        "ws_url": target.ws_url, "http_base_url": target.http_base_url, "api_key": target.api_key,
        "model": target.model, "dialect": target.dialect, "case_id": target.case_id,
        "client_script": list(target.client_script),
    }
    return json.dumps(fields).encode() + b"\n"


OPENAI_AGENTS_JS = NodeClient("openai-agents-js", "openai-agents-js.mjs", ("@openai/agents-realtime",),
                              env=(("DEBUG", "openai-agents:*"),))
LIVEKIT_NODE = NodeClient("livekit-node", "livekit-node.mjs", ("@livekit/agents-plugin-openai", "@livekit/agents"))
OPENAI_NODE = NodeClient("openai-node", "openai-node.mjs", ("openai",), dialects=("beta", "ga"))
CLIENTS = (OPENAI_AGENTS_JS, LIVEKIT_NODE, OPENAI_NODE)


if __name__ == "__main__":
    # `python -m replay.clients.node_drivers`: install the pinned clients ahead of time (CI does).
    try:
        print(install_pinned())
    except MissingDependency as exc:
        sys.exit(f"rtreplay: {exc}")
