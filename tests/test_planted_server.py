"""Planted-bug guards through the server: a raw `websockets` client against `ReplayServer`.

The same behaviours as tests/test_planted_rules.py, as a client of the real API would notice them
on the wire (issue 20; docs/mutation.md numbers the planted bugs).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import pytest
from websockets.asyncio.client import connect

from replay.cassettes.cassette import Cassette, load
from replay.conformance.harness import Cut, CutHarness
from replay.engine.script import script_of
from replay.net.server import ReplayServer, ServerOptions
from replay.wire import protocol as p
from replay.wire.protocol import Dialect

from .conftest import CASSETTES
from .test_live_server import Wire

Event = dict[str, Any]
AUTH = {"Authorization": "Bearer sk-test"}
HEADERS: dict[Dialect, dict[str, str]] = {"ga": AUTH, "beta": {**AUTH, "OpenAI-Beta": "realtime=v1"}}
RECORDING: dict[Dialect, str] = {"ga": "ga_text_turn_audio_response", "beta": "beta_audio_response"}
DIALECTS = pytest.mark.parametrize("dialect", ["ga", "beta"])


@cache
def cassette(name: str) -> Cassette:
    return load(CASSETTES / f"{name}.yaml")




@asynccontextmanager
async def client(server: ReplayServer, dialect: Dialect) -> AsyncIterator[Wire]:
    async with connect(server.ws_url(), additional_headers=HEADERS[dialect], max_size=None, max_queue=None) as ws:
        wire = Wire(ws)
        await wire.until("session.created")
        yield wire


def answer_to(event_id: str) -> Callable[[Event], bool]:
    """The error echoing ``event_id``, or the success event a session.update or commit gets."""
    return lambda e: (e.get("type") == "error" and e["error"].get("event_id") == event_id) or \
        e.get("type") in ("session.updated", "input_audio_buffer.committed")


async def played_reply(wire: Wire, name: str) -> None:
    """The recording's first typed turn, answered with its recorded audio, to response.done."""
    turn = next(t for t in script_of(cassette(name), 0).turns if t.kind == "typed")
    for item in turn.items:
        await wire.send({"type": "conversation.item.create", "item": item})
    await wire.send({"type": "response.create"})
    await wire.until("response.done")


@DIALECTS
async def test_a_second_commit_with_nothing_new_is_t8_on_the_wire(dialect: Dialect) -> None:
    """Planted #1 (`input_buffer_bytes` not reset after a commit)."""
    options = ServerOptions(speed=0)
    async with ReplayServer(cassette(RECORDING[dialect]), options) as server, client(server, dialect) as wire:
        await wire.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": None}}}} if dialect == "ga" else {"type": "session.update",
                                                                 "session": {"turn_detection": None}})
        await wire.until("session.updated")
        await wire.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(4800)).decode()})
        await wire.send({"type": "input_audio_buffer.commit", "event_id": "c1"})
        first = await wire.until(answer_to("c1"))
        await wire.send({"type": "input_audio_buffer.commit", "event_id": "c2"})
        second = await wire.until(answer_to("c2"))
    assert first["type"] == "input_audio_buffer.committed"  # exactly 100.00 ms: accepted (planted #2)
    assert second["type"] == "error"
    assert second["error"]["code"] == "input_audio_buffer_commit_empty"
    assert second["error"]["message"].endswith("but buffer only has 0.00ms of audio.")


@DIALECTS
async def test_the_voice_is_locked_once_the_reply_played(dialect: Dialect) -> None:
    """Planted #6 (T11 removed from session.update): a new voice after the recorded audio reply is refused."""
    name = RECORDING[dialect]
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server, client(server, dialect) as wire:
        await played_reply(wire, name)
        voice = {"type": "realtime", "audio": {"output": {"voice": "marin"}}} if dialect == "ga" \
            else {"voice": "marin"}
        await wire.send({"type": "session.update", "event_id": "v1", "session": voice})
        answer = await wire.until(answer_to("v1"))
    assert answer["type"] == "error", answer
    assert (answer["error"]["code"], answer["error"]["message"]) == (
        "cannot_update_voice", "Cannot update a conversation's voice if assistant audio is present.")


async def test_a_beta_session_update_with_an_unknown_parameter_is_refused() -> None:
    """Planted #9 (the beta session's unknown-parameter check removed)."""
    async with ReplayServer(cassette(RECORDING["beta"]), ServerOptions(speed=0)) as server, \
            client(server, "beta") as wire:
        await wire.send({"type": "session.update", "event_id": "u1", "session": {"bogus_field": 1}})
        answer = await wire.until(answer_to("u1"))
    assert answer["type"] == "error", answer
    assert answer["error"] == {"type": "invalid_request_error", "code": "unknown_parameter",
                               "message": "Unknown parameter: 'session.bogus_field'.", "param": "session.bogus_field",
                               "event_id": "u1"}


@DIALECTS
async def test_a_barge_in_cancels_when_interrupt_response_is_omitted(dialect: Dialect) -> None:
    """Planted #8 (`interrupt_response` defaulting to false when omitted): turn detection set again as
    `{"type": "server_vad"}` only keeps the API's default (true), so the barge-in cancels the response."""
    name = RECORDING[dialect]
    cut = Cut("after:response.output_audio.delta#3")
    async with ReplayServer(cassette(name), ServerOptions(speed=0.5, play_user=True),
                            harness=lambda session: CutHarness(cut)) as server, \
            client(server, dialect) as wire:
        for detection in (None, {"type": "server_vad"}):
            await wire.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
                "turn_detection": detection}}}} if dialect == "ga" else
                {"type": "session.update", "session": {"turn_detection": detection}})
            updated = await wire.until("session.updated")
        turn = (updated["session"]["audio"]["input"] if dialect == "ga" else updated["session"])["turn_detection"]
        assert "interrupt_response" not in turn
        await played_reply(wire, name)
    done = next(f for f in wire.frames if f["type"] == "response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    assert p.AUDIO_DONE[dialect] in [f["type"] for f in wire.frames]
