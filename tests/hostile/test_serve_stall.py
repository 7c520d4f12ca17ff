"""A client that stops reading must not hold its session (and a descriptor) forever: the server drops it."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

from websockets.asyncio.client import connect

from replay.authoring.synth import GA_MODEL, SessionScript
from replay.cassettes.cassette import Cassette, WebSocketSession
from replay.net.server import ReplayServer, ServerOptions
from replay.net.wsio import drain

ROOT = Path(__file__).resolve().parents[2]


def long_answer(seconds: int = 120) -> Cassette:
    """One response of ``seconds`` of pcm16 audio: several MB on the wire, more than socket buffers hold."""
    script = SessionScript("ga", seed="stall", model=GA_MODEL)
    script.connect()
    start = script.response_create(after=100)
    script.respond_audio("A long answer nobody listens to.", chunks=seconds * 10, at=start)
    session = WebSocketSession(f"wss://api.openai.com/v1/realtime?model={GA_MODEL}", "ga", script.frames)
    return Cassette({"origin": "synthesized"}, [session])


async def test_a_client_that_reads_nothing_is_dropped_after_the_stall_bound() -> None:
    lines: list[str] = []
    options = ServerOptions(speed=0, write_stall_s=1.0, on_event=lines.append)
    async with asyncio.timeout(60), ReplayServer(long_answer(), options) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a window that fills at once
        sock.connect(("127.0.0.1", server.port))
        # max_queue=1: once one message waits unread, the client stops reading its socket
        async with connect(server.ws_url(), sock=sock, max_queue=1, max_size=None, compression=None,
                           additional_headers={"Authorization": "Bearer sk-test"}) as ws:
            await ws.send(json.dumps({"type": "response.create"}))
            started = time.monotonic()
            session = server.sessions[-1]
            await asyncio.wait_for(session.closed.wait(), 30)
            took = time.monotonic() - started
    assert took < 20, took  # dropped after about the bound, not after the whole answer was forced through
    assert any("read nothing for 1 s: connection dropped" in line for line in lines), lines


async def test_drain_gives_up_on_a_writer_that_never_drains() -> None:
    class Transport:
        aborted = False

        def abort(self) -> None:
            self.aborted = True

    class Stuck:
        transport = Transport()

        async def drain(self) -> None:
            await asyncio.Event().wait()

    writer = Stuck()
    started = time.monotonic()
    assert await drain(writer, 0.2) is False  # type: ignore[arg-type]
    assert writer.transport.aborted and time.monotonic() - started < 5
