"""The replay server's WebSocket side under hostile client frames: answered, never a dropped session."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from replay.cassettes.cassette import load
from replay.net.server import ReplayServer, ServerOptions

from ..conftest import CASSETTES

AUTH = {"Authorization": "Bearer sk-test"}


async def recv(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(decode=False), timeout)
    assert isinstance(raw, bytes)
    raw.decode("utf-8")  # strict: the frame is valid UTF-8
    return json.loads(raw)


async def until(ws: ClientConnection, etype: str) -> dict[str, Any]:
    while (event := await recv(ws))["type"] != etype:
        pass
    return event


async def still_alive(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": "alive"}))
    assert (await until(ws, "input_audio_buffer.cleared"))["type"] == "input_audio_buffer.cleared"


@pytest.mark.parametrize(("frame", "where"), [
    ('{"type":"\\ud800"}', lambda error: error["error"]["message"]),
    ('{"type":"no.such","event_id":"\\udfff\\ud800x"}', lambda error: error["error"]["event_id"]),
    ('{"type":"session.update","session":{"type":"realtime","\\ud83d":1}}', lambda error: error["error"]["param"]),
    ('{"type":"conversation.item.delete","item_id":"item_\\udc80"}', lambda error: error["error"]["message"]),
])
async def test_a_lone_surrogate_is_answered_with_a_valid_error_and_the_session_lives(frame: str, where: Any) -> None:
    lines: list[str] = []
    async with ReplayServer(None, ServerOptions(speed=0, on_event=lines.append)) as server, \
            connect(server.ws_url(), additional_headers=AUTH) as ws:
        await until(ws, "session.created")
        await ws.send(frame)
        error = await until(ws, "error")
        assert any(ch in where(error) for ch in "\ud800\udfff\ud83d\udc80"), error  # the value, as JSON escapes
        await still_alive(ws)
    assert all(not any("\ud800" <= ch <= "\udfff" for ch in line) for line in lines)


async def test_a_surrogate_in_an_item_is_echoed_in_the_items_events() -> None:
    async with ReplayServer(None, ServerOptions(speed=0)) as server, \
            connect(server.ws_url(), additional_headers=AUTH) as ws:
        await until(ws, "session.created")
        await ws.send('{"type":"conversation.item.create","item":{"id":"it\\ud800","type":"message","role":"user",'
                      '"content":[{"type":"input_text","text":"hi \\udbff"}]}}')
        added = await until(ws, "conversation.item.added")
        assert added["item"]["id"] == "it\ud800" and added["item"]["content"][0]["text"] == "hi \udbff"
        await ws.send('{"type":"conversation.item.delete","item_id":"it\\ud800"}')
        assert (await until(ws, "conversation.item.deleted"))["item_id"] == "it\ud800"
        await still_alive(ws)


async def test_a_key_with_bytes_beyond_ascii_is_refused_cleanly() -> None:
    """websockets hands such header bytes over as surrogate escapes; the refusal quoting the key must not crash."""
    async with ReplayServer(None, ServerOptions(speed=0, api_key="sk-right")) as server, \
            connect(server.ws_url(), additional_headers={"Authorization": "Bearer sk-0123456789\u00ff\u00fe"}) as ws:
        error = await recv(ws)
        assert error["error"]["code"] == "invalid_api_key"
        assert "Incorrect API key provided: sk-..." in error["error"]["message"]
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 3000


async def test_a_10_mb_item_id_gets_an_error_of_readable_size() -> None:
    huge = "x" * 10_000_000
    async with ReplayServer(None, ServerOptions(speed=0)) as server, \
            connect(server.ws_url(), additional_headers=AUTH, max_size=None) as ws:
        await until(ws, "session.created")
        await ws.send(json.dumps({"type": "conversation.item.delete", "item_id": huge}))
        error = await until(ws, "error")
        assert error["error"]["code"] == "item_delete_invalid_item_id"
        assert len(error["error"]["message"]) < 2200 and "(9998000 more characters)" in error["error"]["message"]
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", huge: 1}}))
        error = await until(ws, "error")
        assert error["error"]["code"] == "unknown_parameter" and len(json.dumps(error)) < 5000
        await still_alive(ws)
    logged = server.sessions[0].log.entries
    assert all(len(json.dumps(e["event"])) < 5000 for e in logged if e.get("dir") == "server")


async def test_escapes_and_huge_ids_reach_the_servers_lines_visible_and_cut() -> None:
    """Every line the server hands its console passes client text through replay.text: no ESC, no BEL, cut."""
    lines: list[str] = []
    cassette = load(CASSETTES / "ga_text_turn_audio_response.yaml")
    async with ReplayServer(cassette, ServerOptions(speed=0, on_event=lines.append)) as server:
        model = "gpt\x1b]8;;http://evil\x07x\u202e" + "m" * 3000
        async with connect(server.ws_url(model), additional_headers=AUTH) as ws:
            await until(ws, "session.created")
            await ws.send(json.dumps({"type": "session.update",
                                      "session": {"type": "realtime", "\x1b[31m\u202e" + "k" * 3000: "\x1b[2J"}}))
            await until(ws, "error")
    assert len(lines) == 2, lines
    for line in lines:
        assert not any(ch in line for ch in "\x1b\x07\u202e"), line
        assert len(line) < 2500, len(line)
    assert "\\x1b]8;;http://evil\\x07x\\u202e" in lines[0] and "more characters" in lines[0]
    assert lines[1].startswith("divergence: session 0:") and "\\x1b[31m\\u202e" in lines[1]


async def test_a_long_running_server_releases_finished_sessions() -> None:
    """`serve` keeps none (finished_kept=0); the runner's default keeps every one for its verdict."""
    async with ReplayServer(None, ServerOptions(speed=0, finished_kept=0)) as server:
        for _ in range(3):
            async with connect(server.ws_url(), additional_headers=AUTH) as ws:
                await until(ws, "session.created")
                assert len(server.sessions) == 1  # the live one is there while it lives
        for _ in range(100):
            if not server.sessions:
                break
            await asyncio.sleep(0.05)
        assert server.sessions == []
    async with ReplayServer(None, ServerOptions(speed=0)) as server:
        for _ in range(2):
            async with connect(server.ws_url(), additional_headers=AUTH) as ws:
                await until(ws, "session.created")
        await asyncio.wait_for(asyncio.gather(*(s.closed.wait() for s in server.sessions)), 10)
        assert [s.index for s in server.sessions] == [0, 1]


async def test_a_bug_of_ours_on_a_session_closes_it_1011_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever trips the server on one session, its client is told (1011) and `serve` prints one line."""
    from replay.engine.conversation import Conversation

    def broken(self: Conversation, data: str | bytes) -> Any:
        raise RuntimeError("\x1b[2Jboom")

    monkeypatch.setattr(Conversation, "receive_client", broken)
    lines: list[str] = []
    async with ReplayServer(None, ServerOptions(speed=0, on_event=lines.append)) as server, \
            connect(server.ws_url(), additional_headers=AUTH) as ws:
        await until(ws, "session.created")
        await ws.send('{"type":"input_audio_buffer.clear"}')
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        for _ in range(100):
            if len(lines) > 1:
                break
            await asyncio.sleep(0.05)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert len(lines) == 2 and "internal error: RuntimeError: \\x1b[2Jboom" in lines[1], lines
