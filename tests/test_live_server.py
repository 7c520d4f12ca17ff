"""The replay server owns the conversation: a raw client, frame by frame, against the live engine.

Each test drives `ReplayServer` over a real socket and asserts what a client of the real API would
notice: the frames it gets, their order, their ids and the exact error strings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from replay.cassettes.cassette import Cassette, load
from replay.conformance.harness import Cut, CutHarness
from replay.engine.conversation import Conversation
from replay.engine.script import Script as RecordedScript
from replay.engine.script import script_of
from replay.net.server import HarnessFactory, ReplayServer, ServerOptions
from replay.wire import protocol as p
from replay.wire.dialect import BETA_NAMES, GA_NAMES
from replay.wire.protocol import Dialect, IdFactory

from .conftest import CASSETTES, b64, only_error, send
from .conftest import Script as Feed

Event = dict[str, Any]


def cut_at(label: str) -> HarnessFactory:
    """The conformance harness of every connection, barging in at ``label``."""
    return lambda _: CutHarness(Cut(label))

AUTH = {"Authorization": "Bearer sk-test"}
BETA = {**AUTH, "OpenAI-Beta": "realtime=v1"}
HEADERS: dict[Dialect, dict[str, str]] = {"ga": AUTH, "beta": BETA}
PCM_100MS = base64.b64encode(bytes(100 * 48)).decode()  # 100 ms of pcm16 silence
ALL_CASSETTES = sorted(path.stem for path in CASSETTES.glob("*.yaml"))
GA_ONLY_NAMES = GA_NAMES - BETA_NAMES


@cache
def cassette(name: str) -> Cassette:
    return load(CASSETTES / f"{name}.yaml")


def recorded(name: str) -> RecordedScript:
    return script_of(cassette(name), 0)


class Wire:
    """A raw client: sends events, and keeps every frame it received, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[Event] = []

    async def send(self, event: Event) -> None:
        await self.ws.send(json.dumps(event))

    async def next(self, timeout: float = 5.0) -> Event:
        frame: Event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def until(self, match: str | Callable[[Event], bool], timeout: float = 10.0) -> Event:
        """Receive until a frame matches (a type name, or a predicate); fail after ``timeout`` in all."""
        test = (lambda e: e.get("type") == match) if isinstance(match, str) else match
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no frame matching {match!r} within {timeout}s; got {self.types()}")
            try:
                frame = await self.next(left)
            except TimeoutError:
                continue
            if test(frame):
                return frame

    async def window(self, seconds: float) -> list[Event]:
        """Every frame that arrives in the next ``seconds``."""
        got: list[Event] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(await self.next(left))
            except TimeoutError:
                break
            except ConnectionClosed:
                break
        return got

    def types(self) -> list[str]:
        return [str(f.get("type")) for f in self.frames]

    def errors(self) -> list[Event]:
        return [f["error"] for f in self.frames if f.get("type") == "error"]


@asynccontextmanager
async def client(server: ReplayServer, dialect: Dialect = "ga", model: str | None = None) -> AsyncIterator[Wire]:
    # max_queue=None: frames a test leaves unread never pause reading, so the closing handshake is prompt
    async with connect(server.ws_url(model), additional_headers=HEADERS[dialect], max_size=None,
                       max_queue=None) as ws:
        yield Wire(ws)


def user_text(text: str) -> Event:
    return {"type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}


async def typed_turn(wire: Wire, name: str, **response: Any) -> Event:
    """The recording's first typed turn and a response.create; returns response.created."""
    turn = next(t for t in recorded(name).turns if t.kind == "typed")
    for item in turn.items:
        await wire.send({"type": "conversation.item.create", "item": item})
    await wire.send({"type": "response.create", **({"response": response} if response else {})})
    return await wire.until("response.created")


def response_done(rid: str) -> Callable[[Event], bool]:
    return lambda e: e.get("type") == "response.done" and e["response"]["id"] == rid


def of_response(frame: Event, rid: str, item_ids: set[str]) -> bool:
    """Whether a frame is about a response: its id, or one of its items."""
    if frame.get("response_id") == rid or (frame.get("response") or {}).get("id") == rid:
        return True
    return frame.get("item_id") in item_ids or (frame.get("item") or {}).get("id") in item_ids


def recorded_transcript(name: str, index: int = 0) -> str:
    steps = recorded(name).responses[index].steps
    return "".join(str(s.data.get("delta") or "") for s in steps if s.kind == "transcript")


# 1 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "dialect", "latency_ms"), [("ga_text_turn_audio_response", "ga", 0),
                                                             ("beta_audio_response", "beta", 0),
                                                             ("ga_text_turn_audio_response", "ga", 50)])
