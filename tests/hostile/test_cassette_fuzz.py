"""Single-field mutations of every bundled cassette: each one loads, compiles, shows, lists its cases,
lints and (for a sample) serves, or is refused with one CassetteError naming the file; never a
TypeError, AttributeError, KeyError or any other traceback.

The mutations are deterministic: every distinct field path (a frame's path counted once per event
type) of every bundled cassette, changed in each of the ways below, then a fixed stride through
them so the whole test stays well under a minute on one core. ``python -m tests.hostile.test_cassette_fuzz``
runs every mutation (the one-off sweep) and prints the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import marshal
import math
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from replay.cassettes.cassette import Cassette, CassetteError, from_data
from replay.engine.script import script_of

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted((ROOT / "cassettes").glob("*.yaml"))

Path_ = tuple[Any, ...]
DROP = object()  # the mutation that removes the key or the element


def _replacements(value: Any) -> list[Any]:
    """What a field is changed to: every other JSON type, and for numbers the edges."""
    if isinstance(value, bool):
        return ["yes", None, 1, []]
    if isinstance(value, int | float):
        return [-1, -0.5, 10**18, 1e308, math.nan, math.inf, "12", None, True, [], {}]
    if isinstance(value, str):
        return [1, None, [], {}, True, -1.5, "", "\x1b[2J[link=http://x]y[/link]"]
    if value is None:
        return ["x", 1, [], {}]
    if isinstance(value, list):
        return [[], {}, "x", None, [None], [[]]]
    if isinstance(value, dict):
        return [{}, [], "x", None, 0]
    return [None]


def _paths(node: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _paths(child, (*path, index))


def _signature(data: dict[str, Any], path: Path_) -> tuple[Any, ...]:
    """A field's path with the frame and interaction numbers replaced by the frame's event type."""
    if len(path) >= 6 and path[0] == "interactions" and path[4] == "frames" and isinstance(path[5], int):
        frame = data["interactions"][path[1]]["response"]["websocket"]["frames"][path[5]]
        event = frame.get("event") if isinstance(frame, dict) else None
        etype = event.get("type") if isinstance(event, dict) else None
        rest = tuple("#" if isinstance(p, int) else p for p in path[6:])
        return ("frame", frame.get("from") if isinstance(frame, dict) else None, etype, *rest)
    return tuple("#" if isinstance(p, int) and i > 1 else p for i, p in enumerate(path))


def mutations(data: dict[str, Any]) -> list[tuple[Path_, Any]]:
    """(path, new value or DROP) for every distinct field path of the cassette, first occurrence each."""
    seen: set[tuple[Any, ...]] = set()
    out: list[tuple[Path_, Any]] = []
    for path, value in _paths(data):
        signature = _signature(data, path)
        if signature in seen:
            continue
        seen.add(signature)
        if path:
            out.append((path, DROP))
        out += [(path, new) for new in _replacements(value) if not (type(new) is type(value) and new == value)]
        if isinstance(value, list) and len(value) > 1:
            out.append(((*path, 0), DROP))  # the list without its first element
    return out


def mutate(data: dict[str, Any], path: Path_, new: Any) -> Any:
    """A copy of the data with one field changed; only the path to it is copied."""
    if not path:
        return copy.deepcopy(new)
    root = copy.copy(data)
    node = root
    for key in path[:-1]:
        child = copy.copy(node[key])
        node[key] = child
        node = child
    if new is DROP:
        del node[path[-1]]
    else:
        node[path[-1]] = new
    return root


def raw_data(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    assert isinstance(data, dict)
    return data


def use(cassette: Cassette, *, serve: bool) -> None:
    """What `show`, `check --list`, `lint --secrets` and (with ``serve``) `serve` do with a loaded cassette.

    Printing the timelines is most of the time, so only the served sample is printed; the others build
    every row that would be printed.
    """
    from replay.authoring import render
    from replay.authoring.lint import lint_cassette
    from replay.cassettes.scrub import find_secrets
    from replay.conformance.cuts import build_cases

    if serve:
        render.show(cassette, Console(file=io.StringIO(), width=120, emoji=False, highlight=False))
    else:
        for index in range(len(cassette.sessions)):
            script_of(cassette, index)
            render.timeline(cassette, index)
        render.header(cassette)
        render.http_lines(cassette)
    assert cassette.path is not None
    for case in build_cases([(cassette.path, cassette)]):
        f"{case.id:<12} {case.cassette_name:<30} {case.cut:<40} {case.title}".encode()
    for finding in lint_cassette(cassette):
        str(finding).encode()
    for hit in find_secrets(cassette):
        hit.encode()
    if serve:
        asyncio.run(_serve(cassette))


async def _serve(cassette: Cassette) -> None:
    """Each session served at speed 0 to a raw client that sends the recorded client frames, for a moment."""
    from websockets.asyncio.client import connect

    from replay.net.server import ReplayServer, ServerOptions

    failures: list[BaseException] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: failures.append(context.get("exception") or
                                                                  RuntimeError(context["message"])))
    async with ReplayServer(cassette, ServerOptions(speed=0, play_user=True)) as server:
        for session in cassette.sessions:
            headers = {"Authorization": "Bearer sk-test"}
            if session.dialect == "beta":
                headers["OpenAI-Beta"] = "realtime=v1"
            async with connect(server.ws_url(), additional_headers=headers, max_size=None,
                               open_timeout=5) as ws:
                for frame in session.frames:
                    if frame.source == "client" and frame.event is not None:
                        with contextlib.suppress(TypeError, ValueError):  # a frame json cannot say
                            await ws.send(json.dumps(frame.event))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.3):
                        async for _ in ws:
                            pass
    loop.set_exception_handler(None)
    if failures:
        raise failures[0]


def run_one(path: Path, data: dict[str, Any], mutation: tuple[Path_, Any], *, serve: bool) -> str | None:
    """None when the mutated cassette is used or refused cleanly; else the traceback's last line."""
    where, new = mutation
    mutated = marshal.loads(marshal.dumps(mutate(data, where, new)))
    try:
        cassette = from_data(mutated, path)
        use(cassette, serve=serve)
    except CassetteError as exc:
        message = str(exc)
        if not message.startswith(str(path)) or "\n" in message:
            return f"unclear CassetteError: {message!r}"
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return f"{type(exc).__name__}: {exc} ({Path(frame.filename).name}:{frame.lineno})"
    return None


