"""The harness, out of the server: a plain object fed what the server observed, acting only through its floor.

The first tests drive `CutHarness` with a fake floor and a clock passed in; the last drives the real
server from a raw `websockets` client with a harness of its own, written against net's protocols only.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import connect

from replay.cassettes.cassette import load
from replay.conformance.harness import Cut, CutHarness
from replay.engine.conversation import Conversation
from replay.engine.player import User
from replay.engine.script import Script
from replay.net.server import Floor, LiveSession, ReplayServer, ServerOptions

from .conftest import CASSETTES


@dataclass
class FakeFloor:
    """The server as the harness sees it; ``calls`` records what the harness did, in order."""

    clock: float = 0.0
    heard: float = 0.0
    is_busy: bool = False
    engine: Conversation = field(default_factory=lambda: Conversation("ga"))
    script: Script | None = None
    user: User | None = None
    responses_started: int = 0
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def now(self) -> float:
        return self.clock

    def busy(self) -> bool:
        return self.is_busy

    def heard_at(self) -> float:
        return self.heard

    def barge_in(self, now: float, note: str) -> None:
        self.calls.append(("barge_in", now, note))

    def mark(self, now: float, note: str) -> None:
        self.calls.append(("mark", now, note))


def opened(cut: Cut) -> tuple[CutHarness, FakeFloor, list[str]]:
    closed: list[str] = []
    harness = CutHarness(cut, on_close=lambda: closed.append("closed"))
    floor = FakeFloor()
    harness.opened(floor)
    return harness, floor, closed


def test_it_barges_in_right_after_the_nth_event_of_the_type_with_the_snapshot_taken_first() -> None:
    harness, floor, _ = opened(Cut("after:response.audio.delta#2"))  # a beta name means the GA event
    floor.clock = 0.5
    harness.sent("response.output_audio.delta", 1)
    assert floor.calls == []
    harness.sent("response.output_audio.delta", 2)
    assert floor.calls == [("barge_in", 0.5, "cut after:response.audio.delta#2: the user starts speaking")]
    assert harness.result.cut_at == 0.5 and harness.result.snapshot is not None
    harness.sent("response.output_audio.delta", 2)  # once only
    assert len(floor.calls) == 1


def test_a_cut_placed_in_the_models_output_waits_for_that_step_not_the_label() -> None:
    harness, floor, _ = opened(Cut("after:response.output_audio.delta#1", response=1, step=-1))
    harness.sent("response.output_audio.delta", 1)
    harness.played(0, -1)
    assert floor.calls == []
    harness.played(1, -1)
    assert [c[0] for c in floor.calls] == ["barge_in"]


def test_the_window_closes_after_the_quiet_but_never_before_the_minimum() -> None:
    harness, floor, closed = opened(Cut("at:1", quiet=0.3, min_window=1.0, max_window=5.0))
    assert harness.deadline() == 1.0  # the time cut comes before the stall (3 s of silence)
    floor.clock = 1.0
    harness.tick(1.0)
    assert harness.result.cut_at == 1.0
    assert harness.deadline() == 2.0  # quiet since the cut, but the window stays open a whole second
    harness.tick(1.5)
    assert not harness.result.window_closed
    floor.heard = 1.9  # the client spoke
    assert harness.deadline() == pytest.approx(2.2)
    harness.tick(2.1)
    assert not harness.result.window_closed
    harness.tick(2.2)
    assert harness.result.window_closed and closed == ["closed"]
    assert floor.calls[-1] == ("mark", 2.2, "window closed")
    assert harness.deadline() is None


def test_a_busy_server_holds_the_window_open_until_its_maximum() -> None:
    harness, floor, _ = opened(Cut("at:0", max_window=5.0))
    harness.tick(0.0)
    floor.is_busy = True
    harness.tick(4.9)
    assert not harness.result.window_closed
    harness.tick(5.0)
    assert harness.result.window_closed


def test_a_silent_idle_session_before_the_cut_is_not_reached_with_the_step_the_client_did_not_take() -> None:
    harness, floor, closed = opened(Cut("after:response.created#1", stall=3.0))
    harness.tick(2.9)
    assert harness.result.stalled is None
    floor.is_busy = True
    harness.tick(3.5)
    assert harness.result.stalled is None
    floor.is_busy = False
    harness.tick(3.5)
    assert harness.result.stalled is not None and "no further user turn" in harness.result.stalled
    assert floor.calls == [("mark", 3.5, f"not reached: {harness.result.stalled}")]
    assert harness.result.cut_at is None and closed == ["closed"]
    harness.ended()
    assert closed == ["closed"]  # told once


def test_the_connections_end_closes_the_window() -> None:
    harness, _, closed = opened(Cut("after:response.created#1"))
    harness.ended()
    assert harness.result.window_closed and closed == ["closed"]
    assert harness.deadline() is None


@dataclass
class BargeInOnce:
    """A harness of its own, against net's protocols only: speak right after the first audio delta."""

    floor: Floor | None = None
    seen: list[str] = field(default_factory=list)
    ended_count: int = 0

    def opened(self, floor: Floor) -> None:
        self.floor = floor

    def sent(self, etype: str, count: int) -> None:
        self.seen.append(etype)
        if etype == "response.output_audio.delta" and count == 1:
            assert self.floor is not None
            self.floor.barge_in(self.floor.now(), "mine: the user speaks")

    def played(self, response: int, step: int) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def deadline(self) -> float | None:
        return None

    def ended(self) -> None:
        self.ended_count += 1


async def test_the_server_drives_any_harness_through_the_floor_and_the_barge_in_follows_the_event_at_once() -> None:
    made: list[BargeInOnce] = []

    def harness(session: LiveSession) -> BargeInOnce:
        made.append(BargeInOnce())
        return made[-1]

    cassette = load(CASSETTES / "ga_text_turn_audio_response.yaml")
    async with ReplayServer(cassette, ServerOptions(speed=0.2), harness=harness) as server:
        async with connect(server.ws_url(), additional_headers={"Authorization": "Bearer k"}) as ws:
            await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}))
            await ws.send(json.dumps({"type": "response.create"}))
            types: list[str] = []
            async with asyncio.timeout(20):
                while "input_audio_buffer.speech_started" not in types:
                    types.append(json.loads(await ws.recv())["type"])
        await asyncio.wait_for(server.sessions[0].closed.wait(), 10)
    first_delta = types.index("response.output_audio.delta")
    assert types[first_delta + 1] == "input_audio_buffer.speech_started"  # nothing between: the same instant
    log = server.sessions[0].log.entries
    cut = next(e for e in log if e.get("cut"))
    assert cut["mark"] == "mine: the user speaks"
    assert len(made) == 1 and made[0].ended_count >= 1 and made[0].seen[0] == "session.created"
