"""The replay server over real sockets: both dialects, concurrency, bad input, handshake errors."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from replay.cassettes.cassette import Cassette, Frame, WebSocketSession, load
from replay.net.server import ReplayServer, ServerOptions

from .conftest import CASSETTES

AUTH = {"Authorization": "Bearer sk-test"}
BETA = {**AUTH, "OpenAI-Beta": "realtime=v1"}


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def strip(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "event_id"}


async def replay_script(ws: ClientConnection, session: WebSocketSession) -> list[dict[str, Any]]:
    """Send the recorded client frames (each after the server frames before it) and collect the rest."""
    got: list[dict[str, Any]] = []
    expected = sum(1 for f in session.frames if f.source == "server")
    server_seen = 0
    for frame in session.frames:
        if frame.source == "server":
            server_seen += 1
            continue
        while len(got) < server_seen:
            got.append(await recv(ws))
        await ws.send(json.dumps(frame.event))
    while len(got) < expected:
        got.append(await recv(ws))
    return got


@pytest.mark.parametrize(("name", "headers"), [("ga_text_turn_audio_response", AUTH), ("beta_audio_response", BETA)])
async def test_replays_the_recording_to_a_raw_client(name: str, headers: dict[str, str]) -> None:
    """The recorded client's frames get the recorded conversation back: the same events, audio and words."""
    cassette = load(CASSETTES / f"{name}.yaml")
    session = cassette.sessions[0]
    async with ReplayServer(cassette, ServerOptions(speed=0)) as server, \
            connect(server.ws_url(), additional_headers=headers, max_size=None) as ws:
        got = await replay_script(ws, session)
    recorded = [f.event for f in session.frames if f.source == "server"]
    assert [e["type"] for e in got] == [e["type"] for e in recorded]  # type: ignore[index]
    for event, original in zip(got, recorded, strict=True):
        assert original is not None
        if isinstance(original.get("delta"), dict):  # compacted audio comes back as that much silence
            assert base64.b64decode(event["delta"]) == bytes(original["delta"]["$audio"]["bytes"])
        elif "delta" in original or "transcript" in original:
            assert (event.get("delta"), event.get("transcript")) == (original.get("delta"), original.get("transcript"))
    assert server.sessions[0].dialect == ("beta" if "OpenAI-Beta" in headers else "ga")
    assert server.sessions[0].divergences == []


async def test_beta_by_subprotocol_and_realtime_subprotocol_selected() -> None:
    async with ReplayServer(None, ServerOptions(speed=0)) as server, connect(
            server.ws_url(), subprotocols=["realtime", "openai-insecure-api-key.sk-x", "openai-beta.realtime-v1"],  # type: ignore[list-item]
    ) as ws:
        assert ws.subprotocol == "realtime"
        assert (await recv(ws))["type"] == "session.created"
        assert (await recv(ws))["type"] == "conversation.created"  # beta sessions announce the conversation
    assert server.sessions[0].dialect == "beta"


async def test_response_metadata_is_echoed_into_the_recorded_response_created() -> None:
    """livekit matches response.created on metadata.client_event_id; the recording has metadata null."""
    cassette = load(CASSETTES / "ga_text_turn_audio_response.yaml")
    async with ReplayServer(cassette, ServerOptions(speed=0)) as server, \
            connect(server.ws_url(), additional_headers=AUTH, max_size=None) as ws:
        for frame in cassette.sessions[0].frames:
            if frame.source == "client" and frame.type == "response.create":
                break
            if frame.source == "client":
                await ws.send(json.dumps(frame.event))
        await ws.send(json.dumps({"type": "response.create", "response": {"metadata": {"client_event_id": "x1"}}}))
        while (event := await recv(ws))["type"] != "response.created":
            pass
    assert event["response"]["metadata"] == {"client_event_id": "x1"}


async def test_fifty_concurrent_sessions_are_independent() -> None:
    cassette = load(CASSETTES / "ga_text_turn_audio_response.yaml")
    session = cassette.sessions[0]

    async def one(server: ReplayServer, index: int) -> list[str]:
        async with connect(server.ws_url(), additional_headers=AUTH, max_size=None) as ws:
            got = await replay_script(ws, session)
            user_item = next(e["item"]["id"] for e in got if e["type"] == "conversation.item.added")
            if index % 2:  # half of them delete an item; the others must still hold theirs
                await ws.send(json.dumps({"type": "conversation.item.delete", "item_id": user_item}))
                assert (await recv(ws))["type"] == "conversation.item.deleted"
            await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": user_item}))
            answer = await recv(ws)
            return [e["type"] for e in got] + [answer["type"]]

    async with ReplayServer(cassette, ServerOptions(speed=0)) as server:
        started = time.perf_counter()
        results = await asyncio.wait_for(asyncio.gather(*(one(server, i) for i in range(50))), 60)
        elapsed = time.perf_counter() - started
    assert len(server.sessions) == 50
    for index, types in enumerate(results):
        assert types[-1] == ("error" if index % 2 else "conversation.item.retrieved")
        assert types[:-1] == results[0][:-1]
    assert elapsed < 60