def all_mutations() -> list[tuple[Path, dict[str, Any], tuple[Path_, Any]]]:
    out = []
    for path in BUNDLED:
        data = raw_data(path)
        out += [(path, data, m) for m in mutations(data)]
    return out


STRIDE = 20  # every 20th mutation in the suite: some 2,200, every cassette, every kind of change
SERVE_EVERY = 40  # of those, every 40th is also printed in full and served


def test_single_field_mutations_of_every_bundled_cassette_fail_cleanly() -> None:
    chosen = all_mutations()[::STRIDE]
    started = time.perf_counter()
    escaped = [f"{p.name} {'.'.join(map(str, m[0]))} -> {m[1]!r}: {problem}"
               for n, (p, data, m) in enumerate(chosen)
               if (problem := run_one(p, data, m, serve=n % SERVE_EVERY == 0)) is not None]
    assert {p.name for p, _, _ in chosen} == {p.name for p in BUNDLED}
    assert escaped == [], f"{len(escaped)} of {len(chosen)} mutations escaped:\n" + "\n".join(escaped[:40])
    assert time.perf_counter() - started < 600  # bounded: no mutation makes a load or a session hang


def _sweep(serve_every: int, report: Callable[[str], None]) -> int:
    everything = all_mutations()
    started = time.perf_counter()
    escaped = 0
    kinds: dict[str, int] = {}
    for n, (path, data, mutation) in enumerate(everything):
        problem = run_one(path, data, mutation, serve=serve_every > 0 and n % serve_every == 0)
        if problem is not None:
            escaped += 1
            kind = problem.split(":")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
            report(f"{path.name} {'.'.join(map(str, mutation[0]))} -> {mutation[1]!r}: {problem}")
    report(f"{len(everything)} mutations, {escaped} escaped {kinds}, {time.perf_counter() - started:.1f} s")
    return escaped


if __name__ == "__main__":
    sys.exit(1 if _sweep(int(sys.argv[1]) if len(sys.argv) > 1 else 0, print) else 0)


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