async def test_cancel_after_three_audio_deltas_ends_the_response_once_and_for_good(name: str, dialect: Dialect,
                                                                                   latency_ms: float) -> None:
    options = ServerOptions(speed=1, latency_ms=latency_ms)
    async with ReplayServer(cassette(name), options) as server, client(server, dialect) as wire:
        await wire.until("session.created")
        rid = (await typed_turn(wire, name))["response"]["id"]
        for _ in range(3):
            await wire.until(p.AUDIO_DELTA[dialect])
        await wire.send({"type": "response.cancel"})
        done = await wire.until(response_done(rid))
        after = await wire.window(1.0)  # the recorded response would have run ~0.45 s more
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert sum(1 for f in wire.frames if f["type"] == "response.done") == 1
    items = {f["item"]["id"] for f in wire.frames if f["type"] == "response.output_item.added"
             and f["response_id"] == rid}
    assert items, "the response announced no item"
    assert [f["type"] for f in after if of_response(f, rid, items)] == []
    assert not any(e["code"] == "response_cancel_not_active" for e in wire.errors())


# 2 -------------------------------------------------------------------------------------------


def t2(produced: int, requested: int) -> str:
    return f"Audio content of {produced}ms is already shorter than {requested}ms"


async def truncate(wire: Wire, item_id: str, ms: int) -> Event:
    await wire.send({"type": "conversation.item.truncate", "event_id": f"trunc_{ms}", "item_id": item_id,
                     "content_index": 0, "audio_end_ms": ms})
    return await wire.until(lambda e: e["type"] in ("error", "conversation.item.truncated"))


@pytest.mark.parametrize(("name", "dialect"), [("ga_text_turn_audio_response", "ga"),  # 1200 ms of audio
                                              ("beta_audio_response", "beta")])  # 1000 ms
async def test_truncating_an_item_again_is_held_against_its_truncated_length(name: str, dialect: Dialect) -> None:
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server, client(server, dialect) as wire:
        rid = (await typed_turn(wire, name))["response"]["id"]
        item = (await wire.until("response.output_item.added"))["item"]["id"]
        await wire.until(response_done(rid))
        first = await truncate(wire, item, 250)
        second = await truncate(wire, item, 1100)
    assert first["type"] == "conversation.item.truncated" and first["audio_end_ms"] == 250
    assert second["type"] == "error"
    assert second["error"]["message"] == t2(250, 1100)
    assert second["error"]["code"] == "invalid_value"
    assert second["error"]["event_id"] is None  # the real server echoes no event_id for T2


async def test_two_items_keep_their_own_truncated_lengths() -> None:
    name = "ga_two_responses_audio"  # 800 ms, then 1000 ms
    turns = [t for t in recorded(name).turns if t.kind == "typed"]
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server, client(server) as wire:
        items = []
        for turn in turns:
            for item in turn.items:
                await wire.send({"type": "conversation.item.create", "item": item})
            await wire.send({"type": "response.create"})
            rid = (await wire.until("response.created"))["response"]["id"]
            items.append((await wire.until("response.output_item.added"))["item"]["id"])
            await wire.until(response_done(rid))
        first, second = items
        answers = [await truncate(wire, first, 250), await truncate(wire, second, 700),
                   await truncate(wire, first, 1100), await truncate(wire, second, 900)]
    assert [a["type"] for a in answers] == ["conversation.item.truncated"] * 2 + ["error"] * 2
    assert answers[2]["error"]["message"] == t2(250, 1100)
    assert answers[3]["error"]["message"] == t2(700, 900)


async def test_a_truncate_while_the_reply_streams_leaves_no_unheard_transcript() -> None:
    name = "ga_text_turn_audio_response"
    async with ReplayServer(cassette(name), ServerOptions(speed=1)) as server, client(server) as wire:
        rid = (await typed_turn(wire, name))["response"]["id"]
        item = (await wire.until("response.output_item.added"))["item"]["id"]
        for _ in range(3):
            await wire.until("response.output_audio.delta")
        truncated = await truncate(wire, item, 250)
        await wire.until(response_done(rid))
        await wire.send({"type": "conversation.item.retrieve", "item_id": item})
        held = (await wire.until("conversation.item.retrieved"))["item"]["content"][0]
    assert truncated["type"] == "conversation.item.truncated"
    assert len(base64.b64decode(held["audio"])) == 250 * 48
    # "Truncating audio will delete the server-side text transcript" (reference §6.3)
    assert held["transcript"] == ""


# 3 -------------------------------------------------------------------------------------------


ACKS: dict[Dialect, list[str]] = {"ga": ["conversation.item.added", "conversation.item.done"],
                                  "beta": ["conversation.item.created"]}
OPENING: dict[Dialect, list[str]] = {"ga": ["session.created"], "beta": ["session.created", "conversation.created"]}


# recorded: the item acknowledged ~90 ms after the create
@pytest.mark.parametrize(("name", "dialect"), [("ga_text_turn_audio_response", "ga"), ("beta_audio_response", "beta")])
async def test_an_item_create_as_recorded_is_acknowledged_at_once(name: str, dialect: Dialect) -> None:
    item = recorded(name).turns[0].items[0]
    async with ReplayServer(cassette(name), ServerOptions(speed=1)) as server, client(server, dialect) as wire:
        await wire.until(OPENING[dialect][-1])
        sent = time.monotonic()
        await wire.send({"type": "conversation.item.create", "item": item})
        acks = [await wire.until(ack, timeout=2) for ack in ACKS[dialect]]
        elapsed = time.monotonic() - sent
    assert elapsed < 0.05, f"acknowledged after {elapsed * 1000:.0f} ms"
    assert acks[0]["item"]["content"] == item["content"] and acks[-1]["item"]["id"] == acks[0]["item"]["id"]
    assert wire.types() == OPENING[dialect] + ACKS[dialect]


