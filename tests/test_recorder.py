"""The recording proxy, end to end on 127.0.0.1: a `ReplayServer` plays the upstream, real clients
(the openai SDK, websockets) talk through the proxy, and the written cassette is loaded and replayed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import websockets
from openai import AsyncOpenAI
from vcr.serialize import deserialize as vcr_deserialize
from vcr.serializers import yamlserializer
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from replay.cassettes.cassette import Cassette, Frame, WebSocketSession, load
from replay.net.recorder import RecordingProxy, RecordModeError
from replay.net.server import ReplayServer, ServerOptions

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gpt-realtime"
KEY = "sk-test-" + "k" * 24
EPHEMERAL = "ek_" + "5f" * 16
AUDIO = bytes(range(256)) * 19  # not silence, so a replay of compacted audio would differ
USER_ITEM: dict[str, Any] = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
SECRET_RESPONSE = {"value": EPHEMERAL, "expires_at": 1767225600, "session": {"type": "realtime", "model": MODEL}}


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ga_session(close: dict[str, Any] | None = None) -> WebSocketSession:
    """A small GA conversation: greeting, a user item, one audio response."""
    ids = {"response_id": "resp_1", "item_id": "item_a1", "output_index": 0, "content_index": 0}
    assistant = {"id": "item_a1", "object": "realtime.item", "type": "message", "role": "assistant"}
    transcript = "Hi there"
    server: list[tuple[float, dict[str, Any]]] = [
        (0.12, {"type": "response.created", "response": {"id": "resp_1", "object": "realtime.response",
                                                        "status": "in_progress", "output": [], "usage": None}}),
        (0.13, {"type": "response.output_item.added", "response_id": "resp_1", "output_index": 0,
                "item": {**assistant, "status": "in_progress", "content": []}}),
        (0.14, {"type": "response.content_part.added", **ids, "part": {"type": "audio", "transcript": ""}}),
        (0.15, {"type": "response.output_audio.delta", **ids, "delta": base64.b64encode(AUDIO).decode()}),
        (0.16, {"type": "response.output_audio_transcript.delta", **ids, "delta": transcript}),
        (0.17, {"type": "response.output_audio.done", **ids}),
        (0.18, {"type": "response.output_audio_transcript.done", **ids, "transcript": transcript}),
        (0.19, {"type": "response.content_part.done", **ids, "part": {"type": "audio", "transcript": transcript}}),
        (0.20, {"type": "response.output_item.done", "response_id": "resp_1", "output_index": 0,
                "item": {**assistant, "status": "completed",
                         "content": [{"type": "output_audio", "transcript": transcript}]}}),
        (0.21, {"type": "response.done", "response": {"id": "resp_1", "object": "realtime.response",
                                                     "status": "completed", "output": [], "usage": None}}),
    ]
    user = {"id": "item_u1", "object": "realtime.item", "status": "completed", **USER_ITEM}
    frames = [
        Frame(0.0, "server", event={"type": "session.created", "session": {
            "type": "realtime", "object": "realtime.session", "id": "sess_1", "model": MODEL}}),
        Frame(0.05, "client", event={"type": "conversation.item.create", "item": USER_ITEM}),
        Frame(0.06, "server", event={"type": "conversation.item.added", "previous_item_id": None, "item": user}),
        Frame(0.07, "server", event={"type": "conversation.item.done", "previous_item_id": None, "item": user}),
        Frame(0.10, "client", event={"type": "response.create"}),
        *(Frame(t, "server", event=event) for t, event in server),
    ]
    for number, frame in enumerate(f for f in frames if f.source == "server"):
        assert frame.event is not None
        frame.event = {"type": frame.event["type"], "event_id": f"event_{number}", **frame.event}
    return WebSocketSession(f"wss://api.openai.com/v1/realtime?model={MODEL}", "ga", frames, close=close)


def ga_cassette(close: dict[str, Any] | None = None) -> Cassette:
    secrets = {
        "request": {"method": "POST", "uri": "https://api.openai.com/v1/realtime/client_secrets",
                    "body": None, "headers": {}},
        "response": {"status": {"code": 200, "message": "OK"}, "headers": {"content-type": ["application/json"]},
                     "body": {"string": json.dumps(SECRET_RESPONSE)}},
    }
    return Cassette({"origin": "synthesized", "license": "MIT"}, [secrets, ga_session(close)])


def server_events(session: WebSocketSession) -> list[dict[str, Any]]:
    return [f.event for f in session.frames if f.source == "server" and f.event is not None]


def what_was_said(event: dict[str, Any]) -> tuple[Any, ...]:
    """An event's type and content, without the ids a server mints per session."""
    delta = event.get("delta")
    return (event["type"], len(delta) if isinstance(delta, str) else None, event.get("transcript"),
            (event.get("item") or {}).get("role"), (event.get("response") or {}).get("status"))


