"""The connection shell under an abrupt close: a frame that arrived before a reset is never dropped."""

from __future__ import annotations

import asyncio
import socket
import struct

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from replay.net.wsio import receive_frames, send_pending

DELETE = b'{"type":"conversation.item.delete","item_id":"item_a"}'


async def test_a_frame_sent_just_before_a_connection_reset_is_still_received() -> None:
    """The client writes its last frame and resets (SO_LINGER 0), both before the server reads again."""
    received: list[Frame] = []
    handled = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        protocol = ServerProtocol()
        protocol.receive_data(await reader.readuntil(b"\r\n\r\n"))
        [request] = protocol.events_received()
        assert isinstance(request, Request)
        protocol.send_response(protocol.accept(request))
        send_pending(protocol, writer)
        await writer.drain()
        while reader.exception() is None:  # the frame and then the reset are in before we read on
            await asyncio.sleep(0.01)
        received.extend([frame async for frame in receive_frames(reader, protocol, writer)])
        writer.close()
        handled.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    client = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/v1/realtime"))
    client.send_request(client.connect())
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.setblocking(False)
        await loop.sock_sendall(sock, b"".join(client.data_to_send()))
        while client.state is State.CONNECTING:
            client.receive_data(await loop.sock_recv(sock, 4096))
        client.send_text(DELETE)
        await loop.sock_sendall(sock, b"".join(client.data_to_send()))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()  # with linger 0: an RST, not a FIN
    await handled.wait()
    server.close()
    await server.wait_closed()
    assert [(frame.opcode, frame.data) for frame in received] == [(Opcode.TEXT, DELETE)]
