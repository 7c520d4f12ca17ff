"""The pure core's answers to every bundled recording, pinned (a mutation-testing net, docs/mutation.md).

Each bundled cassette is driven through the sans-I/O engine as the server drives it (no sockets, no
clock): the recorded user turns, every recorded model step rendered for a client of each dialect,
with variants that take the other paths (a barge-in mid-response, text-only requests, G.711 output,
truncate/delete/retrieve after the cut). Everything the engine sends, the snapshots a verdict would
be judged on, its notes and its items are digested; the digests are in tests/data/planted_golden.json.

This pins *current* behaviour: it catches a change nobody meant (mutmut's mutants of state.py,
output.py, engine.py, cuts.py that the focused tests miss). When a change is meant, look at what moved
and regenerate: ``RTREPLAY_REGOLD=1 python -m pytest tests/test_planted_golden.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from replay.cassettes.cassette import Cassette, load
from replay.conformance.cuts import build_cases, cut_label
from replay.engine.conversation import Conversation
from replay.engine.script import Script, script_of
from replay.net.wirelog import loggable
from replay.wire.protocol import Dialect, IdFactory

from .conftest import CASSETTES, b64

GOLDEN = Path(__file__).parent / "data" / "planted_golden.json"
NAMES = sorted(path.stem for path in CASSETTES.glob("*.yaml"))
VARIANTS = ("plain", "barge", "text", "pcmu", "after")


@cache
def cassette(name: str) -> Cassette:
    return load(CASSETTES / f"{name}.yaml")


class Drive:
    """One session of a client of ``dialect`` against the engine, every event it sends kept in order."""

    def __init__(self, script: Script, dialect: Dialect) -> None:
        self.engine = Conversation(dialect, ids=IdFactory(11), model=script.model, template=script.session,
                                   enforce_t2=not script.audio_cut_at_source)
        self.sent: list[Any] = []
        self.emit(self.engine.session_created(), "created")

    def emit(self, events: list[dict[str, Any]], why: str) -> None:
        for event in events:
            self.sent.append([why, loggable(self.engine.send_server(event))])

    def client(self, event: dict[str, Any]) -> None:
        received = self.engine.receive_client(json.dumps(event))
        self.sent.append(["rule", received.rule])
        self.emit(received.reactions, str(event.get("type")))

    def snap(self) -> None:
        self.sent.append(["snapshot", dataclasses.asdict(self.engine.snapshot())])


def session_update(dialect: Dialect, variant: str) -> dict[str, Any] | None:
    if variant != "pcmu":
        return None
    if dialect == "ga":
        return {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}},
                                              "input": {"format": {"type": "audio/pcmu"}}}}
    return {"output_audio_format": "g711_ulaw", "input_audio_format": "g711_ulaw"}


def run(name: str, dialect: Dialect, variant: str) -> list[Any]:
    script = script_of(cassette(name), 0)
    drive = Drive(script, dialect)
    engine = drive.engine
    update = session_update(dialect, variant)
    if update is not None:
        drive.client({"type": "session.update", "session": update})
    responses = iter(script.responses)
    for turn in script.turns:
        if turn.kind == "voice":
            drive.client({"type": "input_audio_buffer.append", "audio": b64(int(turn.speech_s * 1000) * 48)})
            drive.emit([engine.speech_started(turn.item_id, turn.audio_start_ms)], "speech")
            drive.emit(engine.speech_stopped(turn.transcript, turn.audio_end_ms), "speech")
            if engine.creates_response():
                drive.emit(engine.auto_response(), "auto")
            else:
                drive.client({"type": "response.create"})
        else:
            for item in turn.items:
                drive.client({"type": "conversation.item.create", "item": item})
            params: dict[str, Any] = {}
            if variant == "text":
                params = {"output_modalities": ["text"]} if dialect == "ga" else {"modalities": ["text"]}
            drive.client({"type": "response.create", **({"response": params} if params else {})})
        if not turn.responds:
            continue
        recorded = next(responses, None)
        response = engine.default_response or engine.response
        if recorded is None or response is None:
            continue
        cut = len(recorded.steps) // 2 if variant in ("barge", "after") else None
        for index, step in enumerate(recorded.steps):
            drive.emit(engine.render_step(step, response.id), "model")
            drive.snap()
            if index == cut and variant == "barge":
                drive.emit(engine.barge_in(), "barge-in")
                drive.snap()
                break
        if variant in ("barge", "after"):
            after_cut(drive)
    drive.snap()
    drive.sent.append(["notes", engine.notes])
    drive.sent.append(["items", [engine.item_object(item) for item in engine.items.values()]])
    drive.sent.append(["state", engine.input_buffer_bytes, round(engine.input_audio_ms, 3), engine.assistant_audio,
                       sorted(engine.active)])
    return drive.sent


def after_cut(drive: Drive) -> None:
    """What clients send after a cut: truncate at half of the audio, retrieve, delete, cancel, an empty commit."""
    engine = drive.engine
    snap = engine.snapshot()
    if snap.item_id is not None:
        drive.client({"type": "conversation.item.truncate", "item_id": snap.item_id, "content_index": 0,
                      "audio_end_ms": snap.produced_ms // 2})
        drive.client({"type": "conversation.item.retrieve", "item_id": snap.item_id})
        drive.client({"type": "conversation.item.delete", "item_id": snap.item_id})
    drive.client({"type": "response.cancel"})
    drive.client({"type": "input_audio_buffer.commit"})


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]


def sweep(name: str) -> list[Any]:
    """The cases the conformance sweep makes of the recording: ids, cuts, titles and snapshots."""
    path = CASSETTES / f"{name}.yaml"
    session = cassette(name).sessions[0]
    every = [cut_label(session, i) for i, frame in enumerate(session.frames) if frame.source == "server"]
    cases = build_cases([(path, cassette(name))], all_cuts=True) + build_cases([(path, cassette(name))]) + \
        build_cases([(path, cassette(name))], cuts=every)  # explicit cuts, outside responses too
    return [[c.id, c.cut, c.title, c.area, c.scenario, c.position, dataclasses.asdict(c.snapshot)] for c in cases]


def actual() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in NAMES:
        for dialect in ("ga", "beta"):
            for variant in VARIANTS:
                out[f"{name}/{dialect}/{variant}"] = digest(run(name, dialect, variant))  # type: ignore[arg-type]
        out[f"{name}/sweep"] = digest(sweep(name))
    return out


@pytest.fixture(scope="module")
def golden() -> dict[str, str]:
    if os.environ.get("RTREPLAY_REGOLD"):
        GOLDEN.write_text(json.dumps(actual(), indent=1, sort_keys=True) + "\n")
    return dict(json.loads(GOLDEN.read_text()))


@pytest.mark.parametrize("name", NAMES)
def test_the_engine_answers_each_recording_as_pinned(golden: dict[str, str], name: str) -> None:
    moved = []
    for dialect in ("ga", "beta"):
        for variant in VARIANTS:
            key = f"{name}/{dialect}/{variant}"
            if digest(run(name, dialect, variant)) != golden[key]:  # type: ignore[arg-type]
                moved.append(key)
    if digest(sweep(name)) != golden[f"{name}/sweep"]:
        moved.append(f"{name}/sweep")
    assert moved == [], "the engine's answers moved (regenerate only if meant, see the module doc)"


def test_no_recording_leaves_the_engine_a_note_in_the_plain_replay() -> None:
    """Notes are the engine's own inconsistencies: the plain replay of a bundled recording has none."""
    for name in NAMES:
        for dialect in ("ga", "beta"):
            notes = next(entry[1] for entry in run(name, dialect, "plain") if entry[0] == "notes")  # type: ignore[arg-type]
            assert notes == [], (name, dialect, notes)