async def sdk_conversation(base_url: str, api_key: str = KEY) -> tuple[str, list[dict[str, Any]]]:
    """What a real client does: mint an ephemeral key, then one turn over the Realtime WebSocket."""
    client = AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0)
    try:
        secret = await client.realtime.client_secrets.create(session={"type": "realtime", "model": MODEL})
        events: list[dict[str, Any]] = []
        async with client.realtime.connect(model=MODEL) as connection:
            await connection.conversation.item.create(item=USER_ITEM)  # type: ignore[arg-type]
            await connection.response.create()
            async for event in connection:
                events.append(event.to_dict(mode="json"))
                if event.type == "response.done":
                    break
        return secret.value, events
    finally:
        await client.close()


async def one_turn(url: str, text: str = "hello", **options: Any) -> list[dict[str, Any]]:
    """A raw websockets client: one user item, read until it is acknowledged, close."""
    async with websockets.connect(url, **options) as ws:
        got = [json.loads(await ws.recv())]
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        while got[-1]["type"] != "conversation.item.done":
            got.append(json.loads(await ws.recv()))
        return got


async def record_one(path: Path, mode: str, text: str = "hello") -> None:
    async with asyncio.timeout(20), ReplayServer(Cassette({}, [ga_session()]), ServerOptions(speed=0)) as upstream:
        proxy = RecordingProxy(path, upstream=f"ws://127.0.0.1:{upstream.port}", record_mode=mode, api_key=KEY)
        async with proxy:
            await one_turn(proxy.ws_url(MODEL), text)


def client_texts(path: Path) -> list[str]:
    out = []
    for session in load(path).sessions:
        for frame in session.frames:
            if frame.source == "client" and frame.event is not None:
                out.append(frame.event["item"]["content"][0]["text"])
    return out


# ---------------------------------------------------------------------------- round trip


async def test_round_trip_with_the_openai_sdk(tmp_path: Path) -> None:
    out = tmp_path / "recorded.yaml"
    upstream_cassette = ga_cassette()

    async with asyncio.timeout(30):
        async with ReplayServer(upstream_cassette, ServerOptions(speed=0)) as upstream:
            proxy = RecordingProxy(out, upstream=f"ws://127.0.0.1:{upstream.port}", audio="full", api_key=KEY)
            await proxy.start()
            secret, live = await sdk_conversation(proxy.http_base_url)
            result = await proxy.close()
        assert secret == EPHEMERAL  # the client got the real value; the cassette gets REDACTED
        assert (result.path, result.sessions, result.http, result.complete) == (out, 1, 1, True)
        assert result.problems == []

        recorded = load(out)
        meta = recorded.metadata
        assert (meta["origin"], meta["source"], meta["license"], meta["model"]) == (
            "recorded", "rtreplay record", None, MODEL)
        assert meta["complete"] is True and "incomplete_reason" not in meta
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["recorded_at"])
        assert meta["tool"].startswith("rtreplay ")
        session = recorded.sessions[0]
        assert session.uri == f"ws://127.0.0.1:{upstream.port}/v1/realtime?model={MODEL}"
        assert session.dialect == "ga"
        assert session.close == {"code": 1000, "reason": "", "by": "client"}
        assert [what_was_said(e) for e in server_events(session)] == \
            [what_was_said(e) for e in server_events(upstream_cassette.sessions[0])]
        assert [f.type for f in session.frames if f.source == "client"] == [
            "conversation.item.create", "response.create"]
        assert [f.t for f in session.frames] == sorted(f.t for f in session.frames)
        # the HTTP call is vcrpy's own interaction, and vcrpy loads the file
        http = recorded.http_interactions[0]
        assert http["request"]["method"] == "POST"
        assert http["request"]["uri"].endswith("/v1/realtime/client_secrets")
        assert json.loads(http["response"]["body"]["string"])["value"] == "REDACTED"
        requests, responses, *_ = vcr_deserialize(out.read_text(), yamlserializer)
        assert len(requests) == len(responses) == 2

        async with ReplayServer(recorded, ServerOptions(speed=0)) as replay:
            _, replayed = await sdk_conversation(replay.http_base_url)
        # The replay renders the recorded model output under fresh server ids: the same events, the same
        # audio and transcript, in the same order.
        assert [what_was_said(e) for e in replayed] == [what_was_said(e) for e in live]
        assert [e["type"] for e in live][-1] == "response.done"