async def test_bad_input_corpus_is_answered_and_the_session_stays_usable() -> None:
    async with ReplayServer(None, ServerOptions(speed=0)) as server, \
            connect(server.ws_url(), additional_headers=AUTH, max_size=None, write_limit=2**24) as ws:
        assert (await recv(ws))["type"] == "session.created"
        corpus: list[str | bytes] = [
            "{not json", b"\x00\xff binary", json.dumps({"type": "nope"}), json.dumps({"event_id": "e"}),
            json.dumps([1, 2, 3]), json.dumps({"type": 7}), "null", "",
            json.dumps({"type": "conversation.item.truncate", "item_id": 5, "content_index": 0, "audio_end_ms": 1}),
            json.dumps({"type": "conversation.item.create", "item": "x"}),
            json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": "loud"}}),
            json.dumps({"type": "response.create", "response": 3}),
            json.dumps({"type": "input_audio_buffer.append", "audio": {"a": 1}}),
            "[" * 100_000,
        ]
        for frame in corpus:
            await ws.send(frame)
            event = await recv(ws)
            assert event["type"] == "error", (frame[:40], event)
        # A 15 MiB append (the API's per-event limit): accepted silently, as the real server does.
        await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                  "audio": base64.b64encode(bytes(15 * 1024 * 1024)).decode()}))
        # A 10,000-frame flood: every frame answered, in order.
        for i in range(10_000):
            await ws.send(json.dumps({"type": "bogus.flood", "event_id": f"f{i}"}))
        for i in range(10_000):
            assert (await recv(ws, 20))["error"]["event_id"] == f"f{i}"
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        assert (await recv(ws))["type"] == "input_audio_buffer.committed"  # the 15 MiB did count
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "still here?"}]}}))
        types = [(await recv(ws))["type"] for _ in range(4)]
        assert types == ["conversation.item.added", "conversation.item.done", "conversation.item.added",
                         "conversation.item.done"]


async def expect_refusal(url: str, headers: dict[str, str]) -> tuple[dict[str, Any], int | None, str | None]:
    async with connect(url, additional_headers=headers) as ws:
        event = await recv(ws)
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        return event, ws.close_code, ws.close_reason


async def test_handshake_errors_arrive_after_the_101_like_the_real_api() -> None:
    async with ReplayServer(None, ServerOptions(api_key="sk-right-key-1234")) as server:
        event, code, reason = await expect_refusal(server.ws_url(), {})
        assert event["error"]["message"] == "Missing bearer or basic authentication in header"
        assert (code, reason) == (3000, "invalid_request_error")
        event, code, reason = await expect_refusal(server.ws_url(), {"Authorization": "Bearer sk-wrong-key-AAAA"})
        assert event["error"]["code"] == "invalid_api_key"
        assert event["error"]["message"].startswith("Incorrect API key provided: sk-...AAAA.")
        assert (code, reason) == (3000, "invalid_request_error.invalid_api_key")
        url = f"ws://127.0.0.1:{server.port}/v1/realtime"
        event, code, reason = await expect_refusal(url, {"Authorization": "Bearer sk-right-key-1234"})
        assert event["error"]["code"] == "missing_model"
        assert (code, reason) == (4000, "invalid_request_error.missing_model")
        with pytest.raises(InvalidStatus):
            async with connect(f"ws://127.0.0.1:{server.port}/v2/nothing?model=m", additional_headers=AUTH):
                pass


async def test_azure_paths_and_api_key_header() -> None:
    async with ReplayServer(None) as server:
        for path in ("/openai/realtime?deployment=gpt-realtime&api-version=2024-10-01-preview",
                     "/openai/v1/realtime?model=gpt-realtime"):
            async with connect(f"ws://127.0.0.1:{server.port}{path}", additional_headers={"api-key": "k"}) as ws:
                assert (await recv(ws))["type"] == "session.created"


