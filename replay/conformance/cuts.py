"""Cuts and cases: where in a recorded response the user barges in, and the stable case ids.

A cut is "after the Nth server frame of a type" (``after:response.output_audio.delta#3``) or a
time offset (``at:1.25``). The sweep puts a cut after every server frame of every response, runs
the engine over the recording to see what the server holds at each, and collapses runs of cuts
whose state is equivalent (first / middle / last audio delta, ...). Pure: nothing here does I/O
beyond reading the cassette it is handed.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from replay.cassettes.cassette import Cassette, WebSocketSession
from replay.engine.conversation import Conversation, Snapshot
from replay.engine.script import script_of
from replay.wire.dialect import neutral_name
from replay.wire.protocol import AUDIO_DELTA_TYPES

CUT_AFTER = re.compile(r"^after:(?P<type>[a-z_.]+)#(?P<n>\d+)$")
CUT_AT = re.compile(r"^at:(?P<s>\d+(\.\d+)?)s?$")


class CutError(ValueError):
    """A cut that does not name a point in the session."""


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    area: str
    scenario: str
    cassette: Path
    cassette_name: str
    session_index: int
    cut: str  # canonical label, after:TYPE#N
    dialect: str
    snapshot: Snapshot  # what the recording says the server holds at the cut
    position: tuple[int, int] | None = None  # (response, step) of the cut in the model's output


def cut_label(session: WebSocketSession, index: int) -> str:
    """The canonical ``after:TYPE#N`` name of the cut after frame ``index``, in GA names for both dialects.

    The live server counts the events it sends under the same names, so the label means the same point
    for a client of either dialect.
    """
    etype = neutral_name(session.frames[index].type or "frame")
    n = sum(1 for f in session.frames[: index + 1]
            if f.source == "server" and neutral_name(f.type or "frame") == etype)
    return f"after:{etype}#{n}"


def parse_cut(spec: str, session: WebSocketSession) -> int:
    """The frame index a cut names; the barge-in happens right after that frame."""
    if match := CUT_AFTER.match(spec.strip()):
        wanted, n = neutral_name(match["type"]), int(match["n"])
        seen = 0
        for index, frame in enumerate(session.frames):
            if frame.source == "server" and neutral_name(frame.type or "frame") == wanted:
                seen += 1
                if seen == n:
                    return index
        raise CutError(f"{spec}: the session has {seen} server frame(s) of type {wanted}")
    if match := CUT_AT.match(spec.strip()):
        offset = float(match["s"])
        last = None
        for index, frame in enumerate(session.frames):
            if frame.t > offset:
                break
            if frame.source == "server":
                last = index
        if last is None:
            raise CutError(f"{spec}: no server frame at or before {offset} s")
        return last
    raise CutError(f"{spec}: a cut is 'after:TYPE#N' (e.g. after:response.output_audio.delta#3) or 'at:SECONDS'")


@dataclass(frozen=True)
class _Point:
    index: int
    snapshot: Snapshot
    scenario: str
    area: str
    signature: tuple[object, ...]
    title: str


def _deltas_per_item(session: WebSocketSession) -> Counter[str]:
    counts: Counter[str] = Counter()
    for frame in session.frames:
        if frame.source == "server" and frame.type in AUDIO_DELTA_TYPES and frame.event is not None:
            counts[str(frame.event.get("item_id"))] += 1
    return counts


def _classify(snap: Snapshot, total_deltas: int, response_n: int) -> tuple[str, str, tuple[object, ...], str]:
    """(area, scenario, collapse signature, title) for the state at one cut."""
    active = snap.response_active
    if snap.item_type == "function_call":
        phase = "done" if not active else "streaming" if snap.item_held else "unheld"
        titles = {
            "unheld": "interrupt after a function call is announced, before the conversation holds it",
            "streaming": "interrupt while the function call's arguments stream",
            "done": "interrupt after a function-call response is done",
        }
        return "FN", f"function-call-{phase}", (response_n, "fn", phase), titles[phase]
    if not snap.audio:
        phase = "before-item" if snap.item_id is None else "unheld" if not snap.item_held else \
            "done" if not active else "streaming" if snap.part_types else "no-part"
        titles = {
            "before-item": "interrupt a text-only response before any output item",
            "unheld": "interrupt a text-only response before the conversation holds its item",
            "no-part": "interrupt a text-only response before its content part",
            "streaming": "interrupt a text-only response while its text streams",
            "done": "interrupt after a text-only response is done",
        }
        return "TXT", f"text-{phase}", (response_n, "text", phase), titles[phase]
    if not active:
        return "DONE", "after-done", (response_n, "done"), \
            "interrupt after response.done while audio may still be playing"
    if snap.item_id is None:
        return "INT", "before-item", (response_n, "before-item"), \
            "interrupt after response.created, before any output item"
    if not snap.item_held:
        return "INT", "unheld", (response_n, "unheld"), \
            "interrupt after the output item is announced, before the conversation holds it"
    if snap.audio_deltas == 0:
        if not snap.part_types:
            return "INT", "no-audio", (response_n, "no-audio", "no-part"), \
                "interrupt after the item is added, before its content part (audio_end_ms == 0)"
        return "INT", "no-audio", (response_n, "no-audio", "part"), \
            "interrupt before the first audio delta (audio_end_ms == 0)"
    if snap.audio_deltas >= total_deltas:
        return "INT", "audio-complete", (response_n, "complete"), \
            "interrupt after the last audio delta, response still active"
    if snap.audio_deltas == 1:
        return "INT", "mid-audio", (response_n, "first"), "interrupt after the first audio delta"
    return "INT", "mid-audio", (response_n, "middle"), \
        f"interrupt mid-audio (delta {snap.audio_deltas} of {total_deltas})"


def sweep(session: WebSocketSession, *, all_cuts: bool = False) -> list[tuple[int, str, str, str, Snapshot]]:
    """Cuts of one session: (frame index, area, scenario, title, snapshot), in recording order."""
    engine = Conversation(session.dialect, model=session.model)
    deltas = _deltas_per_item(session)
    points: list[_Point] = []
    responses = 0
    for index, frame in enumerate(session.frames):
        if frame.event is None:
            continue
        if frame.source == "client":
            engine.receive_event(frame.event)
            continue
        engine.send_server(frame.event)
        if frame.type == "response.created":
            responses += 1
        if engine.response is None and frame.type != "response.done":
            continue
        snap = engine.snapshot()
        area, scenario, signature, title = _classify(snap, deltas[snap.item_id or ""], responses)
        points.append(_Point(index, snap, scenario, area, signature, title))
    chosen = points if all_cuts else _collapse(points)
    return [(p.index, p.area, p.scenario, p.title, p.snapshot) for p in chosen]


def _collapse(points: Sequence[_Point]) -> list[_Point]:
    """One cut per run of equivalent states: the first, or the middle one for mid-audio runs."""
    runs: list[list[_Point]] = []
    for point in points:
        if runs and runs[-1][-1].signature == point.signature:
            runs[-1].append(point)
        else:
            runs.append([point])
    chosen = []
    for run in runs:
        if run[0].signature[1:] == ("middle",):
            deltas = sorted({p.snapshot.audio_deltas for p in run})
            wanted = deltas[len(deltas) // 2]
            chosen.append(next(p for p in run if p.snapshot.audio_deltas == wanted))
        else:
            chosen.append(run[0])
    return chosen


def build_cases(cassettes: Iterable[tuple[Path, Cassette]], *, all_cuts: bool = False,
                cuts: Sequence[str] = ()) -> list[Case]:
    """Cases for a corpus, numbered per area in corpus order, so ids are stable for a corpus."""
    counters: Counter[str] = Counter()
    cases: list[Case] = []
    for path, cassette in cassettes:
        for session_index, session in enumerate(cassette.sessions):
            script = script_of(cassette, session_index)
            points = _explicit(session, cuts) if cuts else sweep(session, all_cuts=all_cuts)
            for index, area, scenario, title, snap in points:
                counters[area] += 1
                cases.append(Case(f"RT-{area}-{counters[area]}", title, area, scenario, path, cassette.name,
                                  session_index, cut_label(session, index), session.dialect, snap,
                                  script.position(index)))
    return cases


def _explicit(session: WebSocketSession, specs: Sequence[str]) -> list[tuple[int, str, str, str, Snapshot]]:
    wanted = sorted({parse_cut(spec, session) for spec in specs})
    swept = {point[0]: point for point in sweep(session, all_cuts=True)}
    return [swept.get(index) or _outside(session, index) for index in wanted]


def _outside(session: WebSocketSession, index: int) -> tuple[int, str, str, str, Snapshot]:
    """A cut outside any response: the user speaks while nothing is generated."""
    engine = Conversation(session.dialect, model=session.model)
    for frame in session.frames[: index + 1]:
        if frame.event is not None:
            if frame.source == "client":
                engine.receive_event(frame.event)
            else:
                engine.send_server(frame.event)
    snap = engine.snapshot()
    area = "DONE" if snap.audio else "TXT"
    return index, area, "after-done" if snap.audio else "text-done", "interrupt outside a response", snap


def select(cases: Sequence[Case], patterns: Sequence[str]) -> list[Case]:
    """Cases whose id matches any glob (``RT-INT-*``); all cases when no pattern is given."""
    if not patterns:
        return list(cases)
    return [c for c in cases if any(fnmatch.fnmatchcase(c.id, pattern) for pattern in patterns)]


def shard(cases: Sequence[Case], index: int, count: int) -> list[Case]:
    """Shard ``index`` of ``count`` (1-based), for a CI matrix: every case lands in exactly one shard.

    Round-robin over the corpus order, so each shard gets a like share of every cassette and area.
    """
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: K/N needs 1 <= K <= N")
    return [case for position, case in enumerate(cases) if position % count == index - 1]