async def test_audio_is_compacted_by_default(tmp_path: Path) -> None:
    out = tmp_path / "compact.yaml"

    async with (
        asyncio.timeout(30),
        ReplayServer(ga_cassette(), ServerOptions(speed=0)) as upstream,
        RecordingProxy(out, upstream=f"ws://127.0.0.1:{upstream.port}", api_key=KEY) as proxy,
    ):
        _, events = await sdk_conversation(proxy.http_base_url)
    assert "response.done" in [e["type"] for e in events]

    (delta,) = [f.event for f in load(out).sessions[0].frames if f.type == "response.output_audio.delta"]
    assert delta is not None
    assert delta["delta"] == {"$audio": {"bytes": len(AUDIO), "sha256": hashlib.sha256(AUDIO).hexdigest()}}
    assert load(out).metadata["audio"] == "compact"


async def test_frames_and_server_close_are_forwarded_unchanged(tmp_path: Path) -> None:
    """Binary and non-JSON text frames pass as they are; the server's own close reaches the client."""
    out = tmp_path / "raw.yaml"
    upstream_cassette = Cassette({}, [WebSocketSession(
        f"wss://api.openai.com/v1/realtime?model={MODEL}", "ga",
        [Frame(0.0, "server", event={"type": "session.created", "event_id": "event_0",
                                     "session": {"type": "realtime", "model": MODEL}})])])

    async with (
        asyncio.timeout(30),
        ReplayServer(upstream_cassette, ServerOptions(speed=0, max_session_s=1.0)) as upstream,
        RecordingProxy(out, upstream=f"ws://127.0.0.1:{upstream.port}", api_key=KEY) as proxy,
        websockets.connect(proxy.ws_url(MODEL)) as ws,
    ):
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(b"\x00\x01binary")
        await ws.send("not json")
        errors = [json.loads(await ws.recv()) for _ in range(2)]
        assert [e["error"]["code"] for e in errors] == ["invalid_event", "invalid_json"]
        await ws.send(json.dumps({"type": "response.cancel"}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None  # the session's end: T18 and close 1001, as the real API
        code, reason = closed.value.rcvd.code, closed.value.rcvd.reason
        assert code == 1001 and reason.startswith("Your session hit the maximum duration")

    session = load(out).sessions[0]
    client = [f for f in session.frames if f.source == "client"]
    assert client[0].binary == b"\x00\x01binary"
    assert client[1].text == "not json"
    assert client[2].type == "response.cancel"
    assert session.close == {"code": code, "reason": reason, "by": "server"}
    assert load(out).metadata["complete"] is True


async def test_subprotocol_key_and_beta_header_reach_the_upstream(tmp_path: Path) -> None:
    """A browser-style client: key in a subprotocol, no Authorization; the proxy adds no key of its own."""
    out = tmp_path / "beta.yaml"
    offered = ["realtime", f"openai-insecure-api-key.{KEY}", "openai-beta.realtime-v1"]

    wrong = "sk-wrong-" + "x" * 20
    async with (
        asyncio.timeout(30),
        # the upstream refuses any key but KEY with close 3000
        ReplayServer(Cassette({}, [ga_session()]), ServerOptions(speed=0, api_key=KEY)) as upstream,
        RecordingProxy(out, upstream=f"ws://127.0.0.1:{upstream.port}", api_key=wrong) as proxy,
        websockets.connect(proxy.ws_url(MODEL), subprotocols=offered,  # type: ignore[arg-type]
                           additional_headers={"OpenAI-Beta": "realtime=v1"}) as ws,
    ):
        assert ws.subprotocol == "realtime"
        assert json.loads(await ws.recv())["type"] == "session.created"
        assert upstream.sessions[0].dialect == "beta"

    session = load(out).sessions[0]
    assert session.dialect == "beta"
    assert session.request_headers["OpenAI-Beta"] == ["realtime=v1"]
    protocols = session.request_headers["Sec-WebSocket-Protocol"][0]
    assert "openai-insecure-api-key.REDACTED" in protocols and KEY not in protocols
    assert "Authorization" not in session.request_headers


async def test_proxy_key_is_used_when_the_client_sends_none(tmp_path: Path) -> None:
    out = tmp_path / "proxy-key.yaml"

    async with (
        asyncio.timeout(30),
        ReplayServer(Cassette({}, [ga_session()]), ServerOptions(speed=0, api_key=KEY)) as upstream,
        RecordingProxy(out, upstream=f"ws://127.0.0.1:{upstream.port}", api_key=KEY) as proxy,
    ):
        got = await one_turn(proxy.ws_url(MODEL))
    assert got[0]["type"] == "session.created"  # not the 3000 "Missing bearer" refusal

    assert KEY.encode() not in out.read_bytes()


async def test_two_sessions_are_two_interactions_in_order(tmp_path: Path) -> None:
    out = tmp_path / "two.yaml"

    async with (
        asyncio.timeout(30),
        ReplayServer(Cassette({}, [ga_session()]), ServerOptions(speed=0)) as upstream,
        RecordingProxy(out, upstream=f"ws://127.0.0.1:{upstream.port}", api_key=KEY) as proxy,
    ):
        await one_turn(proxy.ws_url(MODEL), "first")
        await one_turn(proxy.ws_url(MODEL), "second")

    assert client_texts(out) == ["first", "second"]


# ---------------------------------------------------------------------------- faults


async def test_upstream_unreachable_closes_1011_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "never.yaml"

    async with asyncio.timeout(30):
        proxy = RecordingProxy(out, upstream=f"ws://127.0.0.1:{free_port()}", api_key=KEY)
        await proxy.start()  # no error yet: the upstream is only dialled per connection
        async with websockets.connect(proxy.ws_url(MODEL)) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        assert "upstream unreachable" in closed.value.rcvd.reason
        async with AsyncOpenAI(api_key=KEY, base_url=proxy.http_base_url, max_retries=0) as client:
            with pytest.raises(Exception, match="upstream unreachable"):
                await client.realtime.client_secrets.create(session={"type": "realtime", "model": MODEL})
        result = await proxy.close()
        assert result.path is None and not result.complete
        assert len(result.problems) == 2 and all("upstream unreachable" in p for p in result.problems)

    assert not out.exists()


async def test_an_upstream_refusing_the_upgrade_is_forwarded(tmp_path: Path) -> None:
    out = tmp_path / "refused.yaml"
    async with (
        asyncio.timeout(30),
        ReplayServer(Cassette({}, [ga_session()]), ServerOptions(speed=0)) as upstream,
    ):
        proxy = await RecordingProxy(out, upstream=f"ws://127.0.0.1:{upstream.port}", api_key=KEY).start()
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(f"ws://127.0.0.1:{proxy.port}/v1/elsewhere?model={MODEL}"):
                pass
        assert refused.value.response.status_code == 404
        result = await proxy.close()
    assert result.path is None and "refused the WebSocket upgrade with HTTP 404" in result.problems[0]
    assert not out.exists()


async def test_upstream_drop_keeps_the_frames_so_far(tmp_path: Path) -> None:
    out = tmp_path / "dropped.yaml"

    async with asyncio.timeout(30):
        upstream = await ReplayServer(Cassette({}, [ga_session()]), ServerOptions(speed=0)).start()
        proxy = await RecordingProxy(out, upstream=f"ws://127.0.0.1:{upstream.port}", api_key=KEY).start()
        async with websockets.connect(proxy.ws_url(MODEL)) as ws:
            await ws.send(json.dumps({"type": "conversation.item.create", "item": USER_ITEM}))
            for _ in range(3):  # session.created, item added, item done
                await ws.recv()
            await upstream.close()  # TCP goes away without a close frame
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is None  # the client sees the same drop
        result = await proxy.close()
        assert result.path == out and not result.complete

    recorded = load(out)
    assert recorded.metadata["complete"] is False
    assert "upstream dropped the connection" in recorded.metadata["incomplete_reason"]
    session = recorded.sessions[0]
    assert [f.type for f in session.frames] == [
        "session.created", "conversation.item.create", "conversation.item.added", "conversation.item.done"]
    assert session.close is None


async def test_client_drop_keeps_the_frames_so_far(tmp_path: Path) -> None:
    out = tmp_path / "client-drop.yaml"
    async with (
        asyncio.timeout(30),
        ReplayServer(Cassette({}, [ga_session()]), ServerOptions(speed=0)) as upstream,
        RecordingProxy(out, upstream=f"ws://127.0.0.1:{upstream.port}", api_key=KEY) as proxy,
    ):
        ws: ClientConnection = await websockets.connect(proxy.ws_url(MODEL))
        await ws.recv()
        await ws.send(json.dumps({"type": "conversation.item.create", "item": USER_ITEM}))
        await ws.recv()
        ws.transport.abort()
        async with asyncio.timeout(5):  # written as soon as the session ended, before close()
            while not out.exists():
                await asyncio.sleep(0.02)
        assert load(out).metadata["complete"] is False

    recorded = load(out)
    assert recorded.metadata["complete"] is False
    assert "client dropped the connection" in recorded.metadata["incomplete_reason"]
    assert "conversation.item.create" in [f.type for f in recorded.sessions[0].frames]


SIGNAL_SCRIPT = """
import asyncio, sys
from pathlib import Path
from replay.net.recorder import RecordingProxy, run_until_signalled

def ready(proxy):
    print(proxy.port, flush=True)

proxy = RecordingProxy(Path(sys.argv[1]), upstream=sys.argv[2], api_key="{key}")
result = asyncio.run(run_until_signalled(proxy, ready))
print("complete" if result.complete else "incomplete", flush=True)
"""


async def test_sigterm_writes_an_incomplete_cassette(tmp_path: Path) -> None:
    out = tmp_path / "signalled.yaml"

    async with asyncio.timeout(60):
        async with ReplayServer(Cassette({}, [ga_session()]), ServerOptions(speed=0)) as upstream:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", SIGNAL_SCRIPT.format(key=KEY), str(out), f"ws://127.0.0.1:{upstream.port}",
                stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=env)
            try:
                assert proc.stdout is not None
                port = int(await asyncio.wait_for(proc.stdout.readline(), 20))
                async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime?model={MODEL}") as ws:
                    await ws.recv()
                    await ws.send(json.dumps({"type": "conversation.item.create", "item": USER_ITEM}))
                    await ws.recv()
                    proc.send_signal(signal.SIGTERM)
                    with pytest.raises(ConnectionClosed) as closed:
                        while True:
                            await ws.recv()
                    assert closed.value.rcvd is not None
                    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "rtreplay record stopped")
                assert await asyncio.wait_for(proc.wait(), 15) == 0
                assert (await proc.stdout.read()).strip() == b"incomplete"
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

    recorded = load(out)
    assert recorded.metadata["complete"] is False
    assert "recording stopped" in recorded.metadata["incomplete_reason"]
    assert "conversation.item.create" in [f.type for f in recorded.sessions[0].frames]
    assert [p.name for p in tmp_path.iterdir()] == ["signalled.yaml"]  # no temp file left behind