async def test_recorded_http_interactions_are_served_on_the_same_port(tmp_path) -> None:
    secret = {"request": {"body": "{}", "headers": {}, "method": "POST",
                          "uri": "https://api.openai.com/v1/realtime/client_secrets"},
              "response": {"status": {"code": 200, "message": "OK"},
                           "headers": {"Content-Type": ["application/json"]},
                           "body": {"string": json.dumps({"value": "ek_REDACTED", "expires_at": 1})}}}
    cassette = Cassette({"origin": "synthesized"}, [secret])
    async with ReplayServer(cassette) as server, httpx.AsyncClient() as http:
        response = await http.post(f"{server.http_base_url}/realtime/client_secrets", json={})
        assert response.status_code == 200 and response.json()["value"] == "ek_REDACTED"
        missing = await http.post(f"{server.http_base_url}/realtime/calls", content=b"v=0")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_url"


async def test_strict_mode_ends_a_diverging_session_with_a_positioned_diff() -> None:
    cassette = load(CASSETTES / "ga_text_turn_audio_response.yaml")
    async with ReplayServer(cassette, ServerOptions(speed=0, strict=True)) as server, \
            connect(server.ws_url(), additional_headers=AUTH) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "other"}}))
        with pytest.raises(ConnectionClosed):
            while True:
                await recv(ws)
        assert ws.close_code == 1008
    failure = server.sessions[0].failure
    assert failure is not None and "session.instructions" in failure and "client frame #0" in failure


async def test_recorded_timing_is_kept_at_speed_one() -> None:
    """A response plays at its recorded offsets from its response.created (here 0.40 s to the first item)."""
    item = {"id": "item_a", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    frames = [Frame(0.0, "server", {"type": "session.created", "session": {}}),
              Frame(0.05, "client", {"type": "response.create"}),
              Frame(0.10, "server", {"type": "response.created", "response": {"id": "resp_1", "status": "x"}}),
              Frame(0.50, "server", {"type": "response.output_item.added", "response_id": "resp_1",
                                     "output_index": 0, "item": item})]
    cassette = Cassette({}, [WebSocketSession("wss://api.openai.com/v1/realtime?model=gpt-realtime", "ga", frames)])
    async with ReplayServer(cassette, ServerOptions(speed=1.0)) as server, \
            connect(server.ws_url(), additional_headers=AUTH) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "response.create"}))
        assert (await recv(ws))["type"] == "response.created"  # at once: the engine answers the client
        created = time.perf_counter()
        assert (await recv(ws))["type"] == "response.output_item.added"
        assert time.perf_counter() - created >= 0.38  # recorded gap 0.40 s, minus timer slack


async def test_beta_retirement_mode_and_session_expiry() -> None:
    async with ReplayServer(None, ServerOptions(reject_beta=True)) as server:
        event, code, reason = await expect_refusal(server.ws_url(), BETA)
        assert event["error"]["code"] == "beta_api_shape_disabled"
        assert (code, reason) == (4000, "invalid_request_error.beta_api_shape_disabled")
    async with ReplayServer(None, ServerOptions(max_session_s=0.3)) as server, \
            connect(server.ws_url(), additional_headers=AUTH) as ws:
        assert (await recv(ws))["type"] == "session.created"
        expired = await recv(ws, 3)
        assert expired["error"]["code"] == "session_expired"
        assert expired["error"]["message"] == "Your session hit the maximum duration of 0.005 minutes."
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert (ws.close_code, ws.close_reason) == (1001, expired["error"]["message"])


async def test_a_response_ends_as_recorded_incomplete_with_its_usage() -> None:
    """The recorded response.done status and usage are the model's: the live response ends the same way."""
    usage = {"total_tokens": 7, "input_tokens": 3, "output_tokens": 4}
    frames = [Frame(0.0, "server", {"type": "session.created", "session": {}}),
              Frame(0.01, "client", {"type": "response.create"}),
              Frame(0.02, "server", {"type": "response.created", "response": {"id": "resp_1", "status": "x"}}),
              Frame(0.03, "server", {"type": "response.done", "response": {
                  "id": "resp_1", "status": "incomplete", "usage": usage,
                  "status_details": {"type": "incomplete", "reason": "max_output_tokens"}}})]
    cassette = Cassette({}, [WebSocketSession("wss://api.openai.com/v1/realtime?model=gpt-realtime", "ga", frames)])
    async with ReplayServer(cassette, ServerOptions(speed=0)) as server, \
            connect(server.ws_url(), additional_headers=AUTH) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "response.create"}))
        while (event := await recv(ws))["type"] != "response.done":
            pass
    response = event["response"]
    assert (response["status"], response["usage"]) == ("incomplete", usage)
    assert response["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