# 4 -------------------------------------------------------------------------------------------


async def test_session_created_comes_first_even_when_the_client_updates_at_once() -> None:
    name = "ga_text_turn_audio_response"
    update = {"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}

    async def one(server: ReplayServer) -> tuple[str, str, Any]:
        async with client(server) as wire:
            await wire.send(update)
            first = await wire.next()
            second = await wire.next()
            return first["type"], second["type"], second.get("session", {}).get("instructions")

    async with ReplayServer(cassette(name), ServerOptions(speed=1)) as server:
        results = []
        for _ in range(4):
            results += await asyncio.wait_for(asyncio.gather(*(one(server) for _ in range(25))), 30)
    assert len(results) == 100
    assert results.count(("session.created", "session.updated", "Be brief.")) == 100, results


async def test_session_settings_stick_for_later_responses() -> None:
    name = "ga_text_turn_audio_response"
    update = {"type": "realtime", "output_modalities": ["text"], "audio": {"output": {"voice": "marin"}}}
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server, client(server) as wire:
        await wire.send({"type": "session.update", "session": update})
        await wire.until("session.updated")
        created = await typed_turn(wire, name)
        await wire.until(response_done(created["response"]["id"]))
    assert created["response"]["output_modalities"] == ["text"]
    assert created["response"]["audio"]["output"]["voice"] == "marin"
    assert "response.output_text.delta" in wire.types() and "response.output_audio.delta" not in wire.types()


BARGE_IN: dict[Dialect, tuple[str, Callable[[bool], Event]]] = {
    "ga": ("ga_text_turn_audio_response", lambda interrupt: {"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "server_vad", "interrupt_response": interrupt}}}}),
    "beta": ("beta_audio_response", lambda interrupt: {
        "turn_detection": {"type": "server_vad", "interrupt_response": interrupt}}),
}


async def barge_in_outcome(dialect: Dialect, interrupt: bool) -> tuple[Event, Wire]:
    """The first response's response.done when the user barges in after its third audio delta."""
    name, session = BARGE_IN[dialect]
    options = ServerOptions(speed=0.5, play_user=True)
    async with ReplayServer(cassette(name), options, harness=cut_at("after:response.output_audio.delta#3")) as server, \
            client(server, dialect) as wire:
        await wire.send({"type": "session.update", "session": session(interrupt)})
        updated = await wire.until("session.updated")
        assert (updated["session"]["audio"]["input"]["turn_detection"] if dialect == "ga"
                else updated["session"]["turn_detection"])["interrupt_response"] is interrupt
        rid = (await typed_turn(wire, name))["response"]["id"]
        done = await wire.until(response_done(rid))
        await wire.window(0.3)
    return done, wire


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_interrupt_response_false_sticks_and_a_barge_in_does_not_cancel(dialect: Dialect) -> None:
    done, wire = await barge_in_outcome(dialect, interrupt=False)
    assert "input_audio_buffer.speech_started" in wire.types()[: wire.frames.index(done)]
    assert done["response"]["status"] == "completed"
    assert not [f for f in wire.frames if f["type"] == "response.done" and f["response"]["status"] == "cancelled"]


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_with_interrupt_response_on_the_same_barge_in_cancels(dialect: Dialect) -> None:
    done, wire = await barge_in_outcome(dialect, interrupt=True)
    assert "input_audio_buffer.speech_started" in wire.types()[: wire.frames.index(done)]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    assert p.AUDIO_DONE[dialect] in wire.types()[: wire.frames.index(done)]  # the tail closes the audio part
    assert set(wire.types()) & (BETA_NAMES if dialect == "ga" else GA_ONLY_NAMES) == set()


# 5 -------------------------------------------------------------------------------------------


async def append_ms(wire: Wire, ms: int, *, pace: float = 0.0) -> None:
    """``ms`` of silence in 100 ms appends, ``pace`` seconds apart (a microphone, faster than real time)."""
    for _ in range(ms // 100):
        await wire.send({"type": "input_audio_buffer.append", "audio": PCM_100MS})
        if pace:
            await asyncio.sleep(pace)


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_with_create_response_off_a_voice_turn_waits_for_the_clients_response_create(dialect: Dialect) -> None:
    name = "ga_server_vad_turn"
    turn = {"type": "server_vad", "create_response": False}
    update = {"type": "realtime", "audio": {"input": {"turn_detection": turn}}} if dialect == "ga" \
        else {"turn_detection": turn}
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server, client(server, dialect) as wire:
        await wire.send({"type": "session.update", "session": update})
        await wire.until("session.updated")
        await append_ms(wire, 3000, pace=0.01)
        await wire.until("input_audio_buffer.committed")
        heard = await wire.window(0.5)
        await wire.send({"type": "response.create"})
        created = await wire.until("response.created")
        await wire.until(response_done(created["response"]["id"]))
    assert [f["type"] for f in heard] == ACKS[dialect]  # the user's item, and no response
    assert "response.output_audio.delta" in wire.types() or "response.audio.delta" in wire.types()


async def test_no_voice_turn_without_turn_detection_or_without_audio() -> None:
    name = "ga_server_vad_turn"  # speech recorded 1.56 s after the socket opened, at 800-2800 ms of audio
    async with ReplayServer(cassette(name), ServerOptions(speed=0.5)) as server:

        async def silent() -> list[str]:
            async with client(server) as wire:
                await wire.window(1.5)
                return wire.types()

        async def deaf() -> list[str]:
            async with client(server) as wire:
                await wire.send({"type": "session.update", "session": {
                    "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
                await append_ms(wire, 5000)
                await wire.window(1.5)
                return wire.types()

        no_audio, no_detection = await asyncio.gather(silent(), deaf())
    assert no_audio == ["session.created"]
    assert no_detection == ["session.created", "session.updated"]


HEARD = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
         "conversation.item.added", "conversation.item.done", "response.created"]


async def test_audio_up_to_the_recorded_offsets_is_heard_as_the_recorded_turn() -> None:
    name = "ga_server_vad_turn"
    turn = recorded(name).turns[0]
    assert (turn.audio_start_ms, turn.audio_end_ms) == (800, 2800)
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server, client(server) as wire:
        await wire.until("session.created")
        await append_ms(wire, 3000, pace=0.01)
        created = await wire.until("response.created")
        await wire.until(response_done(created["response"]["id"]))
    types = wire.types()
    assert types[1:7] == HEARD
    started, stopped, committed, added = wire.frames[1:5]
    assert (started["audio_start_ms"], stopped["audio_end_ms"]) == (800, 2800)
    assert started["item_id"] == stopped["item_id"] == committed["item_id"] == added["item"]["id"]
    assert added["item"]["role"] == "user"
    assert "response.output_audio.delta" in types


async def test_a_whole_utterance_in_one_append_is_heard_to_its_end() -> None:
    name = "ga_server_vad_turn"
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server, client(server) as wire:
        await wire.until("session.created")
        await wire.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(3000 * 48)).decode()})
        await wire.until("response.created", timeout=2)
    assert wire.types()[1:7] == HEARD


async def heard_turn(name: str, *, recorded_update: bool) -> list[Event]:
    """The wire of a client that streams audio through the recording's first voice turn."""
    update = next(f.event for f in cassette(name).sessions[0].frames if f.source == "client")
    turn = recorded(name).turns[0]
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server, client(server) as wire:
        await wire.until("session.created")
        if recorded_update:
            await wire.send(update)
            await wire.until("session.updated")
        await append_ms(wire, (turn.audio_end_ms or 0) + 300, pace=0.003)
        await wire.until("response.done")
        await wire.window(0.3)
    return wire.frames


def user_items(frames: list[Event]) -> list[Event]:
    return [f for f in frames if f["type"] in ("conversation.item.added", "conversation.item.done")
            and f["item"].get("role") == "user"]


async def test_input_transcription_is_replayed_for_the_live_user_item() -> None:
    name = "real_pydantic_openai_ga_server_vad_audio_turn"  # its session.update enables transcription
    frames = await heard_turn(name, recorded_update=True)
    user = user_items(frames)[0]["item"]["id"]
    completed = [f for f in frames if f["type"] == "conversation.item.input_audio_transcription.completed"]
    assert [(f["item_id"], f["transcript"]) for f in completed] == [(user, recorded(name).turns[0].transcript)]


async def test_a_heard_user_item_is_announced_without_a_transcript() -> None:
    name = "real_pydantic_openai_ga_server_vad_audio_turn"
    frames = await heard_turn(name, recorded_update=False)
    contents = [f["item"]["content"] for f in user_items(frames)]
    assert contents and all(c == [{"type": "input_audio", "transcript": None}] for c in contents)


# 6 -------------------------------------------------------------------------------------------


def t9(rid: str) -> str:
    return (f"Conversation already has an active response in progress: {rid}. "
            "Wait until the response is finished before creating a new one.")


async def test_a_second_response_create_during_a_response_names_the_active_one() -> None:
    name = "ga_text_turn_audio_response"
    async with ReplayServer(cassette(name), ServerOptions(speed=1)) as server, client(server) as wire:
        rid = (await typed_turn(wire, name))["response"]["id"]
        await wire.send({"type": "response.create", "event_id": "again"})
        error = (await wire.until("error"))["error"]
        done = await wire.until(response_done(rid))
    assert error["code"] == "conversation_already_has_active_response"
    assert error["message"] == t9(rid)
    assert error["event_id"] == "again"
    assert done["response"]["status"] == "completed"
    assert wire.types().count("response.created") == 1


async def test_two_response_creates_back_to_back_give_one_response_and_t9() -> None:
    name = "ga_text_turn_audio_response"
    async with ReplayServer(cassette(name), ServerOptions(speed=1)) as server, client(server) as wire:
        await wire.until("session.created")
        await wire.send(user_text("hello"))
        await wire.send({"type": "response.create"})
        await wire.send({"type": "response.create"})
        error = (await wire.until("error"))["error"]
        created = [f for f in wire.frames if f["type"] == "response.created"]
        await wire.window(0.2)
    assert len(created) == 1 and wire.types().count("response.created") == 1
    assert error["message"] == t9(created[0]["response"]["id"])


# 7 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "dialect"), [("ga_text_turn_audio_response", "ga"), ("beta_audio_response", "beta")])
async def test_text_only_response_on_an_audio_recording_streams_the_transcript_as_text(name: str,
                                                                                     dialect: Dialect) -> None:
    modalities = {"ga": {"output_modalities": ["text"]}, "beta": {"modalities": ["text"]}}[dialect]
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server, client(server, dialect) as wire:
        created = await typed_turn(wire, name, **modalities)
        rid = created["response"]["id"]
        done = await wire.until(response_done(rid))
    types = wire.types()
    assert created["response"][next(iter(modalities))] == ["text"]
    text = "".join(f["delta"] for f in wire.frames if f["type"] == p.TEXT_DELTA[dialect])
    assert text == recorded_transcript(name) and text
    assert not [t for t in types if t.startswith(("response.output_audio", "response.audio"))]
    content = done["response"]["output"][0]["content"]
    assert [c["type"] for c in content] == [p.ASSISTANT_TEXT[dialect]] and content[0]["text"] == text


async def test_an_out_of_band_response_leaves_the_conversation_alone_and_echoes_metadata() -> None:
    name = "ga_text_turn_audio_response"
    metadata = {"topic": "classification", "n": "1"}
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server, client(server) as wire:
        await wire.until("session.created")
        await wire.send(user_text("hello"))
        user_item = (await wire.until("conversation.item.added"))["item"]["id"]
        await wire.send({"type": "response.create", "response": {"conversation": "none", "metadata": metadata}})
        created = await wire.until("response.created")
        rid = created["response"]["id"]
        item = (await wire.until("response.output_item.added"))["item"]["id"]
        done = await wire.until(response_done(rid))
        await wire.send({"type": "conversation.item.retrieve", "item_id": item})
        retrieved = await wire.until(lambda e: e["type"] in ("error", "conversation.item.retrieved"))
        await wire.send(user_text("and now?"))
        next_item = await wire.until("conversation.item.added")
    assert created["response"]["conversation_id"] is None and done["response"]["conversation_id"] is None
    assert created["response"]["metadata"] == metadata and done["response"]["metadata"] == metadata
    assert not [f for f in wire.frames if f["type"] in ("conversation.item.added", "conversation.item.done")
                and f["item"]["id"] == item]
    assert retrieved["type"] == "error" and retrieved["error"]["code"] == "item_retrieve_invalid_item_id"
    assert next_item["previous_item_id"] == user_item


@pytest.mark.parametrize("oob_first", [True, False], ids=["out-of-band-first", "default-first"])
async def test_an_out_of_band_response_and_a_default_one_both_finish(oob_first: bool) -> None:
    name = "ga_two_responses_audio"
    oob = {"type": "response.create", "response": {"conversation": "none", "metadata": {"k": "oob"}}}
    default = {"type": "response.create"}
    async with ReplayServer(cassette(name), ServerOptions(speed=1)) as server, client(server) as wire:
        await wire.until("session.created")
        await wire.send(user_text("hello"))
        await wire.send(oob if oob_first else default)
        first = (await wire.until("response.created"))["response"]["id"]
        await wire.until("response.output_audio.delta")
        await wire.send(default if oob_first else oob)  # exempt from T9 (reference §6.2)
        second = (await wire.until("response.created"))["response"]["id"]
        await wire.until(response_done(second))
        await wire.window(1.0)
    assert wire.errors() == []
    done = [f["response"]["id"] for f in wire.frames if f["type"] == "response.done"]
    assert sorted(done) == sorted([first, second])


# 8, 9 ---------------------------------------------------------------------------------------


def in_dialect(item: Event, dialect: Dialect) -> Event:
    """A recorded (neutral) item as a client of that dialect creates it."""
    if dialect == "ga" or item.get("role") != "assistant":
        return item
    content = [{**c, "type": {"output_text": "text", "output_audio": "audio"}.get(c.get("type"), c.get("type"))}
               for c in item.get("content") or []]
    return {**item, "content": content}


async def drive_recording(name: str, dialect: Dialect) -> list[Event]:
    """A client that does what the recorded user did: types the typed turns, speaks the voice turns."""
    script = recorded(name)
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server, client(server, dialect) as wire:
        appended = 0
        responses = 0
        for turn in script.turns:
            if turn.kind == "voice":
                end = (turn.audio_end_ms or 0) + 200
                await append_ms(wire, end - appended + 99, pace=0.005)
                appended += (end - appended + 99) // 100 * 100
            else:
                for item in turn.items:
                    await wire.send({"type": "conversation.item.create", "item": in_dialect(item, dialect)})
                if turn.responds:
                    await wire.send({"type": "response.create"})
            if turn.responds:
                responses += 1
                while wire.types().count("response.done") < responses:
                    await wire.until("response.done")
        await wire.window(0.3)
    return wire.frames


async def let_the_user_play(name: str, dialect: Dialect) -> list[Event]:
    """A client that only listens while the server plays the recorded user (``play_user``)."""
    script = recorded(name)
    first_tool = next((t.index for t in script.turns if t.kind == "tool"), len(script.turns))
    reachable = sum(1 for t in script.turns[:first_tool] if t.responds)  # nobody answers a function call
    async with ReplayServer(cassette(name), ServerOptions(speed=0, play_user=True)) as server, \
            client(server, dialect) as wire:
        while wire.types().count("response.done") < reachable:
            await wire.until("response.done")
        await wire.window(0.3)
    return wire.frames


Drive = tuple[Dialect, str]  # (the client's dialect, "typed" by the client or "played" by the server)
DRIVES: tuple[Drive, ...] = (("ga", "typed"), ("beta", "typed"), ("ga", "played"), ("beta", "played"))
_WIRES: dict[tuple[str, Drive], list[Event]] = {}


async def wires(name: str) -> dict[Drive, list[Event]]:
    """What GA and beta clients receive through the recording, both ways of driving it (cached per process)."""
    missing = [d for d in DRIVES if (name, d) not in _WIRES]
    runs = [drive_recording(name, dialect) if how == "typed" else let_the_user_play(name, dialect)
            for dialect, how in missing]
    for drive, frames in zip(missing, await asyncio.gather(*runs), strict=True):
        _WIRES[(name, drive)] = frames
    return {drive: _WIRES[(name, drive)] for drive in DRIVES}


@pytest.mark.parametrize("name", ALL_CASSETTES)
async def test_each_client_hears_only_its_own_dialect(name: str) -> None:
    for (dialect, how), frames in (await wires(name)).items():
        types = [f["type"] for f in frames]
        assert "response.done" in types, (dialect, how, types)
        assert ACKS[dialect][0] in types, (dialect, how)
        if how == "played":
            assert "input_audio_buffer.speech_started" in types, (dialect, how)
        foreign = BETA_NAMES if dialect == "ga" else GA_ONLY_NAMES
        assert set(types) & foreign == set(), (dialect, how)


def unknown_previous_ids(frames: list[Event]) -> list[tuple[int, str, str]]:
    """(position, type, id) of each previous_item_id the client had not been told about before, or was
    told is deleted."""
    told: set[str] = set()
    bad = []
    for index, frame in enumerate(frames):
        previous = frame.get("previous_item_id")
        if "previous_item_id" in frame and previous is not None and previous not in told:
            bad.append((index, frame["type"], previous))
        if frame["type"] == "conversation.item.deleted":
            told.discard(frame["item_id"])
        item = frame.get("item")
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            told.add(item["id"])
        if frame["type"].startswith("input_audio_buffer.") and isinstance(frame.get("item_id"), str):
            told.add(frame["item_id"])
    return bad


@pytest.mark.parametrize("name", ALL_CASSETTES)
async def test_every_previous_item_id_names_an_item_the_client_was_told_about(name: str) -> None:
    for drive, frames in (await wires(name)).items():
        assert any("previous_item_id" in f for f in frames), drive
        assert unknown_previous_ids(frames) == [], drive


async def test_previous_item_ids_through_a_barge_in_and_a_delete() -> None:
    name = "ga_two_responses_audio"
    options = ServerOptions(speed=0.5, play_user=True)
    async with ReplayServer(cassette(name), options, harness=cut_at("after:response.output_audio.delta#2")) as server, \
            client(server) as wire:
        rid = (await typed_turn(wire, name))["response"]["id"]
        await wire.until(response_done(rid))
        heard = await wire.until("input_audio_buffer.committed")
        await wire.send({"type": "conversation.item.delete", "item_id": heard["item_id"]})
        await wire.until("conversation.item.deleted")
        await wire.send(user_text("one more"))
        await wire.until("conversation.item.added")
        await wire.window(0.5)
    assert "input_audio_buffer.speech_started" in wire.types()
    assert unknown_previous_ids(wire.frames) == []


# 10 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_the_urls_model_is_the_sessions_model(dialect: Dialect) -> None:
    async with ReplayServer(cassette("ga_text_turn_audio_response"), ServerOptions(speed=0)) as server, \
            client(server, dialect, model="gpt-realtime-mini") as wire:
        created = await wire.until("session.created")
    assert created["session"]["model"] == "gpt-realtime-mini"


# 11 ------------------------------------------------------------------------------------------


async def test_no_t2_where_the_recordings_audio_was_cut_at_the_source() -> None:
    name = "real_pydantic_openai_ga_text_in_audio_out"
    assert cassette(name).metadata.get("audio_truncated_at_source") is True
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server, client(server) as wire:
        rid = (await typed_turn(wire, name))["response"]["id"]
        item = (await wire.until("response.output_item.added"))["item"]["id"]
        await wire.until(response_done(rid))
        answer = await truncate(wire, item, 300)
    assert answer["type"] == "conversation.item.truncated", answer
    assert answer["audio_end_ms"] == 300


# 12 ------------------------------------------------------------------------------------------


async def closed_by_server(wire: Wire) -> None:
    with pytest.raises(ConnectionClosed):
        while True:
            await wire.next()


async def test_strict_mode_closes_at_the_first_divergence_with_a_positioned_diff() -> None:
    name = "ga_text_turn_audio_response"
    frames = [f.event for f in cassette(name).sessions[0].frames if f.source == "client"]
    async with ReplayServer(cassette(name), ServerOptions(speed=0, strict=True)) as server, \
            client(server) as wire:
        await wire.until("session.created")
        await wire.send(frames[0])  # as recorded: answered, the session goes on
        await wire.until("session.updated")
        await wire.send(user_text("Something else entirely"))
        await closed_by_server(wire)
        code, reason = wire.ws.close_code, wire.ws.close_reason
    assert code == 1008
    assert reason.startswith("client frame #1 vs recorded frame #1 (conversation.item.create)")
    assert "item.content[0].text" in reason
    assert len(reason.encode()) <= 123
    assert "conversation.item.added" not in wire.types()  # the diverging frame is not answered


async def test_strict_close_reason_is_cut_to_123_bytes_of_valid_utf8() -> None:
    name = "ga_text_turn_audio_response"
    async with ReplayServer(cassette(name), ServerOptions(speed=0, strict=True)) as server:
        reasons = []
        for pad in ("", "x"):  # both parities of where the cut falls in two-byte characters
            async with client(server) as wire:
                await wire.until("session.created")
                await wire.send({"type": "session.update", "session": {
                    "type": "realtime", "instructions": pad + "é" * 100}})
                await closed_by_server(wire)
                reasons.append((wire.ws.close_code, wire.ws.close_reason))
    for code, reason in reasons:
        assert code == 1008
        assert reason.startswith("client frame #0 vs recorded frame #0 (session.update): session.instructions")
        assert len(reason.encode()) <= 123


# 13 ------------------------------------------------------------------------------------------


async def cancel_then_create(latency_ms: float) -> tuple[str, Wire]:
    name = "ga_text_turn_audio_response"
    async with ReplayServer(cassette(name), ServerOptions(speed=1, latency_ms=latency_ms)) as server, \
            client(server) as wire:
        rid = (await typed_turn(wire, name))["response"]["id"]
        await wire.send({"type": "response.cancel"})
        await wire.send({"type": "response.create"})
        await wire.until(response_done(rid))
        await wire.window(0.5)
    return rid, wire


async def test_with_latency_a_create_right_after_a_cancel_meets_the_active_response() -> None:
    rid, wire = await cancel_then_create(50)
    assert [e["message"] for e in wire.errors()] == [t9(rid)]
    done = next(f for f in wire.frames if response_done(rid)(f))
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert wire.types().count("response.created") == 1


async def test_without_latency_a_create_right_after_a_cancel_starts_a_response() -> None:
    rid, wire = await cancel_then_create(0)
    assert wire.errors() == []
    done = next(f for f in wire.frames if response_done(rid)(f))
    assert done["response"]["status"] == "cancelled"
    created = [f["response"]["id"] for f in wire.frames if f["type"] == "response.created"]
    assert len(created) == 2 and created[0] == rid


@pytest.mark.parametrize("latency_ms", [50, 0])
async def test_a_second_delete_of_the_same_item_gets_t4(latency_ms: float) -> None:
    name = "ga_text_turn_audio_response"
    async with ReplayServer(cassette(name), ServerOptions(speed=0, latency_ms=latency_ms)) as server, \
            client(server) as wire:
        await wire.until("session.created")
        await wire.send(user_text("hello"))
        item = (await wire.until("conversation.item.done"))["item"]["id"]
        for _ in range(2):
            await wire.send({"type": "conversation.item.delete", "item_id": item, "event_id": "del"})
        answers = [await wire.next(), await wire.next()]
    assert answers[0] == {**answers[0], "type": "conversation.item.deleted", "item_id": item}
    assert answers[1]["type"] == "error"
    assert answers[1]["error"]["code"] == "item_delete_invalid_item_id"
    assert answers[1]["error"]["message"] == f"Error deleting item: the item with id '{item}' does not exist."
    assert answers[1]["error"]["event_id"] == "del"


# 14 ------------------------------------------------------------------------------------------


def ids_of(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every id-like field of an event, with its path."""
    out: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            where = f"{path}.{key}"
            if key == "id" or key.endswith("_id"):
                out.append((where, inner))
            out += ids_of(inner, where)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += ids_of(inner, f"{path}[{index}]")
    return out


async def scripted_client(server: ReplayServer) -> list[tuple[str, list[tuple[str, Any]]]]:
    name = "ga_text_turn_audio_response"
    async with client(server) as wire:
        await wire.until("session.created")
        await wire.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}})
        await wire.until("session.updated")
        rid = (await typed_turn(wire, name))["response"]["id"]
        await wire.until(response_done(rid))
        await wire.until("rate_limits.updated")
        items = [f["item"]["id"] for f in wire.frames if f["type"] == "conversation.item.added"]
        await truncate(wire, items[-1], 300)
        await wire.send({"type": "conversation.item.delete", "item_id": items[0]})
        await wire.until("conversation.item.deleted")
        await wire.send({"type": "conversation.item.retrieve", "item_id": items[-1]})
        await wire.until("conversation.item.retrieved")
        await wire.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await wire.until("response.done")
    return [(f["type"], ids_of(f)) for f in wire.frames]


async def test_same_seed_same_script_same_wire() -> None:
    name = "ga_text_turn_audio_response"
    runs = []
    for _ in range(2):
        async with ReplayServer(cassette(name), ServerOptions(speed=0, seed=1234)) as server:
            runs.append(await scripted_client(server))
            runs.append(await scripted_client(server))  # a later connection of the same server
    assert len(runs[0]) > 30
    assert all(run == runs[0] for run in runs[1:])
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server:
        unseeded = [await scripted_client(server), await scripted_client(server)]
    assert [t for t, _ in unseeded[0]] == [t for t, _ in runs[0]]
    assert unseeded[0] != unseeded[1]  # the comparison above does compare ids


async def played_with_a_barge_in(server: ReplayServer) -> list[tuple[str, list[tuple[str, Any]]]]:
    async with client(server) as wire:
        while wire.types().count("response.done") < 2:
            await wire.until("response.done")
        await wire.window(0.2)
    return [(f["type"], ids_of(f)) for f in wire.frames]


async def test_same_seed_same_wire_when_the_server_plays_the_user_and_barges_in() -> None:
    name = "ga_two_responses_audio"
    runs = []
    for _ in range(2):
        options = ServerOptions(speed=0, seed=5, play_user=True)
        cut = cut_at("after:response.output_audio.delta#3")
        async with ReplayServer(cassette(name), options, harness=cut) as server:
            runs.append(await played_with_a_barge_in(server))
    assert "input_audio_buffer.speech_started" in [t for t, _ in runs[0]]
    assert runs[0] == runs[1]


# PCMU ----------------------------------------------------------------------------------------

PCMU_UPDATE: dict[Dialect, Event] = {
    "ga": {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}}}},
    "beta": {"output_audio_format": "g711_ulaw"},
}


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_pcmu_output_counts_eight_bytes_per_ms_for_t2(dialect: Dialect) -> None:
    engine = Conversation(dialect, ids=IdFactory(1))
    updated = send(engine, {"type": "session.update", "session": PCMU_UPDATE[dialect]})
    assert updated[0]["type"] == "session.updated"
    feed = Feed(engine)
    feed.user_item()
    feed.response_start()
    for _ in range(3):  # 3 x 800 bytes: 300 ms of G.711 (50 ms had it been pcm16)
        engine.send_server({"type": p.AUDIO_DELTA[dialect], "response_id": "resp_1", "item_id": "item_a",
                            "output_index": 0, "content_index": 0, "delta": b64(800)})
    feed.done()
    error = only_error(send(engine, {"type": "conversation.item.truncate", "item_id": "item_a",
                                     "content_index": 0, "audio_end_ms": 301}))
    assert error["message"] == t2(300, 301)
    accepted = send(engine, {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0,
                             "audio_end_ms": 120})
    assert accepted[0]["type"] == "conversation.item.truncated"
    error = only_error(send(engine, {"type": "conversation.item.truncate", "item_id": "item_a",
                                     "content_index": 0, "audio_end_ms": 200}))
    assert error["message"] == t2(120, 200)


@pytest.mark.parametrize(("name", "dialect", "recorded_ms"), [("ga_text_turn_audio_response", "ga", 1200),
                                                               ("beta_audio_response", "beta", 1000)])
async def test_pcmu_output_lasts_as_long_as_the_recorded_reply(name: str, dialect: Dialect, recorded_ms: int) -> None:
    async with ReplayServer(cassette(name), ServerOptions(speed=0)) as server, client(server, dialect) as wire:
        await wire.send({"type": "session.update", "session": PCMU_UPDATE[dialect]})
        await wire.until("session.updated")
        rid = (await typed_turn(wire, name))["response"]["id"]
        item = (await wire.until("response.output_item.added"))["item"]["id"]
        await wire.until(response_done(rid))
        answer = await truncate(wire, item, recorded_ms + 1)
    audio = sum(len(base64.b64decode(f["delta"])) for f in wire.frames if f["type"] == p.AUDIO_DELTA[dialect])
    assert audio == recorded_ms * 8
    assert answer.get("error", {}).get("message") == t2(recorded_ms, recorded_ms + 1)


async def test_a_format_update_replaces_the_format() -> None:
    async with ReplayServer(cassette("ga_text_turn_audio_response"), ServerOptions(speed=0)) as server, \
            client(server) as wire:
        await wire.send({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcma"}}}}})
        updated = (await wire.until("session.updated"))["session"]["audio"]
    assert updated["input"]["format"] == {"type": "audio/pcmu"}
    assert updated["output"]["format"] == {"type": "audio/pcma"}