# ---------------------------------------------------------------------------- record modes


async def test_once_refuses_an_existing_cassette(tmp_path: Path) -> None:
    out = tmp_path / "existing.yaml"
    await record_one(out, "once", "original")
    before = out.read_bytes()
    with pytest.raises(RecordModeError, match="already exists"):
        await record_one(out, "once", "again")
    assert out.read_bytes() == before


async def test_none_never_records(tmp_path: Path) -> None:
    out = tmp_path / "none.yaml"
    with pytest.raises(RecordModeError, match="never records"):
        await record_one(out, "none")
    assert not out.exists()


def test_unknown_mode_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecordModeError, match="unknown record mode 'sometimes'"):
        RecordingProxy(tmp_path / "x.yaml", record_mode="sometimes")


async def test_new_episodes_appends(tmp_path: Path) -> None:
    out = tmp_path / "episodes.yaml"
    await record_one(out, "once", "first")
    first = load(out).sessions[0].to_interaction()
    await record_one(out, "new_episodes", "second")
    assert client_texts(out) == ["first", "second"]
    assert load(out).sessions[0].to_interaction() == first


async def test_all_replaces_interactions_and_keeps_metadata(tmp_path: Path) -> None:
    out = tmp_path / "all.yaml"
    await record_one(out, "once", "old")
    edited = load(out)
    edited.metadata["description"] = "kept across re-recording"
    edited.save(out)
    await record_one(out, "all", "new")
    assert client_texts(out) == ["new"]
    assert load(out).metadata["description"] == "kept across re-recording"


async def test_rewrite_starts_fresh(tmp_path: Path) -> None:
    out = tmp_path / "rewrite.yaml"
    await record_one(out, "once", "old")
    edited = load(out)
    edited.metadata["description"] = "dropped by rewrite"
    edited.save(out)
    await record_one(out, "rewrite", "new")
    assert client_texts(out) == ["new"]
    assert "description" not in load(out).metadata
